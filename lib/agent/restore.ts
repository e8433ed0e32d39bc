/**
 * The agent's RESTORE, in its own network namespace: hold the dumped 4-tuples (an nftables table
 * dropping the peers' packets, so a retransmission meets a drop and not a RST while no socket has
 * the tuple), add the service address, wait until the tree's ids and the tuples are free, restore
 * with CRIU (images by fd), release the hold. On failure everything is undone in reverse: the
 * half-restored tree killed, the address removed, the hold deleted. Hold tables are named
 * node_criu_agent_<agent pid>_<random>; sweepAgentHolds deletes those of agents that are gone.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import type { Duplex } from 'node:stream';

import type { Criu } from '../criu';
import { NodeCriuError } from '../errors';
import { startLazyRestore, type LazyRestore } from '../migration/lazy-pages';
import { describeFailure, waitForPidFree } from '../migration/process-errors';
import { readTreePids } from '../migration/process-images';
import { waitForNoConflicts, waitForTreeFree } from '../migration/process-waits';
import { NftablesLock } from '../soccr/nft-lock';
import { addAddress, removeAddress } from '../sys/address';
import { namespaceId, OWN_NETNS, pidNetnsId, sameNamespace } from '../sys/netns';
import { deleteTables, listTables } from '../sys/nft';
import { startTimeOf, uptimeSeconds, USER_HZ } from '../sys/proc';
import type { ExternalRef, MoveAddress, WireTuple } from './protocol';
import { lockTuples, procKeys } from './tuples';

const HOLD_PREFIX = 'node_criu_agent_';

/**
 * Files a tree may hold from outside its mount namespace (a service's stdio, `ip netns exec`):
 * the agent opens these itself for CRIU's inherit_fd, and nothing else a source names.
 */
export const EXTERNAL_DEVICES: ReadonlySet<string> = new Set([
  '/dev/null',
  '/dev/zero',
  '/dev/full',
  '/dev/random',
  '/dev/urandom',
]);
const COMMAND_TIMEOUT_MS = 10_000;

export interface RestoreEvents {
  (event: string, detail?: Record<string, unknown>): void;
}

/** A RESTORE that failed and was undone; `code` says why (a CRIU code, ERR_AGENT_ADDRESS_IN_USE, ...). */
export class AgentRestoreError extends NodeCriuError {}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Deletes hold tables of agents no longer running in our namespace (left by a SIGKILL). */
export async function sweepAgentHolds(signal?: AbortSignal): Promise<string[]> {
  const tables = await listTables({ timeoutMs: COMMAND_TIMEOUT_MS, ...(signal ? { signal } : {}) });
  const stale = tables.filter((t) => {
    const m = new RegExp(`^${HOLD_PREFIX}(\\d+)_[0-9a-f]+$`).exec(t.name);
    if (m === null || t.family !== 'inet') return false;
    const pid = Number(m[1]);
    return pid !== process.pid && !processAlive(pid);
  });
  if (stale.length > 0) await deleteTables(stale, { timeoutMs: COMMAND_TIMEOUT_MS });
  return stale.map((t) => t.name);
}

/** Adds and announces (gratuitous ARP / unsolicited NA) the service address (lib/sys/address.ts). */
async function takeAddress(move: MoveAddress, signal?: AbortSignal): Promise<void> {
  try {
    await addAddress({
      cidr: move.cidr,
      device: move.device,
      timeoutMs: COMMAND_TIMEOUT_MS,
      ...(signal ? { signal } : {}),
    });
  } catch (error) {
    const exists = /File exists/.test((error as { stderr?: string }).stderr ?? '');
    throw new AgentRestoreError(
      exists
        ? `${move.cidr} is already on this host: the agent takes over only an address nobody owns here`
        : `cannot add ${move.cidr} on ${move.device}: ${(error as Error).message}`,
      { code: exists ? 'ERR_AGENT_ADDRESS_IN_USE' : 'ERR_AGENT_ADDRESS', cause: error },
    );
  }
}

async function giveUpAddress(move: MoveAddress): Promise<void> {
  await removeAddress({ cidr: move.cidr, device: move.device, timeoutMs: COMMAND_TIMEOUT_MS }).catch(() => undefined);
}

/** Kills tasks with the tree's pids in our namespace started since `since` (uptime s): a half-restored copy. */
async function killLeftovers(dir: string, since: number): Promise<number[]> {
  const own = namespaceId(OWN_NETNS);
  const killed: number[] = [];
  for (const pid of readTreePids(dir)) {
    const ns = pidNetnsId(pid);
    const start = startTimeOf(pid);
    if (ns === undefined || !sameNamespace(ns, own) || start === undefined || Number(start) / USER_HZ < since) continue;
    try {
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    } catch {
      // gone meanwhile
    }
  }
  for (const pid of killed) await waitForPidFree(pid);
  return killed;
}

/**
 * The hold on the dumped 4-tuples here, made as soon as HELLO names them (before the images, so
 * outside the source's freeze): no packet of theirs reaches this host before the address moves,
 * and sockets with the same tuples would block the restore anyway. Undefined when there are none.
 */
export async function prepareHold(tuples: readonly WireTuple[]): Promise<NftablesLock | undefined> {
  if (tuples.length === 0) return undefined;
  const hold = (
    await NftablesLock.createTable(`${HOLD_PREFIX}${process.pid}_${randomBytes(4).toString('hex')}`)
  ).deleteOnExit();
  try {
    await hold.add(lockTuples(tuples));
  } catch (error) {
    await hold.destroy().catch(() => undefined);
    throw error;
  }
  return hold;
}

/** Lets the tuples' packets pass at once (one transaction); the table's deletion (an nft run) follows unawaited. */
export async function releaseHold(hold: NftablesLock | undefined, tuples: readonly WireTuple[]): Promise<void> {
  if (hold === undefined) return;
  await hold.remove(lockTuples(tuples)).catch(() => undefined);
  void hold.destroy().catch(() => undefined);
}

export interface AgentRestoreRequest {
  criu: Criu;
  dir: string;
  tuples: readonly WireTuple[];
  external: readonly ExternalRef[];
  moveAddress?: MoveAddress;
  emit: RestoreEvents;
  signal?: AbortSignal;
  timeoutMs: number;
  /** The hold prepareHold made (restoreHere releases it); made here when absent. */
  hold?: Promise<NftablesLock | undefined>;
  /**
   * Post-copy: startLazyRestore with this page stream and criu command (the lazy-pages daemon)
   * instead of a plain restore; its page transfer is bounded by `timeoutMs`.
   */
  lazy?: { stream: Duplex; criuPath: string; timeoutMs: number };
}

export interface AgentRestored {
  /** The restored root's pid in the agent's pid namespace. */
  pid: number;
  /** Lazy: the page transfer under way (kill the tree with abort()); see undoAddress for its failure. */
  lazy?: LazyRestore;
}

/** Takes the service address away again (a lazy restore whose pages did not all arrive: the process is gone). */
export async function undoAddress(move: MoveAddress | undefined): Promise<void> {
  if (move !== undefined) await giveUpAddress(move);
}

/** Hold, address, waits, CRIU restore, release; resolves with the restored root's pid. Undoes all on failure. */
export async function restoreHere(req: AgentRestoreRequest): Promise<AgentRestored> {
  let hold: NftablesLock | undefined;
  let addressAdded = false;
  const since = uptimeSeconds() - 1;
  const opened: fs.promises.FileHandle[] = [];
  try {
    const inheritFds: Array<{ key: string; fd: number }> = [];
    for (const file of req.external) {
      if (!EXTERNAL_DEVICES.has(file.path))
        throw new AgentRestoreError(`${file.path} is not a file the agent gives back`, {
          code: 'ERR_AGENT_EXTERNAL_FILE',
        });
      const handle = await fs.promises.open(file.path, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
      opened.push(handle);
      if (!(await handle.stat()).isCharacterDevice())
        throw new AgentRestoreError(`${file.path} is not a character device here`, { code: 'ERR_AGENT_EXTERNAL_FILE' });
      inheritFds.push({ key: file.key, fd: handle.fd });
    }
    hold = await (req.hold ?? prepareHold(req.tuples));
    if (hold !== undefined) req.emit('hold', { table: hold.table, tuples: req.tuples.length });
    if (req.moveAddress !== undefined) {
      await takeAddress(req.moveAddress, req.signal);
      addressAdded = true;
      req.emit('address-added', { cidr: req.moveAddress.cidr, device: req.moveAddress.device });
    }
    const taken = await waitForTreeFree(req.dir, (busy) => req.emit('waiting-for-ids', { taken: busy }));
    if (taken.length > 0)
      throw new AgentRestoreError(`task ids of the tree are taken here: ${taken.join(', ')}`, {
        code: 'ERR_MIGRATION_IDS_TAKEN',
      });
    const conflicts = await waitForNoConflicts(undefined, procKeys(req.tuples), (sockets) =>
      req.emit('conflicting-sockets', { sockets }),
    );
    if (conflicts.length > 0)
      throw new AgentRestoreError(`sockets here already have the connections' 4-tuples (${conflicts.join(', ')})`, {
        code: 'ERR_MIGRATION_TUPLE_IN_USE',
      });
    const criuOptions = {
      tcpEstablished: true,
      networkLock: 'nftables' as const,
      logFile: 'restore.log',
      ...(inheritFds.length > 0 ? { inheritFds } : {}),
    };
    let result: AgentRestored;
    if (req.lazy !== undefined) {
      // startLazyRestore kills what it restored and stops its daemon itself when it fails.
      const lazy = await startLazyRestore({
        criu: req.criu,
        criuPath: req.lazy.criuPath,
        imagesDir: req.dir,
        stream: req.lazy.stream,
        criuOptions,
        timeoutMs: req.lazy.timeoutMs,
        ...(req.signal ? { signal: req.signal } : {}),
      });
      result = { pid: lazy.pid, lazy };
    } else {
      const restored = await req.criu.restore({ imagesDir: req.dir, ...criuOptions }, undefined, {
        timeoutMs: req.timeoutMs,
        ...(req.signal ? { signal: req.signal } : {}),
      });
      result = { pid: restored.pid };
    }
    await releaseHold(hold, req.tuples);
    hold = undefined;
    return result;
  } catch (error) {
    // The hold still drops the tuples while a half-restored copy is killed.
    const killed = await killLeftovers(req.dir, since).catch(() => []);
    if (killed.length > 0) req.emit('removed-leftovers', { pids: killed });
    if (addressAdded && req.moveAddress !== undefined) await giveUpAddress(req.moveAddress);
    // A hold still being made (req.hold) is the caller's to delete.
    if (hold === undefined) await req.hold?.then((h) => h?.destroy()).catch(() => undefined);
    await hold?.destroy().catch(() => undefined);
    if (error instanceof AgentRestoreError) throw error;
    const code = (error as { code?: unknown }).code;
    throw new AgentRestoreError(describeFailure(error), {
      code: typeof code === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(code) ? code : 'ERR_AGENT_RESTORE_FAILED',
      cause: error,
    });
  } finally {
    for (const handle of opened) await handle.close().catch(() => undefined);
  }
}
