'use strict';
/** A TCP connection over loopback for the connection examples, and a wait for a condition. */
const net = require('node:net');

/**
 * A connected pair: `client`, and `socket`, the server's side (the listener is closed). `text`
 * collects what the client received (`text.byClient`) and, until the example takes the socket
 * over, what the server side received (`text.byServer`, starting with 'before ').
 */
async function loopbackPair() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise((resolve) => server.once('connection', resolve));
  const client = net.connect(server.address().port, '127.0.0.1');
  const socket = await accepted;
  server.close();
  const text = { byServer: '', byClient: '' };
  client.on('data', (d) => (text.byClient += d));
  client.write('before ');
  await new Promise((resolve) => socket.once('data', (d) => resolve((text.byServer += d))));
  return { client, socket, text };
}

/** Resolves once check() is true, or after about 10 s (the caller then reports what it saw). */
async function until(check) {
  for (let i = 0; i < 1000 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
}

module.exports = { loopbackPair, until };
