/**
 * The process route's own lock on the moved connections (CRIU runs with network_lock 'skip').
 *
 * CRIU's nftables lock adds each connection's two 4-tuples with a libnftables run of its own, one
 * after the other while the tree is frozen (two parser runs and netlink round trips per
 * connection). Ours makes its (empty) tables before the dump, while the server still runs, and
 * puts every tuple in at once: in CRIU's query-ext-files notification, which CRIU sends after it
 * froze the tree and before it dumps any file, in one nf_tables transaction (NftablesLock.add).
 *
 * Lifetime: the source table drops the peers' packets from the freeze until the connections live
 * elsewhere (a successful restore on the target, then the address is gone from the source) or
 * until a rollback restored them on the source. The target table (one machine: another
 * namespace) gets the same tuples right after the dump and holds them from the address move until
 * the restore. Releasing takes the tuples out in one transaction first (the peers' packets pass
 * at once) and deletes the table afterwards. A migration whose outcome is unknown leaves the
 * source table in place (never deleted at exit): the peers see drops, never a reset.
 *
 * The seam for other locks (a packet-holding NFQUEUE lock, say): ConnectionLock below; the route
 * calls prepare() before the dump, engage() from the notification, holdOnTarget() before the
 * address move, releaseTarget() after the restore, releaseSource() once the server runs elsewhere
 * or again on the source. Only engage() runs while the tree is frozen.
 */
import { randomBytes } from 'node:crypto';

import type { CriuNotifyHandlers, CriuOptions } from '../criu';
import { NftablesLock, type ConnectionTuple } from '../soccr/nft-lock';
import { holdPackets, type PacketHold } from '../soccr/packet-hold';
import { describeFailure } from './process-errors';
import { lockTuples, wireTuplesFromProc } from '../agent/tuples';
import {
  criuLockTables,
  deleteNewLockTables,
  deleteTables,
  holdInTarget,
  processTcpTuples,
  treeSocketInodes,
  type TreeSockets,
} from './process-criu';

export interface ConnectionLock {
  /** Before the dump, the server still running: whatever can be made in advance. */
  prepare(): Promise<void>;
  /** The tree is frozen, no socket dumped yet: from now on the peers' packets must not reach a socket. */
  engage(tuples: Set<string>): Promise<void>;
  /** After the dump, before the address moves: the target holds the same connections. */
  holdOnTarget(): Promise<void>;
  /**
   * The target's hold is over. `delivered`: the restore succeeded, so packets it held may go to the
   * restored sockets; otherwise (a rollback, a failed dump) they are dropped.
   */
  releaseTarget(delivered?: boolean): Promise<void>;
  /** The connections live elsewhere (or again on the source, after a rollback's restore). */
  releaseSource(): Promise<void>;
  /** What to name in a message about a lock left in place ('table inet NAME in NETNS'). */
  describe(): string;
  /** The command that lifts the source's lock by hand (after a restore by hand), if one is needed. */
  unlockCommand(): string | undefined;
}

const NAME_PREFIX = 'node_criu_migrate_';

/**
 * The nftables drop lock (NftablesLock): one table in the source namespace and, if another, one in
 * the target. In the target, packets are also *held* in front of that table (holdPackets) when the
 * kernel can: a client's retransmission that arrives before the restore is delivered to the
 * restored socket at the release instead of waiting for its next retransmission (0.6, 1.4, 3 s).
 * Without NFQUEUE the drop table alone holds them, as before.
 */
export class NftablesMigrationLock implements ConnectionLock {
  private source: NftablesLock | undefined;
  private target: NftablesLock | undefined;
  private held: PacketHold | undefined;
  /** What the target's hold did at its end: packets re-injected (or dropped). */
  heldPackets: { accepted: number; dropped: number } | undefined;
  private tuples: ConnectionTuple[] = [];
  private readonly name: string;
  /** Table deletions under way (release). */
  private readonly pending: Array<Promise<void>> = [];

  constructor(
    pid: number,
    private readonly sourceNetns: string | undefined,
    private readonly targetNetns: string | undefined | null,
  ) {
    this.name = `${NAME_PREFIX}${pid}_${randomBytes(4).toString('hex')}`;
  }

  async prepare(): Promise<void> {
    this.source = await NftablesLock.createTable(this.name, this.sourceNetns);
    if (this.targetNetns === null) return;
    try {
      this.target = await NftablesLock.createTable(this.name, this.targetNetns);
    } catch (error) {
      await this.source.destroy().catch(() => undefined);
      this.source = undefined;
      throw error;
    }
  }

  async engage(keys: Set<string>): Promise<void> {
    this.tuples = lockTuples(wireTuplesFromProc(keys));
    await this.source?.add(this.tuples);
  }

  async holdOnTarget(): Promise<void> {
    if (this.target === undefined) return;
    await this.target.add(this.tuples);
    if (this.tuples.length === 0 || this.targetNetns === null) return;
    this.held = await holdPackets({ netns: this.targetNetns, tuples: this.tuples }).catch(() => undefined);
  }

  async releaseTarget(delivered = false): Promise<void> {
    const held = this.held;
    this.held = undefined;
    // What was held is re-injected (or dropped) between the tuples leaving the drop table (a
    // transaction: no hook goes away, which would flush the queue) and the table's deletion.
    await release(this.target, this.tuples, this.pending, async () => {
      if (held) this.heldPackets = await (delivered ? held.release() : held.drop()).catch(() => undefined);
    });
    this.target = undefined;
  }

  async releaseSource(): Promise<void> {
    await release(this.source, this.tuples, this.pending);
    this.source = undefined;
    await Promise.all(this.pending.splice(0));
  }

  describe(): string {
    return `nftables table inet ${this.name}${this.held !== undefined ? ' (the target also holds packets)' : ''}${this.sourceNetns !== undefined ? ` in ${this.sourceNetns}` : ''}`;
  }

  unlockCommand(): string {
    const nft = `nft delete table inet ${this.name}`;
    return this.sourceNetns !== undefined ? `nsenter --net=${this.sourceNetns} ${nft}` : nft;
  }
}

/**
 * CRIU's own nftables lock (network_lock 'nftables'), when ours cannot be made (no nft command):
 * CRIU locks each connection as it dumps it and leaves its table in the source namespace; the
 * target holds a copy of it (nft list + batch) from the address move until the restore.
 */
export class CriuMigrationLock implements ConnectionLock {
  private before: string[] = [];
  private hold: string | undefined;
  /** Set when the target could not get a copy of CRIU's table (a peer may then see a reset). */
  holdMissing = false;

  constructor(
    private readonly pid: number,
    private readonly sourceNetns: string | undefined,
    private readonly targetNetns: string | undefined | null,
  ) {}

  async prepare(): Promise<void> {
    this.before = await criuLockTables(this.sourceNetns);
  }

  async engage(): Promise<void> {
    // CRIU locks each connection itself.
  }

  async holdOnTarget(): Promise<void> {
    if (this.targetNetns === null) return;
    const made = await holdInTarget(this.sourceNetns, this.targetNetns, this.before, this.pid);
    this.hold = made.hold;
    this.holdMissing = made.dumpLock !== undefined && made.hold === undefined;
  }

  async releaseTarget(): Promise<void> {
    if (this.hold !== undefined && this.targetNetns !== null) await deleteTables(this.targetNetns, [this.hold]);
    this.hold = undefined;
  }

  async releaseSource(): Promise<void> {
    await deleteNewLockTables(this.sourceNetns, this.before);
  }

  describe(): string {
    return `CRIU's nftables lock table (inet CRIU-...)${this.sourceNetns !== undefined ? ` in ${this.sourceNetns}` : ''}`;
  }

  unlockCommand(): undefined {
    // CRIU's restore of the images deletes the dump's table itself.
    return undefined;
  }
}

/**
 * Our lock, prepared; CRIU's when ours cannot be made (`fallback` says why). `targetNetns` null:
 * no target namespace here (the same namespace, or another host). The dump's network_lock goes
 * with it: 'skip' with ours, 'nftables' with CRIU's.
 */
export async function prepareLock(
  pid: number,
  sourceNetns: string | undefined,
  targetNetns: string | undefined | null,
  criuLock = false,
): Promise<{ lock: ConnectionLock; networkLock: 'skip' | 'nftables'; fallback?: unknown }> {
  if (criuLock) {
    const criu = new CriuMigrationLock(pid, sourceNetns, targetNetns);
    await criu.prepare();
    return { lock: criu, networkLock: 'nftables' };
  }
  const ours = new NftablesMigrationLock(pid, sourceNetns, targetNetns);
  try {
    await ours.prepare();
    return { lock: ours, networkLock: 'skip' };
  } catch (error) {
    const criu = new CriuMigrationLock(pid, sourceNetns, targetNetns);
    await criu.prepare();
    return { lock: criu, networkLock: 'nftables', fallback: error };
  }
}

/**
 * Tuples out in one transaction (the packets pass now), then `afterRemove` (a hold's release);
 * the table's deletion (an nft run) is left to `pending`, awaited by releaseSource, off the pause.
 */
async function release(
  lock: NftablesLock | undefined,
  tuples: ConnectionTuple[],
  pending: Promise<void>[],
  afterRemove?: () => Promise<void>,
): Promise<void> {
  await lock?.remove(tuples).catch(() => undefined);
  await afterRemove?.();
  if (lock !== undefined) pending.push(lock.destroy().catch(() => undefined));
}

/**
 * The tree's connections once it is frozen. `before` was read while it ran: when the tree holds no
 * socket it did not hold then (the usual case), its tuples are those already known and only the
 * fd links are read again; otherwise (a connection accepted since) /proc/net/tcp is read again.
 */
export function frozenTuples(pid: number, before: TreeSockets): Set<string> {
  const now = treeSocketInodes(pid);
  const tuples = new Set<string>();
  for (const inode of now) {
    if (!before.inodes.has(inode)) return processTcpTuples(pid);
    const tuple = before.tuples.get(inode);
    if (tuple !== undefined) tuples.add(tuple);
  }
  return tuples;
}

/**
 * The dump's notification handlers for `lock`: query-ext-files (the tree frozen, nothing dumped
 * yet) takes the tree's connections (frozenTuples) and engages the lock; a failure there fails
 * the dump, and CRIU resumes the tree. `onEngaged` gets the tuples locked.
 */
export function lockingHandlers(
  lock: ConnectionLock,
  pid: number,
  before: TreeSockets,
  onEngaged: (tuples: Set<string>) => void,
): CriuNotifyHandlers {
  return {
    'query-ext-files': async () => {
      const tuples = frozenTuples(pid, before);
      await lock.engage(tuples);
      onEngaged(tuples);
    },
  };
}

/**
 * prepareLock for a migration: its lock, and its CRIU options with the network_lock that goes
 * with it; a fallback to CRIU's lock is announced as a 'dump' warning. `criuLock`: CRIU's own
 * (the lazy route: when it fails before the commit, lib/criu/recover.ts finds the sockets to take
 * out of repair through CRIU's lock table).
 */
export async function lockForMigration(
  m: {
    readonly options: { pid: number };
    readonly base: CriuOptions;
    emit(phase: string, detail?: Record<string, unknown>): void;
  },
  sourceNetns: string | undefined,
  targetNetns: string | undefined | null,
  criuLock = false,
): Promise<{ lock: ConnectionLock; base: CriuOptions }> {
  const made = await prepareLock(m.options.pid, sourceNetns, targetNetns, criuLock);
  if (made.fallback !== undefined)
    m.emit('dump', { state: 'warning', reason: `CRIU's own network lock (ours: ${describeFailure(made.fallback)})` });
  return { lock: made.lock, base: { ...m.base, networkLock: made.networkLock } };
}
