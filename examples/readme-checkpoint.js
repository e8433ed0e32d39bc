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
const net = require('node:net');

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
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise((resolve) => server.once('connection', resolve));
  const client = net.connect(server.address().port, '127.0.0.1');
  const socket = await accepted;
  server.close();
  let fromClient = '';
  let fromServer = '';
  client.on('data', (d) => (fromServer += d));
  client.write('before ');
  await new Promise((resolve) => socket.once('data', (d) => resolve((fromClient += d))));

  const restored = await readmeExample(socket, (d) => (fromClient += d));
  client.write('after');
  const until = async (check) => {
    for (let i = 0; i < 1000 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  };
  await until(() => fromServer === 'still here' && fromClient === 'before after');
  const ok = fromServer === 'still here' && fromClient === 'before after' && socket.destroyed;
  console.log(`server got '${fromClient}', client got '${fromServer}' through the restored socket`);
  console.log(ok ? 'ok' : 'FAILED');
  client.destroy();
  restored.destroy();
  return ok ? 0 : 1;
}

inPrivateNetns(main);
