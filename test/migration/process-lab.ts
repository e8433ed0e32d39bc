/**
 * Topology for the whole-process migration tests and bench: three "hosts" (network namespaces)
 * on one bridge, which lives in a fourth namespace so the host's own interfaces are never touched:
 *
 *   S (source) 10.<n>.0.2 ─┐
 *   T (target) 10.<n>.0.3 ─┼─ br0 in B
 *   C (clients) 10.<n>.0.9 ┘
 *
 * The service address 10.<n>.0.100 starts on S; moveAddress()/moveAddressBack() move it between S
 * and T and flush C's neighbour cache (standing in for the gratuitous ARP a real move would send).
 * Server and clients are the process-server.js / process-clients.js fixtures, run detached
 * (setsid, stdio /dev/null) so CRIU can dump the server. Every command uses argument arrays.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { ProcessMigrationOptions } from '../../lib';
import { NetnsLab } from '../helpers/netns';
import type { TrafficReport } from '../helpers/traffic';

export const FIXTURES = path.join(__dirname, '..', 'fixtures');

export interface StreamConfig {
  connections: number;
  total: number;
  paceBytes: number;
  paceMs: number;
}

export interface ClientsReport {
  reports: Record<string, TrafficReport>;
  maxGapMs: Record<string, number>;
}

export interface ServerReport {
  pid: number;
  reports: Record<string, TrafficReport>;
  closed: number[];
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits (bounded) for `file`; fails early when `failFile` appears. */
export async function waitForFile(file: string, timeoutMs = 30000, failFile?: string): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch {
      // not yet
    }
    if (failFile !== undefined && fs.existsSync(failFile))
      throw new Error(`${failFile}: ${fs.readFileSync(failFile, 'utf8')}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${file}`);
    await sleep(20);
  }
}

export function pidAlive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

export async function killPid(pid: number | undefined): Promise<void> {
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 300 && pidAlive(pid); i++) await sleep(10);
}

/**
 * Writes a CRIU wrapper that, inside `netns` only, runs `actions` (shell lines; `$$` is CRIU's
 * pid) as soon as the restored task `pid` has its memory back (its cmdline is the server's
 * again), before CRIU resumes it and replies. The watcher uses bash builtins only (no fork per
 * look): CRIU's window between the two is short.
 */
export function criuWrapperOnRestored(
  file: string,
  options: { netns: string; pid: number; criuPath: string; actions: string[] },
): string {
  const lines = [
    '#!/bin/bash',
    `if [ "$(ip netns identify)" = "${options.netns}" ]; then`,
    '  (',
    '    SECONDS=0',
    '    until [ $SECONDS -ge 60 ]; do',
    `      mapfile -d '' argv < /proc/${options.pid}/cmdline 2>/dev/null`,
    '      [[ "${argv[*]}" == *process-server* ]] && break',
    '    done',
    ...options.actions.map((action) => `    ${action}`),
    '  ) &',
    'fi',
    `exec "${options.criuPath}" "$@"`,
    '',
  ];
  fs.writeFileSync(file, lines.join('\n'), { mode: 0o755 });
  return file;
}

export class ProcessLab {
  readonly netns = new NetnsLab();
  readonly subnet: number;
  readonly serviceIp: string;
  readonly B: string;
  readonly S: string;
  readonly T: string;
  readonly C: string;
  readonly dir: string;
  private readonly pids = new Set<number>();
  private addressOn: 'S' | 'T' = 'S';

  /** `base`: where status files and images go (not /tmp when servers get a private /tmp). */
  constructor(base = os.tmpdir()) {
    this.dir = fs.mkdtempSync(path.join(base, 'ncr-process-'));
    this.subnet = 100 + (process.pid % 100);
    this.serviceIp = `10.${this.subnet}.0.100`;
    this.B = this.netns.add('b');
    this.S = this.netns.add('s');
    this.T = this.netns.add('t');
    this.C = this.netns.add('c');
    this.netns.ip(this.B, ['link', 'add', 'br0', 'type', 'bridge']);
    this.netns.ip(this.B, ['link', 'set', 'br0', 'up']);
    const hosts: Array<[string, number]> = [
      [this.S, 2],
      [this.T, 3],
      [this.C, 9],
    ];
    for (const [ns, host] of hosts) {
      const port = `p${host}`;
      this.netns.ip(this.B, ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      this.netns.ip(this.B, ['link', 'set', port, 'master', 'br0', 'up']);
      this.netns.ip(ns, ['addr', 'add', `10.${this.subnet}.0.${host}/24`, 'dev', 'eth0']);
      this.netns.ip(ns, ['link', 'set', 'eth0', 'up']);
    }
    this.netns.ip(this.S, ['addr', 'add', `${this.serviceIp}/24`, 'dev', 'eth0']);
    // Counts every RST that reaches the clients' namespace (OutRsts of S and T would also count
    // the RSTs CRIU's own kernel self-checks send on their loopback).
    this.netns.exec(
      this.C,
      'nft',
      ['-f', '-'],
      'table inet ncr_rst {\n chain input {\n  type filter hook input priority -300;\n  tcp flags & rst == rst counter\n }\n}\n',
    );
  }

  /** RST segments that arrived in C so far. */
  rstsIntoClients(): number {
    const text = this.netns.exec(this.C, 'nft', ['list', 'table', 'inet', 'ncr_rst']);
    const match = /counter packets (\d+)/.exec(text);
    if (!match) throw new Error(`no RST counter in C: ${text}`);
    return Number(match[1]);
  }

  /** CRIU wrapper directories (lib/migration/process-criu.ts) that point into this lab's namespaces. */
  criuWrapperDirs(): string[] {
    return fs.readdirSync(os.tmpdir()).filter((name) => {
      if (!name.startsWith('node-criu-netns-')) return false;
      try {
        return fs.readlinkSync(path.join(os.tmpdir(), name, 'netns')).includes(this.netns.prefix);
      } catch {
        return false;
      }
    });
  }

  /** RSTs that reached the clients' namespace, and connections reset there. */
  clientResets(): { rstsIntoClients: number; clientEstabResets: number } {
    return { rstsIntoClients: this.rstsIntoClients(), clientEstabResets: this.netns.tcpCounters(this.C).EstabResets };
  }

  /** migrateProcess options moving `pair`'s server from S to T with the address; `extra` wins. */
  migrationOptions(
    pair: Pair,
    criuPath: string,
    extra: Partial<ProcessMigrationOptions> = {},
  ): ProcessMigrationOptions {
    return {
      pid: pair.serverPid,
      source: { netns: this.path(this.S) },
      target: { netns: this.path(this.T) },
      imagesDir: path.join(pair.statusDir, 'images'),
      moveAddress: this.moveAddress,
      moveAddressBack: this.moveAddressBack,
      criuPath,
      ...extra,
    };
  }

  path(ns: string): string {
    return this.netns.path(ns);
  }

  private flushClientNeighbours(): void {
    this.netns.ip(this.C, ['neigh', 'flush', 'dev', 'eth0']);
  }

  moveAddress = async (): Promise<void> => {
    this.netns.ip(this.S, ['addr', 'del', `${this.serviceIp}/24`, 'dev', 'eth0']);
    this.netns.ip(this.T, ['addr', 'add', `${this.serviceIp}/24`, 'dev', 'eth0']);
    this.addressOn = 'T';
    this.flushClientNeighbours();
  };

  moveAddressBack = async (): Promise<void> => {
    if (this.addressOn !== 'T') return;
    this.netns.ip(this.T, ['addr', 'del', `${this.serviceIp}/24`, 'dev', 'eth0']);
    this.netns.ip(this.S, ['addr', 'add', `${this.serviceIp}/24`, 'dev', 'eth0']);
    this.addressOn = 'S';
    this.flushClientNeighbours();
  };

  /**
   * Starts node `script` detached inside `ns`; `launch` as services run: 'ip-netns-exec' (own mount
   * namespace, / slave, /sys remounted), 'private-tmp' (what systemd's PrivateTmp= does: own mount
   * namespace with a tmpfs on /tmp). Each launcher execs, so the pid is node's.
   */
  spawnNode(ns: string, script: string, config: object, launch: Launch = 'nsenter'): ChildProcess {
    const node = [process.execPath, path.join(FIXTURES, script), JSON.stringify(config)];
    const privateTmp = [
      'unshare',
      '--mount',
      '--propagation',
      'slave',
      'sh',
      '-c',
      'mount -t tmpfs tmpfs /tmp && exec "$@"',
      'sh',
    ];
    const argv =
      launch === 'ip-netns-exec'
        ? ['ip', 'netns', 'exec', ns, ...node]
        : ['nsenter', `--net=${this.path(ns)}`, '--', ...(launch === 'private-tmp' ? privateTmp : []), ...node];
    const child = spawn(argv[0], argv.slice(1), {
      detached: true,
      stdio: 'ignore',
      // libuv's io_uring rings are not something CRIU 4.2 can dump.
      env: { ...process.env, UV_USE_IO_URING: '0' },
    });
    child.on('error', () => undefined);
    if (child.pid !== undefined) this.pids.add(child.pid);
    return child;
  }

  /** A server in S on serviceIp:7000 with `stream.connections` clients in C, streaming both ways. */
  async startPair(
    label: string,
    stream: StreamConfig,
    extraClients = 0,
    serverExtra: { child?: boolean; keepOpen?: string; launch?: Launch } = {},
  ): Promise<Pair> {
    const { launch, ...serverConfig } = serverExtra;
    const statusDir = path.join(this.dir, label);
    fs.mkdirSync(statusDir);
    const common = {
      host: this.serviceIp,
      port: 7000,
      total: stream.total,
      expectIn: stream.total,
      paceBytes: stream.paceBytes,
      paceMs: stream.paceMs,
    };
    const server = this.spawnNode(
      this.S,
      'process-server.js',
      { ...common, ...serverConfig, statusDir, connections: stream.connections + extraClients },
      launch,
    );
    await waitForFile(path.join(statusDir, 'listening'));
    const clients = this.spawnNode(this.C, 'process-clients.js', {
      ...common,
      statusDir,
      connections: stream.connections,
    });
    await waitForFile(path.join(statusDir, 'clients-connected'), 30000, path.join(statusDir, 'clients-error'));
    if (extraClients === 0) await waitForFile(path.join(statusDir, 'all-accepted'));
    const leavers: ChildProcess[] = [];
    for (let i = 0; i < extraClients; i++) {
      const leaverDir = path.join(statusDir, `leaver-${i}`);
      fs.mkdirSync(leaverDir);
      leavers.push(this.spawnNode(this.C, 'process-clients.js', { ...common, statusDir: leaverDir, connections: 1 }));
      await waitForFile(path.join(leaverDir, 'clients-connected'), 30000, path.join(leaverDir, 'clients-error'));
    }
    if (extraClients > 0) await waitForFile(path.join(statusDir, 'all-accepted'));
    return new Pair(
      statusDir,
      server.pid as number,
      clients.pid as number,
      leavers.map((l) => l.pid as number),
    );
  }

  /** A criu wrapper that sets CRIU_FAULT=<fault> when run inside namespace `ns` (CRIU's fault injection). */
  faultyCriu(criuPath: string, fault: number, ns: string): string {
    const file = path.join(this.dir, `criu-fault-${fault}-${ns}`);
    fs.writeFileSync(
      file,
      `#!/bin/sh\nif [ "$(ip netns identify)" = "${ns}" ]; then export CRIU_FAULT=${fault}; fi\nexec "${criuPath}" "$@"\n`,
      { mode: 0o755 },
    );
    return file;
  }

  /** inode of a namespace, to tell where a pid runs. */
  netnsInode(ns: string): number {
    return fs.statSync(this.path(ns)).ino;
  }

  pidNetnsInode(pid: number): number {
    return fs.statSync(`/proc/${pid}/ns/net`).ino;
  }

  nftTables(ns: string): string {
    return this.netns.exec(ns, 'nft', ['list', 'tables']);
  }

  /** Kills every process this lab started (and restored copies of them), puts the address back. */
  async reset(): Promise<void> {
    for (const pid of [...this.pids]) {
      await killPid(pid);
      this.pids.delete(pid);
    }
    await this.moveAddressBack();
  }

  track(pid: number): void {
    this.pids.add(pid);
  }

  async destroy(): Promise<void> {
    await this.reset().catch(() => undefined);
    this.netns.destroy();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export type Launch = 'nsenter' | 'ip-netns-exec' | 'private-tmp';

export class Pair {
  constructor(
    readonly statusDir: string,
    readonly serverPid: number,
    readonly clientsPid: number,
    readonly leaverPids: number[],
  ) {}

  /** Resolves once every client has sent and received at least `bytes`. */
  async waitFlowing(bytes: number): Promise<void> {
    for (let i = 0; i < 3000; i++) {
      try {
        const progress = JSON.parse(fs.readFileSync(path.join(this.statusDir, 'clients-progress'), 'utf8'));
        if (progress.received >= bytes && progress.sent >= bytes) return;
      } catch {
        // not written yet
      }
      await sleep(10);
    }
    throw new Error('the stream did not get going');
  }

  async reports(timeoutMs = 60000): Promise<{ clients: ClientsReport; server: ServerReport }> {
    const failFile = path.join(this.statusDir, 'clients-error');
    const clients = JSON.parse(
      await waitForFile(path.join(this.statusDir, 'clients.json'), timeoutMs, failFile),
    ) as ClientsReport;
    const server = JSON.parse(
      await waitForFile(path.join(this.statusDir, 'server.json'), timeoutMs, failFile),
    ) as ServerReport;
    return { clients, server };
  }
}
