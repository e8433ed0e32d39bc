'use strict';
/**
 * Baseline clients for bench/migration-connections-bench.js: N connections that only read; when a
 * connection closes (its server was killed) the client reconnects at once, retrying every 5 ms.
 * The pause a client sees is the longest time between two arrivals of data, across reconnects.
 * Driven over IPC: {cmd:'connect', host, port, count} -> {}; {cmd:'resetGaps'} -> {steadyMaxGapMs};
 * {cmd:'report'} -> {connected, reconnects, dataSinceReset, maxGapMs}.
 */
const net = require('node:net');

const slots = [];
let target = null;

function open(slot) {
  const socket = net.connect(target);
  slot.socket = socket;
  socket.on('connect', () => (slot.connected = true));
  socket.on('data', () => {
    const now = performance.now();
    slot.maxGapMs = Math.max(slot.maxGapMs, now - slot.lastDataAt);
    slot.lastDataAt = now;
    slot.dataSinceReset = true;
  });
  socket.on('error', () => undefined);
  socket.on('close', () => {
    slot.connected = false;
    slot.reconnects++;
    setTimeout(() => open(slot), 5);
  });
}

process.on('message', async (msg) => {
  if (msg.cmd === 'connect') {
    target = { host: msg.host, port: msg.port };
    for (let i = 0; i < msg.count; i++) {
      const slot = {
        socket: null,
        connected: false,
        reconnects: 0,
        lastDataAt: performance.now(),
        maxGapMs: 0,
        dataSinceReset: false,
      };
      slots.push(slot);
      open(slot);
      await new Promise((resolve) => slot.socket.once('connect', resolve));
      slot.reconnects = 0;
    }
    process.send({ id: msg.id });
  } else if (msg.cmd === 'resetGaps') {
    const now = performance.now();
    const steadyMaxGapMs = Math.max(0, ...slots.map((s) => s.maxGapMs));
    for (const slot of slots) {
      slot.maxGapMs = 0;
      slot.lastDataAt = now;
      slot.dataSinceReset = false;
    }
    process.send({ id: msg.id, steadyMaxGapMs });
  } else if (msg.cmd === 'report') {
    const now = performance.now();
    process.send({
      id: msg.id,
      connected: slots.filter((s) => s.connected).length,
      reconnects: slots.reduce((n, s) => n + s.reconnects, 0),
      dataSinceReset: slots.filter((s) => s.dataSinceReset).length,
      // A client still waiting counts with its open gap.
      maxGapMs: Math.max(0, ...slots.map((s) => Math.max(s.maxGapMs, now - s.lastDataAt))),
    });
  }
});
process.on('disconnect', () => process.exit(0));
