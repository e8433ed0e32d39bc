'use strict';
/**
 * Whole-process live migration (migrateProcess, CRIU) vs. a restart: the longest pause a client
 * sees, for 10, 100 and 1000 connections streaming both ways.
 *
 *   process route: the server process is migrated S -> T with its connections (directory and
 *                  page-server transfer); the clients keep their connections.
 *   two hosts:     the same across hosts that share nothing but the network: a migration agent
 *                  (node-criu agent, mutual TLS) runs on T in a private mount namespace, the
 *                  images (or, with lazy pages, the memory on demand) travel over its TLS channel.
 *                  With lazy pages the agent also gets a pid namespace of its own (as another
 *                  host has: the frozen source keeps its pids until every page is served), and
 *                  fs.pipe-max-size is raised to CRIU's 4 MiB for the run, then put back.
 *   restart:       the baseline: the server is killed on S, the address moved to T, a new server
 *                  started there, and the clients reconnect (every 10 ms until it answers).
 *
 * "Longest pause" = the largest gap between two arrivals of data at a client, over all clients
 * (p50 = the median client's largest gap); the natural gap is the pacing interval. Runs in its own
 * network namespaces (ncr-bench-<pid>-...), removed at the end. Needs root and `npm run build`.
 * Usage: node bench/migration-process-bench.js [counts, default 10,100,1000] [routes, default
 * directory,page-server,agent,agent-lazy,restart]. NODE_CRIU_BENCH_KEEP=1 keeps the work directory (CRIU logs).
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { migrateProcess, locateCriu } = require('../dist');

const FIXTURES = path.join(__dirname, '..', 'test', 'fixtures');
const PACE = { paceBytes: 256, paceMs: 20 };
const WARMUP_MS = 1500;
const AFTER_MS = 1500;
const PREFIX = `ncr-bench-${process.pid}`;
const SUBNET = `10.${200 + (process.pid % 50)}.0`;
const { VIP, nsPath, pids, setup, teardown, vipOn, spawnNode, killAll, waitFile, sleep } = require('./migration-lab')({
  prefix: PREFIX,
  subnet: SUBNET,
});

const CLI = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
const AGENT_PORT = 7400;
const PIPE_MAX = '/proc/sys/fs/pipe-max-size';
const hostIp = (n) => `${SUBNET}.${n}`;

const { makeCertificates, migrateFromHost, startAgent } = require('./two-hosts')({
  nsPath,
  hostIp,
  VIP,
  pids,
  CLI,
  AGENT_PORT,
});

function gaps(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return { max: sorted[sorted.length - 1], p50: sorted[Math.floor(sorted.length / 2)] };
}

async function processRoute(dir, connections, transfer, criuPath, pki) {
  vipOn('s');
  const total = PACE.paceBytes * Math.ceil((WARMUP_MS + AFTER_MS + 3000 + connections * 5) / PACE.paceMs);
  const common = { statusDir: dir, host: VIP, port: 7000, total, expectIn: total, ...PACE };
  spawnNode('s', path.join(FIXTURES, 'process-server.js'), { ...common, connections });
  await waitFile(path.join(dir, 'listening'));
  spawnNode('c', path.join(FIXTURES, 'process-clients.js'), { ...common, connections });
  await waitFile(path.join(dir, 'clients-connected'));
  await waitFile(path.join(dir, 'all-accepted'));
  await sleep(WARMUP_MS);
  const serverPid = Number(fs.readFileSync(path.join(dir, 'listening'), 'utf8'));
  const result = transfer.startsWith('agent')
    ? await migrateFromHost(serverPid, transfer === 'agent-lazy', pki)
    : await migrateProcess({
        pid: serverPid,
        source: { netns: nsPath('s') },
        target: { netns: nsPath('t') },
        imagesDir: path.join(dir, 'images'),
        transfer,
        criuPath,
        moveAddress: async () => vipOn('t'),
        moveAddressBack: async () => vipOn('s'),
      });
  // With its own pid namespace (lazy) the agent reports the pid there: not ours to kill by number
  // (the agent's namespace dies with it).
  if (transfer !== 'agent-lazy') pids.add(result.restoredPid);
  const clients = JSON.parse(await waitFile(path.join(dir, 'clients.json')));
  const server = JSON.parse(await waitFile(path.join(dir, 'server.json')));
  let exact = 0;
  for (const [port, report] of Object.entries(clients.reports)) {
    const other = server.reports[port];
    if (
      other &&
      JSON.stringify(report.sent) === JSON.stringify(other.received) &&
      JSON.stringify(report.received) === JSON.stringify(other.sent) &&
      report.resets === 0
    )
      exact++;
  }
  killAll();
  return { gap: gaps(Object.values(clients.maxGapMs)), result, exact };
}

async function restartRoute(dir, connections) {
  vipOn('s');
  const common = { statusDir: dir, host: VIP, port: 7000, ...PACE };
  const serverPid = spawnNode('s', path.join(__dirname, 'migration-process-echo-server.js'), {
    ...common,
    name: 'old',
  });
  await waitFile(path.join(dir, 'old-listening'));
  const clientsPid = spawnNode('c', path.join(__dirname, 'migration-process-reconnect-clients.js'), {
    ...common,
    connections,
  });
  await waitFile(path.join(dir, 'clients-connected'));
  await sleep(WARMUP_MS);
  const started = performance.now();
  process.kill(serverPid, 'SIGKILL');
  vipOn('t');
  spawnNode('t', path.join(__dirname, 'migration-process-echo-server.js'), { ...common, name: 'new' });
  await waitFile(path.join(dir, 'reconnected'));
  const allBackMs = performance.now() - started;
  await sleep(AFTER_MS);
  process.kill(clientsPid, 'SIGUSR2');
  const clients = JSON.parse(await waitFile(path.join(dir, 'clients.json')));
  killAll();
  return { gap: gaps(clients.maxGapMs), allBackMs, reconnects: clients.reconnects };
}

const f = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const us = (v) => (v === undefined ? '?' : f(v / 1000));

/** CRIU's own statistics (stats-dump, stats-restore) and our steps inside the phases, in ms. */
function criuStats(result) {
  const d = result.dumpStats ?? {};
  const r = result.restoreStats;
  const l = result.lazyPages;
  // With lazy pages the source is never thawed (it serves its pages, then dies): CRIU's frozen
  // time statistic is then no duration.
  const parts =
    l === undefined
      ? [`frozen ${us(d.frozenTimeUs)} (memdump ${us(d.memdumpTimeUs)}, memwrite ${us(d.memwriteTimeUs)})`]
      : [];
  if (r !== undefined) parts.push(`restore ${us(r.restoreTimeUs)} (forking ${us(r.forkingTimeUs)})`);
  if (l !== undefined)
    parts.push(
      `lazy pages after the restore: ${(l.bytes / 1e6).toFixed(1)} MB in ${f(l.ms)} (${(l.bytes / 1e3 / l.ms).toFixed(1)} MB/s)`,
    );
  const s = result.steps;
  if (s !== undefined)
    parts.push(
      `ours: lock ${f(s.lockPrepare)} before, hold ${f(s.hold)}, waits ${f(s.restoreWaits)}, criu restore ${f(s.criuRestore)}, release ${f(s.release)}`,
    );
  return parts.join('; ');
}

async function main() {
  if (process.getuid() !== 0) throw new Error('needs root');
  const counts = (process.argv[2] ?? '10,100,1000').split(',').map(Number);
  const routes = (process.argv[3] ?? 'directory,page-server,agent,agent-lazy,restart').split(',');
  const criuPath = locateCriu().path;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `${PREFIX}-`));
  fs.chmodSync(work, 0o711);
  const pkiDir = path.join(work, 'pki');
  fs.mkdirSync(pkiDir, { mode: 0o700 });
  const pki = routes.some((r) => r.startsWith('agent')) ? makeCertificates(pkiDir) : undefined;
  const rows = [];
  // CRIU serves lazy pages through a 4 MiB pipe (without CAP_SYS_RESOURCE the sysctl must allow it).
  const pipeMaxBefore = fs.readFileSync(PIPE_MAX, 'utf8').trim();
  const restorePipeMax = () => fs.writeFileSync(PIPE_MAX, pipeMaxBefore);
  if (routes.includes('agent-lazy') && Number(pipeMaxBefore) < 4 * 1024 * 1024)
    fs.writeFileSync(PIPE_MAX, String(4 * 1024 * 1024));
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'])
    process.on(signal, () => {
      killAll();
      teardown();
      restorePipeMax();
      fs.rmSync(work, { recursive: true, force: true });
      process.exit(130);
    });
  try {
    for (const n of counts) {
      for (const transfer of ['directory', 'page-server', 'agent', 'agent-lazy'].filter((t) => routes.includes(t))) {
        const dir = path.join(work, `process-${transfer}-${n}`);
        fs.mkdirSync(dir);
        process.stderr.write(`bench: process route (${transfer}), ${n} connections\n`);
        // Fresh namespaces per run: sockets a killed run leaves in FIN_WAIT/TIME_WAIT on the
        // target would collide with a new connection that reuses their 4-tuple.
        setup();
        const title = transfer.startsWith('agent')
          ? `process (CRIU), two hosts via agent + TLS${transfer === 'agent-lazy' ? ', lazy pages' : ', images'}`
          : `process (CRIU, ${transfer}), one machine`;
        try {
          if (transfer.startsWith('agent'))
            await startAgent(pki, path.join(dir, 'agent-work'), transfer === 'agent-lazy');
          const { gap, result, exact } = await processRoute(dir, n, transfer, criuPath, pki);
          const p = result.phases;
          rows.push(
            `| ${n} | ${title} | ${f(gap.max)} | ${f(gap.p50)} | ${f(result.downtimeMs)} | dump ${f(p.dump)}, transfer ${f(p.transfer)}, move ${f(p.moveAddress)}, restore ${f(p.restore)} | ${criuStats(result)} | ${(result.pagesBytes / 1e6).toFixed(1)} MB | ${exact}/${n} kept, exact |`,
          );
        } catch (error) {
          rows.push(
            `| ${n} | ${title} | failed: ${String(error.code ?? '')} ${String(error.message).split('\n')[0].slice(0, 160)} | | | | | | |`,
          );
        } finally {
          killAll();
          teardown();
        }
      }
      if (!routes.includes('restart')) continue;
      const dir = path.join(work, `restart-${n}`);
      fs.mkdirSync(dir);
      process.stderr.write(`bench: restart + reconnect baseline, ${n} connections\n`);
      setup();
      const { gap, allBackMs, reconnects } = await restartRoute(dir, n).finally(teardown);
      rows.push(
        `| ${n} | restart + reconnect | ${f(gap.max)} | ${f(gap.p50)} | ${f(allBackMs)} (until all reconnected) | - | - | - | 0/${n} kept (${reconnects} reconnects; state lost) |`,
      );
    }
  } finally {
    killAll();
    teardown();
    restorePipeMax();
    if (process.env.NODE_CRIU_BENCH_KEEP) process.stderr.write(`bench: kept ${work}\n`);
    else fs.rmSync(work, { recursive: true, force: true });
  }
  console.log('## Whole-process migration (CRIU) vs restart: longest client-visible pause');
  console.log('');
  console.log(
    `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, kernel ${os.release()}, node ${process.version}; date ${new Date().toISOString()}`,
  );
  console.log(
    `traffic: every connection streams ${PACE.paceBytes} B every ${PACE.paceMs} ms each way (natural gap ${PACE.paceMs} ms); times in ms`,
  );
  console.log('');
  console.log(
    '| connections | route | longest pause (max client) | longest pause (median client) | downtime | phases | CRIU statistics, our steps | images | connections |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const row of rows) console.log(row);
}

main().catch((error) => {
  killAll();
  teardown();
  console.error(`bench failed: ${error.stack ?? error}`);
  process.exitCode = 1;
});
