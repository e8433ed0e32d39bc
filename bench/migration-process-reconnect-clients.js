'use strict';
/**
 * Baseline clients for bench/migration-process-bench.js: `connections` connections that, when the
 * server goes away, simply reconnect (every 10 ms) and carry on. Each measures the longest gap
 * between two arrivals of data, across reconnects: the pause a client of a restarted server sees.
 * Config: JSON in argv[2]: { statusDir, host, port, connections, paceBytes, paceMs }.
 * Writes statusDir/clients-connected once all are first connected, statusDir/reconnected once
 * every connection has received data again after a reconnect, and on SIGUSR2
 * statusDir/clients.json: { maxGapMs: [..], reconnects }.
 */
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const config = JSON.parse(process.argv[2]);

function writeAtomic(name, text) {
  const file = path.join(config.statusDir, name);
  fs.writeFileSync(`${file}.tmp`, text);
  fs.renameSync(`${file}.tmp`, file);
}

let firstConnected = 0;
let reconnects = 0;
const links = [];

function connect(link) {
  const socket = net.connect(config.port, config.host);
  link.socket = socket;
  socket.on('connect', () => {
    if (!link.everConnected) {
      link.everConnected = true;
      link.lastData = Date.now();
      if (++firstConnected === config.connections) writeAtomic('clients-connected', String(process.pid));
    }
  });
  socket.on('data', () => {
    const now = Date.now();
    link.maxGapMs = Math.max(link.maxGapMs, now - link.lastData);
    link.lastData = now;
    if (link.generation > 0 && !link.back) {
      link.back = true;
      if (links.every((l) => l.back)) writeAtomic('reconnected', String(Date.now()));
    }
  });
  socket.on('error', () => undefined);
  socket.on('close', () => {
    if (link.socket !== socket) return;
    link.generation += 1;
    reconnects += 1;
    setTimeout(() => connect(link), 10);
  });
}

for (let i = 0; i < config.connections; i++) {
  const link = { socket: null, everConnected: false, lastData: 0, maxGapMs: 0, generation: 0, back: false };
  links.push(link);
  connect(link);
}

setInterval(() => {
  const chunk = Buffer.alloc(config.paceBytes, 0x61);
  for (const { socket } of links) if (socket && socket.readyState === 'open') socket.write(chunk);
}, config.paceMs);

process.on('SIGUSR2', () => {
  writeAtomic('clients.json', JSON.stringify({ maxGapMs: links.map((l) => l.maxGapMs), reconnects }));
});
