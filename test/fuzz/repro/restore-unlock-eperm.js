#!/usr/bin/env node
/**
 * Reproduction (kept out of the jest suite; FIXED in 3d330a2, pendingRead now unshifted after the
 * resume — kept as a regression check, exits 0 now): restoreConnection() of an image with a non-empty
 * receive queue, a non-empty `pendingRead` and a `lock` (here a table that is already gone, which
 * restore treats as nothing to release). The net.Socket built for the restored fd
 * (adoptFd(..., paused=true)) starts reading before the connection is resumed — unshift(pendingRead)
 * restarts it — so the read fails: "read EPERM" (repair mode; up to commit 5718861's parent) or
 * "read ENOTCONN" (since 4eb0e1c, which builds the sockets while the restore still runs on
 * other threads: the socket is not even connected yet). The socket emits an unhandled 'error'
 * event (a crash without an uncaughtException handler) and is destroyed, closing the fd.
 * See restore-pending-read.js for the same cause without a lock, where the fd is closed under
 * the running restore (EBADF). Found by test/fuzz/soccr-args.test.ts.
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
  // The bug showed as a socket destroyed shortly after the restore: give it the time it took.
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
