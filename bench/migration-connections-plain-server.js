'use strict';
/**
 * Baseline server for bench/migration-connections-bench.js: streams paceBytes every paceMs to each
 * client and discards what it reads; keeps no state worth moving. argv[2]: JSON {host, port,
 * paceBytes, paceMs}. Runs until killed.
 */
const net = require('node:net');

const config = JSON.parse(process.argv[2]);
const sockets = new Set();
const server = net.createServer((socket) => {
  sockets.add(socket);
  socket.on('error', () => undefined);
  socket.on('close', () => sockets.delete(socket));
  socket.resume();
});
server.maxConnections = 100000;
server.listen({ host: config.host, port: config.port, backlog: 4096 });
const chunk = Buffer.alloc(config.paceBytes, 0x5a);
setInterval(() => {
  for (const socket of sockets) if (socket.writableLength < 65536) socket.write(chunk);
}, config.paceMs);
