'use strict';
/**
 * Client-visible pause of the connections route against the number of connections, with the
 * reconnect baseline of the same run:
 *   - connections route: handOverConnections 'repair' from a server on host A to acceptHandover on
 *     host B over mutual TLS, the service address moving A -> B (every byte checked both ways);
 *   - baseline: clients simply reconnect to a restarted server (killed, started again on A); the
 *     pause is from the last byte before the kill to the first byte on the new connection, and
 *     everything in flight (and the server's per-connection state) is lost.
 * The connections are set up first (each client process opens at most 128 at a time; the server
 * namespace's SYN backlog is raised), then traffic starts everywhere: each connection carries
 * 128 B each way every "pace" ms: 20 ms up to 1,000 connections; above, long enough that the total
 * stays at CONNECTIONS_BENCH_MESSAGES_PER_S (default 20,000/s each way: 10,000 connections at
 * 500 ms), a load the machine keeps up with; CONNECTIONS_BENCH_PACE_MS fixes it for every row. Every process has one timer that
 * writes to a slot of its connections per tick, so the writes spread over the interval. The clients
 * run in processes of CONNECTIONS_BENCH_PER_PROCESS connections (default 5000: fewer processes leave
 * the server more of the CPUs).
 * Per row: longest and median client pause (per connection, its longest gap between two arrivals
 * of data during the migration window; it includes up to one pace), the steady-state gaps of a
 * warm-up window before (longest and median over the connections) with the messages per second
 * that arrived of those the pace asks for (fewer: the load is more than the machine keeps up
 * with) and the server's CPU share meanwhile, client retransmission timeouts
 * (TcpExtTCPTimeouts of the client namespace, before/after), the handover's phases, and how long
 * each stage of the row took. Prints markdown tables. Needs root and dist/.
 * Usage: CONNECTIONS_BENCH_COUNTS=10,100,1000,10000 node bench/migration-connections-bench.js
 * (or the counts as argv[2]; default 10,100,1000,10000). CONNECTIONS_BENCH_ROUTES=route or baseline runs
 * one of the two; CONNECTIONS_BENCH_RECONNECT_MS: the baseline clients' retry delay (default 5).
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

// NODE_CRIU_BENCH_DIST: another build's dist/ (to compare two versions on the same machine and load).
const dist = process.env.NODE_CRIU_BENCH_DIST || path.join(__dirname, '..', 'dist');
const { HOST_IP, SERVICE_IP } = require(path.join(dist, 'demo', 'lab'));
const { makeDemoPki } = require(path.join(dist, 'demo', 'pki'));
const { verdict } = require(path.join(dist, 'demo', 'traffic'));
const { BACKLOG, ClientFleet, IpBatch, inLab, moveVip, spawnIn } = require('./migration-connections-bench-lab');
const { paceMsFor } = require('./migration-connections-bench-pace');

const PACE_BYTES = 128;
const PACE_OVERRIDE = Number(process.env.CONNECTIONS_BENCH_PACE_MS || 0);
/** How soon a baseline client tries again after its connection closed or was refused. */
const RECONNECT_MS = Number(process.env.CONNECTIONS_BENCH_RECONNECT_MS || 5);
const MESSAGES_PER_S = Number(process.env.CONNECTIONS_BENCH_MESSAGES_PER_S || 20000);
const PER_PROCESS = Number(process.env.CONNECTIONS_BENCH_PER_PROCESS || 5000);
const counts = (process.env.CONNECTIONS_BENCH_COUNTS || process.argv[2] || '10,100,1000,10000').split(',').map(Number);
const ROUTES = (process.env.CONNECTIONS_BENCH_ROUTES || 'route,baseline').split(',');
const SERVICE_PORT = 8080;
const CHANNEL_PORT = 9443;
/** The warm-up (steady-state jitter) and the time after the move: at least this many intervals. */
const WARMUP_MS = 1500;
const AFTER_MS = 1000;
const WINDOW_PACES = 8;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (line) => process.stderr.write(`${line}\n`);
/** Times the stages of a row (seconds, also logged to stderr): where a large count spends its time. */
function stages(label) {
  const took = {};
  let last = performance.now();
  const stage = (name) => {
    const now = performance.now();
    took[name] = (now - last) / 1000;
    log(`  [${label}] ${name}: ${took[name].toFixed(1)} s (load ${os.loadavg()[0].toFixed(1)})`);
    last = now;
  };
  stage.took = took;
  return stage;
}

const pct = (share) => `${Math.round(share * 100)}%`;
const msgs = (load) => `${Math.round(load.arrivedPerS)} of ${Math.round(load.askedPerS)}`;
const fmt = (v) => (v === undefined ? '-' : `${v >= 100 ? v.toFixed(0) : v.toFixed(1)}`);
const median = (values) => {
  const sorted = Float64Array.from(values).sort();
  return sorted.length === 0 ? 0 : sorted[Math.floor(sorted.length / 2)];
};

function rowSettings(n) {
  const paceMs = paceMsFor(n, { override: PACE_OVERRIDE, messagesPerS: MESSAGES_PER_S });
  return {
    paceMs,
    pace: { paceBytes: PACE_BYTES, paceMs, reconnectMs: RECONNECT_MS },
    warmupMs: Math.max(WARMUP_MS, WINDOW_PACES * paceMs),
    afterMs: Math.max(AFTER_MS, WINDOW_PACES * paceMs),
  };
}

/** CPU seconds (user + system) a process used so far. */
const USER_HZ = 100;
function cpuSeconds(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
}

/**
 * Connects the fleet (no traffic yet), starts traffic everywhere, lets it settle, and returns the
 * warm-up's longest gap and the share of a CPU the server used meanwhile (1 = a whole CPU: the
 * load is more than it can keep up with).
 */
async function connectAndWarmUp(fleet, servers, { warmupMs, pace }, stage, reconnect) {
  await fleet.connect(reconnect);
  // A client is connected once the listener's kernel answered; the server accepts it later.
  const n = fleet.counts.reduce((a, b) => a + b, 0);
  for (let i = 0; (await servers[0].request({ cmd: 'count' })).count < n; i++) {
    if (i === 1200)
      throw new Error(`the server accepted ${(await servers[0].request({ cmd: 'count' })).count} of ${n}`);
    await sleep(50);
  }
  stage('connect');
  await Promise.all([...servers.map((s) => s.request({ cmd: 'start' })), fleet.all({ cmd: 'start' })]);
  await sleep(Math.max(500, 2 * pace.paceMs));
  await fleet.resetGaps();
  await servers[0].request({ cmd: 'loopStats' });
  const cpuBefore = cpuSeconds(servers[0].pid);
  const bytesBefore = await fleet.totals();
  const serverBefore = await servers[0].request({ cmd: 'count' });
  const startedAt = performance.now();
  await sleep(warmupMs);
  const steadyGaps = await fleet.resetGaps();
  const seconds = (performance.now() - startedAt) / 1000;
  const serverCpu = (cpuSeconds(servers[0].pid) - cpuBefore) / seconds;
  // Messages per second each way that arrived, against what the pace asks for.
  const arrived = (await fleet.totals()).receivedBytes - bytesBefore.receivedBytes;
  const serverSent = (await servers[0].request({ cmd: 'count' })).sentBytes - serverBefore.sentBytes;
  const load = { arrivedPerS: arrived / pace.paceBytes / seconds, askedPerS: (n * 1000) / pace.paceMs };
  const loop = await servers[0].request({ cmd: 'loopStats' });
  const late = loop.loopSamples
    ? `event loop late by ${fmt(loop.loopDelayP50Ms)} ms (median), ${fmt(loop.loopDelayMaxMs)} ms (most)`
    : 'no event-loop sample';
  log(
    `  server during the warm-up: CPU ${pct(serverCpu)}, ${late}, garbage collection ${fmt(loop.gcMs)} ms; ${Math.round(load.arrivedPerS)} of ${Math.round(load.askedPerS)} messages/s arrived (the server sent ${Math.round(serverSent / pace.paceBytes / seconds)}/s)`,
  );
  stage('warm-up');
  return { steadyMs: Math.max(...steadyGaps), steadyMedianMs: median(steadyGaps), serverCpu, load };
}

/** Waits until every byte either side sent has arrived (totals), then gets the reports once. */
async function settledReports(fleet, target) {
  for (let i = 0; i < 100; i++) {
    const [c, s] = await Promise.all([fleet.totals(), target.request({ cmd: 'count' })]);
    if (c.sentBytes === s.receivedBytes && c.receivedBytes === s.sentBytes) break;
    await sleep(100);
  }
  const [clients, servers] = await Promise.all([fleet.reports(), target.request({ cmd: 'report' })]);
  return { clients, servers: new Map(servers.reports.map((r) => [r.port, r])) };
}

async function connectionsRoute(n) {
  return inLab(async (lab) => {
    const stage = stages(`${n} route`);
    const settings = rowSettings(n);
    const { pace } = settings;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${lab.id}-`));
    try {
      const pki = await makeDemoPki(path.join(dir, 'pki'), HOST_IP.b);
      const f = pki.files;
      const server = path.join(__dirname, 'migration-connections-server.js');
      const listen = { host: SERVICE_IP, port: SERVICE_PORT, backlog: BACKLOG };
      const source = spawnIn(lab, 'a', server, { role: 'source', ...listen, ...pace });
      const target = spawnIn(lab, 'b', server, {
        role: 'target',
        host: HOST_IP.b,
        port: CHANNEL_PORT,
        vip: SERVICE_IP,
        tls: { cert: f.agentCert, key: f.agentKey, ca: f.ca },
        ...pace,
      });
      await Promise.all([source.next('listening'), target.next('listening')]);
      stage('lab, pki, servers listening');
      const fleet = new ClientFleet(lab, n, { perProcess: PER_PROCESS, pace, port: SERVICE_PORT });
      const { steadyMs, steadyMedianMs, serverCpu, load } = await connectAndWarmUp(
        fleet,
        [source],
        settings,
        stage,
        false,
      );
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
      const handoverAt = performance.timeOrigin + performance.now();
      const reply = await source.request({
        cmd: 'handover',
        to: { host: HOST_IP.b, port: CHANNEL_PORT, tls: { cert: f.sourceCert, key: f.sourceKey, ca: f.ca } },
      });
      const { result: targetResult, progress: targetProgress } = await accepted;
      log(
        `source progress (ms): ${JSON.stringify(reply.progress)}; target (from its HELLO): ${JSON.stringify(targetProgress)}`,
      );
      Object.values(shells).forEach((shell) => shell.close());
      stage('handover');
      await sleep(settings.afterMs);
      await fleet.all({ cmd: 'stop' });
      await target.request({ cmd: 'stop' });
      const { clients, servers } = await settledReports(fleet, target);
      stage('after, stop, reports');
      const netAfter = fleet.netstat();
      const rstAfter = await lab.resetCounters();
      const verdicts = clients.map((c) => verdict(c, servers.get(c.port)));
      stage('verify');
      const gaps = clients.map((c) => c.maxGapMs);
      const ends = clients.map((c) => c.maxGapEndAt - handoverAt);
      log(
        `  longest gaps: start ${fmt(median(ends.map((e, i) => e - gaps[i])))} ms and end ${fmt(median(ends))} ms (medians) after the handover was asked for`,
      );
      return {
        n,
        paceMs: pace.paceMs,
        handedOver: reply.result.handedOver,
        accepted: targetResult.accepted,
        exact: verdicts.filter((v) => v.exactClientToServer && v.exactServerToClient).length,
        rsts:
          Object.keys(rstAfter).reduce((sum, k) => sum + rstAfter[k] - rstBefore[k], 0) +
          clients.reduce((sum, c) => sum + c.resets, 0),
        longestMs: Math.max(...gaps),
        medianMs: median(gaps),
        steadyMs,
        steadyMedianMs,
        serverCpu,
        load,
        rtos: netAfter.timeouts - netBefore.timeouts,
        lossProbes: netAfter.lossProbes - netBefore.lossProbes,
        phases: reply.result.phases,
        stages: stage.took,
      };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

async function reconnectBaseline(n) {
  return inLab(async (lab) => {
    const stage = stages(`${n} baseline`);
    const settings = rowSettings(n);
    const { pace } = settings;
    const script = path.join(__dirname, 'migration-connections-server.js');
    const config = { role: 'plain', host: SERVICE_IP, port: SERVICE_PORT, backlog: BACKLOG, ...pace };
    let server = spawnIn(lab, 'a', script, config);
    await server.next('listening');
    stage('lab, server listening');
    const fleet = new ClientFleet(lab, n, { perProcess: PER_PROCESS, pace, port: SERVICE_PORT });
    const { steadyMs, steadyMedianMs, serverCpu, load } = await connectAndWarmUp(
      fleet,
      [server],
      settings,
      stage,
      true,
    );
    const netBefore = fleet.netstat();
    const started = performance.now();
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGKILL');
    await exited;
    log(`  [${n} baseline] killed server gone after ${fmt(performance.now() - started)} ms`);
    server = spawnIn(lab, 'a', script, { ...config, sendAtOnce: true });
    let listeningMs;
    server.next('listening').then(() => (listeningMs = performance.now() - started));
    let allBackMs;
    for (let i = 0; i < 3000 && allBackMs === undefined; i++) {
      const summaries = await fleet.all({ cmd: 'summary' });
      if (summaries.every((s, j) => s.connected === fleet.counts[j] && s.reconnected === fleet.counts[j]))
        allBackMs = performance.now() - started;
      else await sleep(20);
    }
    stage('kill, restart, all reconnected');
    await sleep(settings.afterMs);
    await fleet.all({ cmd: 'stop' });
    const reports = await fleet.reports();
    stage('after, reports');
    const gaps = reports.map((r) => r.maxGapMs);
    return {
      n,
      paceMs: pace.paceMs,
      longestMs: Math.max(...gaps),
      medianMs: median(gaps),
      steadyMs,
      steadyMedianMs,
      serverCpu,
      load,
      allBackMs,
      listeningMs,
      reconnectMs: pace.reconnectMs,
      reconnected: reports.filter((r) => r.connected).length,
      rtos: fleet.netstat().timeouts - netBefore.timeouts,
      stages: stage.took,
    };
  });
}

const secs = (took) =>
  Object.entries(took)
    .map(([k, v]) => `${k} ${v.toFixed(1)}`)
    .join(', ');

function routeLine(n, r) {
  if (r.error) return `| ${n} | connections route | failed: ${r.error} | | | | | | |`;
  const ok = r.exact === n && r.handedOver === n && r.rsts === 0;
  return `| ${n} | connections route (A→B, address moves) | ${r.paceMs} | ${fmt(r.longestMs)} | ${fmt(r.medianMs)} | ${fmt(r.steadyMs)} / ${fmt(r.steadyMedianMs)} | ${msgs(r.load)}, server CPU ${pct(r.serverCpu)} | ${r.rtos} (loss probes ${r.lossProbes}) | ${ok ? 'all handed over, every byte both ways, 0 RST' : `handed over ${r.handedOver}, exact ${r.exact}, RST ${r.rsts}`} |`;
}

function baselineLine(n, b) {
  if (b.error) return `| ${n} | reconnect baseline | failed: ${b.error} | | | | | | |`;
  return `| ${n} | baseline: reconnect to a restarted server | ${b.paceMs} | ${fmt(b.longestMs)} | ${fmt(b.medianMs)} | ${fmt(b.steadyMs)} / ${fmt(b.steadyMedianMs)} | ${msgs(b.load)}, server CPU ${pct(b.serverCpu)} | ${b.rtos} | ${b.reconnected}/${n} back after ${fmt(b.allBackMs)} ms (server listening after ${fmt(b.listeningMs)} ms, clients retrying every ${b.reconnectMs} ms); in-flight data and state lost |`;
}

async function main() {
  const rows = [];
  const loads = [];
  for (const n of counts) {
    log(`== ${n} connections: connections route`);
    const route = ROUTES.includes('route')
      ? await connectionsRoute(n).catch((error) => ({ n, error: error.message }))
      : { n, error: 'not run' };
    log(`== ${n} connections: reconnect baseline`);
    const baseline = ROUTES.includes('baseline')
      ? await reconnectBaseline(n).catch((error) => ({ n, error: error.message }))
      : { n, error: 'not run' };
    rows.push({ n, route, baseline });
    loads.push(os.loadavg()[0].toFixed(1));
    log(JSON.stringify({ route, baseline }));
  }
  const lines = [
    '## Connections route: client-visible pause vs number of connections',
    '',
    `machine: ${os.cpus()[0].model}, ${os.cpus().length} CPUs (shared), load after each count ${loads.join(', ')}, kernel ${os.release()}, node ${process.version}`,
    `date: ${new Date().toISOString()}; each connection carries ${PACE_BYTES} B each way every "pace" ms (${PACE_OVERRIDE ? 'CONNECTIONS_BENCH_PACE_MS' : `20 ms up to 1,000 connections; above, ${MESSAGES_PER_S} messages/s each way over all`}), the processes' writes spread over the interval; clients in processes of ${PER_PROCESS} connections. A pause includes up to one interval.`,
    '',
    '| connections | route | pace ms | longest pause ms | median pause ms | steady-state gap ms (before): longest / median | warm-up: messages/s arrived of asked (each way) | client RTOs | verified |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const { n, route, baseline } of rows) lines.push(routeLine(n, route), baselineLine(n, baseline));
  lines.push('', '| connections | phases of the handover (ms) |', '| ---: | --- |');
  for (const { n, route: r } of rows) {
    if (r.phases)
      lines.push(
        `| ${n} | ${Object.entries(r.phases)
          .map(([k, v]) => `${k} ${fmt(v)}`)
          .join(', ')} |`,
      );
  }
  lines.push(
    '',
    '| connections | stages of the route row (s) | stages of the baseline row (s) |',
    '| ---: | --- | --- |',
  );
  for (const { n, route: r, baseline: b } of rows)
    lines.push(`| ${n} | ${secs(r.stages ?? {})} | ${secs(b.stages ?? {})} |`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error) => {
  log(`bench failed: ${error.stack || error}`);
  process.exitCode = 1;
});
