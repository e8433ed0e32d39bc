/**
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
import { randomBytes } from 'node:crypto';

import { describeValue, InvalidArgumentError } from '../../errors';
import { checkNetnsPath } from '../../security';
import { ownNamespaceInode } from '../../sys/netns';
import { deleteTableCommand, deleteTables, listTables, nftBatch, type NftTable } from '../../sys/nft';
import { procSelfPid, procStat } from '../../sys/proc';
import { soccrBinding } from '../native';
import { asLockError } from './run';

const NFPROTO_IPV4 = 2;
const NFPROTO_IPV6 = 10;

const PROCESS_LOCK_NAME = /^node_criu_([1-9][0-9]{0,9})_([0-9]{1,20})_([0-9a-f]{16})_[0-9a-f]{8}$/;

export interface SweptLock {
  /** The deleted table (family inet). */
  table: string;
  /** Its creator's pid. */
  pid: number;
  /** 'exited': no such process (or a zombie); 'pid-reused': the pid belongs to a later process. */
  reason: 'exited' | 'pid-reused';
}

export interface ProcessView {
  startTime: string;
  /** pid namespace inode . time namespace inode, 8 hex digits each. */
  namespaces: string;
}

function namespaceHex(kind: 'pid' | 'time'): string {
  try {
    return ownNamespaceInode(kind).toString(16).padStart(8, '0').slice(-8);
  } catch (error) {
    // Kernels before 5.6 have no time namespaces: every reader sees the same start times.
    if (kind === 'time' && (error as NodeJS.ErrnoException).code === 'ENOENT') return '00000000';
    throw error;
  }
}

/** This process as a process lock's name records it; undefined when /proc is not our pid namespace's. */
function ownProcessView(): ProcessView | undefined {
  try {
    if (procSelfPid() !== process.pid) return undefined;
    const stat = procStat('self');
    if (!stat) return undefined;
    return { startTime: stat.startTime, namespaces: namespaceHex('pid') + namespaceHex('time') };
  } catch {
    return undefined;
  }
}

/** The name of a process lock made by `view` (see above). */
export function processLockTableName(pid: number, view: ProcessView, random: string): string {
  return `node_criu_${pid}_${view.startTime}_${view.namespaces}_${random}`;
}

/** A process lock's name; without a usable /proc, NftablesLock.create's form (never swept). */
export function processLockName(): string {
  const view = ownProcessView();
  const random = randomBytes(4).toString('hex');
  return view ? processLockTableName(process.pid, view, random) : `node_criu_${process.pid}_${random}`;
}

/** What /proc says of a creator: its state and start time, undefined when there is no such process. */
type Lookup = (pid: number) => { state: string; startTime: string } | undefined;

/**
 * The process locks among `tables` (inet) whose creator is verifiably gone, judged from `self`
 * (this process's view) and `lookup` (throws when /proc cannot say: then the table is kept).
 */
export function staleAmong(tables: readonly NftTable[], self: ProcessView, lookup: Lookup): SweptLock[] {
  const stale: SweptLock[] = [];
  for (const { family, name } of tables) {
    const match = family === 'inet' ? PROCESS_LOCK_NAME.exec(name) : null;
    if (!match || match[3] !== self.namespaces) continue;
    const pid = Number(match[1]);
    let stat: ReturnType<Lookup>;
    try {
      stat = lookup(pid);
    } catch {
      continue; // unreadable: in doubt, keep it
    }
    if (!stat || stat.state === 'Z' || stat.state === 'X') stale.push({ table: name, pid, reason: 'exited' });
    else if (stat.startTime !== match[2]) stale.push({ table: name, pid, reason: 'pid-reused' });
  }
  return stale;
}

/** The process locks among `tables` whose creator is gone, judged by this process. */
export function staleProcessLocks(tables: readonly NftTable[]): SweptLock[] {
  const self = ownProcessView();
  return self ? staleAmong(tables, self, procStat) : [];
}

/** Deletes the tables (one nft batch); resolves with those this call deleted. */
export async function deleteStale(stale: SweptLock[], netns?: string): Promise<SweptLock[]> {
  if (stale.length === 0) return stale;
  const tables = stale.map((s) => ({ family: 'inet', name: s.table }));
  const options = netns !== undefined ? { netns } : {};
  return asLockError(netns, async () => {
    try {
      await nftBatch(tables.map(deleteTableCommand), options);
      return stale;
    } catch {
      // One was deleted meanwhile (another sweeper): the batch is atomic, so one by one.
    }
    const deleted = new Set((await deleteTables(tables, options)).map((t) => t.name));
    return stale.filter((s) => deleted.has(s.table));
  });
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
  const tables = await asLockError(netns, () => listTables(netns !== undefined ? { netns } : {}));
  // A dead holder's packet-hold tables keep dropping its tuples: they go too (over netlink: nft
  // cannot parse their NFQUEUE rule, so it cannot delete them).
  deleteHoldTables(staleHoldTables(tables), netns);
  return deleteStale(staleProcessLocks(tables.filter((t) => t.family === 'inet')), netns);
}

/** Deletes packet-hold tables (ip, ip6) over netlink; one deleted meanwhile is no error. */
export function deleteHoldTables(tables: readonly NftTable[], netns: string | undefined): void {
  for (const { family, name } of tables) {
    try {
      soccrBinding().nftDeleteTable(family === 'ip6' ? NFPROTO_IPV6 : NFPROTO_IPV4, name, netns);
    } catch {
      // deleted meanwhile by another sweeper
    }
  }
}

const HOLD_PREFIX = 'node_criu_hold_';

/** A packet hold's table name: a process lock's, prefixed (swept the same way, see staleHoldTables). */
export function holdTableName(): string {
  return HOLD_PREFIX + processLockName().slice('node_criu_'.length);
}

/** The packet holds' tables (ip, ip6) among `tables` whose creator is verifiably gone. */
export function staleHoldTables(tables: readonly NftTable[]): NftTable[] {
  const holds = tables.filter((t) => (t.family === 'ip' || t.family === 'ip6') && t.name.startsWith(HOLD_PREFIX));
  const asLocks = holds.map((t) => ({ family: 'inet', name: `node_criu_${t.name.slice(HOLD_PREFIX.length)}` }));
  const stale = new Set(staleProcessLocks(asLocks).map((s) => s.table));
  return holds.filter((_, i) => stale.has(asLocks[i].name));
}
