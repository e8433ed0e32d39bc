/**
 * NftablesLock: drops the peer's packets for a set of TCP 4-tuples, in one nftables table per
 * lock, so a connection whose socket was closed in repair mode is neither acknowledged nor reset
 * until its restored socket takes over. Tuples live in two sets (IPv4 and IPv6; IPv4-mapped
 * addresses go to the IPv4 set, as they appear on the wire). The table is made and deleted by
 * nft (lib/sys/nft.ts, a JSON batch), once per lock; the tuples of a batch of connections go in
 * and out as one nf_tables transaction sent over netlink by the addon (csrc/nft_elements.cc), the
 * hot path of a checkpoint and a restore. Packets marked SOCCR_MARK (libsoccr's injected FINs) pass.
 */
import { randomBytes } from 'node:crypto';

import { describeValue, fromNativeError, InvalidArgumentError } from '../../errors';
import { attachCapabilityProblem, capabilityProblem } from '../../capabilities';
import { checkNetnsPath } from '../../security';
import { assertNamespaceFile } from '../../sys/netns';
import { deleteTables, nftBatch, tablesOf, type NftCommand, type NftTable } from '../../sys/nft';
import { NftablesLockError } from '../errors';
import type { NftablesLockRef } from '../image';
import { soccrBinding } from '../native';
import { setKeys, type ConnectionTuple } from './keys';
import { asLockError } from './run';
import { deleteStale, processLockName, staleProcessLocks, sweepStaleLocks, type SweptLock } from './sweep';

/** NFPROTO_INET (linux/netfilter.h): the lock tables are inet tables. */
const NFPROTO_INET = 1;

const SOCCR_MARK = 0xc114;
/** What may be written into an nft batch as a table name. */
const TABLE_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
/** Marks a lock object for isNftablesLock (instanceof fails across jest realms and duplicate installs). */
const LOCK_BRAND = Symbol.for('node-criu.NftablesLock');

/** Whether `value` is an NftablesLock (of any copy of this package). */
export function isNftablesLock(value: unknown): value is NftablesLock {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[LOCK_BRAND] === true;
}

function payload(protocol: string, field: string): unknown {
  return { payload: { protocol, field } };
}

/** The batch that makes a lock table: two sets of 4-tuples and an input-hook drop chain. */
export function lockTableCommands(name: string): NftCommand[] {
  const table = { family: 'inet', table: name };
  const dropRule = (ip: 'ip' | 'ip6', set: string): NftCommand => ({
    add: {
      rule: {
        ...table,
        chain: 'input',
        expr: [
          {
            match: {
              op: '==',
              left: {
                concat: [payload(ip, 'saddr'), payload('tcp', 'sport'), payload(ip, 'daddr'), payload('tcp', 'dport')],
              },
              right: `@${set}`,
            },
          },
          { drop: null },
        ],
      },
    },
  });
  return [
    { add: { table: { family: 'inet', name } } },
    { add: { set: { ...table, name: 'v4', type: ['ipv4_addr', 'inet_service', 'ipv4_addr', 'inet_service'] } } },
    { add: { set: { ...table, name: 'v6', type: ['ipv6_addr', 'inet_service', 'ipv6_addr', 'inet_service'] } } },
    { add: { chain: { ...table, name: 'input', type: 'filter', hook: 'input', prio: -310, policy: 'accept' } } },
    {
      add: {
        rule: {
          ...table,
          chain: 'input',
          expr: [{ match: { op: '==', left: { meta: { key: 'mark' } }, right: SOCCR_MARK } }, { accept: null }],
        },
      },
    },
    dropRule('ip', 'v4'),
    dropRule('ip6', 'v6'),
  ];
}

const enum ElementOp {
  Add = 0,
  Delete = 1,
}

/**
 * Adds or deletes set elements in one nf_tables transaction over netlink (csrc/nft_elements.cc),
 * far faster than nft's parser for thousands of elements. All or nothing.
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

/**
 * `netns` must be a namespace file before nsenter opens it for nft (a FIFO there would block it
 * for good): ENOENT when missing, ERR_INVALID_NETNS for anything else (see assertNamespaceFile).
 */
function checkLockNetns(netns: string): void {
  checkNetnsPath(netns);
  try {
    assertNamespaceFile(netns);
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw new NftablesLockError(`netns ${netns}: ${e.message}`, { code: e.code ?? 'ERR_INVALID_NETNS', cause: e });
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
    Object.defineProperty(this, LOCK_BRAND, { value: true });
  }

  /**
   * Creates the table, its two sets and the input-hook drop chain. `sweepable`: the table gets a
   * process lock's name (so sweepStaleLocks deletes it once this process is gone, e.g. SIGKILLed),
   * is deleted at exit, and its creation deletes the namespace's stale process locks in passing.
   */
  static async create(options: { netns?: string; sweepable?: boolean } = {}): Promise<NftablesLock> {
    if (typeof options !== 'object' || options === null)
      throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
    if (options.netns !== undefined) checkNetnsPath(options.netns);
    if (options.sweepable !== undefined && typeof options.sweepable !== 'boolean')
      throw new InvalidArgumentError('sweepable must be a boolean', 'ERR_INVALID_ARG_TYPE');
    if (options.sweepable === true) {
      let listed: NftTable[] = [];
      const lock = await NftablesLock.createTable(processLockName(), options.netns, (tables) => (listed = tables));
      lock.deleteOnExit();
      await deleteStale(staleProcessLocks(listed), options.netns).catch(() => []);
      return lock;
    }
    return NftablesLock.createTable(`node_criu_${process.pid}_${randomBytes(4).toString('hex')}`, options.netns);
  }

  /**
   * @internal Creates a table named `table` (validated by the caller). With `onList`, the same
   * nft run also lists the namespace's tables, handed to `onList`.
   */
  static async createTable(
    table: string,
    netns?: string,
    onList?: (tables: NftTable[]) => void,
  ): Promise<NftablesLock> {
    // Reachable from outside (a static of an exported class): the name goes into an nft batch.
    if (typeof table !== 'string' || !TABLE_IDENTIFIER.test(table))
      throw new InvalidArgumentError(`table must be an nftables identifier (got ${describeValue(table)})`);
    if (netns !== undefined) checkLockNetns(netns);
    const lock = new NftablesLock(table, netns);
    const commands = [...lockTableCommands(table), ...(onList ? [{ list: { tables: null } }] : [])];
    const listed = await asLockError(netns, () => nftBatch(commands, netns !== undefined ? { netns } : {}));
    madeHere().set(refKey(lock.ref), lock);
    onList?.(tablesOf(listed));
    return lock;
  }

  /**
   * A lock another process created, to remove tuples from it. The caller vouches for `ref`: a
   * restore does not trust an image's `lock` by itself (see docs/reliability/security.md); for
   * images whose lock is in another namespace, pass `NftablesLock.fromRef(ref)` in its `locks`.
   */
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
      const netns = this.netns;
      await asLockError(netns, () =>
        deleteTables([{ family: 'inet', name: this.table }], netns !== undefined ? { netns } : {}),
      );
    } catch (error) {
      // The namespace is gone, and its tables with it.
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
  static async sweepStale(options: { netns?: string } = {}): Promise<SweptLock[]> {
    const netns = (options as { netns?: unknown } | null)?.netns;
    if (typeof netns === 'string') checkLockNetns(netns);
    return sweepStaleLocks(options);
  }

  /** Deletes the table when the process exits (see processLock). */
  deleteOnExit(): this {
    registry.add(this);
    installExitHook();
    return this;
  }
}

/** The identity of a lock reference: its namespace path and table name. */
export function refKey(ref: NftablesLockRef): string {
  return `${ref.netns ?? ''}\0${ref.table}`;
}

/**
 * Every lock table this process created (create, createTable, processLock), destroyed ones too,
 * shared by every copy of this package in the process: a restore trusts an image's `lock` when it
 * names one of these (it names a path root would open and a table it would change).
 */
function madeHere(): Map<string, NftablesLock> {
  const key = Symbol.for('node-criu.locksMadeHere');
  const holder = globalThis as unknown as Record<symbol, Map<string, NftablesLock> | undefined>;
  return (holder[key] ??= new Map<string, NftablesLock>());
}

/** The lock this process made that `ref` names, or undefined (a ref from elsewhere). */
export function ownedLock(ref: NftablesLockRef): NftablesLock | undefined {
  if (typeof ref !== 'object' || ref === null) return undefined;
  return madeHere().get(refKey(ref));
}

// Locks made by checkpointConnection's default ('nftables' without a lock object) are per process
// and per namespace, and are deleted when the process exits.
const registry = new Set<NftablesLock>();
const processLocks = new Map<string, Promise<NftablesLock>>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' runs no more turns of the event loop, so no child process could be waited for here: the
  // tables go in one synchronous netlink transaction each. A table left behind would drop its
  // connections' packets for good.
  process.once('exit', () => {
    const { nftDeleteTable } = soccrBinding();
    for (const lock of registry) {
      try {
        nftDeleteTable(NFPROTO_INET, lock.table, lock.netns);
      } catch {
        // already gone, or its namespace is: nothing left to drop packets
      }
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
    let listed: NftTable[] = [];
    lock = NftablesLock.createTable(processLockName(), netns, (tables) => (listed = tables)).then(async (l) => {
      l.deleteOnExit();
      await deleteStale(staleProcessLocks(listed), netns).catch(() => []);
      return l;
    });
    lock.catch(() => processLocks.delete(key));
    processLocks.set(key, lock);
  }
  return lock;
}
