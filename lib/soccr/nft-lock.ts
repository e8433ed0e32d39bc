/**
 * NftablesLock: drops the peer's packets for a set of TCP 4-tuples, in one nftables table per
 * lock, so a connection whose socket was closed in repair mode is neither acknowledged nor reset
 * until its restored socket takes over. Tuples live in two sets (IPv4 and IPv6; IPv4-mapped
 * addresses go to the IPv4 set, as they appear on the wire). The table is made and deleted by
 * nft (`nft -f -`, spawned with an argument array and the batch on stdin, never a shell), once per
 * lock; the tuples of a batch of connections go in and out as one nf_tables transaction sent over
 * netlink by the addon (csrc/nft_elements.cc), the hot path of a checkpoint and a restore.
 * Packets marked SOCCR_MARK (libsoccr's injected FINs) pass.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { describeValue, fromNativeError, InvalidArgumentError } from '../errors';
import { attachCapabilityProblem, capabilityProblem } from '../capabilities';
import { checkNetnsPath } from '../security';
import { addressBytes, ipv4Word } from './address';
import type { SocketAddress } from './address';
import { procStatFields } from '../proc';
import { NftablesLockError } from './errors';
import { soccrBinding } from './native';
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
      new NftablesLockError('nft not found (install Debian package nftables, or set NODE_CRIU_NFT)', {
        code: 'ERR_NFT_NOT_FOUND',
      }),
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
      reject(
        new NftablesLockError(`cannot run ${command}: ${error.message}`, {
          code: error.code === 'ENOENT' ? 'ERR_NFT_NOT_FOUND' : 'ERR_NFT_FAILED',
          cause: error,
        }),
      );
    });
    child.on('close', (status) => {
      if (status === 0) return resolve(stdout);
      const denied = /Operation not permitted/.test(stderr);
      const code = denied ? 'EPERM' : /No such file or directory/.test(stderr) ? 'ENOENT' : 'ERR_NFT_FAILED';
      const error = new NftablesLockError(`nft failed (exit ${status}): ${stderr.trim()}`, { code });
      // nsenter cannot enter the namespace (CAP_SYS_ADMIN), or nft cannot talk to nftables (CAP_NET_ADMIN).
      if (denied)
        attachCapabilityProblem(error, capabilityProblem(/reassociate|setns/.test(stderr) ? 'netns' : 'nftables'));
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

/** The 4 (IPv4) or 16 (IPv6) bytes of a tuple's address; InvalidArgumentError if it has none. */
function addressKeyBytes(address: SocketAddress, name: string): Uint8Array {
  const bytes =
    typeof address === 'object' && address !== null && (address.family === 4 || address.family === 6)
      ? addressBytes(address.family, address.address)
      : undefined;
  if (!bytes) throw new InvalidArgumentError(`${name} must be {family: 4|6, address, port} with a valid IP address`);
  return bytes;
}

function isMapped(bytes: Uint8Array): boolean {
  if (bytes.length !== 16 || bytes[10] !== 0xff || bytes[11] !== 0xff) return false;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return true;
}

function portOf(address: SocketAddress, name: string): number {
  if (typeof address !== 'object' || address === null)
    throw new InvalidArgumentError(`${name} must be {family: 4|6, address, port}`, 'ERR_INVALID_ARG_TYPE');
  const port = address.port;
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new InvalidArgumentError(`${name}.port must be an integer 0..65535`);
  return port;
}

/**
 * The tuples as keys of the table's two sets (csrc/nft_elements.cc): remote address . remote port
 * . local address . local port, each field padded to 4 bytes (16 bytes for IPv4, 40 for IPv6).
 * A tuple whose both addresses are IPv4 or IPv4-mapped goes to the IPv4 set, as its packets
 * appear on the wire. Throws InvalidArgumentError for a malformed tuple.
 */
function setKeys(tuples: readonly ConnectionTuple[]): { v4: Uint8Array; v6: Uint8Array } {
  const v4 = new Uint8Array(16 * tuples.length);
  const v6 = new Uint8Array(40 * tuples.length);
  const v4View = new DataView(v4.buffer);
  let v4Count = 0;
  let v6Count = 0;
  for (let i = 0; i < tuples.length; i++) {
    const tuple = tuples[i];
    if (typeof tuple !== 'object' || tuple === null)
      throw new InvalidArgumentError('tuples must be {local, remote} objects', 'ERR_INVALID_ARG_TYPE');
    const { local, remote } = tuple;
    const remotePort = portOf(remote, 'remote');
    const localPort = portOf(local, 'local');
    // IPv4 without allocating: the common case of a batch of thousands.
    let remoteWord = remote.family === 4 ? ipv4Word(remote.address) : -1;
    let localWord = local.family === 4 ? ipv4Word(local.address) : -1;
    let remoteBytes: Uint8Array | undefined;
    let localBytes: Uint8Array | undefined;
    if (remoteWord < 0) {
      remoteBytes = addressKeyBytes(remote, 'remote');
      if (isMapped(remoteBytes)) remoteWord = new DataView(remoteBytes.buffer, remoteBytes.byteOffset).getUint32(12);
    }
    if (localWord < 0) {
      localBytes = addressKeyBytes(local, 'local');
      if (isMapped(localBytes)) localWord = new DataView(localBytes.buffer, localBytes.byteOffset).getUint32(12);
    }
    if (remoteWord >= 0 && localWord >= 0) {
      const at = 16 * v4Count++;
      v4View.setUint32(at, remoteWord);
      v4View.setUint16(at + 4, remotePort);
      v4View.setUint32(at + 8, localWord);
      v4View.setUint16(at + 12, localPort);
      continue;
    }
    // An IPv6 pair (an IPv4 address among them stands as its mapped form).
    const at = 40 * v6Count++;
    v6.set(remoteBytes ?? mappedBytes(remoteWord), at);
    v6[at + 16] = remotePort >> 8;
    v6[at + 17] = remotePort & 0xff;
    v6.set(localBytes ?? mappedBytes(localWord), at + 20);
    v6[at + 36] = localPort >> 8;
    v6[at + 37] = localPort & 0xff;
  }
  return { v4: v4.subarray(0, 16 * v4Count), v6: v6.subarray(0, 40 * v6Count) };
}

function mappedBytes(word: number): Uint8Array {
  const bytes = new Uint8Array(16);
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  new DataView(bytes.buffer).setUint32(12, word);
  return bytes;
}

const enum ElementOp {
  Add = 0,
  Delete = 1,
}

/**
 * Adds or deletes set elements in one nf_tables transaction over netlink (csrc/nft_elements.cc):
 * nft would parse 10,000 elements for ~160 ms, the kernel commits them in ~25 ms. All or nothing.
 */
function changeElements(op: ElementOp, lock: NftablesLock, tuples: readonly ConnectionTuple[]): void {
  const { v4, v6 } = setKeys(tuples);
  try {
    soccrBinding().nftSetElements(op, lock.table, v4, v6, lock.netns);
  } catch (error) {
    const typed = fromNativeError(
      NftablesLockError,
      error,
      op === ElementOp.Add ? 'nftables lock add' : 'nftables lock remove',
    );
    // No CAP_NET_ADMIN for nftables, or (netns) no CAP_SYS_ADMIN to enter the namespace.
    if (typed.code === 'EPERM' && typed.capability === undefined)
      attachCapabilityProblem(typed, capabilityProblem('nftables'));
    throw typed;
  }
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
    if (typeof options !== 'object' || options === null)
      throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
    if (options.netns !== undefined) checkNetnsPath(options.netns);
    return NftablesLock.createTable(`node_criu_${process.pid}_${randomBytes(4).toString('hex')}`, options.netns);
  }

  /**
   * @internal Creates a table named `table` (validated by the caller). With `listTables`, the same
   * nft run also lists the namespace's tables (`nft list tables` text), handed to `onList`.
   */
  static async createTable(table: string, netns?: string, onList?: (listing: string) => void): Promise<NftablesLock> {
    // Reachable from outside (a static of an exported class): the name goes into an nft batch.
    if (typeof table !== 'string' || !TABLE_IDENTIFIER.test(table))
      throw new InvalidArgumentError(`table must be an nftables identifier (got ${describeValue(table)})`);
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
    onList?.(listing);
    return lock;
  }

  /** A lock another process created (from an image's `lock`), to remove tuples from it. */
  static fromRef(ref: NftablesLockRef): NftablesLock {
    // The table name is written into an nft batch: only an identifier may get there.
    if (typeof ref !== 'object' || ref === null)
      throw new InvalidArgumentError('ref must be { table, netns? }', 'ERR_INVALID_ARG_TYPE');
    if (typeof ref.table !== 'string' || !TABLE_IDENTIFIER.test(ref.table)) {
      throw new InvalidArgumentError(`ref.table must be an nftables identifier (got ${describeValue(ref.table)})`);
    }
    if (ref.netns !== undefined) checkNetnsPath(ref.netns, 'ref.netns');
    return new NftablesLock(ref.table, ref.netns);
  }

  get ref(): NftablesLockRef {
    return this.netns === undefined ? { table: this.table } : { table: this.table, netns: this.netns };
  }

  /**
   * Starts dropping the peer's packets of these connections: one nf_tables transaction (all or
   * nothing), sent over netlink. A tuple already in the table is not an error.
   */
  async add(tuples: readonly ConnectionTuple[]): Promise<void> {
    if (!Array.isArray(tuples)) throw new InvalidArgumentError('tuples must be an array', 'ERR_INVALID_ARG_TYPE');
    if (tuples.length === 0) return;
    changeElements(ElementOp.Add, this, tuples);
  }

  /**
   * Stops dropping them: one transaction, all or nothing. Rejects with code ENOENT when the table
   * or one of the tuples is missing (then none is removed).
   */
  async remove(tuples: readonly ConnectionTuple[]): Promise<void> {
    if (!Array.isArray(tuples)) throw new InvalidArgumentError('tuples must be an array', 'ERR_INVALID_ARG_TYPE');
    if (tuples.length === 0) return;
    changeElements(ElementOp.Delete, this, tuples);
  }

  /** Deletes the table (every tuple is released). Idempotent; a missing table is not an error. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    registry.delete(this);
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

    const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
    for (const lock of registry) {
      const [command, args] = lock.netns
        ? ['nsenter', [`--net=${lock.netns}`, '--', nft, '-f', '-']]
        : [nft, ['-f', '-']];
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
  const fields = procStatFields(pid);
  if (fields === undefined) return undefined;
  const startTime = fields[22 - 3];
  if (fields[0] === undefined || startTime === undefined || !/^[0-9]+$/.test(startTime))
    throw new Error(`unexpected /proc/${pid}/stat`);
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
  return view
    ? `node_criu_${process.pid}_${view.startTime}_${view.namespaces}_${random}`
    : `node_criu_${process.pid}_${random}`;
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
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  for (const name of Object.keys(options)) {
    if (name !== 'netns')
      throw new InvalidArgumentError(`unknown option ${describeValue(name)} (known: netns)`, 'ERR_INVALID_ARG_VALUE');
  }
  const netns = options.netns;
  if (netns !== undefined) checkNetnsPath(netns);
  const listing = await runNftCommand(['list', 'tables'], '', netns);
  return deleteStale(staleProcessLocks(inetTables(listing)), netns);
}
