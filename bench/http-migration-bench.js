'use strict';
/**
 * A node:http keep-alive server under autocannon (100 connections) moved by the process route
 * (migrateProcess, CRIU, one machine between network namespaces), against the load alone, the
 * mechanism alone and a restart baseline.
 *
 *   process: migrateProcess as it is: its lock in the source drops the clients' packets from the
 *            freeze until the address moves; from the move until the restore the target holds
 *            them (nftables queue + our NFQUEUE reader) and re-injects them after the restore.
 *            (A second hold of the bench's own, as earlier versions made, is flushed when
 *            migrateProcess deletes its target table: a deleted base chain drops every packet
 *            held in its namespace, lib/soccr/packet-hold.ts.)
 *   stop-drop / stop-hold: no migration, the mechanism alone: the server is stopped (SIGSTOP) for
 *            NODE_CRIU_BENCH_FREEZE_MS (300) while its clients' packets are dropped or held.
 *   restart: the server is killed, the address moved, a new server started on the target;
 *            autocannon reconnects (its failed requests count as errors).
 *
 * Reports CRIU's downtime, autocannon's longest request and p99, errors, and the clients'
 * retransmission timeouts (TcpExtTCPTimeouts in the clients' namespace; the restored side's in
 * the target's). Target of issue 14: longest request <= 1.5 x downtime. Needs root, `npm run
 * build` and the autocannon package (resolvable from here or NODE_PATH).
 * Usage: node bench/http-migration-bench.js [routes, default steady,process,restart] [runs, default 1]
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { holdPackets, migrateProcess, locateCriu } = require('../dist');
const { readNetCounters, counterDelta } = require('../dist/sys/netstat');
const { deleteTables, nftBatch } = require('../dist/sys/nft');
const dropTableCommands = require('./drop-rule');

const CONNECTIONS = 100;
const DURATION_S = 8;
const MIGRATE_AT_MS = 2500;
const FREEZE_MS = Number(process.env.NODE_CRIU_BENCH_FREEZE_MS ?? 300);
const PORT = 8080;
const PREFIX = `ncr-http-${process.pid}`;
const SUBNET = `10.${150 + (process.pid % 50)}.0`;
const { VIP, nsPath, pids, setup, teardown, vipOn, spawnNode, killAll, waitFile, sleep } = require('./migration-lab')({
  prefix: PREFIX,
  subnet: SUBNET,
});

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

/** migrateProcess as it is; `released`: what its hold in the target did (re-injected, dropped). */
async function processRoute(dir, criuPath) {
  const { serverPid, before, startedAt } = await start(dir);
  await sleep(Math.max(0, MIGRATE_AT_MS - (performance.now() - startedAt)));
  let released;
  const result = await migrateProcess({
    pid: serverPid,
    source: { netns: nsPath('s') },
    target: { netns: nsPath('t') },
    imagesDir: path.join(dir, 'images'),
    transfer: 'directory',
    criuPath,
    moveAddress: async () => vipOn('t'),
    moveAddressBack: async () => vipOn('s'),
    onProgress: (event) => {
      if (event.phase === 'restore' && event.detail?.state === 'released') released = event.detail.heldPackets;
    },
  });
  pids.add(result.restoredPid);
  const p = result.phases;
  // CRIU's frozen time covers the dump from the freeze on; the rest of the pause is ours.
  const frozenMs =
    result.dumpStats?.frozenTimeUs === undefined
      ? undefined
      : result.dumpStats.frozenTimeUs / 1000 + p.transfer + p.moveAddress + p.restore;
  return finish(dir, before, { downtimeMs: result.downtimeMs, frozenMs, phases: p, released });
}

/**
 * The mechanism alone, without CRIU's variable times: the server is stopped (SIGSTOP) for
 * FREEZE_MS while its clients' packets are dropped (an nftables drop rule, as a lock) or held
 * (holdPackets), then continued and the drop removed or the hold released.
 */
async function freezeRoute(dir, mode) {
  const { serverPid, before, startedAt } = await start(dir);
  await sleep(Math.max(0, MIGRATE_AT_MS - (performance.now() - startedAt)));
  const table = { family: 'ip', name: `ncr_bench_drop_${process.pid}` };
  const netns = { netns: nsPath('s') };
  let held;
  const t0 = performance.now();
  if (mode === 'steady') return finish(dir, before, { downtimeMs: 0 });
  if (mode === 'stop-hold') held = await holdPackets({ ...netns, endpoints: [{ address: VIP, port: PORT }] });
  else await nftBatch(dropTableCommands(table.name, { address: VIP, port: PORT }), netns);
  process.kill(serverPid, 'SIGSTOP');
  await sleep(Math.max(0, FREEZE_MS - (performance.now() - t0)));
  process.kill(serverPid, 'SIGCONT');
  const released = held === undefined ? undefined : await held.release();
  if (held === undefined) await deleteTables([table], netns);
  return finish(dir, before, { downtimeMs: performance.now() - t0, released });
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

const TITLES = {
  process: 'process route (source lock, then held in the target from the address move)',
  restart: 'restart + reconnect',
  steady: 'nothing happens (the load alone)',
  'stop-drop': 'server stopped, packets dropped (no migration)',
  'stop-hold': 'server stopped, packets held (no migration)',
};

const f = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));

async function main() {
  if (process.getuid() !== 0) throw new Error('needs root');
  require.resolve('autocannon', { paths: [__dirname, ...(process.env.NODE_PATH ?? '').split(':')] });
  const routes = (process.argv[2] ?? 'steady,process,restart').split(',');
  for (const route of routes)
    if (!TITLES[route]) throw new Error(`unknown route ${route} (known: ${Object.keys(TITLES)})`);
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
          const r =
            route === 'restart'
              ? await restartRoute(dir)
              : route.startsWith('stop-') || route === 'steady'
                ? await freezeRoute(dir, route)
                : await processRoute(dir, criuPath);
          const p = r.phases;
          const frozen = r.frozenMs ?? r.downtimeMs;
          rows.push(
            `| ${TITLES[route]} | ${f(r.downtimeMs)} | ${f(frozen)} | ${f(r.load.max)} | ${frozen > 0 ? (r.load.max / frozen).toFixed(2) : '-'} | ${f(r.load.p99)} | ${r.load.requests} | ${r.load.errors + r.load.timeouts + r.load.non2xx} | ${r.client.TcpExtTCPTimeouts ?? 0} / ${r.client.TcpExtTCPLossProbes ?? 0} / ${r.client.TcpRetransSegs ?? 0} | ${r.restored.TcpExtTCPTimeouts ?? 0} / ${r.restored.TcpRetransSegs ?? 0} | ${p ? `dump ${f(p.dump)}, transfer ${f(p.transfer)}, move ${f(p.moveAddress)}, restore ${f(p.restore)}` : '-'}${r.released ? `; the target's hold: ${r.released.accepted} packets re-injected, ${r.released.dropped} dropped` : ''} |`,
          );
        } catch (error) {
          rows.push(
            `| ${route} | failed: ${String(error.code ?? '')} ${String(error.message).split('\n')[0].slice(0, 160)} | | | | | | | | |`,
          );
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
    `load: autocannon, ${CONNECTIONS} keep-alive connections, ${DURATION_S} s, the move at ${MIGRATE_AT_MS} ms; times in ms; frozen = CRIU's frozen time + transfer + move + restore (downtime also counts CRIU's start-up); RTOs = TcpExtTCPTimeouts`,
  );
  console.log('');
  console.log(
    '| route | downtime | frozen | longest request | longest / frozen | p99 | requests | errors | client RTOs / loss probes / retransmitted segments | restored side RTOs / retransmitted segments | phases |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const row of rows) console.log(row);
}

main().catch((error) => {
  killAll();
  teardown();
  console.error(`bench failed: ${error.stack ?? error}`);
  process.exitCode = 1;
});
