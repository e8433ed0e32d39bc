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
/** What may be written into an nft batch as a table name. */
const TABLE_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

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

/** Runs nft with `args` (in `netns` via nsenter when given), `input` on stdin; resolves with stdout. */
function runNftCommand(args: readonly string[], input: string, netns?: string): Promise<string> {
  const nft = findNft();
  if (!nft) {
    return Promise.reject(
      new NftablesLockError('nft not found (install Debian package nftables, or set NODE_CRIU_NFT)', { code: 'ERR_NFT_NOT_FOUND' }),
    );
  }
  const [command, fullArgs] = netns ? ['nsenter', [`--net=${netns}`, '--', nft, ...args]] : [nft, [...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(command, fullArgs, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < 4096) stderr += chunk;
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      reject(new NftablesLockError(`cannot run ${command}: ${error.message}`, { code: error.code === 'ENOENT' ? 'ERR_NFT_NOT_FOUND' : 'ERR_NFT_FAILED', cause: error }));
    });
    child.on('close', (status) => {
      if (status === 0) return resolve(stdout);
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
    child.stdin.end(input);
  });
}

/** Runs one nft batch (in `netns` via nsenter when given). Rejects with NftablesLockError. */
export async function runNft(batch: string, netns?: string): Promise<void> {
  await runNftCommand(['-f', '-'], batch, netns);
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
  /**
   * `node_criu_<pid>_<random>` (NftablesLock.create: the caller owns its lifetime, never swept),
   * or `node_criu_<pid>_<starttime>_<ns>_<random>` (the process locks of checkpointConnection's
   * default lock, swept by sweepStaleLocks once their creator is gone).
   */
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
    return NftablesLock.createTable(`node_criu_${process.pid}_${randomBytes(4).toString('hex')}`, options.netns);
  }

  /**
   * @internal Creates a table named `table` (validated by the caller). With `listTables`, the same
   * nft run also lists the namespace's tables (`nft list tables` text), handed to `onList`.
   */
  static async createTable(table: string, netns?: string, onList?: (listing: string) => void): Promise<NftablesLock> {
    // Reachable from outside (a static of an exported class): the name goes into an nft batch.
    if (typeof table !== 'string' || !TABLE_IDENTIFIER.test(table)) throw new InvalidArgumentError(`table must be an nftables identifier (got ${describeValue(table)})`);
    if (netns !== undefined) checkNetnsPath(netns);
    const lock = new NftablesLock(table, netns);
    const listing = await runNftCommand(
      ['-f', '-'],
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
        ...(onList ? ['list tables'] : []),
        '',
      ].join('\n'),
      netns,
    );
    ownElements.set(lock.key, new Set());
    onList?.(listing);
    return lock;
  }

  private get key(): string {
    return `${this.netns ?? ''}\0${this.table}`;
  }

  /** A lock another process created (from an image's `lock`), to remove tuples from it. */
  static fromRef(ref: NftablesLockRef): NftablesLock {
    // The table name is written into an nft batch: only an identifier may get there.
    if (typeof ref !== 'object' || ref === null) throw new InvalidArgumentError('ref must be { table, netns? }', 'ERR_INVALID_ARG_TYPE');
    if (typeof ref.table !== 'string' || !TABLE_IDENTIFIER.test(ref.table)) {
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

  /** Deletes, in `netns`, the process locks of processes that are gone (see sweepStaleLocks). */
  static sweepStale(options: { netns?: string } = {}): Promise<SweptLock[]> {
    return sweepStaleLocks(options);
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

/**
 * The process's lock table in `netns` (created on first use, deleted at exit). Its creation lists
 * the namespace's tables in the same nft run and then deletes the stale process locks among them
 * (see sweepStaleLocks); a failing sweep does not fail the lock.
 */
export function processLock(netns?: string): Promise<NftablesLock> {
  const key = netns ?? '';
  let lock = processLocks.get(key);
  if (!lock) {
    let listing = '';
    lock = NftablesLock.createTable(processLockName(), netns, (text) => (listing = text)).then(async (l) => {
      l.deleteOnExit();
      await deleteStale(staleProcessLocks(inetTables(listing)), netns).catch(() => []);
      return l;
    });
    lock.catch(() => processLocks.delete(key));
    processLocks.set(key, lock);
  }
  return lock;
}

/*
 * Stale process locks. A process lock's name says who made it: pid, start time (field 22 of
 * /proc/<pid>/stat, clock ticks since boot) and the creator's pid and time namespaces (nsfs inode
 * numbers, 8 hex digits each): `node_criu_<pid>_<starttime>_<pidns><timens>_<random>`. A network
 * namespace may be shared by processes of several pid namespaces, and /proc/<pid>/stat's start
 * time is shifted by the READER's time namespace, so a sweeper judges only tables made in its own
 * pid and time namespaces (and only when its /proc shows its own pid namespace): there, "pid N
 * does not exist, is a zombie, or started at another time" proves the creator gone. Anything else
 * (other namespaces, NftablesLock.create's `node_criu_<pid>_<random>`, CRIU's tables, other
 * programs' tables, unreadable /proc entries) is left alone.
 */
const PROCESS_LOCK_NAME = /^node_criu_([1-9][0-9]{0,9})_([0-9]{1,20})_([0-9a-f]{16})_[0-9a-f]{8}$/;

interface ProcessView {
  startTime: string;
  /** pid namespace inode . time namespace inode, 8 hex digits each. */
  namespaces: string;
}

/** State (field 3) and start time (field 22) of /proc/<pid>/stat; undefined if there is none. */
function procStat(pid: number | 'self'): { state: string; startTime: string } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ESRCH') return undefined;
    throw error;
  }
  // comm (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const startTime = fields[22 - 3];
  if (fields[0] === undefined || startTime === undefined || !/^[0-9]+$/.test(startTime)) throw new Error(`unexpected /proc/${pid}/stat`);
  return { state: fields[0], startTime };
}

function namespaceInode(kind: 'pid' | 'time'): string {
  try {
    const match = /^[a-z]+:\[([0-9]+)\]$/.exec(fs.readlinkSync(`/proc/self/ns/${kind}`));
    if (!match) throw new Error(`unexpected /proc/self/ns/${kind}`);
    return Number(match[1]).toString(16).padStart(8, '0').slice(-8);
  } catch (error) {
    // Kernels before 5.6 have no time namespaces: every reader sees the same start times.
    if (kind === 'time' && (error as NodeJS.ErrnoException).code === 'ENOENT') return '00000000';
    throw error;
  }
}

/** This process as a process lock's name records it; undefined when /proc is not our pid namespace's. */
function ownProcessView(): ProcessView | undefined {
  try {
    if (fs.readlinkSync('/proc/self') !== String(process.pid)) return undefined;
    const stat = procStat('self');
    if (!stat) return undefined;
    return { startTime: stat.startTime, namespaces: namespaceInode('pid') + namespaceInode('time') };
  } catch {
    return undefined;
  }
}

/** A process lock's name; without a usable /proc, NftablesLock.create's form (never swept). */
function processLockName(): string {
  const view = ownProcessView();
  const random = randomBytes(4).toString('hex');
  return view ? `node_criu_${process.pid}_${view.startTime}_${view.namespaces}_${random}` : `node_criu_${process.pid}_${random}`;
}

export interface SweptLock {
  /** The deleted table (family inet). */
  table: string;
  /** Its creator's pid. */
  pid: number;
  /** 'exited': no such process (or a zombie); 'pid-reused': the pid belongs to a later process. */
  reason: 'exited' | 'pid-reused';
}

/** The inet table names in `nft list tables` output (lines `table <family> <name>`). */
function inetTables(listing: string): string[] {
  const names: string[] = [];
  for (const line of listing.split('\n')) {
    const match = /^table inet ([A-Za-z0-9_.-]+)$/.exec(line.trim());
    if (match) names.push(match[1]);
  }
  return names;
}

/** The process locks among `tables` whose creator is verifiably gone (see above). */
function staleProcessLocks(tables: readonly string[]): SweptLock[] {
  const self = ownProcessView();
  if (!self) return [];
  const stale: SweptLock[] = [];
  for (const table of tables) {
    const match = PROCESS_LOCK_NAME.exec(table);
    if (!match || match[3] !== self.namespaces) continue;
    const pid = Number(match[1]);
    let stat: ReturnType<typeof procStat>;
    try {
      stat = procStat(pid);
    } catch {
      continue; // unreadable: in doubt, keep it
    }
    if (!stat || stat.state === 'Z' || stat.state === 'X') stale.push({ table, pid, reason: 'exited' });
    else if (stat.startTime !== match[2]) stale.push({ table, pid, reason: 'pid-reused' });
  }
  return stale;
}

/** Deletes the tables (one nft batch); resolves with those this call deleted. */
async function deleteStale(stale: SweptLock[], netns?: string): Promise<SweptLock[]> {
  if (stale.length === 0) return stale;
  try {
    await runNft(stale.map((s) => `delete table inet ${s.table}\n`).join(''), netns);
    return stale;
  } catch (error) {
    if ((error as NftablesLockError).code !== 'ENOENT') throw error;
  }
  // One was deleted meanwhile (another sweeper): the batch is atomic, so delete them one by one.
  const deleted: SweptLock[] = [];
  for (const s of stale) {
    try {
      await runNft(`delete table inet ${s.table}\n`, netns);
      deleted.push(s);
    } catch (error) {
      if ((error as NftablesLockError).code !== 'ENOENT') throw error;
    }
  }
  return deleted;
}

/**
 * Deletes, in `netns` (default: ours), the process lock tables of processes that are gone (see
 * above): killed by a signal or otherwise ended without their 'exit' handler. Their locked
 * 4-tuples' peers get a reset on their next packet instead of retransmitting into a drop.
 * Resolves with what it deleted. A process's first default-lock checkpoint in a namespace does
 * the same (processLock).
 */
export async function sweepStaleLocks(options: { netns?: string } = {}): Promise<SweptLock[]> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  for (const name of Object.keys(options)) {
    if (name !== 'netns') throw new InvalidArgumentError(`unknown option ${describeValue(name)} (known: netns)`, 'ERR_INVALID_ARG_VALUE');
  }
  const netns = options.netns;
  if (netns !== undefined) checkNetnsPath(netns);
  const listing = await runNftCommand(['list', 'tables'], '', netns);
  return deleteStale(staleProcessLocks(inetTables(listing)), netns);
}
