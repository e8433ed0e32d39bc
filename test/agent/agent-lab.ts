/**
 * Two hosts and a client network for the agent tests (test/helpers/hosts.ts): A (10.77.0.1, the
 * service address 10.77.0.100 starts here), B (10.77.0.2, the agent), C (10.77.0.10, clients).
 * The agent runs as `node-criu agent` on B in a private mount namespace; the server runs on A in
 * one of its own with its stdio inherited (as `ip netns exec` starts a service), and `node-criu
 * migrate --to` runs on A in a third, dumping into its private work dir. Clients in C stream both ways
 * (test/fixtures/process-clients.js). RSTs into C are counted by an nftables counter.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { addServiceAddress, HostLab, SERVICE_ADDRESS, SERVICE_CIDR, type LabHost } from '../helpers/hosts';
import { makeTestPki, type TestPki } from '../helpers/pki';
import { waitUntil } from '../helpers/wait';
import type { ClientsReport, ServerReport, StreamConfig } from '../migration/process-lab';

export const CLI = path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js');
const FIXTURES = path.join(__dirname, '..', 'fixtures');
export const AGENT_PORT = 7100;

export interface AgentProcess {
  child: ChildProcess;
  /** The spawned child's pid (unshare's, with privatePid): its mount namespace is the agent's. */
  pid: number;
  /** The agent's own pid (pid 1 of its pid namespace with privatePid): signal this one. */
  mainPid: number;
  events: Array<Record<string, unknown>>;
  stderr: () => string;
  /** Resolves with the first event matching `pred` (bounded). */
  waitEvent(
    pred: (e: Record<string, unknown>) => boolean,
    what: string,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
}

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  json: Record<string, unknown> | undefined;
  stderr: string;
}

export class AgentLab {
  readonly hosts = new HostLab();
  readonly A: LabHost;
  readonly B: LabHost;
  readonly C: LabHost;
  readonly pki: TestPki;
  readonly statusRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-agent-'));
  private readonly pids = new Set<number>();

  constructor(readonly criuPath: string) {
    this.A = this.hosts.addHost('a', 1);
    this.B = this.hosts.addHost('b', 2);
    this.C = this.hosts.addHost('c', 10);
    addServiceAddress(this.hosts, this.A);
    this.pki = makeTestPki([`IP:${this.B.address}`]);
    this.hosts.lab.exec(
      this.C.netns,
      'nft',
      ['-f', '-'],
      'table inet ncr_rst {\n chain input {\n  type filter hook input priority -300;\n  tcp flags & rst == rst counter\n }\n}\n',
    );
  }

  rstsIntoClients(): number {
    const text = this.hosts.lab.exec(this.C.netns, 'nft', ['list', 'table', 'inet', 'ncr_rst']);
    return Number(/counter packets (\d+)/.exec(text)?.[1] ?? NaN);
  }

  clientResets(): { rsts: number; estabResets: number } {
    return { rsts: this.rstsIntoClients(), estabResets: this.hosts.lab.tcpCounters(this.C.netns).EstabResets };
  }

  track(pid: number): void {
    this.pids.add(pid);
  }

  /**
   * `node-criu agent` on B (private mount; with privatePid also its own pid namespace, as post-copy
   * needs), --json; resolves once it listens.
   */
  async startAgent(
    extra: string[] = [],
    criuPath = this.criuPath,
    env?: NodeJS.ProcessEnv,
    privatePid = false,
  ): Promise<AgentProcess> {
    const child = this.hosts.spawnOnHost(
      this.B,
      process.execPath,
      [
        CLI,
        'agent',
        '--listen',
        `${this.B.address}:${AGENT_PORT}`,
        '--cert',
        this.pki.file('server'),
        '--key',
        this.pki.file('server-key'),
        '--ca',
        this.pki.file('ca'),
        '--work-dir',
        this.B.workDir,
        '--allow-address',
        `${SERVICE_ADDRESS}/32`,
        '--allow-device',
        'eth0',
        '--criu-path',
        criuPath,
        '--json',
        ...extra,
      ],
      { privatePid, ...(env !== undefined ? { env } : {}) },
    );
    const events: Array<Record<string, unknown>> = [];
    let stderr = '';
    let buffered = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) if (line.trim() !== '') events.push(JSON.parse(line) as Record<string, unknown>);
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-20000)));
    const agent: AgentProcess = {
      child,
      pid: child.pid as number,
      mainPid: child.pid as number,
      events,
      stderr: () => stderr,
      waitEvent: async (pred, what, timeoutMs = 30000) => {
        await waitUntil(() => events.some(pred) || child.exitCode !== null, {
          what,
          timeoutMs,
          detail: () => `${JSON.stringify(events.slice(-5))} ${stderr.slice(-2000)}`,
        });
        const found = events.find(pred);
        if (found === undefined) throw new Error(`agent exited (${String(child.exitCode)}) before ${what}: ${stderr}`);
        return found;
      },
    };
    await agent.waitEvent((e) => e.event === 'listening', 'the agent to listen');
    agent.mainPid = await this.hosts.mainPidOf(child, privatePid);
    return agent;
  }

  /** A server on A (its private mount ns) on the service address, clients in C, streaming. */
  async startPair(label: string, stream: StreamConfig, ownMount = true): Promise<Pair> {
    const statusDir = path.join(this.statusRoot, label);
    fs.mkdirSync(statusDir);
    const common = {
      host: SERVICE_ADDRESS,
      port: 7000,
      total: stream.total,
      expectIn: stream.total,
      paceBytes: stream.paceBytes,
      paceMs: stream.paceMs,
    };
    const spawnOptions = { detached: true, stdio: 'ignore' as const, env: { ...process.env, UV_USE_IO_URING: '0' } };
    // ownMount: started as services are, with `ip netns exec` (its own mount namespace, /sys
    // remounted, stdio /dev/null inherited from ours); else in A's namespace and our mounts.
    const serverArgs = [
      path.join(FIXTURES, 'process-server.js'),
      JSON.stringify({ ...common, statusDir, connections: stream.connections }),
    ];
    const server = ownMount
      ? spawn('ip', ['netns', 'exec', this.A.netns, process.execPath, ...serverArgs], spawnOptions)
      : this.hosts.spawnOnHost(this.A, process.execPath, serverArgs, { ...spawnOptions, privateMount: false });
    server.on('error', () => undefined);
    const serverPid = server.pid as number;
    this.track(serverPid);
    await waitForFile(path.join(statusDir, 'listening'));
    const clients = this.hosts.spawnOnHost(
      this.C,
      process.execPath,
      [
        path.join(FIXTURES, 'process-clients.js'),
        JSON.stringify({ ...common, statusDir, connections: stream.connections }),
      ],
      { ...spawnOptions, privateMount: false },
    );
    this.track(clients.pid as number);
    await waitForFile(path.join(statusDir, 'clients-connected'), 30000, path.join(statusDir, 'clients-error'));
    await waitForFile(path.join(statusDir, 'all-accepted'));
    return new Pair(statusDir, serverPid);
  }

  /** `node-criu migrate --to` on A (a private mount namespace of its own); resolves when it exits. */
  async migrate(
    serverPid: number,
    options: {
      credentials?: string;
      extra?: string[];
      env?: NodeJS.ProcessEnv;
      imagesDir?: string;
      onStart?: (child: ChildProcess) => void;
    } = {},
  ): Promise<CliRun> {
    const who = options.credentials ?? 'client';
    const child = this.hosts.spawnOnHost(
      this.A,
      process.execPath,
      [
        CLI,
        'migrate',
        '--pid',
        String(serverPid),
        '--to',
        `${this.B.address}:${AGENT_PORT}`,
        '--cert',
        this.pki.file(who),
        '--key',
        this.pki.file(`${who}-key`),
        '--ca',
        this.pki.file('ca'),
        '--move-address',
        SERVICE_CIDR,
        '--device',
        'eth0',
        '--images-dir',
        options.imagesDir ?? path.join(this.A.workDir, 'images'),
        '--criu-path',
        this.criuPath,
        '--json',
        ...(options.extra ?? []),
      ],
      options.env !== undefined ? { env: options.env } : {},
    );
    options.onStart?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-20000)));
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      child.once('exit', (c, s) => resolve([c, s])),
    );
    const last = stdout.trim().split('\n').pop();
    let json: Record<string, unknown> | undefined;
    try {
      json = last ? (JSON.parse(last) as Record<string, unknown>) : undefined;
    } catch {
      json = undefined;
    }
    return { code, signal, json, stderr };
  }

  /** What the agent's work dir holds, seen from inside its mount namespace. */
  agentWorkDir(agentPid: number): string[] {
    return fs.readdirSync(`/proc/${agentPid}/root${this.B.workDir}`);
  }

  nftTables(host: LabHost): string {
    return this.hosts.lab.exec(host.netns, 'nft', ['list', 'tables']);
  }

  hasAddress(host: LabHost, address = SERVICE_ADDRESS): boolean {
    return this.hosts.ip(host, ['-o', 'addr', 'show', 'dev', 'eth0']).includes(` ${address}/`);
  }

  netnsInode(host: LabHost): number {
    return fs.statSync(host.netnsPath).ino;
  }

  /** pids of running criu processes (by comm). */
  criuProcesses(): number[] {
    return fs
      .readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          return fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim() === 'criu';
        } catch {
          return false;
        }
      })
      .map(Number);
  }

  async destroy(): Promise<void> {
    for (const pid of this.pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await this.hosts.destroy();
    this.pki.remove();
    fs.rmSync(this.statusRoot, { recursive: true, force: true });
  }
}

export async function waitForFile(file: string, timeoutMs = 30000, failFile?: string): Promise<string> {
  let text: string | undefined;
  await waitUntil(
    () => {
      if (failFile !== undefined && fs.existsSync(failFile))
        throw new Error(`${failFile}: ${fs.readFileSync(failFile, 'utf8')}`);
      try {
        text = fs.readFileSync(file, 'utf8');
        return true;
      } catch {
        return false;
      }
    },
    { what: file, timeoutMs },
  );
  return text as string;
}

export class Pair {
  constructor(
    readonly statusDir: string,
    readonly serverPid: number,
  ) {}

  async waitFlowing(bytes: number): Promise<void> {
    await waitUntil(
      () => {
        try {
          const p = JSON.parse(fs.readFileSync(path.join(this.statusDir, 'clients-progress'), 'utf8')) as {
            sent: number;
            received: number;
          };
          return p.sent >= bytes && p.received >= bytes;
        } catch {
          return false;
        }
      },
      { what: 'the stream to flow', timeoutMs: 30000 },
    );
  }

  async reports(timeoutMs = 90000): Promise<{ clients: ClientsReport; server: ServerReport }> {
    const fail = path.join(this.statusDir, 'clients-error');
    const clients = JSON.parse(
      await waitForFile(path.join(this.statusDir, 'clients.json'), timeoutMs, fail),
    ) as ClientsReport;
    const server = JSON.parse(
      await waitForFile(path.join(this.statusDir, 'server.json'), timeoutMs, fail),
    ) as ServerReport;
    return { clients, server };
  }
}
