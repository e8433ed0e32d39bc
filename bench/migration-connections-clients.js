'use strict';
/**
 * One client process of bench/migration-connections-bench.js (one per
 * CONNECTIONS_BENCH_PER_PROCESS connections, side by side in the client namespace). Driven over
 * IPC (replies carry `id`):
 *   {cmd:'connect', host, port, count, paceBytes, paceMs, reconnect, reconnectMs} -> {ports}
 *     opens `count` connections (at most CONNECT_BURST at a time), sending nothing yet; with
 *     `reconnect` (the baseline) each one that closes tries again every reconnectMs until it
 *     gets through, and its bytes are counted, not hashed (the restarted server lost them).
 *   {cmd:'start'} each connection sends clientSeed(port)'s pattern (paceBytes every paceMs) and
 *     hashes what it sends and receives. One timer per process: each tick writes to one slot of
 *     the connections (paceSlots), so the writes spread evenly over the interval.
 *   {cmd:'resetGaps'} -> {gaps}: each connection's longest gap between two arrivals so far, then
 *     restart
 *   {cmd:'stop'} stop sending; a connection silent right now counts with its open gap
 *   {cmd:'summary'} -> {connected, reconnected, sentBytes, receivedBytes}: totals only (cheap to poll)
 *   {cmd:'report'} -> {reports}: per connection {port, sent, received, maxGapMs, maxGapEndAt, resets, errors, ended, reconnects, connected}
 */
const { createHash } = require('node:crypto');
const net = require('node:net');
const path = require('node:path');

const { PatternStream, clientSeed } = require(
  path.join(process.env.NODE_CRIU_BENCH_DIST || path.join(__dirname, '..', 'dist'), 'demo', 'traffic'),
);

const { startPacer } = require('./migration-connections-bench-pace');

const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ETIMEDOUT']);
/** Connections a process opens at once (a burst of SYNs the listener's backlog takes). */
const CONNECT_BURST = 128;
const clients = [];
let settings;
let sending = true;
let timingGaps = true;

function open(client) {
  const socket = net.connect({ host: settings.host, port: settings.port, noDelay: true });
  client.socket = socket;
  socket.on('connect', () => {
    client.connected = true;
    client.ended = false;
    if (client.port === 0) {
      client.port = socket.localPort;
      client.pattern = new PatternStream(clientSeed(client.port));
    }
  });
  socket.on('data', (data) => {
    const now = performance.now();
    if (timingGaps) noteGap(client, now);
    client.lastDataAt = now;
    client.receivedBytes += data.length;
    if (!settings.reconnect) client.receivedHash.update(data);
  });
  socket.on('error', (error) => {
    client.errors.push(error.code || error.message);
    if (RESET_CODES.has(error.code)) client.resets++;
  });
  socket.on('end', () => (client.ended = true));
  socket.on('close', () => {
    client.connected = false;
    // A first connect that failed is retried by connectFirst, not here.
    if (!settings.reconnect || client.port === 0) return;
    client.reconnects++;
    setTimeout(() => open(client).catch(() => undefined), settings.reconnectMs);
  });
  return new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
}

/** The first connect, retried (a listener under load lets SYNs time out or overflows its backlog). */
async function connectFirst(client) {
  for (let attempt = 0; ; attempt++) {
    try {
      await open(client);
      return;
    } catch (error) {
      if (attempt === 20) throw error;
      client.socket.destroy();
      client.errors = [];
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

function newClient() {
  return {
    socket: null,
    port: 0,
    pattern: null,
    sentHash: createHash('sha256'),
    receivedHash: createHash('sha256'),
    receivedBytes: 0,
    lastDataAt: performance.now(),
    maxGapMs: 0,
    maxGapEndAt: 0,
    resets: 0,
    errors: [],
    ended: false,
    connected: false,
    reconnects: 0,
  };
}

/** The longest gap so far, and when it ended (epoch ms: the parent places it among the phases). */
function noteGap(client, now) {
  if (now - client.lastDataAt <= client.maxGapMs) return;
  client.maxGapMs = now - client.lastDataAt;
  client.maxGapEndAt = performance.timeOrigin + now;
}

/** Writes to the connections of this tick's slot. */
function tick(slot, slots) {
  if (!sending) return;
  for (let i = slot; i < clients.length; i += slots) {
    const client = clients[i];
    const s = client.socket;
    if (!client.connected || s.destroyed || client.ended || s.writableLength > 65536) continue;
    const chunk = client.pattern.next(settings.paceBytes);
    if (!settings.reconnect) client.sentHash.update(chunk);
    s.write(chunk);
  }
}

const report = (c) => ({
  port: c.port,
  sent: { bytes: c.pattern ? c.pattern.offset : 0, sha256: c.sentHash.copy().digest('hex') },
  received: { bytes: c.receivedBytes, sha256: c.receivedHash.copy().digest('hex') },
  maxGapMs: c.maxGapMs,
  maxGapEndAt: c.maxGapEndAt,
  resets: c.resets,
  errors: c.errors,
  ended: c.ended,
  reconnects: c.reconnects,
  connected: c.connected,
});

async function handle(msg) {
  switch (msg.cmd) {
    case 'connect': {
      settings = msg;
      for (let start = 0; start < msg.count; start += CONNECT_BURST) {
        const batch = Array.from({ length: Math.min(CONNECT_BURST, msg.count - start) }, newClient);
        await Promise.all(batch.map(connectFirst));
        clients.push(...batch);
      }
      return { ports: clients.map((c) => c.port) };
    }
    case 'start': {
      startPacer(settings.paceMs, tick);
      return {};
    }
    case 'resetGaps': {
      const now = performance.now();
      const gaps = clients.map((c) => Math.max(c.maxGapMs, now - c.lastDataAt));
      for (const c of clients) {
        c.maxGapMs = 0;
        c.lastDataAt = now;
      }
      return { gaps };
    }
    case 'stop': {
      const now = performance.now();
      for (const c of clients) noteGap(c, now);
      timingGaps = false;
      sending = false;
      return {};
    }
    case 'report':
      return { reports: clients.map(report) };
    case 'summary':
      return {
        connected: clients.filter((c) => c.connected).length,
        reconnected: clients.filter((c) => c.reconnects > 0).length,
        sentBytes: clients.reduce((sum, c) => sum + (c.pattern ? c.pattern.offset : 0), 0),
        receivedBytes: clients.reduce((sum, c) => sum + c.receivedBytes, 0),
      };
    default:
      throw new Error(`unknown command ${msg.cmd}`);
  }
}

process.on('message', (msg) => {
  handle(msg).then(
    (body) => process.send({ id: msg.id, ...body }),
    (error) => process.send({ id: msg.id, error: error.message }),
  );
});
process.on('disconnect', () => process.exit(0));
