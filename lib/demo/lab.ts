/**
 * The demo's network: two "hosts" (A, B) and a client namespace (C), all on a bridge that lives
 * in a namespace of its own (BR), so nothing of the machine's own network is touched:
 *
 *   A 10.213.0.2 ─┐   (each host's eth0)
 *   B 10.213.0.3 ─┼─ br0 (in BR)            service address 10.213.0.100/32: on A, then on B
 *   C 10.213.0.9 ─┘
 *
 * Every name starts with `ncrdemo-<pid>-<random>-`: sweepStaleDemos() removes namespaces (and the
 * processes inside them) of demos whose process is gone. nftables tables the migrations create
 * live inside A and B and go away with them. Commands run with argument arrays, never a shell.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { addAddress, removeAddress } from '../sys/address';
import { run as runCommand } from '../sys/exec';
import { namedNetnsPath, nsenterArgs } from '../sys/netns';
import { counterOf, deleteTables, listTables, nftBatch, nftJson, type NftCommand } from '../sys/nft';

export const DEMO_PREFIX = 'ncrdemo';
export const SUBNET = '10.213.0';
export const HOST_IP = { a: `${SUBNET}.2`, b: `${SUBNET}.3`, c: `${SUBNET}.9` } as const;
export const SERVICE_IP = `${SUBNET}.100`;
export const SERVICE_CIDR = `${SERVICE_IP}/32`;
/** Each host's interface on the demo network, named as on a real host. */
export const DEVICE = 'eth0';

export type Host = 'a' | 'b' | 'c' | 'br';

/** The demo's own RST-counting table in A, B and C (not a leftover). */
const RST_TABLE = 'ncrdemo_rst';

const COMMAND_TIMEOUT_MS = 30_000;

async function run(command: string, args: string[], netns?: string): Promise<string> {
  return (await runCommand(command, args, { timeoutMs: COMMAND_TIMEOUT_MS, ...(netns !== undefined ? { netns } : {}) }))
    .stdout;
}

async function tryRun(command: string, args: string[], netns?: string): Promise<string | undefined> {
  try {
    return await run(command, args, netns);
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
async function pidsIn(name: string): Promise<number[]> {
  return ((await tryRun('ip', ['netns', 'pids', name])) ?? '')
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((pid) => Number.isInteger(pid) && pid > 0);
}

async function demoNamespaces(): Promise<string[]> {
  return ((await tryRun('ip', ['netns', 'list'])) ?? '')
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${DEMO_PREFIX}-`));
}

async function deleteNamespace(name: string): Promise<void> {
  for (const pid of await pidsIn(name)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  await tryRun('ip', ['netns', 'delete', name]);
}

/** Removes namespaces left by demos whose process is gone (a crash, a SIGKILL). Returns their names. */
export async function sweepStaleDemos(): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await demoNamespaces()) {
    const match = /^ncrdemo-(\d+)-/.exec(name);
    if (!match || alive(Number(match[1]))) continue;
    await deleteNamespace(name);
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
    return namedNetnsPath(this.name(host));
  }

  ip(host: Host, args: string[]): Promise<string> {
    return run('ip', ['-n', this.name(host), ...args]);
  }

  async setup(): Promise<void> {
    for (const host of ['br', 'a', 'b', 'c'] as const) {
      await run('ip', ['netns', 'add', this.name(host)]);
      this.created.push(this.name(host));
      await this.ip(host, ['link', 'set', 'lo', 'up']);
    }
    await this.ip('br', ['link', 'add', 'br0', 'type', 'bridge']);
    await this.ip('br', ['link', 'set', 'br0', 'up']);
    for (const host of ['a', 'b', 'c'] as const) {
      const veth = ['link', 'add', `p${host}`, 'type', 'veth', 'peer', 'name', DEVICE, 'netns', this.name(host)];
      await this.ip('br', veth);
      await this.ip('br', ['link', 'set', `p${host}`, 'master', 'br0', 'up']);
      await this.ip(host, ['addr', 'add', `${HOST_IP[host]}/24`, 'dev', DEVICE]);
      await this.ip(host, ['link', 'set', DEVICE, 'up']);
    }
    await this.installRstCounters();
    await this.placeVip('a');
  }

  /** Puts the service address on `host` (no-op if it is there). */
  async placeVip(host: 'a' | 'b'): Promise<void> {
    if (this.vipOn === host) return;
    if (this.vipOn !== undefined) await this.moveVip(host);
    else {
      await this.ip(host, ['addr', 'add', SERVICE_CIDR, 'dev', DEVICE]);
      this.vipOn = host;
    }
  }

  /**
   * Moves the service address to `to` as a real network learns it: the new owner announces it
   * (gratuitous ARP, lib/sys/address.ts), so the client's cached MAC is replaced without anyone
   * flushing its neighbour cache.
   */
  async moveVip(to: 'a' | 'b'): Promise<void> {
    const from = to === 'a' ? 'b' : 'a';
    await removeAddress({ cidr: SERVICE_CIDR, device: DEVICE, netns: this.path(from) }).catch(() => undefined);
    await addAddress({ cidr: SERVICE_CIDR, device: DEVICE, netns: this.path(to) });
    this.vipOn = to;
  }

  /**
   * Counts every RST that A, B or C sends on the demo network (out of its veth), with a named
   * nftables counter per namespace (table ncrdemo_rst). Loopback is left out on purpose: CRIU's
   * own feature probes open and reset loopback connections inside A and B.
   */
  private async installRstCounters(): Promise<void> {
    for (const host of ['a', 'b', 'c'] as const) {
      const table = { family: 'inet', table: RST_TABLE };
      const commands: NftCommand[] = [
        { add: { table: { family: 'inet', name: RST_TABLE } } },
        { add: { counter: { ...table, name: 'rst_out' } } },
        { add: { chain: { ...table, name: 'out', type: 'filter', hook: 'output', prio: -400, policy: 'accept' } } },
        {
          add: {
            rule: {
              ...table,
              chain: 'out',
              expr: [
                { match: { op: '==', left: { meta: { key: 'oifname' } }, right: DEVICE } },
                {
                  match: {
                    op: '==',
                    left: { '&': [{ payload: { protocol: 'tcp', field: 'flags' } }, 'rst'] },
                    right: 'rst',
                  },
                },
                { counter: 'rst_out' },
              ],
            },
          },
        },
      ];
      await nftBatch(commands, { netns: this.path(host) });
    }
  }

  /** RSTs sent so far by A, B and C on the demo network. */
  async resetCounters(): Promise<Record<string, number>> {
    const counters: Record<string, number> = {};
    for (const host of ['a', 'b', 'c'] as const) {
      const objects = await nftJson(['list', 'counter', 'inet', RST_TABLE, 'rst_out'], {
        netns: this.path(host),
      }).catch(() => []);
      counters[`${host}.rstOut`] = counterOf(objects)?.packets ?? NaN;
    }
    return counters;
  }

  /** A one-line summary of `ss` in `host` (established sockets, listeners' queues): for progress logs. */
  async socketSummary(host: Host): Promise<string> {
    const netns = this.path(host);
    const established = ((await tryRun('ss', ['-Htn', 'state', 'established'], netns)) ?? '')
      .split('\n')
      .filter(Boolean).length;
    const listeners = ((await tryRun('ss', ['-Htln'], netns)) ?? '')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(/\s+/).slice(1, 4).join(' '));
    return `${established} established; listening (recv-q send-q local): ${listeners.join(', ') || 'none'}`;
  }

  /** The nftables tables inside A and B ('a: table inet NAME'), for the leftover check. */
  async nftTables(): Promise<string[]> {
    const out: string[] = [];
    for (const host of ['a', 'b'] as const) {
      const tables = await listTables({ netns: this.path(host) }).catch(() => []);
      for (const t of tables)
        if (!(t.family === 'inet' && t.name === RST_TABLE)) out.push(`${host}: table ${t.family} ${t.name}`);
    }
    return out;
  }

  /** Kills every process inside A, B and C but `keep` (the agent: between routes) and waits until they are gone. */
  async killProcesses(keep: readonly number[] = []): Promise<void> {
    for (let round = 0; round < 100; round++) {
      const pids = (await Promise.all((['a', 'b', 'c'] as const).map((host) => pidsIn(this.name(host)))))
        .flat()
        .filter((pid) => !keep.includes(pid));
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
  async flushTables(): Promise<void> {
    for (const entry of await this.nftTables()) {
      const [host, table] = entry.split(': ');
      const [, family, name] = table.split(' ');
      await deleteTables([{ family, name }], { netns: this.path(host as Host) }).catch(() => []);
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
      return spawn('nsenter', nsenterArgs(this.path(host), process.execPath, [script, JSON.stringify(config)]), {
        stdio: ['ignore', out, out],
        detached: options.detached ?? false,
      });
    } finally {
      if (typeof out === 'number') fs.closeSync(out);
    }
  }

  /** Kills every process inside the demo's namespaces and deletes them. Idempotent. */
  async destroy(): Promise<void> {
    for (const name of this.created.splice(0).reverse()) await deleteNamespace(name);
  }
}
