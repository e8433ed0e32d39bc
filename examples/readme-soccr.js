#!/usr/bin/env node
'use strict';
/**
 * README.md "Low level: libsoccr's calls", run as it is: the block between README:begin and
 * README:end is the README's (test/readme checks that they match). The server side of a loopback
 * connection is paused, dumped, closed silently and rebuilt step by step in a fresh socket; both
 * directions then carry on and no fd is left behind. As root, in a private network namespace.
 *
 *   sudo node examples/readme-soccr.js
 */
const fs = require('node:fs');

const { loopbackPair, until } = require('./lib/loopback');
const { inPrivateNetns } = require('./lib/private-netns');

async function readmeExample(socket) {
  // README:begin
  const { once } = require('node:events');
  const { soccr, NftablesLock } = require('node-criu');

  // Block the connection's traffic first: while it is paused the peer's packets must be dropped,
  // not answered. An NftablesLock drops them by 4-tuple until the restored socket takes over.
  const tuple = soccr.connectionTuple(socket); // { local, remote }
  const lock = await NftablesLock.create();
  await lock.add([tuple]);

  await soccr.flushWrites(socket); // pause() needs Node's write buffer empty
  const handle = soccr.pause(socket); // TCP_REPAIR on; Node stops reading it
  const data = handle.getSkData(); // every libsoccr_sk_data field, state as a name too
  const recv = handle.getQueueBytes('recv');
  const send = handle.getQueueBytes('send');
  const unread = soccr.unreadBytes(socket, { take: true }); // read by Node, not yet by the application
  handle.release(); // repair stays on, so closing the socket sends neither FIN nor RST
  socket.destroy();
  await once(socket, 'close'); // the 4-tuple is free once its fd is closed

  // Staged restore into a fresh socket, the caller binding and connecting:
  const { fd, handle: fresh } = soccr.pauseNewSocket(tuple.local.family);
  fresh.setSkDataUnbound(data);
  fresh.bind(tuple.local);
  fresh.connect(tuple.remote); // in repair mode: no SYN
  fresh.setSkDataNoq(data);
  fresh.setQueueBytes(data, 'recv', recv);
  fresh.setQueueBytes(data, 'send', send);
  fresh.setSkData(data);
  fresh.resume(); // repair off; the handle closes its own dup of fd
  const restored = soccr.adoptSocket(fd); // a net.Socket, which owns fd from now on
  if (unread.length > 0) restored.unshift(unread);
  await lock.destroy(); // the peer's packets reach the restored socket again
  // README:end
  return restored;
}

const openFds = () => new Map(fs.readdirSync('/proc/self/fd').map((fd) => [fd, safeReadlink(`/proc/self/fd/${fd}`)]));
function safeReadlink(file) {
  try {
    return fs.readlinkSync(file);
  } catch {
    return undefined;
  }
}

async function main() {
  const { client, socket, text } = await loopbackPair();
  socket.pause();
  client.write('while paused '); // sits in the kernel's receive queue, or Node's buffer

  const before = openFds();
  const restored = await readmeExample(socket);
  restored.on('data', (d) => (text.byServer += d));
  restored.write('still here');
  client.write('after');
  const expected = 'before while paused after';
  await until(() => text.byClient === 'still here' && text.byServer === expected);
  restored.destroy();
  client.destroy();
  await new Promise((resolve) => setImmediate(resolve));
  // The restored socket's fd was the only new one, and it closed with the socket.
  const leaked = [...openFds()].filter(
    ([fd, target]) => before.get(fd) !== target && fs.existsSync(`/proc/self/fd/${fd}`),
  );
  const ok = text.byClient === 'still here' && text.byServer === expected && leaked.length === 0;
  console.log(`server got '${text.byServer}', client got '${text.byClient}'; fds left open: ${leaked.length}`);
  console.log(ok ? 'ok' : 'FAILED');
  return ok ? 0 : 1;
}

inPrivateNetns(main);
