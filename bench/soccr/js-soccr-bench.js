'use strict';
/**
 * libsoccr from JS: checkpoint + restore cost of one connection (the sequence of bench/c: pause,
 * save, queues, addresses, release, close in repair mode, new socket, pause, restore, resume),
 * through node-criu's public low-level API and through the raw addon, for the same receive-queue
 * sizes as bench/c; then a batch of 10,000 connections checkpointed and restored with
 * checkpointConnections / restoreConnections (nftables lock, one batch each), the peers living
 * in a child process (fd limit). Prints markdown tables. Needs root and `npm run build`.
 *
 * The C reference is bench/c's libsoccr sequence (bench/c/soccr_sequence.h) in two forms, both
 * built by `make -C bench/c`: as a Node-API module (bench/c/inproc) that this process loads and
 * runs as one more layer on the same connection, interleaved with the JS layers of each round
 * (the reference of the "vs C" column: same process, connection, CPU and moment), and as the
 * standalone bench/c program before each size's JS rows (a separate process on its own
 * connection, which varies by up to ~35% between runs here). The table shows medians over the
 * rounds and, per layer, the median and range of the per-round ratios to the in-process C. A
 * second table times the same layers interleaved per iteration (every layer once per iteration),
 * which keeps load drift out of the ratios but mixes the layers' cache footprints.
 *
 * Usage: node bench/soccr/js-soccr-bench.js [iterations=3000] [batch=10000, 0: none] [rounds=3]
 * (iterations 0: only the batch table, with `rounds` rows per lock, the locks alternating)
 * (scripts/bench.sh: 7 rounds, SOCCR_BENCH_ROUNDS)
 * (scripts/bench.sh runs it in a private network namespace: `unshare -n`, loopback only.)
 */
const { execFileSync, fork } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const nodeCriu = require(path.join(root, 'dist'));
const { binding } = require(path.join(root, 'dist', 'native.js'));

const iterations = Number(process.argv[2] || 3000);
const batchSize = Number(process.argv[3] || 10000);
const rounds = Number(process.argv[4] || 3);
const cBench = path.join(root, 'bench', 'c', 'build', 'soccr_bench');
/** bench/c's sequence as a Node-API module (bench/c/inproc): the same C, timed in C, on our connection. */
const cInproc = path.join(root, 'bench', 'c', 'build', 'soccr_inproc.node');
/** One table for the whole run: the C and the JS connections meet the same nftables ruleset. */
let runLock;
/** The in-process C module, when built (`make -C bench/c`). */
let inproc;

function fromNative(sa) {
  return { family: sa.family, address: sa.family === 4 ? Array.from(sa.address).join('.') : '::1', port: sa.port };
}

function percentile(values, p) {
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

function nowUs() {
  return Number(process.hrtime.bigint()) / 1e3;
}

/** A blocking-style pair: the client as a net.Socket, the server side as a raw fd nobody reads. */
async function rawPair() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  const ops = binding().socketOps;
  const accepted = new Promise((resolve) => server.once('connection', resolve));
  const fd = ops.tcpSocket(4);
  ops.connect(fd, { family: 4, address: new Uint8Array([127, 0, 0, 1]), port });
  const client = await accepted; // the peer
  for (let i = 0; i < 1000 && ops.socketInfo(fd).tcpState !== 1; i++) await new Promise((r) => setTimeout(r, 1));
  server.close();
  return { client, fd };
}

function publicApiCycle(fd) {
  const t0 = nowUs();
  const handle = nodeCriu.soccr.pause(fd);
  const data = handle.getSkData();
  const recv = handle.getQueueBytes('recv');
  const send = handle.getQueueBytes('send');
  const local = handle.getLocalAddress();
  const remote = handle.getRemoteAddress();
  handle.release();
  const t1 = nowUs();
  nodeCriu.soccr.closeFd(fd);
  const t2 = nowUs();
  const { fd: newFd, handle: target } = nodeCriu.soccr.pauseNewSocket(local.family);
  target.restore(data, local, remote, recv, send);
  target.resume();
  const t3 = nowUs();
  return { fd: newFd, dump: t1 - t0, restore: t3 - t2 };
}

/** The public one-call forms: soccr.dumpFd (pause .. release) and soccr.restoreFd (socket .. resume). */
function publicOneCallCycle(fd) {
  const t0 = nowUs();
  const dump = nodeCriu.soccr.dumpFd(fd);
  const t1 = nowUs();
  nodeCriu.soccr.closeFd(fd);
  const t2 = nowUs();
  const newFd = nodeCriu.soccr.restoreFd(dump);
  const t3 = nowUs();
  return { fd: newFd, dump: t1 - t0, restore: t3 - t2 };
}

const transferOptions = { transfer: true };

/**
 * The same with restoreFd's `transfer`: the restore takes over the queue buffers and frees them
 * (as bench/c's restore frees its SOCCR_MEM_EXCL buffers), so the next dump gets warm memory.
 */
function publicOneCallTransferCycle(fd) {
  const t0 = nowUs();
  const dump = nodeCriu.soccr.dumpFd(fd);
  const t1 = nowUs();
  nodeCriu.soccr.closeFd(fd);
  const t2 = nowUs();
  const newFd = nodeCriu.soccr.restoreFd(dump, transferOptions);
  const t3 = nowUs();
  return { fd: newFd, dump: t1 - t0, restore: t3 - t2 };
}

const packed = new Uint32Array(33);
const empty = Buffer.alloc(0);

function rawBindingCycle(fd) {
  const b = binding();
  const t0 = nowUs();
  const queues = b.soccrDump(fd, packed); // pause, save, addresses, queues, release
  let recv = empty;
  let send = empty;
  if (Array.isArray(queues)) {
    recv = Buffer.from(queues[0]);
    send = Buffer.from(queues[1]);
  } else if (queues !== undefined) {
    if (packed[1] !== 0) recv = Buffer.from(queues);
    else send = Buffer.from(queues);
  }
  const t1 = nowUs();
  b.socketOps.closeFd(fd);
  const t2 = nowUs();
  const newFd = b.soccrRestore(-1, packed, recv, send); // socket, pause, restore, resume
  const t3 = nowUs();
  return { fd: newFd, dump: t1 - t0, restore: t3 - t2 };
}

async function singleRow(queueBytes, round) {
  const { client, fd: firstFd } = await rawPair();
  const payload = Buffer.alloc(queueBytes, 7);
  for (let i = 0; i < queueBytes; i++) payload[i] = (i * 31 + 7) & 0xff;
  if (queueBytes) {
    client.write(payload);
    for (let i = 0; i < 5000; i++) {
      const h = new (binding().SoccrHandle)(firstFd);
      const inq = h.save()[1];
      h.resume();
      if (inq === queueBytes) break;
      await new Promise((r) => setTimeout(r, 1));
      if (i === 4999) throw new Error('queue did not fill');
    }
  }
  // The peer's stray packets (ACKs of window probes) must not meet the closed original between
  // dump and restore (that would reset the connection): the nftables lock holds them, outside
  // the timed sequence, as a real checkpoint would.
  const lock = runLock;
  const ops = binding().socketOps;
  const tuple = { local: fromNative(ops.sockName(firstFd)), remote: fromNative(ops.peerName(firstFd)) };
  await lock.add([tuple]);
  // Each layer runs its own loop after a warm-up of every layer (which also grows the heap for
  // the 64 KiB queues, so the first loop does not pay for it); the loops' order rotates with the
  // round, so drift in machine load does not always favour the same layer.
  let fd = firstFd;
  // The JS layers by name, each with its cycle; per method, [cycle, dumps, restores] per layer.
  const jsLayers = [
    ['raw', rawBindingCycle],
    ['one', publicOneCallCycle],
    ['oneT', publicOneCallTransferCycle],
    ['api', publicApiCycle],
  ];
  const newTimes = () =>
    Object.fromEntries(['c', ...jsLayers.map(([name]) => name)].map((name) => [name, { dumps: [], restores: [] }]));
  const layersOf = (t, cCycle) => [
    ...jsLayers.map(([name, cycle]) => [cycle, t[name].dumps, t[name].restores]),
    ...(inproc ? [[cCycle, t.c.dumps, t.c.restores]] : []),
  ];
  const times = newTimes();
  const layers = layersOf(times, null);
  // The C layer runs its whole loop in C (timed there, like bench/c); 100 warm-up iterations.
  const cTimes = new Float64Array(2 * (iterations + 100));
  const runC = (n) => {
    fd = inproc.cycles(fd, n, cTimes);
  };
  for (const [cycle] of layers) {
    if (cycle) for (let i = 0; i < 300; i++) fd = cycle(fd).fd;
    else runC(300);
  }
  for (let k = 0; k < layers.length; k++) {
    const [cycle, dumps, restores] = layers[(round + k) % layers.length];
    if (!cycle) {
      runC(iterations + 100);
      for (let i = 100; i < iterations + 100; i++) {
        dumps.push(cTimes[2 * i]);
        restores.push(cTimes[2 * i + 1]);
      }
      continue;
    }
    for (let i = -100; i < iterations; i++) {
      const r = cycle(fd);
      fd = r.fd;
      if (i >= 0) {
        dumps.push(r.dump);
        restores.push(r.restore);
      }
    }
  }
  // Then the same layers interleaved per iteration (each iteration runs every layer once):
  // drift in machine load then hits all layers alike, but each layer finds the caches as the
  // others left them (bench/c reuses one warm queue buffer; transfer frees its own).
  const mixed = newTimes();
  const cOne = new Float64Array(2);
  const mixedLayers = layersOf(mixed, (f) => {
    const next = inproc.cycles(f, 1, cOne);
    return { fd: next, dump: cOne[0], restore: cOne[1] };
  });
  // A new random order every iteration (seeded: runs are repeatable), so that every layer
  // follows every other equally often: what ran just before (the step-by-step layer's copies,
  // a 64 KiB buffer left for the GC) changes the next one's time.
  let seed = 0x9e3779b9 ^ (round + 1);
  const order = mixedLayers.map((_, k) => k);
  for (let i = -100; i < iterations; i++) {
    for (let k = order.length - 1; k > 0; k--) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      const j = seed % (k + 1);
      [order[k], order[j]] = [order[j], order[k]];
    }
    for (let k = 0; k < mixedLayers.length; k++) {
      const [cycle, dumps, restores] = mixedLayers[order[k]];
      const r = cycle(fd);
      fd = r.fd;
      if (i >= 0) {
        dumps.push(r.dump);
        restores.push(r.restore);
      }
    }
  }
  await lock.remove([tuple]);
  // Verify: the queue survived every move byte for byte, and traffic flows both ways.
  const socket = nodeCriu.soccr.adoptSocket(fd);
  const expected = Buffer.concat([payload, Buffer.from('ping')]);
  const got = [];
  let have = 0;
  await new Promise((resolve, reject) => {
    socket.on('data', (d) => {
      got.push(d);
      have += d.length;
      if (have >= expected.length) resolve();
    });
    socket.on('error', reject);
    client.write('ping');
  });
  if (!Buffer.concat(got).equals(expected)) throw new Error('queue corrupted');
  const pong = new Promise((resolve) => client.once('data', (d) => resolve(d.toString())));
  socket.write('pong');
  if ((await pong) !== 'pong') throw new Error('no traffic after the moves');
  socket.destroy();
  client.destroy();
  const stats = (d, r) => ({
    dump: percentile(d, 0.5),
    dump99: percentile(d, 0.99),
    restore: percentile(r, 0.5),
    restore99: percentile(r, 0.99),
  });
  const layerStats = (t) => ({
    cIn: inproc ? stats(t.c.dumps, t.c.restores) : undefined,
    ...Object.fromEntries(jsLayers.map(([name]) => [name, stats(t[name].dumps, t[name].restores)])),
  });
  return { loops: layerStats(times), mixed: layerStats(mixed) };
}

/** bench/c's libsoccr p50s for the given queue sizes: { [bytes]: { dump, restore, dump99, restore99 } }. */
function runCBench(sizes) {
  const out = execFileSync(cBench, [String(iterations), ...sizes.map(String)], { encoding: 'utf8' });
  const rows = {};
  for (const line of out.split('\n')) {
    const m = /^\| (\d+) \| ([\d.]+) \/ ([\d.]+) \| [^|]+\| [^|]+\| ([\d.]+) \/ ([\d.]+) \|/.exec(line);
    if (m) rows[m[1]] = { dump: Number(m[2]), dump99: Number(m[3]), restore: Number(m[4]), restore99: Number(m[5]) };
  }
  return rows;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function request(child, msg) {
  return new Promise((resolve, reject) => {
    const id = Math.random();
    const onMessage = (reply) => {
      if (reply.id !== id) return;
      child.off('message', onMessage);
      if (reply.error) reject(new Error(reply.error));
      else resolve(reply);
    };
    child.on('message', onMessage);
    child.send({ ...msg, id });
  });
}

async function batch(count, lockKind) {
  const peer = fork(path.join(root, 'test', 'fixtures', 'soccr-peer.js'), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const server = net.createServer();
  const accepted = new Map();
  server.on('connection', (s) => accepted.set(s.remotePort, s));
  await new Promise((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, resolve));
  const { ports } = await request(peer, {
    cmd: 'connect',
    host: '127.0.0.1',
    port: server.address().port,
    count,
    seedBase: 1,
    total: 0,
  });
  while (accepted.size < count) await new Promise((r) => setTimeout(r, 10));
  const sockets = ports.map((p) => accepted.get(p));
  const lock = lockKind === 'nftables' ? await nodeCriu.NftablesLock.create() : lockKind;
  try {
    const cpu0 = process.cpuUsage();
    const t0 = nowUs();
    const images = await nodeCriu.checkpointConnections(sockets, { lock });
    const t1 = nowUs();
    const cpu1 = process.cpuUsage();
    const restored = await nodeCriu.restoreConnections(images);
    const t2 = nowUs();
    const cpu2 = process.cpuUsage();
    const cpuMs = (a, b) => (b.user + b.system - a.user - a.system) / 1e3;
    // Every restored connection carries 100 bytes each way.
    await request(peer, { cmd: 'sendMore', bytes: 100 });
    let received = 0;
    await new Promise((resolve) => {
      for (const s of restored) {
        s.on('data', (d) => {
          received += d.length;
          if (received === 100 * count) resolve();
        });
        s.write(Buffer.alloc(100, 1));
      }
    });
    const { reports } = await request(peer, { cmd: 'wait', receivedEach: 100, timeoutMs: 60000 });
    const bad = reports.filter((r) => r.received.bytes !== 100 || r.resets !== 0).length;
    if (bad) throw new Error(`${bad} restored connections failed`);
    console.log(
      `| ${count} | ${lockKind} | ${((t1 - t0) / 1e3).toFixed(0)} | ${((t2 - t1) / 1e3).toFixed(0)} | ${((t2 - t0) / 1e3).toFixed(0)} | ${((t2 - t0) / count).toFixed(1)} | ${cpuMs(cpu0, cpu1).toFixed(0)} + ${cpuMs(cpu1, cpu2).toFixed(0)} | ${os.loadavg()[0].toFixed(1)} |`,
    );
    restored.forEach((s) => s.destroy());
  } finally {
    if (typeof lock !== 'string') await lock.destroy();
    peer.kill('SIGKILL');
    server.close();
  }
}

/** One markdown table: per size and layer, medians over the rounds and the per-round ratios to the C. */
function printTable(results, sizes, haveC) {
  const med = (layer, q, field) => median(results[layer].filter((r) => r.q === q).map((r) => r[field]));
  // The reference: bench/c's C in this process, on this connection, interleaved with the JS rows
  // of each round (else, without the module, the separate bench/c process). Ratios are taken per
  // round (both sides met the same conditions) and their median over the rounds is shown.
  const ref = results.cIn.length > 0 ? 'cIn' : haveC ? 'c' : undefined;
  const perRound = (layer, q) => {
    const mine = results[layer].filter((r) => r.q === q);
    const base = ref ? results[ref].filter((r) => r.q === q) : [];
    return mine
      .map((r, i) => (base[i] ? (r.dump + r.restore) / (base[i].dump + base[i].restore) : NaN))
      .filter((x) => !Number.isNaN(x));
  };
  console.log(
    `| recv queue bytes | layer | dump p50 (p99) µs | restore p50 (p99) µs | dump + restore p50 µs | vs C: median of the ${rounds} rounds' ratios (min-max) |`,
  );
  console.log('|---:|---|---:|---:|---:|---:|');
  for (const q of sizes) {
    for (const [layer, name] of [
      ['cIn', 'C libsoccr, same process and connection (bench/c/inproc)'],
      ['c', 'C libsoccr, separate process (bench/c)'],
      ['raw', 'raw addon'],
      ['one', 'public one-call (dumpFd/restoreFd)'],
      ['oneT', 'public one-call, restoreFd transfer'],
      ['api', 'public step by step (pause/SoccrHandle)'],
    ]) {
      if (results[layer].filter((r) => r.q === q).length === 0) continue;
      const total = med(layer, q, 'dump') + med(layer, q, 'restore');
      const ratios = perRound(layer, q);
      const ratio =
        ratios.length > 0
          ? `${median(ratios).toFixed(2)}x (${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)})`
          : 'n/a';
      console.log(
        `| ${q} | ${name} | ${med(layer, q, 'dump').toFixed(1)} (${med(layer, q, 'dump99').toFixed(1)}) | ${med(layer, q, 'restore').toFixed(1)} (${med(layer, q, 'restore99').toFixed(1)}) | ${total.toFixed(1)} | ${ratio} |`,
      );
    }
  }
}

/** The single-connection tables (bench/c's sequence through every layer). */
async function singleConnectionTables(date) {
  console.log('### libsoccr from JS: checkpoint and restore of one established TCP connection\n');
  console.log(
    `Machine: ${os.arch()} ${os.release()}, ${os.cpus().length} CPUs; node ${process.version}; ${date} UTC; load ${os.loadavg()[0].toFixed(2)}; loopback; ${iterations} iterations per row and layer; ${rounds} rounds, each per queue size: the standalone bench/c (libsoccr, C; separate process) for that size, then on one connection in this process bench/c's C sequence (bench/c/inproc, timed in C), the raw addon (one-call soccrDump/soccrRestore), the public one-call soccr.dumpFd/restoreFd (default, and with restoreFd's 'transfer' option, which frees the queue buffers at once as bench/c's restore frees its SOCCR_MEM_EXCL buffers) and the public step-by-step API (soccr.pause, SoccrHandle) in separate loops (order rotating by round, after a warm-up of all); the connection's 4-tuple is held by an nftables lock throughout (outside the timed calls; the C runs meet the same ruleset). Medians over the rounds of each round's p50 (p99); "vs C": each round's dump + restore p50 over the in-process C's of the same round, median (min-max) over the rounds.\n`,
  );
  runLock = await nodeCriu.NftablesLock.create();
  const sizes = [0, 4096, 65536];
  const emptyResults = () => ({ c: [], cIn: [], raw: [], one: [], oneT: [], api: [] });
  const results = { loops: emptyResults(), mixed: emptyResults() };
  const haveC = fs.existsSync(cBench);
  if (fs.existsSync(cInproc)) inproc = require(cInproc);
  try {
    for (let round = 0; round < rounds; round++) {
      // Per size: bench/c, then the JS layers, so both meet the same machine load.
      const c = {};
      const js = {};
      for (const q of sizes) {
        if (haveC) Object.assign(c, runCBench([q]));
        js[q] = await singleRow(q, round);
      }
      for (const q of sizes) {
        if (c[q]) results.loops.c.push({ q, ...c[q] });
        for (const method of ['loops', 'mixed']) {
          const row = js[q][method];
          if (row.cIn) results[method].cIn.push({ q, ...row.cIn });
          for (const layer of ['raw', 'one', 'oneT', 'api']) results[method][layer].push({ q, ...row[layer] });
        }
      }
    }
  } finally {
    await runLock.destroy();
  }
  printTable(results.loops, sizes, haveC);
  console.log(
    `\nThe same layers on the same connections right after each round's loops, interleaved per iteration: each of ${iterations} iterations (after 100 for warm-up) runs every layer once, in a new random order (seeded) each time. Machine drift then meets every layer alike, but each layer finds the CPU caches as the others left them (in the loops above, bench/c's restore frees the buffer its next dump reuses, still warm; so does 'transfer').\n`,
  );
  printTable(results.mixed, sizes, haveC);
  if (!haveC || !inproc) console.log('\n(bench/c/build not fully built: `make -C bench/c` for the C rows.)');
  console.log(
    '\nDump = pause + save + both queues + both addresses + release (public API: plus argument validation and the result object; step by step also a TCP state check and a dup of the fd per handle); restore = socket + pause + restore + resume (public API: plus validation of everything it is given; transfer: plus freeing the queue buffers). Same sequence as bench/c (which times the same spans); close in repair mode not timed.\n',
  );
}

(async () => {
  const date = new Date().toISOString().slice(0, 16).replace('T', ' ');
  if (iterations > 0) await singleConnectionTables(date);
  if (batchSize > 0) {
    console.log(`### libsoccr from JS: ${batchSize} connections at once\n`);
    console.log(
      '| connections | lock | checkpointConnections ms | restoreConnections ms | total ms | µs per connection | process CPU ms (checkpoint + restore, all threads) | load |',
    );
    console.log('|---:|---|---:|---:|---:|---:|---:|---:|');
    for (let round = 0; round < (iterations === 0 ? rounds : 1); round++) {
      await batch(batchSize, 'nftables');
      await batch(batchSize, 'filter');
    }
    console.log(
      '\ncheckpointConnections: validation, lock (nftables: one nf_tables transaction over netlink; filter: a drop filter per socket, which leaves the close-to-restore gap uncovered and is only safe here because the peers are idle), pause + save + queues per socket, silent close; restoreConnections: new socket + restore per image, one netlink transaction to unlock (nftables), resume, new net.Socket. Peers in a child process; every restored connection then carried 100 bytes each way.',
    );
  }
  process.exit(0);
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
