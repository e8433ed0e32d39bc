/**
 * runDemo at small scale: every route keeps every connection, exactly once both ways, no RST; and
 * nothing is left behind (namespaces, nftables tables, processes, state directories), also when
 * the demo is interrupted with SIGINT, or killed and swept by the next run.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { DemoError, formatDemoTable, runDemo } from '../lib/demo';
import { sweepStaleDemos } from '../lib/demo/lab';

function demoNamespaces(pid: number): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`ncrdemo-${pid}-`));
}

function demoDirs(pid: number): string[] {
  return fs.readdirSync(os.tmpdir()).filter((e) => e.startsWith(`ncrdemo-${pid}-`));
}

/** Processes whose command line names a demo of `pid` (servers, clients, restored servers). */
function demoProcesses(pid: number): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(`ncrdemo-${pid}-`)) found.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

function describe(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return `${pid} ${stat.split(' ')[2]} ${fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')}`;
  } catch {
    return `${pid} gone`;
  }
}

function childrenOf(pid: number): string[] {
  const out: number[] = [];
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    const text = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    if (text) out.push(...text.split(/\s+/).map(Number));
  }
  return out.map(describe);
}

it('migrates a streaming server by every route: all connections kept, exact both ways, no reset, nothing left', async () => {
  const childrenBefore = childrenOf(process.pid);
  const lines: string[] = [];
  const report = await runDemo({
    clients: 8,
    warmupMs: 500,
    afterMs: 500,
    log: (l) => lines.push(l),
    handleSignals: false,
  });
  const table = formatDemoTable(report);
  expect(report.routes.map((r) => r.route)).toEqual(['process', 'connections', 'fd']);
  for (const row of report.routes) {
    expect({ route: row.route, error: row.error }).toEqual({ route: row.route, error: undefined });
    expect(row.kept).toBe(8);
    expect(row.exactBothWays).toBe(8);
    expect(row.bytesClientToServer).toBeGreaterThan(0);
    expect(row.bytesServerToClient).toBeGreaterThan(0);
    expect(row.rsts).toBe(0);
    expect(row.leftoverTables).toEqual([]);
    expect(row.longestPauseMs).toBeGreaterThan(0);
    expect(row.phases.total).toBeGreaterThan(0);
    expect(table).toContain(`| ${row.title} | 8/8 | 8/8 (`);
  }
  expect(report.ok).toBe(true);
  expect(Object.keys(report.routes[1].phases)).toEqual([
    'handshake',
    'checkpoint',
    'transfer',
    'moveAddress',
    'restore',
    'total',
  ]);

  expect(demoNamespaces(process.pid)).toEqual([]);
  expect(demoDirs(process.pid)).toEqual([]);
  expect(demoProcesses(process.pid)).toEqual([]);
  // Children the demo killed are reaped by libuv on SIGCHLD: give the loop a moment.
  for (let i = 0; i < 100 && childrenOf(process.pid).length > childrenBefore.length; i++)
    await new Promise((r) => setTimeout(r, 20));
  expect(childrenOf(process.pid)).toEqual(childrenBefore);
});

it('cleans up everything when interrupted with SIGINT in the middle of a route', async () => {
  const main = path.join(__dirname, '..', 'dist', 'demo', 'main.js');
  const child = spawn(process.execPath, [main, '--clients', '4', '--routes', 'connections'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const pid = child.pid as number;
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    child.once('exit', (_code, signal) => resolve(signal)),
  );
  // Wait until the route is running (its clients are connected), then interrupt.
  for (let i = 0; i < 600 && !stderr.includes('route connections'); i++) await new Promise((r) => setTimeout(r, 20));
  expect(stderr).toContain('route connections');
  expect(demoNamespaces(pid)).toHaveLength(4);
  // Any point inside the route will do; the cleanup asserted below must not depend on which.
  await new Promise((r) => setTimeout(r, 300));
  child.kill('SIGINT');
  expect(await exited).toBe('SIGINT');
  expect(demoNamespaces(pid)).toEqual([]);
  expect(demoDirs(pid)).toEqual([]);
  expect(demoProcesses(pid)).toEqual([]);
});

it('sweeps the namespaces and state directory of a demo that was killed', async () => {
  const dead = spawnSync('true').pid as number;
  const name = `ncrdemo-${dead}-beef-a`;
  const dir = path.join(os.tmpdir(), `ncrdemo-${dead}-beef-x`);
  execFileSync('ip', ['netns', 'add', name]);
  fs.mkdirSync(dir);
  try {
    expect(await sweepStaleDemos()).toContain(name);
    expect(demoNamespaces(dead)).toEqual([]);
    expect(fs.existsSync(dir)).toBe(false);
  } finally {
    spawnSync('ip', ['netns', 'delete', name]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it('rejects bad options with a typed error before touching anything', async () => {
  await expect(runDemo({ clients: 0 })).rejects.toMatchObject({ code: 'ERR_DEMO_ARGS' });
  await expect(runDemo({ routes: ['teleport' as never] })).rejects.toBeInstanceOf(DemoError);
  expect(demoNamespaces(process.pid)).toEqual([]);
});

it('stops and removes everything when its AbortSignal fires in the middle of a route', async () => {
  const controller = new AbortController();
  const run = runDemo({
    clients: 4,
    routes: ['connections', 'fd'],
    signal: controller.signal,
    log: (line) => {
      // Any point inside the route will do; the cleanup asserted below must not depend on which.
      if (line.startsWith('route connections')) setTimeout(() => controller.abort(new Error('test abort')), 300);
    },
  });
  await expect(run).rejects.toMatchObject({ code: 'ERR_DEMO_ABORTED' });
  expect(demoNamespaces(process.pid)).toEqual([]);
  expect(demoDirs(process.pid)).toEqual([]);
  expect(demoProcesses(process.pid)).toEqual([]);
});
