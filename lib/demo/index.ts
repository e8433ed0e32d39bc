/**
 * `npx node-criu demo`: a TCP server on host A with N clients streaming both ways is live-migrated
 * to host B by each route in turn (whole process with CRIU; connections only with libsoccr; and,
 * on the same host, fd passing), and a table shows what the clients saw. Everything runs in
 * network namespaces the demo creates (names `ncrdemo-<pid>-...`) and is removed at the end, on
 * failure, and on SIGINT/SIGTERM; a later run sweeps namespaces a killed run left behind.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { ensureCriu } from '../criu/locate';
import { findExecutable, run } from '../sys/exec';
import { findNft } from '../sys/nft';
import { DemoError } from './errors';
import { startDemoAgent, type DemoAgent } from './agent-host';
import { DEMO_PREFIX, DEVICE, DemoLab, HOST_IP, SERVICE_CIDR, sweepStaleDemos } from './lab';
import { makeDemoPki } from './pki';
import { ControlHub, ROUTE_TITLES, runRoute } from './routes';
import type { DemoRoute, DemoRouteResult, RouteContext } from './routes';

export type { DemoRoute, DemoRouteResult } from './routes';

export interface DemoOptions {
  /** Client connections (default 300). */
  clients?: number;
  /** Routes to run, in order (default: process, connections, fd). */
  routes?: DemoRoute[];
  /** Traffic before each migration (ms, default 1500) and after it (default 1000). */
  warmupMs?: number;
  afterMs?: number;
  /** Each connection sends paceBytes every paceMs in each direction (default 512 B / 20 ms). */
  paceBytes?: number;
  paceMs?: number;
  criuPath?: string;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  signal?: AbortSignal;
  /**
   * Clean up on SIGINT/SIGTERM, then let the signal end the process. Default: true unless a
   * `signal` is given (then the caller handles signals and aborts it: runDemo cleans up at once
   * and rejects with ERR_DEMO_ABORTED).
   */
  handleSignals?: boolean;
}

export interface DemoReport {
  date: string;
  kernel: string;
  clients: number;
  paceBytes: number;
  paceMs: number;
  routes: DemoRouteResult[];
  /** Every route kept every connection, exactly once both ways, with no reset. */
  ok: boolean;
  /** Stale demo namespaces removed at startup. */
  swept: string[];
}

export { DemoError };

const ALL_ROUTES: DemoRoute[] = ['process', 'connections', 'fd'];

/** Whether `command` is an executable on PATH (a PATH search, no shell). */
function has(command: string): boolean {
  return findExecutable(command) !== undefined;
}

/** nft for the locks: installed with apt when missing (we are root), else a clear error. */
async function ensureNft(log: (line: string) => void): Promise<void> {
  if (findNft()) return;
  if (!has('apt-get'))
    throw new DemoError(
      'nft (nftables) is missing and apt-get is not available: install nftables',
      'ERR_DEMO_TOOL_MISSING',
    );
  log('installing nftables with apt-get');
  try {
    const env = { DEBIAN_FRONTEND: 'noninteractive' };
    await run('apt-get', ['update', '-qq'], { env });
    await run('apt-get', ['install', '-y', '-qq', 'nftables'], { env });
  } catch (error) {
    throw new DemoError(
      'nft (nftables) is missing and apt-get install nftables failed: install it by hand',
      'ERR_DEMO_TOOL_MISSING',
      error,
    );
  }
  if (!findNft()) throw new DemoError('nft still not found after installing nftables', 'ERR_DEMO_TOOL_MISSING');
}

function validate(
  options: DemoOptions,
): Required<Pick<DemoOptions, 'clients' | 'routes' | 'warmupMs' | 'afterMs' | 'paceBytes' | 'paceMs'>> {
  const clients = options.clients ?? 300;
  if (!Number.isInteger(clients) || clients < 1 || clients > 5000)
    throw new DemoError('clients must be an integer from 1 to 5000', 'ERR_DEMO_ARGS');
  const routes = options.routes ?? ALL_ROUTES;
  if (!Array.isArray(routes) || routes.length === 0 || routes.some((r) => !ALL_ROUTES.includes(r))) {
    throw new DemoError(`routes must be a non-empty list of ${ALL_ROUTES.join(', ')}`, 'ERR_DEMO_ARGS');
  }
  const number = (value: number | undefined, fallback: number, name: string, min: number) => {
    const v = value ?? fallback;
    if (!Number.isFinite(v) || v < min) throw new DemoError(`${name} must be a number >= ${min}`, 'ERR_DEMO_ARGS');
    return v;
  };
  return {
    clients,
    routes,
    warmupMs: number(options.warmupMs, 1500, 'warmupMs', 0),
    afterMs: number(options.afterMs, 1000, 'afterMs', 0),
    paceBytes: number(options.paceBytes, 512, 'paceBytes', 1),
    paceMs: number(options.paceMs, 20, 'paceMs', 1),
  };
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoReport> {
  const settings = validate(options);
  const log = options.log ?? (() => undefined);
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new DemoError(
      'the demo needs root (network namespaces, TCP_REPAIR, CRIU): run it with sudo',
      'ERR_DEMO_NOT_ROOT',
    );
  }
  for (const tool of ['ip', 'nsenter']) {
    if (!has(tool))
      throw new DemoError(`${tool} is missing (Debian: apt-get install iproute2 util-linux)`, 'ERR_DEMO_TOOL_MISSING');
  }
  await ensureNft(log);
  let criuPath = options.criuPath;
  // The process route is CRIU's, and the migration agent on B (both routes) runs CRIU too.
  if (settings.routes.includes('process') || settings.routes.includes('connections')) {
    log('looking for CRIU (installs CRIU 4.2 in a private root on first use, about a minute)');
    criuPath = (await ensureCriu(criuPath === undefined ? { install: true } : { criuPath })).path;
  }

  const swept = await sweepStaleDemos();
  if (swept.length > 0) log(`removed ${swept.length} namespaces left by an interrupted demo`);
  const lab = new DemoLab();
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), `${lab.id}-`));
  const control = new ControlHub(path.join(stateDir, 'control.sock'));
  const pids = new Set<number>();

  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> => (cleaned ??= removeAll());
  const removeAll = async (): Promise<void> => {
    control.close();
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await lab.destroy();
    if (process.env.NODE_CRIU_DEMO_KEEP) log(`kept ${stateDir}`);
    else fs.rmSync(stateDir, { recursive: true, force: true, maxRetries: 3 });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    void cleanup().finally(() => process.kill(process.pid, signal));
  };
  if (options.handleSignals ?? options.signal === undefined) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  // Aborted: remove everything now (the demo's processes are disposable, CRIU included); the
  // running route then fails fast and runDemo rejects.
  const onAbort = () => {
    log('interrupted: removing the demo namespaces and processes');
    void cleanup();
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });

  let agent: DemoAgent | undefined;
  const report: DemoReport = {
    date: new Date().toISOString(),
    kernel: os.release(),
    clients: settings.clients,
    paceBytes: settings.paceBytes,
    paceMs: settings.paceMs,
    routes: [],
    ok: false,
    swept,
  };
  try {
    log(`setting up namespaces ${lab.id}-{a,b,c,br}`);
    await lab.setup();
    await control.listen();
    const ctx: RouteContext = {
      lab,
      stateDir,
      control,
      pids,
      log,
      clients: settings.clients,
      paceBytes: settings.paceBytes,
      paceMs: settings.paceMs,
      warmupMs: settings.warmupMs,
      afterMs: settings.afterMs,
      ...(criuPath !== undefined ? { criuPath } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    };
    if (settings.routes.includes('process') || settings.routes.includes('connections')) {
      log(`host B: making TLS certificates (openssl) and starting 'node-criu agent' on ${HOST_IP.b}`);
      ctx.pki = await makeDemoPki(path.join(stateDir, 'pki'), HOST_IP.b);
      agent = await startDemoAgent({
        netnsPath: lab.path('b'),
        address: HOST_IP.b,
        pki: ctx.pki,
        stateDir,
        allowAddress: SERVICE_CIDR,
        device: DEVICE,
        appSocket: path.join(stateDir, 'agent-app.sock'),
        ...(criuPath !== undefined ? { criuPath } : {}),
        log,
      });
      ctx.agent = agent;
      pids.add(agent.pid);
    }
    for (const route of settings.routes) {
      if (options.signal?.aborted) break;
      log(`route ${ROUTE_TITLES[route]}: ${settings.clients} clients`);
      report.routes.push(await runRoute(ctx, route));
    }
    if (options.signal?.aborted)
      throw new DemoError(
        'the demo was interrupted; everything it created is removed',
        'ERR_DEMO_ABORTED',
        options.signal.reason,
      );
    report.ok = report.routes.every(
      (r) =>
        r.error === undefined &&
        r.kept === r.connections &&
        r.exactBothWays === r.connections &&
        r.rsts === 0 &&
        r.leftoverTables.length === 0,
    );
    return report;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    await agent?.stop().catch(() => undefined);
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

const ms = (v: number | undefined) => (v === undefined ? '-' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
const rsts = (r: DemoRouteResult) => {
  const where = Object.entries(r.rstDetail ?? {}).filter(([, v]) => v !== 0);
  return where.length === 0 ? String(r.rsts) : `${r.rsts} (${where.map(([k, v]) => `${k} ${v}`).join(', ')})`;
};
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

/** The report as a markdown table, with the machine/date header lines. */
export function formatDemoTable(report: DemoReport): string {
  const lines = [
    `node-criu demo: ${report.clients} clients, each streaming ${report.paceBytes} B every ${report.paceMs} ms both ways`,
    `date ${report.date}, kernel ${report.kernel}, ${os.cpus().length} CPUs`,
    '',
    '| route | connections kept | exactly once both ways (c→s / s→c) | RSTs | longest pause (before: steady) | phases (ms) |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of report.routes) {
    const phases = Object.entries(r.phases)
      .map(([k, v]) => `${k} ${ms(v)}`)
      .join(', ');
    const exact = `${r.exactBothWays}/${r.connections} (${mb(r.bytesClientToServer)} / ${mb(r.bytesServerToClient)})`;
    const cells = r.error
      ? [r.title, `failed: ${r.error}`, '-', '-', '-', phases || '-']
      : [
          r.title,
          `${r.kept}/${r.connections}`,
          exact,
          rsts(r),
          `${ms(r.longestPauseMs)} ms (${ms(r.steadyPauseMs)} ms)`,
          phases,
        ];
    lines.push(`| ${cells.join(' | ')} |`);
    if (r.leftoverTables.length > 0) lines.push(`|  | left behind: ${r.leftoverTables.join('; ')} | | | | |`);
  }
  lines.push(
    '',
    report.ok ? 'Every route kept every connection, every byte exactly once, no reset.' : 'NOT OK: see the rows above.',
  );
  return lines.join('\n');
}

export { DEMO_PREFIX };
