/**
 * One run of the demo per route: a fresh server on host A with N streaming clients, the
 * migration to host B (or, for fd passing, to a successor process on A), more traffic, then the
 * figures: connections kept, both directions exactly once, resets, the longest pause any client
 * saw, and the route's phase times.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import { run as runCommand } from '../sys/exec';
import type { DemoAgent } from './agent-host';
import { ControlLink } from './control';
import { DemoError } from './errors';
import { DEVICE, DemoLab, HOST_IP, SERVICE_CIDR, SERVICE_IP } from './lab';
import type { DemoPki } from './pki';
import { verdict } from './traffic';
import type { ClientConnectionReport, ServerConnectionReport } from './traffic';

export type DemoRoute = 'process' | 'connections' | 'fd';

export const ROUTE_TITLES: Record<DemoRoute, string> = {
  process: 'process (CRIU) A→B',
  connections: 'connections (libsoccr) A→B',
  fd: 'fd passing (SCM_RIGHTS) A→A′',
};

export interface DemoRouteResult {
  route: DemoRoute;
  title: string;
  connections: number;
  /** Open at the end, on the new server, with no error on either side. */
  kept: number;
  /** Connections whose bytes arrived exactly once both ways (counts and SHA-256 compared). */
  exactBothWays: number;
  bytesClientToServer: number;
  bytesServerToClient: number;
  /** Resets during the run: RSTs sent on the demo network by A, B or C, plus reset errors either end's sockets reported. */
  rsts: number;
  /** Where they were counted (delta per counter). */
  rstDetail?: Record<string, number>;
  /** Longest time any client waited between two arrivals of data (from just before the migration). */
  longestPauseMs: number;
  /** The same before the migration (warm-up): the machine's own jitter, for comparison. */
  steadyPauseMs: number;
  /** The route's own phase times (ms). */
  phases: Record<string, number>;
  /** nftables tables still in A or B after the route (there should be none; removed before the next route). */
  leftoverTables: string[];
  error?: string;
}

export interface RouteContext {
  lab: DemoLab;
  stateDir: string;
  clients: number;
  paceBytes: number;
  paceMs: number;
  warmupMs: number;
  afterMs: number;
  criuPath?: string;
  signal?: AbortSignal;
  log: (line: string) => void;
  /** Every pid the route started or learned of (killed at cleanup). */
  pids: Set<number>;
  control: ControlHub;
  /** The current route's clients process. */
  shared?: ControlLink;
  /** Longest gap during the warm-up. */
  steadyPauseMs?: number;
  /** Reset counters just before the migration. */
  before?: Record<string, number>;
  /** The demo's certificates and the migration agent on B (process and connections routes). */
  pki?: DemoPki;
  agent?: DemoAgent;
}

const SERVICE_PORT = 8080;
const scriptPath = (name: string) =>
  __filename.endsWith('.ts')
    ? path.resolve(__dirname, '..', '..', 'dist', 'demo', `${name}.js`)
    : path.join(__dirname, `${name}.js`);

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The orchestrator's end of the control socket: links by role, hooks the servers call. */
export class ControlHub {
  readonly server: net.Server;
  private readonly links = new Map<string, { link: ControlLink; pid: number }>();
  private readonly waiters: Array<() => void> = [];
  readonly events: Record<string, unknown>[] = [];
  onMoveAddress: (() => Promise<void>) | undefined;
  private closed = false;
  onMoveAddressBack: (() => Promise<void>) | undefined;

  constructor(readonly socketPath: string) {
    this.server = net.createServer((socket) => {
      const link: ControlLink = new ControlLink(socket, (body) => this.handle(link, body));
    });
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.socketPath, () => resolve());
    });
  }

  private handle(link: ControlLink, body: Record<string, unknown>): unknown {
    if (body.cmd === 'hello') {
      this.links.set(body.role as string, { link, pid: body.pid as number });
      this.waiters.splice(0).forEach((w) => w());
      return {};
    }
    if (body.cmd === 'moveAddress') return this.onMoveAddress?.();
    if (body.cmd === 'moveAddressBack') return this.onMoveAddressBack?.();
    if (body.cmd === 'handoverDone') {
      this.events.push(body);
      this.waiters.splice(0).forEach((w) => w());
      return {};
    }
    throw new DemoError(`unknown command ${String(body.cmd)}`, 'ERR_DEMO_UNKNOWN_COMMAND');
  }

  async role(role: string, timeoutMs = 30000): Promise<{ link: ControlLink; pid: number }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.closed) throw new DemoError('the demo is shutting down', 'ERR_DEMO_SHUTTING_DOWN');
      const found = this.links.get(role);
      if (found) return found;
      if (Date.now() > deadline)
        throw new DemoError(
          `the demo's ${role} process did not start (see ${path.dirname(this.socketPath)}/*.log)`,
          'ERR_DEMO_START_FAILED',
        );
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  }

  async handoverDone(timeoutMs = 60000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    while (this.events.length === 0) {
      if (this.closed) throw new DemoError('the demo is shutting down', 'ERR_DEMO_SHUTTING_DOWN');
      if (Date.now() > deadline)
        throw new DemoError('the target never reported the end of the handover', 'ERR_DEMO_HANDOVER_FAILED');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
    return this.events.shift() as Record<string, unknown>;
  }

  /** Forgets the previous route's processes. */
  reset(): void {
    for (const { link } of this.links.values()) link.close();
    this.links.clear();
    this.events.length = 0;
  }

  close(): void {
    this.closed = true;
    this.reset();
    this.server.close();
  }
}

/**
 * Waits until the server application has accepted every client: a connection still in the
 * listener's accept queue when the handover closes the listener would be reset (and CRIU refuses
 * to dump one). Under heavy load Node can take seconds to accept a thousand connections.
 */
async function waitForAccepted(ctx: RouteContext, count: () => Promise<number>): Promise<void> {
  for (let i = 0; ; i++) {
    const accepted = await count();
    if (accepted >= ctx.clients) return;
    if (i >= 300)
      throw new DemoError(
        `the server accepted only ${accepted} of ${ctx.clients} connections`,
        'ERR_DEMO_START_FAILED',
      );
    await sleep(100);
  }
}

function readReportFile(file: string, pid: number): Promise<ServerConnectionReport[]> {
  return (async () => {
    fs.rmSync(file, { force: true });
    process.kill(pid, 'SIGUSR2');
    for (let i = 0; !fs.existsSync(file); i++) {
      if (i > 500) throw new DemoError('the server does not answer', 'ERR_DEMO_START_FAILED');
      await sleep(10);
    }
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { reports: ServerConnectionReport[] }).reports;
  })();
}

interface ServerSide {
  report(): Promise<ServerConnectionReport[]>;
  stop(): Promise<void>;
}

async function startClients(ctx: RouteContext): Promise<ControlLink> {
  const child = ctx.lab.spawnNode(
    'c',
    scriptPath('client-main'),
    { control: ctx.control.socketPath, paceBytes: ctx.paceBytes, paceMs: ctx.paceMs },
    { log: path.join(ctx.stateDir, 'clients.log') },
  );
  if (child.pid) ctx.pids.add(child.pid);
  const { link } = await ctx.control.role('clients');
  await link.request({ cmd: 'connect', count: ctx.clients, host: SERVICE_IP, port: SERVICE_PORT });
  return link;
}

function serverConfig(ctx: RouteContext, role: string, statusDir: string, extra: Record<string, unknown> = {}) {
  return {
    role,
    vip: SERVICE_IP,
    port: SERVICE_PORT,
    paceBytes: ctx.paceBytes,
    paceMs: ctx.paceMs,
    statusDir,
    control: ctx.control.socketPath,
    ...extra,
  };
}

function agentOf(ctx: RouteContext): DemoAgent & { appSocket: string } {
  const agent = ctx.agent;
  if (agent?.appSocket === undefined || ctx.pki === undefined)
    throw new DemoError('the migration agent is not running', 'ERR_DEMO_START_FAILED');
  return agent as DemoAgent & { appSocket: string };
}

/**
 * `node-criu migrate --to` run on host A, as a user runs it there (the TLS connection to B's agent
 * leaves from A's network); resolves with the command's --json result.
 */
async function migrateToAgent(
  ctx: RouteContext,
  pid: number,
): Promise<{ restoredPid: number; phases: Record<string, number> }> {
  const { pki, agent } = ctx;
  if (pki === undefined || agent === undefined)
    throw new DemoError('the agent is not running', 'ERR_DEMO_START_FAILED');
  const args = [
    scriptPath('../cli/main'),
    'migrate',
    '--pid',
    String(pid),
    '--to',
    `${HOST_IP.b}:${agent.port}`,
    '--cert',
    pki.files.sourceCert,
    '--key',
    pki.files.sourceKey,
    '--ca',
    pki.files.ca,
    '--move-address',
    SERVICE_CIDR,
    '--device',
    DEVICE,
    '--timeout',
    '120',
    '--json',
    '--quiet',
    ...(ctx.criuPath !== undefined ? ['--criu-path', ctx.criuPath] : []),
  ];
  let out: string;
  try {
    out = (
      await runCommand(process.execPath, args, {
        netns: ctx.lab.path('a'),
        timeoutMs: 180_000,
        ...(ctx.signal !== undefined ? { signal: ctx.signal } : {}),
      })
    ).stdout;
  } catch (error) {
    const e = error as { stderr?: string; message: string };
    throw new DemoError(
      `migrate --to failed: ${(e.stderr ?? e.message).trim().split('\n').pop() ?? ''}`,
      'ERR_DEMO_MIGRATION_FAILED',
      error,
    );
  }
  return JSON.parse(out) as { restoredPid: number; phases: Record<string, number> };
}

/** The whole process moves with CRIU to the agent on B; the server is driven by signals and a file. */
async function migrateByProcess(ctx: RouteContext): Promise<{ server: ServerSide; phases: Record<string, number> }> {
  const statusDir = path.join(ctx.stateDir, 'process');
  fs.mkdirSync(statusDir, { recursive: true, mode: 0o700 });
  const child = ctx.lab.spawnNode('a', scriptPath('server-main'), serverConfig(ctx, 'standalone', statusDir), {
    detached: true,
  });
  child.unref();
  let pid = child.pid as number;
  ctx.pids.add(pid);
  const ready = path.join(statusDir, 'ready');
  for (let i = 0; !fs.existsSync(ready); i++) {
    if (i > 300 || child.exitCode !== null)
      throw new DemoError('the standalone server did not start', 'ERR_DEMO_START_FAILED');
    await sleep(20);
  }
  const clients = await startClients(ctx);
  ctx.shared = clients;
  const reportFile = path.join(statusDir, 'report.json');
  await waitForAccepted(ctx, async () => (await readReportFile(reportFile, pid)).length);
  await clients.request({ cmd: 'resetGaps' }); // the steady-state figure starts once all are served
  await sleep(ctx.warmupMs);
  ctx.before = await ctx.lab.resetCounters();
  ctx.steadyPauseMs = (await clients.request<{ steadyMaxGapMs: number }>({ cmd: 'resetGaps' })).steadyMaxGapMs;
  ctx.log(`process route: 'node-criu migrate --to ${HOST_IP.b}' on A moves pid ${pid} to the agent on B`);
  const result = await migrateToAgent(ctx, pid);
  ctx.lab.vipOn = 'b'; // moved by the migrate command and the agent, not by the lab
  pid = result.restoredPid;
  ctx.pids.add(pid);
  return {
    phases: result.phases,
    server: {
      report: () => readReportFile(reportFile, pid),
      async stop() {
        process.kill(pid, 'SIGUSR1');
      },
    },
  };
}

/** handOverConnections: 'repair' to a target server on B over TCP, or 'fd' to a successor on A. */
async function migrateByHandover(
  ctx: RouteContext,
  method: 'repair' | 'fd',
): Promise<{ server: ServerSide; phases: Record<string, number> }> {
  const statusDir = path.join(ctx.stateDir, method);
  fs.mkdirSync(statusDir, { recursive: true, mode: 0o700 });
  const source = ctx.lab.spawnNode('a', scriptPath('server-main'), serverConfig(ctx, 'source', statusDir), {
    log: path.join(ctx.stateDir, `source-${method}.log`),
  });
  if (source.pid) ctx.pids.add(source.pid);
  const { link: sourceLink } = await ctx.control.role('source');
  const clients = await startClients(ctx);
  ctx.shared = clients;
  if (method === 'repair') {
    const target = ctx.lab.spawnNode(
      'b',
      scriptPath('server-main'),
      // B's server takes the connections through B's migration agent (it restores them; the
      // server gets them live), registering there for the service port.
      serverConfig(ctx, 'target', statusDir, { agentSocket: agentOf(ctx).appSocket }),
      { log: path.join(ctx.stateDir, 'target-repair.log') },
    );
    if (target.pid) ctx.pids.add(target.pid);
    await ctx.control.role('target');
  }
  await waitForAccepted(
    ctx,
    async () => (await sourceLink.request<{ reports: unknown[] }>({ cmd: 'report' })).reports.length,
  );
  await clients.request({ cmd: 'resetGaps' }); // the steady-state figure starts once all are served
  await sleep(ctx.warmupMs);
  ctx.before = await ctx.lab.resetCounters();
  ctx.steadyPauseMs = (await clients.request<{ steadyMaxGapMs: number }>({ cmd: 'resetGaps' })).steadyMaxGapMs;
  ctx.control.onMoveAddress = () => ctx.lab.moveVip('b');
  ctx.control.onMoveAddressBack = () => ctx.lab.moveVip('a');
  ctx.log(`${method === 'fd' ? 'fd' : 'connections'} route: handing ${ctx.clients} connections over`);
  ctx.log(`  A before the handover: ${await ctx.lab.socketSummary('a')}`);
  const reply = await sourceLink.request<{
    result?: { phases: Record<string, number>; handedOver: number };
    failed?: boolean;
    code?: string;
    message?: string;
  }>({
    cmd: 'handover',
    method,
    // To B's agent over mutual TLS, from A's network, as between two real hosts.
    to: {
      host: HOST_IP.b,
      port: agentOf(ctx).port,
      tlsFiles: { cert: ctx.pki?.files.sourceCert, key: ctx.pki?.files.sourceKey, ca: ctx.pki?.files.ca },
    },
  });
  if (!reply.result)
    throw new DemoError(
      `handover failed: ${reply.code ?? ''} ${reply.message ?? ''} (the source kept its connections)`,
      'ERR_DEMO_HANDOVER_FAILED',
    );
  ctx.log(`  handed over ${reply.result.handedOver} of ${ctx.clients} connections`);
  const done = await ctx.control.handoverDone();
  if (done.failed)
    throw new DemoError(`target: ${String(done.code)} ${String(done.message)}`, 'ERR_DEMO_HANDOVER_FAILED');
  const { link: targetLink, pid: targetPid } = await ctx.control.role('target');
  ctx.pids.add(targetPid);
  const { handshake, checkpoint, transfer, moveAddress, restore, total } = reply.result.phases;
  const phases: Record<string, number> =
    method === 'fd'
      ? { handshake, pause: checkpoint, transfer, adopt: restore, total }
      : { handshake, checkpoint, transfer, moveAddress, restore, total };
  return {
    phases,
    server: {
      async report() {
        return (await targetLink.request<{ reports: ServerConnectionReport[] }>({ cmd: 'report' })).reports;
      },
      async stop() {
        await targetLink.request({ cmd: 'stop' });
      },
    },
  };
}

/** Runs one route end to end and measures it. */
export async function runRoute(ctx: RouteContext, route: DemoRoute): Promise<DemoRouteResult> {
  await ctx.lab.placeVip('a');
  ctx.control.reset();
  const row: DemoRouteResult = {
    route,
    title: ROUTE_TITLES[route],
    connections: ctx.clients,
    kept: 0,
    exactBothWays: 0,
    bytesClientToServer: 0,
    bytesServerToClient: 0,
    rsts: 0,
    longestPauseMs: 0,
    steadyPauseMs: 0,
    phases: {},
    leftoverTables: [],
  };
  try {
    const { server, phases } =
      route === 'process'
        ? await migrateByProcess(ctx)
        : await migrateByHandover(ctx, route === 'fd' ? 'fd' : 'repair');
    row.phases = phases;
    const clients = ctx.shared as ControlLink;
    await sleep(ctx.afterMs);
    await clients.request({ cmd: 'stop' });
    await server.stop();
    // Both sides stopped sending: wait until everything in flight has arrived.
    let clientReports: ClientConnectionReport[] = [];
    let serverReports = new Map<number, ServerConnectionReport>();
    for (let i = 0; i < 150; i++) {
      clientReports = (await clients.request<{ reports: ClientConnectionReport[] }>({ cmd: 'report' })).reports;
      serverReports = new Map((await server.report()).map((r) => [r.port, r]));
      const settled = clientReports.every((c) => {
        const s = serverReports.get(c.port);
        return s !== undefined && s.receivedBytes === c.sent.bytes && c.received.bytes === s.sentBytes;
      });
      if (settled) break;
      await sleep(100);
    }
    const verdicts = clientReports.map((c) => verdict(c, serverReports.get(c.port)));
    row.exactBothWays = verdicts.filter((v) => v.exactClientToServer && v.exactServerToClient).length;
    row.bytesClientToServer = verdicts.reduce((n, v) => n + v.clientToServerBytes, 0);
    row.bytesServerToClient = verdicts.reduce((n, v) => n + v.serverToClientBytes, 0);
    row.kept = clientReports.filter((c) => {
      const s = serverReports.get(c.port);
      return s !== undefined && !c.ended && !s.ended && c.errors.length === 0 && s.errors.length === 0;
    }).length;
    row.longestPauseMs = Math.max(0, ...clientReports.map((c) => c.maxGapMs));
    row.steadyPauseMs = ctx.steadyPauseMs ?? 0;
    const clientResets =
      clientReports.reduce((n, c) => n + c.resets, 0) + [...serverReports.values()].reduce((n, s) => n + s.resets, 0);
    const after = await ctx.lab.resetCounters();
    row.rstDetail = { clientErrors: clientResets };
    for (const [key, value] of Object.entries(after)) row.rstDetail[key] = value - (ctx.before?.[key] ?? 0);
    row.rsts = Object.values(row.rstDetail).reduce((a, b) => a + b, 0);
  } catch (error) {
    row.error = (error as Error).message;
    ctx.log(`${route} route failed: ${row.error}`);
  } finally {
    ctx.control.reset();
    ctx.shared = undefined;
    await ctx.lab.killProcesses(ctx.agent !== undefined ? [ctx.agent.pid] : []);
    row.leftoverTables = await ctx.lab.nftTables();
    await ctx.lab.flushTables();
  }
  return row;
}
