'use strict';
/**
 * Server for bench/migration-connections-bench.js, run inside a lab namespace with an IPC channel.
 * argv[2]: JSON {role, host, port, paceBytes, paceMs, tls?}. Every connection sends the pattern of
 * serverSeed(client port) (paceBytes every paceMs) and checks every received byte against
 * clientSeed(client port)'s pattern, keeping only plain numbers (its state moves with it).
 *   role 'source': listens on host:port; {cmd:'handover', to} hands every connection over
 *     (handOverConnections 'repair', the service address moving: asks the parent
 *     {event:'moveAddress'} / {event:'moveAddressBack'}, answered by {cmd:'addressMoved'}).
 *   role 'target': acceptHandover on host:port over mutual TLS; {event:'accepted', result}.
 *   role 'plain': listens and streams, checks nothing (the reconnect baseline; sendAtOnce: the
 *     restarted server, which streams to each connection as it comes back).
 * The source and the plain server send nothing until {cmd:'start'} (the connections are set up
 * first); the target sends from the first restored connection on. One timer per process writes
 * to one slot of the connections per tick (bench/migration-connections-bench-pace.js).
 * Commands (IPC, replies carry `id`): report -> {reports}, count -> {count, sentBytes,
 * receivedBytes}, loopStats -> {loopSamples, loopDelayMaxMs, loopDelayP50Ms, gcMs} (since the last one), start,
 * stop (stop sending).
 */
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { PerformanceObserver, monitorEventLoopDelay } = require('node:perf_hooks');

// NODE_CRIU_BENCH_DIST: another build's dist/ (to compare two versions on the same machine and load).
const dist = process.env.NODE_CRIU_BENCH_DIST || path.join(__dirname, '..', 'dist');
const { PatternStream, clientSeed, serverSeed } = require(path.join(dist, 'demo', 'traffic'));
const { paceSlots, startPacer } = require('./migration-connections-bench-pace');

const config = JSON.parse(process.argv[2]);
const connections = new Map();
const entryOf = new WeakMap();
const { slots } = paceSlots(config.paceMs);
/** The connections each tick writes to (a connection's slot: its order of arrival). */
const slotted = Array.from({ length: slots }, () => new Set());
let adopted = 0;
let sending = config.role === 'target' || config.sendAtOnce === true;
let listener;
let addressWaiter;

const send = (body) => process.connected && process.send(body);

/** How late this event loop ran, and how long garbage collection took, since the last loopStats. */
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();
let gcMs = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcMs += entry.duration;
}).observe({ entryTypes: ['gc'] });
function loopStats() {
  const stats = {
    loopSamples: loopDelay.count,
    loopDelayMaxMs: loopDelay.max / 1e6,
    loopDelayP50Ms: loopDelay.percentile(50) / 1e6,
    gcMs,
  };
  loopDelay.reset();
  gcMs = 0;
  return stats;
}

function adopt(socket, state) {
  const port = state ? state.port : socket.remotePort;
  const entry = {
    socket,
    port,
    send: new PatternStream(serverSeed(port), state && state.send),
    recv: new PatternStream(clientSeed(port), state && state.recv),
    mismatchAt: state ? state.mismatchAt : -1,
    ended: false,
    resets: 0,
    errors: [],
  };
  connections.set(port, entry);
  entryOf.set(socket, entry);
  const slot = slotted[adopted++ % slots];
  slot.add(entry);
  socket.on('data', (data) => {
    if (config.role === 'plain') return;
    const expected = entry.recv.next(data.length);
    if (entry.mismatchAt < 0 && !expected.equals(data)) entry.mismatchAt = entry.recv.offset - data.length;
  });
  socket.on('end', () => (entry.ended = true));
  socket.on('error', (error) => {
    entry.errors.push(error.code || error.message);
    if (['ECONNRESET', 'EPIPE'].includes(error.code)) entry.resets++;
  });
  socket.on('close', () => {
    if (config.role !== 'plain') return;
    connections.delete(port);
    slot.delete(entry);
  });
}

startPacer(config.paceMs, (slot) => {
  if (!sending) return;
  for (const entry of slotted[slot]) {
    const s = entry.socket;
    if (s === null || s.destroyed || s.writableLength > 65536) continue;
    s.write(entry.send.next(config.paceBytes));
  }
});

/** The application's state for one connection; the connection is the handover's from here. */
function detach(socket) {
  const entry = entryOf.get(socket);
  entry.socket.removeAllListeners('data');
  entry.socket = null;
  return Buffer.from(
    JSON.stringify({
      port: entry.port,
      send: entry.send.saved(),
      recv: entry.recv.saved(),
      mismatchAt: entry.mismatchAt,
    }),
  );
}

const restore = (socket, state) => adopt(socket, JSON.parse(state.toString()));

function askParent(event) {
  return new Promise((resolve, reject) => {
    addressWaiter = (fail) => (fail ? reject(new Error(fail)) : resolve());
    send({ event });
  });
}

function tlsOptions(files) {
  return {
    cert: fs.readFileSync(files.cert, 'utf8'),
    key: fs.readFileSync(files.key, 'utf8'),
    ca: fs.readFileSync(files.ca, 'utf8'),
  };
}

async function handOver(to) {
  const { handOverConnections } = require(path.join(dist, 'migration', 'connections'));
  listener.close();
  const sockets = [...connections.values()].map((e) => e.socket).filter((s) => s && !s.destroyed);
  const progress = [];
  const started = performance.now();
  const result = await handOverConnections(sockets, {
    to: { host: to.host, port: to.port, tls: tlsOptions(to.tls) },
    method: 'repair',
    serializeState: detach,
    onResumed: restore,
    moveAddress: () => askParent('moveAddress'),
    moveAddressBack: () => askParent('moveAddressBack'),
    onProgress: (e) => void progress.push([e.phase, Math.round(performance.now() - started)]),
  });
  return { result, progress };
}

async function accept() {
  const { acceptHandover } = require(path.join(dist, 'migration', 'connections'));
  const progress = [];
  let started;
  const result = await acceptHandover({
    onProgress: (e) => {
      started ??= performance.now();
      progress.push([e.phase, Math.round(performance.now() - started)]);
    },
    from: { listen: { host: config.host, port: config.port }, tls: tlsOptions(config.tls) },
    allow: { addresses: [config.vip] },
    maxConnections: 100000,
    onListening: () => send({ event: 'listening' }),
    onConnection: restore,
    timeoutMs: 600000,
  });
  send({ event: 'accepted', result, progress });
}

function report() {
  return [...connections.values()].map((e) => ({
    port: e.port,
    sentBytes: e.send.offset,
    receivedBytes: e.recv.offset,
    mismatchAt: e.mismatchAt,
    ended: e.ended,
    resets: e.resets,
    errors: e.errors,
  }));
}

function totals() {
  let sentBytes = 0;
  let receivedBytes = 0;
  for (const e of connections.values()) {
    sentBytes += e.send.offset;
    receivedBytes += e.recv.offset;
  }
  return { sentBytes, receivedBytes };
}

process.on('message', async (msg) => {
  try {
    if (msg.cmd === 'addressMoved') return addressWaiter && addressWaiter(msg.fail);
    if (msg.cmd === 'handover') return send({ id: msg.id, ...(await handOver(msg.to)) });
    if (msg.cmd === 'report') return send({ id: msg.id, reports: report() });
    if (msg.cmd === 'count') return send({ id: msg.id, count: connections.size, ...totals() });
    if (msg.cmd === 'loopStats') return send({ id: msg.id, ...loopStats() });
    if (msg.cmd === 'start') {
      sending = true;
      return send({ id: msg.id });
    }
    if (msg.cmd === 'stop') {
      sending = false;
      return send({ id: msg.id });
    }
    throw new Error(`unknown command ${msg.cmd}`);
  } catch (error) {
    send({ id: msg.id, error: `${error.code || ''} ${error.message}` });
  }
});
process.on('disconnect', () => process.exit(0));

if (config.role === 'target') {
  accept().catch((error) => send({ event: 'acceptFailed', error: `${error.code || ''} ${error.message}` }));
} else {
  listener = net.createServer({ noDelay: true }, (socket) => adopt(socket));
  listener.maxConnections = 100000;
  listener.listen({ host: config.host, port: config.port, backlog: config.backlog }, () =>
    send({ event: 'listening' }),
  );
}
