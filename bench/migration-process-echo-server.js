'use strict';
/**
 * Baseline server for bench/migration-process-bench.js: sends paceBytes every paceMs on every
 * connection and discards what it reads. Config: JSON in argv[2]: { statusDir, host, port,
 * paceBytes, paceMs, name }. Writes statusDir/<name>-listening once bound. Runs until killed.
 */
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const config = JSON.parse(process.argv[2]);
const sockets = new Set();
const server = net.createServer((socket) => {
  sockets.add(socket);
  socket.on('data', () => undefined);
  socket.on('error', () => undefined);
  socket.on('close', () => sockets.delete(socket));
});
setInterval(() => {
  const chunk = Buffer.alloc(config.paceBytes, 0x62);
  for (const socket of sockets) socket.write(chunk);
}, config.paceMs);
server.listen(config.port, config.host, () =>
  fs.writeFileSync(path.join(config.statusDir, `${config.name}-listening`), String(process.pid)),
);
