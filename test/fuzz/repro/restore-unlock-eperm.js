#!/usr/bin/env node
/**
 * Reproduction (kept out of the jest suite): restoreConnection() of an image with a non-empty
 * receive queue, a non-empty `pendingRead` and a `lock` (any: here a table that is already gone,
 * which restore treats as nothing to release). While nft runs, the net.Socket built for the restored fd (adoptFd with
 * paused=true) already reads although the socket is still in repair mode: the read fails with
 * EPERM, the socket emits an unhandled 'error' event ("read EPERM", which crashes a program
 * without an uncaughtException handler) and restoreConnection resolves with a DESTROYED socket.
 * With an empty pendingRead or an empty receive queue the same restore works. Found by test/fuzz/soccr-args.test.ts.
 *
 * Run: npm run build && node test/fuzz/repro/restore-unlock-eperm.js
 * Exit status 1 (and the message below) while the bug exists; 0 once it is fixed.
 */
'use strict';
const net = require('node:net');
const path = require('node:path');
const lib = require(path.join(__dirname, '..', '..', '..', 'dist'));

process.on('uncaughtException', (error) => {
  console.log(`BUG: uncaught exception during restoreConnection: ${error.code} ${error.message}`);
  process.exit(1);
});

(async () => {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise((r) => server.once('connection', r));
  const client = net.connect(server.address().port, '127.0.0.1');
  await new Promise((r) => client.once('connect', r));
  const socket = await accepted;
  const image = await lib.checkpointConnection(socket, { lock: 'filter' });
  image.lock = { table: `ncr_missing_${process.pid}` };
  image.pendingRead = Buffer.from('bytes the application had not read yet');
  // Three bytes in the kernel's receive queue (as if the peer had sent them before the dump).
  image.recvQueue = Buffer.from('abc');
  image.skData = { ...image.skData, inqLen: 3, inqSeq: (image.skData.inqSeq + 3) >>> 0 };
  const restored = await lib.restoreConnection(image);
  console.log(`restore resolved; returned socket destroyed: ${restored.destroyed}`);
  await new Promise((r) => setTimeout(r, 200));
  if (restored.destroyed) {
    console.log('BUG: the restored socket is destroyed');
    process.exit(1);
  }
  console.log('no uncaught error, socket alive: fixed');
  restored.destroy();
  client.destroy();
  server.close();
})();
