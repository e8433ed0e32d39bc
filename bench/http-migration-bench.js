'use strict';
/**
 * A node:http keep-alive server under autocannon (100 connections) moved by the process route
 * (migrateProcess, CRIU, one machine between network namespaces), against the same move with the
 * clients' packets dropped during the freeze (CRIU's lock alone) and a restart baseline.
 *
 *   drop:    migrateProcess as it is: CRIU's nftables lock drops the clients' packets from the
 *            dump until the restore; a client recovers at its next retransmission (RTO backoff).
 *   hold:    the same, and the target namespace holds (nftables queue + our NFQUEUE reader) the
 *            clients' packets from the address move until the restore, then re-injects them.
 *   restart: the server is killed, the address moved, a new server started on the target;
 *            autocannon reconnects (its failed requests count as errors).
 *
 * Reports CRIU's downtime, autocannon's longest request and p99, errors, and the clients'
 * retransmission timeouts (TcpExtTCPTimeouts in the clients' namespace; the restored side's in
 * the target's). Target of issue 14: longest request <= 1.5 x downtime. Needs root, `npm run
 * build` and the autocannon package (resolvable from here or NODE_PATH).
 * Usage: node bench/http-migration-bench.js [routes, default drop,hold,restart] [runs, default 1]
 */
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { holdPackets, migrateProcess, locateCriu } = require('../dist');
const { readNetCounters, counterDelta } = require('../dist/sys/netstat');

const CONNECTIONS = 100;
const DURATION_S = 8;
const MIGRATE_AT_MS = 2500;
const PORT = 8080;
const PREFIX = `ncr-http-${process.pid}`;
const SUBNET = `10.${150 + (process.pid % 50)}.0`;
const VIP = `${SUBNET}.100`;
const ns = (h) => `${PREFIX}-${h}`;
const nsPath = (h) => `/run/netns/${ns(h)}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const ip = (h, args) => execFileSync('ip', ['-n', ns(h), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });

const pids = new Set();

function setup() {
  for (const h of ['b', 's', 't', 'c']) {
    execFileSync('ip', ['netns', 'add', ns(h)]);
    ip(h, ['link', 'set', 'lo', 'up']);
  }
  ip('b', ['link', 'add', 'br0', 'type', 'bridge']);
  ip('b', ['link', 'set', 'br0', 'up']);
  for (const [h, n] of [
    ['s', 2],
    ['t', 3],
    ['c', 9],
  ]) {
    ip('b', ['link', 'add', `p${n}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns(h)]);
    ip('b', ['link', 'set', `p${n}`, 'master', 'br0', 'up']);
    ip(h, ['addr', 'add', `${SUBNET}.${n}/24`, 'dev', 'eth0']);
    ip(h, ['link', 'set', 'eth0', 'up']);
  }
}

function teardown() {
  for (const h of ['c', 't', 's', 'b']) {
    try {
      execFileSync('ip', ['netns', 'delete', ns(h)], { stdio: 'ignore' });
    } catch {
      // gone
    }
  }
}

function vipOn(h) {
  for (const other of ['s', 't']) {
    try {
      ip(other, ['addr', 'del', `${VIP}/24`, 'dev', 'eth0']);
    } catch {
      // not there
    }
  }
  ip(h, ['addr', 'add', `${VIP}/24`, 'dev', 'eth0']);
  ip('c', ['neigh', 'flush', 'dev', 'eth0']);
}

function spawnNode(h, script, config) {
  const child = spawn('nsenter', [`--net=${nsPath(h)}`, '--', process.execPath, script, JSON.stringify(config)], {
    detached: true,
    stdio: 'ignore',
    env: { ...process.env, UV_USE_IO_URING: '0' },
  });
  child.on('error', () => undefined);
  pids.add(child.pid);
  return child.pid;
}

function killAll() {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  pids.clear();
}

async function waitFile(file, timeoutMs = 120000) {
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${file}`);
    await sleep(20);
  }
  return fs.readFileSync(file, 'utf8');
}

/** Starts the server on s and autocannon on c; resolves once every connection is accepted. */
async function start(dir) {
  vipOn('s');
  const common = { statusDir: dir, host: VIP, port: PORT, connections: CONNECTIONS };
  spawnNode('s', path.join(__dirname, 'http-migration-server.js'), common);
  const serverPid = Number(await waitFile(path.join(dir, 'listening')));
  const before = await readNetCounters({ netns: nsPath('c') });
  spawnNode('c', path.join(__dirname, 'http-migration-client.js'), { ...common, durationSec: DURATION_S });
  await waitFile(path.join(dir, 'all-accepted'));
  return { serverPid, before, startedAt: performance.now() };
}

async function finish(dir, before, extra) {
  const load = JSON.parse(await waitFile(path.join(dir, 'autocannon.json'), (DURATION_S + 60) * 1000));
  if (load.error) throw new Error(`autocannon: ${load.error}`);
  const client = counterDelta(before, await readNetCounters({ netns: nsPath('c') }));
  const restored = await readNetCounters({ netns: nsPath('t') });
  return { load, client, restored, ...extra };
}

async function processRoute(dir, criuPath, hold) {
  const { serverPid, before, startedAt } = await start(dir);
  await sleep(Math.max(0, MIGRATE_AT_MS - (performance.now() - startedAt)));
  let held;
  const result = await migrateProcess({
    pid: serverPid,
    source: { netns: nsPath('s') },
    target: { netns: nsPath('t') },
    imagesDir: path.join(dir, 'images'),
    transfer: 'directory',
    criuPath,
    moveAddress: async () => {
      if (hold) held = await holdPackets({ netns: nsPath('t'), endpoints: [{ address: VIP, port: PORT }] });
      vipOn('t');
    },
    moveAddressBack: async () => {
      vipOn('s');
      await held?.drop();
    },
  }).catch(async (error) => {
    await held?.drop();
    throw error;
  });
  pids.add(result.restoredPid);
  const released = held === undefined ? undefined : await held.release();
  return finish(dir, before, { downtimeMs: result.downtimeMs, phases: result.phases, released });
}

async function restartRoute(dir) {
  const { serverPid, before, startedAt } = await start(dir);
  await sleep(Math.max(0, MIGRATE_AT_MS - (performance.now() - startedAt)));
  const t0 = performance.now();
  process.kill(serverPid, 'SIGKILL');
  vipOn('t');
  spawnNode('t', path.join(__dirname, 'http-migration-server.js'), {
    statusDir: path.join(dir, 'new'),
    host: VIP,
    port: PORT,
    connections: CONNECTIONS,
  });
  await waitFile(path.join(dir, 'new', 'listening'));
  return finish(dir, before, { downtimeMs: performance.now() - t0 });
}

const f = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));

async function main() {
  if (process.getuid() !== 0) throw new Error('needs root');
  require.resolve('autocannon', { paths: [__dirname, ...(process.env.NODE_PATH ?? '').split(':')] });
  const routes = (process.argv[2] ?? 'drop,hold,restart').split(',');
  const runs = Number(process.argv[3] ?? 1);
  const criuPath = locateCriu().path;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `${PREFIX}-`));
  fs.chmodSync(work, 0o711);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'])
    process.on(signal, () => {
      killAll();
      teardown();
      fs.rmSync(work, { recursive: true, force: true });
      process.exit(130);
    });
  const rows = [];
  try {
    for (let run = 0; run < runs; run++) {
      for (const route of routes) {
        const dir = path.join(work, `${route}-${run}`);
        fs.mkdirSync(path.join(dir, 'new'), { recursive: true });
        process.stderr.write(`bench: ${route} (run ${run + 1}/${runs})\n`);
        setup();
        try {
          const r = route === 'restart' ? await restartRoute(dir) : await processRoute(dir, criuPath, route === 'hold');
          const title = { drop: 'process route, packets dropped (CRIU lock)', hold: 'process route, packets held + re-injected', restart: 'restart + reconnect' }[route];
          const p = r.phases;
          rows.push(
            `| ${title} | ${f(r.downtimeMs)} | ${f(r.load.max)} | ${(r.load.max / r.downtimeMs).toFixed(2)} | ${f(r.load.p99)} | ${r.load.requests} | ${r.load.errors + r.load.timeouts + r.load.non2xx} | ${r.client.TcpExtTCPTimeouts ?? 0} / ${r.client.TcpExtTCPLossProbes ?? 0} / ${r.client.TcpRetransSegs ?? 0} | ${r.restored.TcpExtTCPTimeouts ?? 0} / ${r.restored.TcpRetransSegs ?? 0} | ${p ? `dump ${f(p.dump)}, transfer ${f(p.transfer)}, move ${f(p.moveAddress)}, restore ${f(p.restore)}` : '-'}${r.released ? `; held ${r.released.accepted} packets, dropped ${r.released.dropped}` : ''} |`,
          );
        } catch (error) {
          rows.push(`| ${route} | failed: ${String(error.code ?? '')} ${String(error.message).split('\n')[0].slice(0, 160)} | | | | | | | | |`);
        } finally {
          killAll();
          teardown();
        }
      }
    }
  } finally {
    killAll();
    teardown();
    if (process.env.NODE_CRIU_BENCH_KEEP) process.stderr.write(`bench: kept ${work}\n`);
    else fs.rmSync(work, { recursive: true, force: true });
  }
  console.log('## node:http under autocannon, moved by the process route');
  console.log('');
  console.log(
    `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, kernel ${os.release()}, node ${process.version}; date ${new Date().toISOString()}`,
  );
  console.log(
    `load: autocannon, ${CONNECTIONS} keep-alive connections, ${DURATION_S} s, the move at ${MIGRATE_AT_MS} ms; times in ms; RTOs = TcpExtTCPTimeouts`,
  );
  console.log('');
  console.log(
    '| route | downtime | longest request | longest / downtime | p99 | requests | errors | client RTOs / loss probes / retransmitted segments | restored side RTOs / retransmitted segments | phases |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const row of rows) console.log(row);
}

main().catch((error) => {
  killAll();
  teardown();
  console.error(`bench failed: ${error.stack ?? error}`);
  process.exitCode = 1;
});
