'use strict';
/**
 * Client-visible pause of the connections route against the number of connections, with the
 * reconnect baseline of the same run:
 *   - connections route: handOverConnections 'repair' from a server on host A to acceptHandover on
 *     host B over mutual TLS, the service address moving A -> B (every byte checked both ways);
 *   - baseline: clients simply reconnect to a restarted server (killed, started again on A); the
 *     pause is from the last byte before the kill to the first byte on the new connection, and
 *     everything in flight (and the server's per-connection state) is lost.
 * Each connection carries 128 B every 20 ms each way (CONNECTIONS_BENCH_PACE_MS to change). The
 * clients run in several processes (CONNECTIONS_BENCH_PER_PROCESS connections each, default 1000).
 * Per row: longest and median client pause (per connection, its longest gap between two arrivals
 * of data during the migration window), the steady-state jitter before (the longest gap of a
 * warm-up window), client retransmission timeouts (TcpExtTCPTimeouts of the client namespace,
 * before/after) and the handover's phases. Prints markdown tables. Needs root and dist/.
 * Usage: CONNECTIONS_BENCH_COUNTS=10,100,1000,10000 node bench/migration-connections-bench.js
 * (or the counts as argv[2]; default 10,100,1000).
 */
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

// NODE_CRIU_BENCH_DIST: another build's dist/ (to compare two versions on the same machine and load).
const dist = process.env.NODE_CRIU_BENCH_DIST || path.join(__dirname, '..', 'dist');
const { DEVICE, DemoLab, HOST_IP, SERVICE_IP } = require(path.join(dist, 'demo', 'lab'));
const { makeDemoPki } = require(path.join(dist, 'demo', 'pki'));
const { verdict } = require(path.join(dist, 'demo', 'traffic'));
const { nsenterArgs } = require(path.join(dist, 'sys', 'netns'));
const { announceAddress } = require(path.join(dist, 'sys', 'address'));

const PACE = { paceBytes: 128, paceMs: Number(process.env.CONNECTIONS_BENCH_PACE_MS || 20) };
const PER_PROCESS = Number(process.env.CONNECTIONS_BENCH_PER_PROCESS || 1000);
const counts = (process.env.CONNECTIONS_BENCH_COUNTS || process.argv[2] || '10,100,1000').split(',').map(Number);
const SERVICE_PORT = 8080;
const CHANNEL_PORT = 9443;
const WARMUP_MS = 1500;
const AFTER_MS = 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (line) => process.stderr.write(`${line}\n`);

/** `node script config` inside a lab namespace, with an IPC channel: request() and events. */
function spawnIn(lab, host, script, config) {
  const child = spawn('nsenter', nsenterArgs(lab.path(host), process.execPath, [script, JSON.stringify(config)]), {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let next = 1;
  const pending = new Map();
  const waiters = [];
  child.on('message', (msg) => {
    if (msg.id !== undefined) {
      const entry = pending.get(msg.id);
      pending.delete(msg.id);
      if (entry && msg.error) entry.reject(new Error(msg.error));
      else if (entry) entry.resolve(msg);
      return;
    }
    for (const w of waiters.filter((x) => x.event === msg.event)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(msg);
    }
    if (child.onEvent) child.onEvent(msg);
  });
  child.request = (body) =>
    new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject });
      child.send({ ...body, id });
    });
  child.next = (event) => new Promise((resolve) => waiters.push({ event, resolve }));
  return child;
}

/** The clients, split over processes in namespace C. */
class ClientFleet {
  constructor(lab, count) {
    this.procs = [];
    this.counts = [];
    for (let left = count; left > 0; left -= PER_PROCESS) {
      this.procs.push(spawnIn(lab, 'c', path.join(__dirname, 'migration-connections-clients.js'), {}));
      this.counts.push(Math.min(PER_PROCESS, left));
    }
  }
  all(body) {
    return Promise.all(this.procs.map((p) => p.request(body)));
  }
  async connect(reconnect) {
    await Promise.all(
      this.procs.map((p, i) =>
        p.request({ cmd: 'connect', host: SERVICE_IP, port: SERVICE_PORT, count: this.counts[i], reconnect, ...PACE }),
      ),
    );
  }
  async resetGaps() {
    return Math.max(...(await this.all({ cmd: 'resetGaps' })).map((r) => r.steadyMaxGapMs));
  }
  async reports() {
    return (await this.all({ cmd: 'report' })).flatMap((r) => r.reports);
  }
  /** TcpExt counters of namespace C (all client processes share it). */
  netstat() {
    const lines = fs.readFileSync(`/proc/${this.procs[0].pid}/net/netstat`, 'utf8').split('\n');
    const header = lines.find((l) => l.startsWith('TcpExt:')).split(/\s+/);
    const values = lines.filter((l) => l.startsWith('TcpExt:'))[1].split(/\s+/);
    const get = (name) => Number(values[header.indexOf(name)]);
    return { timeouts: get('TCPTimeouts'), lossProbes: get('TCPLossProbes') };
  }
}

/**
 * `ip -force -batch -` kept running in one namespace: each command runs without a process start
 * (what an address move costs otherwise is mostly starting `ip` under load). A bad command after
 * each real one marks its end: ip reports it on stderr (unbuffered) once the real one is done.
 */
class IpBatch {
  constructor(lab, host) {
    this.child = spawn('ip', ['-n', lab.name(host), '-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    this.waiting = [];
    let text = '';
    this.child.stderr.on('data', (chunk) => {
      text += chunk;
      for (let end = text.indexOf('\n'); end >= 0; end = text.indexOf('\n')) {
        const line = text.slice(0, end);
        text = text.slice(end + 1);
        const head = this.waiting[0];
        if (!head) continue;
        if (line.includes('ncrbench-marker')) this.waiting.shift().done();
        else head.errors.push(line);
      }
    });
  }
  run(command) {
    return new Promise((resolve, reject) => {
      const errors = [];
      this.waiting.push({ errors, done: () => (errors.length ? reject(new Error(errors.join('; '))) : resolve()) });
      this.child.stdin.write(`${command}\nncrbench-marker\n`);
    });
  }
  close() {
    this.child.stdin.end();
  }
}

/**
 * The handover's moveAddress hook: the service address leaves one host and arrives at the other
 * (announced by gratuitous ARP) at the same time. While both have it, the clients' packets go
 * wherever their neighbour cache says; either way they are dropped (the originals' filters on A,
 * the gap lock on B) until the restore.
 */
async function moveVip(lab, shells, to) {
  const from = to === 'a' ? 'b' : 'a';
  const cidr = `${SERVICE_IP}/32`;
  await Promise.all([
    shells[from].run(`addr del ${cidr} dev ${DEVICE}`).catch(() => undefined),
    shells[to].run(`addr add ${cidr} dev ${DEVICE}`),
  ]);
  await announceAddress({ address: SERVICE_IP, device: DEVICE, netns: lab.path(to), count: 1 });
  lab.vipOn = to;
}

async function inLab(fn) {
  const lab = new DemoLab();
  const cleanup = () => lab.killProcesses().then(() => lab.destroy());
  const onSignal = (signal) => void cleanup().finally(() => process.kill(process.pid, signal));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await lab.setup();
    return await fn(lab);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

const median = (values) => {
  const sorted = Float64Array.from(values).sort();
  return sorted.length === 0 ? 0 : sorted[Math.floor(sorted.length / 2)];
};

async function connectionsRoute(n) {
  return inLab(async (lab) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${lab.id}-`));
    try {
      const pki = await makeDemoPki(path.join(dir, 'pki'), HOST_IP.b);
      const f = pki.files;
      const server = path.join(__dirname, 'migration-connections-server.js');
      const source = spawnIn(lab, 'a', server, { role: 'source', host: SERVICE_IP, port: SERVICE_PORT, ...PACE });
      const target = spawnIn(lab, 'b', server, {
        role: 'target',
        host: HOST_IP.b,
        port: CHANNEL_PORT,
        vip: SERVICE_IP,
        tls: { cert: f.agentCert, key: f.agentKey, ca: f.ca },
        ...PACE,
      });
      await Promise.all([source.next('listening'), target.next('listening')]);
      const fleet = new ClientFleet(lab, n);
      await fleet.connect(false);
      while ((await source.request({ cmd: 'count' })).count < n) await sleep(50);
      await fleet.resetGaps();
      await sleep(WARMUP_MS);
      const steadyMs = await fleet.resetGaps();
      const rstBefore = await lab.resetCounters();
      const netBefore = fleet.netstat();
      const shells = { a: new IpBatch(lab, 'a'), b: new IpBatch(lab, 'b') };
      source.onEvent = (msg) => {
        if (msg.event !== 'moveAddress' && msg.event !== 'moveAddressBack') return;
        moveVip(lab, shells, msg.event === 'moveAddress' ? 'b' : 'a').then(
          () => source.send({ cmd: 'addressMoved' }),
          (error) => source.send({ cmd: 'addressMoved', fail: error.message }),
        );
      };
      const accepted = target.next('accepted');
      const reply = await source.request({
        cmd: 'handover',
        to: { host: HOST_IP.b, port: CHANNEL_PORT, tls: { cert: f.sourceCert, key: f.sourceKey, ca: f.ca } },
      });
      const { result: targetResult, progress: targetProgress } = await accepted;
      log(
        `source progress (ms): ${JSON.stringify(reply.progress)}; target (from its HELLO): ${JSON.stringify(targetProgress)}`,
      );
      Object.values(shells).forEach((shell) => shell.close());
      await sleep(AFTER_MS);
      await fleet.all({ cmd: 'stop' });
      await target.request({ cmd: 'stop' });
      let clients = [];
      let servers = new Map();
      for (let i = 0; i < 100; i++) {
        clients = await fleet.reports();
        servers = new Map((await target.request({ cmd: 'report' })).reports.map((r) => [r.port, r]));
        const settled = clients.every((c) => {
          const s = servers.get(c.port);
          return s && s.receivedBytes === c.sent.bytes && c.received.bytes === s.sentBytes;
        });
        if (settled) break;
        await sleep(100);
      }
      const netAfter = fleet.netstat();
      const rstAfter = await lab.resetCounters();
      const verdicts = clients.map((c) => verdict(c, servers.get(c.port)));
      const gaps = clients.map((c) => c.maxGapMs);
      return {
        n,
        handedOver: reply.result.handedOver,
        accepted: targetResult.accepted,
        exact: verdicts.filter((v) => v.exactClientToServer && v.exactServerToClient).length,
        rsts:
          Object.keys(rstAfter).reduce((sum, k) => sum + rstAfter[k] - rstBefore[k], 0) +
          clients.reduce((sum, c) => sum + c.resets, 0),
        longestMs: Math.max(...gaps),
        medianMs: median(gaps),
        steadyMs,
        rtos: netAfter.timeouts - netBefore.timeouts,
        lossProbes: netAfter.lossProbes - netBefore.lossProbes,
        phases: reply.result.phases,
      };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

async function reconnectBaseline(n) {
  return inLab(async (lab) => {
    const script = path.join(__dirname, 'migration-connections-server.js');
    const config = { role: 'plain', host: SERVICE_IP, port: SERVICE_PORT, ...PACE };
    let server = spawnIn(lab, 'a', script, config);
    await server.next('listening');
    const fleet = new ClientFleet(lab, n);
    await fleet.connect(true);
    await fleet.resetGaps();
    await sleep(WARMUP_MS);
    const steadyMs = await fleet.resetGaps();
    const netBefore = fleet.netstat();
    const started = performance.now();
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGKILL');
    await exited;
    server = spawnIn(lab, 'a', script, config);
    let allBackMs;
    for (let i = 0; i < 1200 && allBackMs === undefined; i++) {
      const summaries = await fleet.all({ cmd: 'summary' });
      if (summaries.every((s, j) => s.connected === fleet.counts[j] && s.reconnected === fleet.counts[j]))
        allBackMs = performance.now() - started;
      else await sleep(20);
    }
    await sleep(500);
    await fleet.all({ cmd: 'stop' });
    const reports = await fleet.reports();
    const gaps = reports.map((r) => r.maxGapMs);
    return {
      n,
      longestMs: Math.max(...gaps),
      medianMs: median(gaps),
      steadyMs,
      allBackMs,
      reconnected: reports.filter((r) => r.connected).length,
      rtos: fleet.netstat().timeouts - netBefore.timeouts,
    };
  });
}

const fmt = (v) => (v === undefined ? '-' : `${v >= 100 ? v.toFixed(0) : v.toFixed(1)}`);

async function main() {
  const rows = [];
  for (const n of counts) {
    log(`== ${n} connections: connections route`);
    const route = await connectionsRoute(n).catch((error) => ({ n, error: error.message }));
    log(`== ${n} connections: reconnect baseline`);
    const baseline = await reconnectBaseline(n).catch((error) => ({ n, error: error.message }));
    rows.push({ n, route, baseline });
    log(JSON.stringify({ route, baseline }));
  }
  const lines = [
    '## Connections route: client-visible pause vs number of connections',
    '',
    `machine: ${os.cpus()[0].model}, ${os.cpus().length} CPUs (shared), load ${os.loadavg()[0].toFixed(1)}, kernel ${os.release()}, node ${process.version}`,
    `date: ${new Date().toISOString()}; each connection carries ${PACE.paceBytes} B every ${PACE.paceMs} ms each way; clients in processes of ${PER_PROCESS} connections`,
    '',
    '| connections | route | longest pause ms | median pause ms | steady-state jitter ms (before) | client RTOs | verified |',
    '| ---: | --- | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const { n, route: r, baseline: b } of rows) {
    if (r.error) lines.push(`| ${n} | connections route | failed: ${r.error} | | | | |`);
    else
      lines.push(
        `| ${n} | connections route (A→B, address moves) | ${fmt(r.longestMs)} | ${fmt(r.medianMs)} | ${fmt(r.steadyMs)} | ${r.rtos} (loss probes ${r.lossProbes}) | ${r.exact === n && r.handedOver === n && r.rsts === 0 ? 'all handed over, every byte both ways, 0 RST' : `handed over ${r.handedOver}, exact ${r.exact}, RST ${r.rsts}`} |`,
      );
    if (b.error) lines.push(`| ${n} | reconnect baseline | failed: ${b.error} | | | | |`);
    else
      lines.push(
        `| ${n} | baseline: reconnect to a restarted server | ${fmt(b.longestMs)} | ${fmt(b.medianMs)} | ${fmt(b.steadyMs)} | ${b.rtos} | ${b.reconnected}/${n} back after ${fmt(b.allBackMs)} ms; in-flight data and state lost |`,
      );
  }
  lines.push('', '| connections | phases of the handover (ms) |', '| ---: | --- |');
  for (const { n, route: r } of rows) {
    if (r.phases)
      lines.push(
        `| ${n} | ${Object.entries(r.phases)
          .map(([k, v]) => `${k} ${fmt(v)}`)
          .join(', ')} |`,
      );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error) => {
  log(`bench failed: ${error.stack || error}`);
  process.exitCode = 1;
});
