/**
 * NftablesLock: drops the peer's packets for a set of TCP 4-tuples, in one nftables table per
 * lock, so a connection whose socket was closed in repair mode is neither acknowledged nor reset
 * until its restored socket takes over. Tuples live in two sets (IPv4 and IPv6; IPv4-mapped
 * addresses go to the IPv4 set, as they appear on the wire), so thousands of connections cost one
 * `nft -f -` batch. nft is spawned with an argument array and the batch on stdin, never a shell.
 * Packets marked SOCCR_MARK (libsoccr's injected FINs) pass.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { describeValue, InvalidArgumentError } from '../errors';
import { attachCapabilityProblem, capabilityProblem } from '../capabilities';
import { checkNetnsPath } from '../security';
import { mappedIPv4 } from './address';
import type { SocketAddress } from './address';
import { NftablesLockError } from './errors';
import type { NftablesLockRef } from './image';

export interface ConnectionTuple {
  local: SocketAddress;
  remote: SocketAddress;
}

const SOCCR_MARK = 0xc114;

/** The nft binary: $NODE_CRIU_NFT, else `nft` found on PATH (or /usr/sbin, /sbin). */
export function findNft(): string | undefined {
  const override = process.env.NODE_CRIU_NFT;
  if (override !== undefined) return fs.existsSync(override) ? override : undefined;
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'].filter(Boolean);
  for (const dir of dirs) {
    const candidate = path.join(dir, 'nft');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return undefined;
}

/** Runs one nft batch (in `netns` via nsenter when given). Rejects with NftablesLockError. */
export function runNft(batch: string, netns?: string): Promise<void> {
  const nft = findNft();
  if (!nft) {
    return Promise.reject(
      new NftablesLockError('nft not found (install Debian package nftables, or set NODE_CRIU_NFT)', { code: 'ERR_NFT_NOT_FOUND' }),
    );
  }
  const [command, args] = netns ? ['nsenter', [`--net=${netns}`, '--', nft, '-f', '-']] : [nft, ['-f', '-']];
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < 4096) stderr += chunk;
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      reject(new NftablesLockError(`cannot run ${command}: ${error.message}`, { code: error.code === 'ENOENT' ? 'ERR_NFT_NOT_FOUND' : 'ERR_NFT_FAILED', cause: error }));
    });
    child.on('close', (status) => {
      if (status === 0) return resolve();
      const denied = /Operation not permitted/.test(stderr);
      const code = denied ? 'EPERM' : /No such file or directory/.test(stderr) ? 'ENOENT' : 'ERR_NFT_FAILED';
      const error = new NftablesLockError(`nft failed (exit ${status}): ${stderr.trim()}`, { code });
      // nsenter cannot enter the namespace (CAP_SYS_ADMIN), or nft cannot talk to nftables (CAP_NET_ADMIN).
      if (denied) attachCapabilityProblem(error, capabilityProblem(/reassociate|setns/.test(stderr) ? 'netns' : 'nftables'));
      reject(error);
    });
    child.stdin.on('error', () => {
      // nft exiting early closes its stdin; the exit status reports the failure.
    });
    child.stdin.end(batch);
  });
}

/** The set a tuple belongs in and its element text, keyed remote . rport . local . lport. */
function element(tuple: ConnectionTuple): { set: 'v4' | 'v6'; text: string } {
  const remote4 = tuple.remote.family === 4 ? tuple.remote.address : mappedIPv4(tuple.remote.address);
  const local4 = tuple.local.family === 4 ? tuple.local.address : mappedIPv4(tuple.local.address);
  if (remote4 !== undefined && local4 !== undefined) {
    return { set: 'v4', text: `${remote4} . ${tuple.remote.port} . ${local4} . ${tuple.local.port}` };
  }
  return { set: 'v6', text: `${tuple.remote.address} . ${tuple.remote.port} . ${tuple.local.address} . ${tuple.local.port}` };
}

type ElementsBySet = Record<'v4' | 'v6', string[]>;

function elementsBySet(tuples: readonly ConnectionTuple[]): ElementsBySet {
  const bySet: ElementsBySet = { v4: [], v6: [] };
  for (const tuple of tuples) {
    const e = element(tuple);
    bySet[e.set].push(e.text);
  }
  return bySet;
}

function elementBatch(verb: 'add' | 'delete', table: string, bySet: ElementsBySet): string {
  let batch = '';
  for (const set of ['v4', 'v6'] as const) {
    if (bySet[set].length > 0) batch += `${verb} element inet ${table} ${set} { ${bySet[set].join(', ')} }\n`;
  }
  return batch;
}

/**
 * The elements this process added to each table it created (key: netns NUL table). A remove()
 * that takes out exactly these flushes the sets instead of naming every element: nft parses and
 * commits 10,000 named elements in ~160 ms, a flush in ~20 ms (measured here). Only the creating
 * process adds to its tables (checkpointConnection); another process that adds to a table it got
 * through fromRef() would have its elements flushed with the owner's.
 */
const ownElements = new Map<string, Set<string>>();

function sameElements(owned: Set<string>, bySet: ElementsBySet): boolean {
  const removing = new Set([...bySet.v4.map((e) => `v4 ${e}`), ...bySet.v6.map((e) => `v6 ${e}`)]);
  if (removing.size !== owned.size) return false;
  for (const e of owned) if (!removing.has(e)) return false;
  return true;
}

export class NftablesLock {
  /** `node_criu_<pid>_<random>` unless given. */
  readonly table: string;
  /** Network namespace path the table lives in (undefined: the process's own). */
  readonly netns?: string;
  private destroyed = false;

  private constructor(table: string, netns?: string) {
    this.table = table;
    if (netns !== undefined) this.netns = netns;
  }

  /** Creates the table, its two sets and the input-hook drop chain. */
  static async create(options: { netns?: string } = {}): Promise<NftablesLock> {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
    if (options.netns !== undefined) checkNetnsPath(options.netns);
    const table = `node_criu_${process.pid}_${randomBytes(4).toString('hex')}`;
    const lock = new NftablesLock(table, options.netns);
    await runNft(
      [
        `table inet ${table} {`,
        `  set v4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; }`,
        `  set v6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; }`,
        `  chain input {`,
        `    type filter hook input priority -310; policy accept;`,
        `    meta mark ${SOCCR_MARK} accept`,
        `    ip saddr . tcp sport . ip daddr . tcp dport @v4 drop`,
        `    ip6 saddr . tcp sport . ip6 daddr . tcp dport @v6 drop`,
        `  }`,
        `}`,
        '',
      ].join('\n'),
      options.netns,
    );
    ownElements.set(lock.key, new Set());
    return lock;
  }

  private get key(): string {
    return `${this.netns ?? ''}\0${this.table}`;
  }

  /** A lock another process created (from an image's `lock`), to remove tuples from it. */
  static fromRef(ref: NftablesLockRef): NftablesLock {
    // The table name is written into an nft batch: only an identifier may get there.
    if (typeof ref !== 'object' || ref === null) throw new InvalidArgumentError('ref must be { table, netns? }', 'ERR_INVALID_ARG_TYPE');
    if (typeof ref.table !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(ref.table)) {
      throw new InvalidArgumentError(`ref.table must be an nftables identifier (got ${describeValue(ref.table)})`);
    }
    if (ref.netns !== undefined) checkNetnsPath(ref.netns, 'ref.netns');
    return new NftablesLock(ref.table, ref.netns);
  }

  get ref(): NftablesLockRef {
    return this.netns === undefined ? { table: this.table } : { table: this.table, netns: this.netns };
  }

  /** Starts dropping the peer's packets of these connections. */
  async add(tuples: readonly ConnectionTuple[]): Promise<void> {
    if (tuples.length === 0) return;
    const bySet = elementsBySet(tuples);
    await runNft(elementBatch('add', this.table, bySet), this.netns);
    const owned = ownElements.get(this.key);
    if (owned) for (const set of ['v4', 'v6'] as const) for (const e of bySet[set]) owned.add(`${set} ${e}`);
  }

  /** Stops dropping them. Rejects with code ENOENT when the table or an element is missing. */
  async remove(tuples: readonly ConnectionTuple[]): Promise<void> {
    if (tuples.length === 0) return;
    const bySet = elementsBySet(tuples);
    const owned = ownElements.get(this.key);
    if (owned && sameElements(owned, bySet)) {
      await runNft(`flush set inet ${this.table} v4\nflush set inet ${this.table} v6\n`, this.netns);
      owned.clear();
      return;
    }
    await runNft(elementBatch('delete', this.table, bySet), this.netns);
    if (owned) for (const set of ['v4', 'v6'] as const) for (const e of bySet[set]) owned.delete(`${set} ${e}`);
  }

  /** Deletes the table (every tuple is released). Idempotent; a missing table is not an error. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    registry.delete(this);
    ownElements.delete(this.key);
    try {
      await runNft(`delete table inet ${this.table}\n`, this.netns);
    } catch (error) {
      if ((error as NftablesLockError).code !== 'ENOENT') throw error;
    }
  }

  /**
   * Deletes the per-process tables checkpointConnection creates for its default 'nftables' lock
   * (they are otherwise deleted when the process exits). Call it once no checkpointed connection
   * of this process still waits for its restore. Test runners that sandbox `process` (jest) do
   * not deliver the exit event, so their tests call this in afterAll.
   */
  static async destroyProcessLocks(): Promise<void> {
    const locks = [...processLocks.values()];
    processLocks.clear();
    for (const lock of locks) await (await lock.catch(() => undefined))?.destroy();
  }

  /** Deletes the table when the process exits (see processLock). */
  deleteOnExit(): this {
    registry.add(this);
    installExitHook();
    return this;
  }
}

// Locks made by checkpointConnection's default ('nftables' without a lock object) are per process
// and per namespace, and are deleted when the process exits.
const registry = new Set<NftablesLock>();
const processLocks = new Map<string, Promise<NftablesLock>>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    const nft = findNft();
    if (!nft) return;
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
    for (const lock of registry) {
      const [command, args] = lock.netns ? ['nsenter', [`--net=${lock.netns}`, '--', nft, '-f', '-']] : [nft, ['-f', '-']];
      spawnSync(command, args, { input: `delete table inet ${lock.table}\n`, stdio: ['pipe', 'ignore', 'ignore'] });
    }
  });
}

/** The process's lock table in `netns` (created on first use, deleted at exit). */
export function processLock(netns?: string): Promise<NftablesLock> {
  const key = netns ?? '';
  let lock = processLocks.get(key);
  if (!lock) {
    lock = NftablesLock.create(netns === undefined ? {} : { netns }).then((l) => l.deleteOnExit());
    lock.catch(() => processLocks.delete(key));
    processLocks.set(key, lock);
  }
  return lock;
}
