/**
 * The demo's network: two "hosts" (A, B) and a client namespace (C), all on a bridge that lives
 * in a namespace of its own (BR), so nothing of the machine's own network is touched:
 *
 *   A 10.213.0.2 ─┐
 *   B 10.213.0.3 ─┼─ br0 (in BR)            service address 10.213.0.100/32: on A, then on B
 *   C 10.213.0.9 ─┘
 *
 * Every name starts with `ncrdemo-<pid>-<random>-`: sweepStaleDemos() removes namespaces (and the
 * processes inside them) of demos whose process is gone. nftables tables the migrations create
 * live inside A and B and go away with them. Commands run with argument arrays, never a shell.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const DEMO_PREFIX = 'ncrdemo';
export const SUBNET = '10.213.0';
export const HOST_IP = { a: `${SUBNET}.2`, b: `${SUBNET}.3`, c: `${SUBNET}.9` } as const;
export const SERVICE_IP = `${SUBNET}.100`;

export type Host = 'a' | 'b' | 'c' | 'br';

/** The demo's own RST-counting table in A, B and C (not a leftover). */
const RST_TABLE = 'ncrdemo_rst';

function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function tryRun(command: string, args: string[]): string | undefined {
  try {
    return run(command, args);
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** pids of every process inside network namespace `name`. */
function pidsIn(name: string): number[] {
  return (tryRun('ip', ['netns', 'pids', name]) ?? '')
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((pid) => Number.isInteger(pid) && pid > 0);
}

function demoNamespaces(): string[] {
  return (tryRun('ip', ['netns', 'list']) ?? '')
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${DEMO_PREFIX}-`));
}

function deleteNamespace(name: string): void {
  for (const pid of pidsIn(name)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  tryRun('ip', ['netns', 'delete', name]);
}

/** Removes namespaces left by demos whose process is gone (a crash, a SIGKILL). Returns their names. */
export function sweepStaleDemos(): string[] {
  const removed: string[] = [];
  for (const name of demoNamespaces()) {
    const match = /^ncrdemo-(\d+)-/.exec(name);
    if (!match || alive(Number(match[1]))) continue;
    deleteNamespace(name);
    removed.push(name);
  }
  // State directories (control socket, CRIU images) of demos that are gone.
  for (const entry of fs.readdirSync(os.tmpdir())) {
    const match = /^ncrdemo-(\d+)-[0-9a-f]+-/.exec(entry);
    if (match && !alive(Number(match[1]))) fs.rmSync(path.join(os.tmpdir(), entry), { recursive: true, force: true });
  }
  return removed;
}

export class DemoLab {
  readonly id = `${DEMO_PREFIX}-${process.pid}-${randomBytes(2).toString('hex')}`;
  private readonly created: string[] = [];
  vipOn: 'a' | 'b' | undefined;

  name(host: Host): string {
    return `${this.id}-${host}`;
  }

  path(host: Host): string {
    return `/run/netns/${this.name(host)}`;
  }

  ip(host: Host, args: string[]): string {
    return run('ip', ['-n', this.name(host), ...args]);
  }

  setup(): void {
    for (const host of ['br', 'a', 'b', 'c'] as const) {
      run('ip', ['netns', 'add', this.name(host)]);
      this.created.push(this.name(host));
      this.ip(host, ['link', 'set', 'lo', 'up']);
    }
    this.ip('br', ['link', 'add', 'br0', 'type', 'bridge']);
    this.ip('br', ['link', 'set', 'br0', 'up']);
    for (const host of ['a', 'b', 'c'] as const) {
      this.ip('br', ['link', 'add', `p${host}`, 'type', 'veth', 'peer', 'name', `v${host}`, 'netns', this.name(host)]);
      this.ip('br', ['link', 'set', `p${host}`, 'master', 'br0', 'up']);
      this.ip(host, ['addr', 'add', `${HOST_IP[host]}/24`, 'dev', `v${host}`]);
      this.ip(host, ['link', 'set', `v${host}`, 'up']);
    }
    this.installRstCounters();
    this.placeVip('a');
  }

  /** Puts the service address on `host` (no-op if it is there). */
  placeVip(host: 'a' | 'b'): void {
    if (this.vipOn === host) return;
    if (this.vipOn !== undefined) this.moveVip(host);
    else {
      this.ip(host, ['addr', 'add', `${SERVICE_IP}/32`, 'dev', `v${host}`]);
      this.vipOn = host;
    }
  }

  /**
   * Moves the service address to `to`. The client's neighbour cache still maps it to the old
   * host's MAC: a real network learns the move from the new owner's gratuitous ARP (IPv4) or
   * unsolicited neighbour advertisement (IPv6), which also updates the switches' MAC tables; here
   * (no arping installed) we flush the client namespace's entry, so its next packet asks again.
   */
  moveVip(to: 'a' | 'b'): void {
    const from = to === 'a' ? 'b' : 'a';
    tryRun('ip', ['-n', this.name(from), 'addr', 'del', `${SERVICE_IP}/32`, 'dev', `v${from}`]);
    this.ip(to, ['addr', 'add', `${SERVICE_IP}/32`, 'dev', `v${to}`]);
    this.ip('c', ['neigh', 'flush', 'to', `${SERVICE_IP}/32`]);
    this.vipOn = to;
  }

  /**
   * Counts every RST that A, B or C sends on the demo network (out of its veth), with a named
   * nftables counter per namespace (table ncrdemo_rst). Loopback is left out on purpose: CRIU's
   * own feature probes open and reset loopback connections inside A and B.
   */
  private installRstCounters(): void {
    for (const host of ['a', 'b', 'c'] as const) {
      execFileSync('nsenter', [`--net=${this.path(host)}`, '--', 'nft', '-f', '-'], {
        input: [
          `table inet ${RST_TABLE} {`,
          '  counter rst_out { }',
          '  chain out {',
          '    type filter hook output priority -400; policy accept;',
          `    oifname "v${host}" tcp flags & rst == rst counter name rst_out`,
          '  }',
          '}',
          '',
        ].join('\n'),
      });
    }
  }

  /** RSTs sent so far by A, B and C on the demo network. */
  resetCounters(): Record<string, number> {
    const counters: Record<string, number> = {};
    for (const host of ['a', 'b', 'c'] as const) {
      const text =
        tryRun('nsenter', [`--net=${this.path(host)}`, '--', 'nft', 'list', 'counter', 'inet', RST_TABLE, 'rst_out']) ??
        '';
      const match = /packets (\d+)/.exec(text);
      counters[`${host}.rstOut`] = match ? Number(match[1]) : NaN;
    }
    return counters;
  }

  /** A one-line summary of `ss` in `host` (established sockets, listeners' queues): for progress logs. */
  socketSummary(host: Host): string {
    const established = (
      tryRun('nsenter', [`--net=${this.path(host)}`, '--', 'ss', '-Htn', 'state', 'established']) ?? ''
    )
      .split('\n')
      .filter(Boolean).length;
    const listeners = (tryRun('nsenter', [`--net=${this.path(host)}`, '--', 'ss', '-Htln']) ?? '')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(/\s+/).slice(1, 4).join(' '));
    return `${established} established; listening (recv-q send-q local): ${listeners.join(', ') || 'none'}`;
  }

  /** Lists the nftables tables inside A and B (for the leftover check). */
  nftTables(): string[] {
    const out: string[] = [];
    for (const host of ['a', 'b'] as const) {
      const text = tryRun('nsenter', [`--net=${this.path(host)}`, '--', 'nft', 'list', 'tables']) ?? '';
      const tables = text.split('\n').filter((t) => t !== '' && t !== `table inet ${RST_TABLE}`);
      out.push(...tables.map((t) => `${host}: ${t}`));
    }
    return out;
  }

  /** Kills every process inside A, B and C (between routes) and waits until they are gone. */
  async killProcesses(): Promise<void> {
    for (let round = 0; round < 100; round++) {
      const pids = (['a', 'b', 'c'] as const).flatMap((host) => pidsIn(this.name(host)));
      if (pids.length === 0) return;
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Deletes every nftables table in A and B except the RST counters. */
  flushTables(): void {
    for (const entry of this.nftTables()) {
      const [host, table] = entry.split(': ');
      tryRun('nsenter', [`--net=${this.path(host as Host)}`, '--', 'nft', 'delete', ...table.split(' ')]);
    }
  }

  /** Spawns `node script config` inside `host`'s namespace. */
  spawnNode(
    host: Host,
    script: string,
    config: unknown,
    options: { detached?: boolean; log?: string } = {},
  ): ChildProcess {
    const out = options.log !== undefined ? fs.openSync(options.log, 'a') : 'ignore';
    try {
      return spawn('nsenter', [`--net=${this.path(host)}`, '--', process.execPath, script, JSON.stringify(config)], {
        stdio: ['ignore', out, out],
        detached: options.detached ?? false,
      });
    } finally {
      if (typeof out === 'number') fs.closeSync(out);
    }
  }

  /** Kills every process inside the demo's namespaces and deletes them. Synchronous, idempotent. */
  destroy(): void {
    for (const name of this.created.splice(0).reverse()) deleteNamespace(name);
  }
}
