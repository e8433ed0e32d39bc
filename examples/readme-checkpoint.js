#!/usr/bin/env node
'use strict';
/**
 * README.md "One call: checkpoint a connection, restore it elsewhere", run as it is: the block
 * between README:begin and README:end is the README's (test/readme checks that they match).
 * A connection over loopback is checkpointed on the server side and restored into a new socket;
 * both directions then carry on. As root, in a private network namespace (examples/lib).
 *
 *   sudo node examples/readme-checkpoint.js
 */
const { loopbackPair, until } = require('./lib/loopback');
const { inPrivateNetns } = require('./lib/private-netns');

async function readmeExample(socket, onData) {
  // README:begin
  const {
    checkpointConnection,
    restoreConnection,
    encodeConnectionImage,
    decodeConnectionImage,
  } = require('node-criu');

  // Source: freeze the connection (its 4-tuple is locked so the peer's packets are dropped, not
  // answered with RST), take its state and queues, close the original silently (no FIN, no RST).
  const image = await checkpointConnection(socket); // { keepRunning: true } resumes it instead
  const bytes = encodeConnectionImage(image); // versioned protobuf: disk, IPC, network

  // Target (same host after the original is gone, or a host/namespace that now owns the address):
  const restored = await restoreConnection(decodeConnectionImage(bytes)); // a connected net.Socket
  restored.on('data', onData);
  restored.write('still here');
  // README:end
  return restored;
}

async function main() {
  const { client, socket, text } = await loopbackPair();
  const restored = await readmeExample(socket, (d) => (text.byServer += d));
  client.write('after');
  await until(() => text.byClient === 'still here' && text.byServer === 'before after');
  const ok = text.byClient === 'still here' && text.byServer === 'before after' && socket.destroyed;
  console.log(`server got '${text.byServer}', client got '${text.byClient}' through the restored socket`);
  console.log(ok ? 'ok' : 'FAILED');
  client.destroy();
  restored.destroy();
  return ok ? 0 : 1;
}

inPrivateNetns(main);
