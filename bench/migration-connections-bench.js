'use strict';
/**
 * Longest client-visible pause against the number of connections (default 10, 100, 1000):
 *   - connections route: handOverConnections 'repair' from a server on host A to one on host B,
 *     the service address moving A -> B (runDemo's 'connections' route, every byte checked);
 *   - fd passing: handOverConnections 'fd' to a successor process on the same host ('fd' route);
 *   - baseline: clients simply reconnect to a restarted server (killed, started again on A); the
 *     pause is from the last byte before the kill to the first byte on the new connection, and
 *     everything in flight (and the server's per-connection state) is lost.
 * Each client receives 128 B every 20 ms (and, in the handover routes, sends as much). Prints a
 * markdown table. Needs root and dist/ (npm run build). Usage: node bench/migration-connections-bench.js [10,100,1000]
 */
const { spawn } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');

const { runDemo } = require('../dist/demo');
const { DemoLab, SERVICE_IP } = require('../dist/demo/lab');

const PACE = { paceBytes: 128, paceMs: 20 };
const counts = (process.argv[2] || '10,100,1000').split(',').map(Number);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (line) => process.stderr.write(`${line}\n`);

function ipcRequest(child) {
  let next = 1;
  const pending = new Map();
  child.on('message', (msg) => {
    const resolve = pending.get(msg.id);
    pending.delete(msg.id);
    if (resolve) resolve(msg);
  });
  return (body) =>
    new Promise((resolve) => {
      const id = next++;
      pending.set(id, resolve);
      child.send({ ...body, id });
    });
}

async function reconnectBaseline(n) {
  const lab = new DemoLab();
  lab.setup();
  const serverScript = path.join(__dirname, 'migration-connections-plain-server.js');
  const config = { host: SERVICE_IP, port: 8080, ...PACE };
  try {
    let server = lab.spawnNode('a', serverScript, config);
    await sleep(300);
    const clients = spawn(
      'nsenter',
      [
        `--net=${lab.path('c')}`,
        '--',
        process.execPath,
        path.join(__dirname, 'migration-connections-reconnect-clients.js'),
      ],
      {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      },
    );
    const request = ipcRequest(clients);
    await request({ cmd: 'connect', host: SERVICE_IP, port: 8080, count: n });
    await sleep(1500);
    const { steadyMaxGapMs } = await request({ cmd: 'resetGaps' });
    const started = performance.now();
    const exited = new Promise((resolve) => server.once('exit', resolve));
    server.kill('SIGKILL');
    await exited;
    server = lab.spawnNode('a', serverScript, config);
    let report;
    let allBackMs;
    for (let i = 0; i < 600; i++) {
      report = await request({ cmd: 'report' });
      if (report.reconnects >= n && report.connected === n) {
        allBackMs = performance.now() - started;
        break;
      }
      await sleep(20);
    }
    await sleep(500);
    report = await request({ cmd: 'report' });
    server.kill('SIGKILL');
    clients.kill('SIGKILL');
    return { maxGapMs: report.maxGapMs, steadyMaxGapMs, allBackMs, reconnected: report.connected };
  } finally {
    await lab.killProcesses();
    lab.destroy();
  }
}

const fmt = (v) => (v === undefined ? '-' : `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ms`);

function cell(row) {
  if (!row) return '-';
  if (row.error) return `failed: ${row.error}`;
  const ok = row.exactBothWays === row.connections && row.kept === row.connections && row.rsts === 0;
  return `${fmt(row.longestPauseMs)} (${ok ? 'all kept, exact, 0 RST' : `kept ${row.kept}, exact ${row.exactBothWays}, RST ${row.rsts}`})`;
}

async function main() {
  const rows = [];
  for (const n of counts) {
    log(`== ${n} connections: handover routes`);
    const report = await runDemo({
      clients: n,
      routes: ['connections', 'fd'],
      warmupMs: 1500,
      afterMs: 800,
      ...PACE,
      log,
    });
    log(`== ${n} connections: reconnect baseline`);
    const baseline = await reconnectBaseline(n);
    rows.push({
      n,
      repair: report.routes.find((r) => r.route === 'connections'),
      fd: report.routes.find((r) => r.route === 'fd'),
      baseline,
    });
  }
  const lines = [
    '## Connection handover: longest client-visible pause vs number of connections',
    '',
    `machine: ${os.cpus()[0].model}, ${os.cpus().length} CPUs (shared), kernel ${os.release()}, node ${process.version}`,
    `date: ${new Date().toISOString()}; each connection streams ${PACE.paceBytes} B every ${PACE.paceMs} ms`,
    '',
    '| connections | connections route (libsoccr, A→B, address moves) | fd passing (same host, successor process) | baseline: reconnect to a restarted server | steady-state jitter (before) |',
    '| --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    const b = r.baseline;
    lines.push(
      `| ${r.n} | ${cell(r.repair)} | ${cell(r.fd)} | ${fmt(b.maxGapMs)} (${b.reconnected}/${r.n} back after ${fmt(b.allBackMs)}; in-flight data and state lost) | ${fmt(Math.max(r.repair ? r.repair.steadyPauseMs : 0, r.fd ? r.fd.steadyPauseMs : 0, b.steadyMaxGapMs))} |`,
    );
  }
  lines.push('', '| connections | route | phases (ms) |', '| --- | --- | --- |');
  for (const r of rows) {
    for (const row of [r.repair, r.fd]) {
      if (!row) continue;
      lines.push(
        `| ${r.n} | ${row.route} | ${Object.entries(row.phases)
          .map(([k, v]) => `${k} ${v.toFixed(1)}`)
          .join(', ')} |`,
      );
    }
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((error) => {
  log(`bench failed: ${error.stack || error}`);
  process.exitCode = 1;
});
