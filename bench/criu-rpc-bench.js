'use strict';
/**
 * CRIU-RPC client benchmark: node-criu's Criu (swrk per call) side by side with the criu command
 * line and with pycriu (Debian's python3-pycriu 4.2.1, also swrk per call), in the same run,
 * interleaved round-robin so machine noise hits all three alike.
 *   - VERSION and CHECK round trips (pycriu has no VERSION request: CHECK is the common one)
 *   - dump (task killed) + restore of the same small process (`sleep`), log level 4 to a file and
 *     network lock skipped for all three
 * Prints a markdown table. Needs root, `npm run build` (dist/) and scripts/install-criu.sh.
 * CRIU_BENCH_ITERS (default 20) sets the iterations per tool.
 */
const { execFileSync, spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const { Criu, locateCriu } = require('../dist');
const { criuRoot } = require('../dist/criu/locate');

const ITERS = Number(process.env.CRIU_BENCH_ITERS || 20);
const criuPath = locateCriu().path;
const root = criuRoot();

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** pycriu in a long-lived python (the private root's, through its loader). */
function startPycriu() {
  if (!root) return undefined;
  const python = spawn(
    path.join(root, 'usr/lib64/ld-linux-x86-64.so.2'),
    [
      '--library-path',
      path.join(root, 'usr/lib/x86_64-linux-gnu'),
      path.join(root, 'usr/bin/python3'),
      path.join(__dirname, 'criu-pycriu-driver.py'),
      criuPath,
    ],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: {
        ...process.env,
        PYTHONHOME: path.join(root, 'usr'),
        PYTHONPATH: path.join(root, 'usr/lib/python3/dist-packages'),
      },
    },
  );
  const lines = readline.createInterface({ input: python.stdout });
  const waiting = [];
  lines.on('line', (line) => waiting.shift()(JSON.parse(line)));
  python.on('exit', (code) => {
    for (const resolve of waiting.splice(0)) resolve({ error: `pycriu driver exited with code ${code}` });
  });
  return {
    call(request) {
      return new Promise((resolve, reject) => {
        waiting.push((reply) => (reply.error ? reject(new Error(`pycriu: ${reply.error}`)) : resolve(reply)));
        python.stdin.write(`${JSON.stringify(request)}\n`);
      });
    },
    close() {
      python.stdin.end();
    },
  };
}

function cli(args) {
  const start = performance.now();
  const result = spawnSync(criuPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = performance.now() - start;
  if (result.status !== 0)
    throw new Error(`criu ${args.join(' ')}: exit ${result.status}: ${String(result.stderr).slice(-500)}`);
  return ms;
}

/**
 * After a dump killed the task, its pid stays taken until its parent reaps it: our own child is
 * reaped by node at once, a restored task (parent: pid 1 here) only when pid 1 gets to it.
 * Restore needs the pid free, so wait (not timed).
 */
async function waitGone(pid) {
  for (let i = 0; i < 1000 && fs.existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 2));
}

async function timed(fn) {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'node-criu-rpc-bench-'));
  const criu = new Criu();
  const pycriu = startPycriu();
  const samples = {};
  const add = (key, ms) => (samples[key] ??= []).push(ms);
  const sleeper = spawn('sleep', ['3600'], { detached: true, stdio: 'ignore' });
  const pid = sleeper.pid;
  let current = pid;
  try {
    // Warm-up (page cache, criu's first start) not counted.
    await criu.version();
    cli(['--version']);
    if (pycriu) await pycriu.call({ op: 'check' });

    for (let i = 0; i < ITERS; i++) {
      add('VERSION|node-criu', await timed(() => criu.version()));
      add('VERSION|criu CLI (--version)', cli(['--version']));
      add('CHECK|node-criu', await timed(() => criu.check()));
      add('CHECK|criu CLI', cli(['check']));
      if (pycriu) add('CHECK|pycriu', (await pycriu.call({ op: 'check' })).ms);
    }

    const tools = ['node-criu', 'criu CLI', ...(pycriu ? ['pycriu'] : [])];
    for (let i = 0; i < ITERS; i++) {
      for (const tool of tools) {
        const dir = path.join(work, `${tool.replace(/\W/g, '')}-${i}`);
        fs.mkdirSync(dir);
        let dumpMs;
        let restoreMs;
        if (tool === 'node-criu') {
          dumpMs = await timed(() =>
            criu.dump({ imagesDir: dir, pid: current, networkLock: 'skip', logFile: 'dump.log', logLevel: 4 }),
          );
          await waitGone(current);
          const start = performance.now();
          current = (await criu.restore({ imagesDir: dir, networkLock: 'skip', logFile: 'restore.log', logLevel: 4 }))
            .pid;
          restoreMs = performance.now() - start;
        } else if (tool === 'criu CLI') {
          dumpMs = cli(['dump', '-t', String(current), '-D', dir, '-v4', '-o', 'dump.log', '--network-lock', 'skip']);
          await waitGone(current);
          restoreMs = cli(['restore', '-D', dir, '-d', '-v4', '-o', 'restore.log', '--network-lock', 'skip']);
        } else {
          dumpMs = (await pycriu.call({ op: 'dump', pid: current, dir, log: 'dump.log' })).ms;
          await waitGone(current);
          const reply = await pycriu.call({ op: 'restore', dir, log: 'restore.log' });
          restoreMs = reply.ms;
          current = reply.pid;
        }
        if (current !== pid) throw new Error(`restored pid ${current}, expected ${pid}`);
        add(`dump|${tool}`, dumpMs);
        add(`restore|${tool}`, restoreMs);
        add(`dump + restore|${tool}`, dumpMs + restoreMs);
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    try {
      process.kill(current, 'SIGKILL');
    } catch {
      // already gone
    }
    pycriu?.close();
    await criu.close();
    fs.rmSync(work, { recursive: true, force: true });
  }

  const version = execFileSync(criuPath, ['--version'], { encoding: 'utf8' }).split('\n')[0];
  console.log('## CRIU-RPC client: node-criu vs criu CLI vs pycriu');
  console.log('');
  console.log(
    `- machine: ${os.cpus().length} × ${os.cpus()[0].model}, Linux ${os.release()}, node ${process.version}, CRIU ${version.replace('Version: ', '')}`,
  );
  console.log(
    `- date: ${new Date().toISOString()}; ${ITERS} iterations per tool, interleaved; times in ms (median, p90)`,
  );
  console.log(
    '- every tool spawns its own criu (node-criu and pycriu: `criu swrk` per call; CLI: one criu process per command)',
  );
  console.log('');
  console.log('| operation | tool | median ms | p90 ms | vs criu CLI (median) | vs pycriu (median) |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: |');
  const keyOf = (op, tool) => `${op}|${tool}`;
  for (const key of Object.keys(samples)) {
    const [op, tool] = key.split('|');
    const m = median(samples[key]);
    const cliKey = Object.keys(samples).find((k) => k.startsWith(`${op}|criu CLI`));
    const pyKey = keyOf(op, 'pycriu');
    const rel = (other) =>
      other && other !== key && samples[other] ? `${((m / median(samples[other]) - 1) * 100).toFixed(1)}%` : '';
    console.log(
      `| ${op} | ${tool} | ${m.toFixed(1)} | ${percentile(samples[key], 90).toFixed(1)} | ${rel(cliKey)} | ${rel(pyKey)} |`,
    );
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
