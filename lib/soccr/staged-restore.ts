/**
 * stageRestoreConnections: restoreConnections up to, not including, going live. The connections
 * are rebuilt in repair mode behind their locks; commit() makes them live net.Sockets, abort()
 * closes them silently.
 */
import type * as net from 'node:net';

import { InvalidArgumentError, fromNativeError } from '../errors';
import { socketAddressToWords } from './address';
import type { NativeSoccrHandle } from './binding-types';
import { checkRestoreOptions } from './connection-options';
import type { RestoreOptions } from './connection-options';
import { SoccrError } from './errors';
import { validateConnectionImage } from './image';
import type { ConnectionImage } from './image';
import { soccrBinding } from './native';
import { NftablesLock } from './nft-lock';
import type { ConnectionTuple } from './nft-lock';
import { ownedLock, refKey } from './nft/lock';
import { adoptOwnTcpFd, startReading } from './node-socket';
import { PACKED_WORDS, SK_DATA_WORDS } from './oneshot-pack';
import { TcpState, writeSkDataWords } from './sk-data';
import type { SkData } from './sk-data';

/** Zero-length, so one instance serves every empty queue of a batch. */
const EMPTY = Buffer.alloc(0);

/**
 * The never-sent tail of the send queue is written through the restored net.Socket (Node queues
 * what the peer cannot take yet, with backpressure) instead of by libsoccr_resume, which would
 * write it synchronously into raised socket buffers. Unsent bytes have no sequence numbers on the
 * wire yet, so sending them later yields the same stream. Only while our FIN is not queued:
 * otherwise libsoccr must order data and FIN itself.
 */
function deferUnsent(image: ConnectionImage): { skData: SkData; sendQueue: Buffer; unsent: Buffer } {
  const d = image.skData;
  const ourFinQueued = d.state !== TcpState.ESTABLISHED && d.state !== TcpState.CLOSE_WAIT;
  if (d.unsqLen === 0 || ourFinQueued) return { skData: d, sendQueue: image.sendQueue, unsent: EMPTY };
  const sent = d.outqLen - d.unsqLen;
  return {
    skData: { ...d, outqLen: sent, outqSeq: (d.outqSeq - d.unsqLen) >>> 0, unsqLen: 0 },
    sendQueue: image.sendQueue.subarray(0, sent),
    unsent: image.sendQueue.subarray(sent),
  };
}

const OUR_FIN_STATES: ReadonlySet<number> = new Set([
  TcpState.FIN_WAIT1,
  TcpState.FIN_WAIT2,
  TcpState.CLOSING,
  TcpState.LAST_ACK,
]);

/**
 * Connections rebuilt by stageRestoreConnections but not live yet: still in repair mode and still
 * locked, so aborting (or the process dying) closes them silently, and nothing the peer sends is
 * acknowledged meanwhile.
 */
export interface StagedRestore {
  /**
   * Removes the locks, ends repair mode: the connections are live net.Sockets from here, in the
   * images' order. Once only: a second call (or one after abort) throws ERR_RESTORE_SETTLED. If
   * a lock cannot be removed, the connections are closed silently and the error is thrown.
   */
  commit(): Promise<net.Socket[]>;
  /** Closes them silently (repair mode on): no FIN, no RST, nothing acknowledged. Idempotent. */
  abort(): void;
}

type LockGroups = Map<string, { lock: NftablesLock; tuples: ConnectionTuple[] }>;

/**
 * Which locks hold which restored 4-tuples: options.locks hold all of them; an image's own `lock`
 * (unless options.unlock is false) names a namespace path and a table that root would open and
 * change, so it is only a hint, resolved to one of:
 * - a lock this process made (any namespace), or one of options.locks;
 * - a table in the namespace this restore runs in: its `netns` must be options.netns exactly (both
 *   absent: ours), so the path opened is the caller's, never the image's. This keeps a restore in
 *   another process of the same namespace working (a handover target, a moved process).
 * Anything else is refused (ERR_UNTRUSTED_LOCK) before anything is restored, rather than ignored,
 * which would leave the connection's packets dropped by the other lock.
 */
function lockGroups(images: readonly ConnectionImage[], options: RestoreOptions): LockGroups {
  const groups: LockGroups = new Map();
  const given = new Map((options.locks ?? []).map((lock) => [refKey(lock.ref), lock]));
  const inRestoreNetns = new Map<string, NftablesLock>();
  const groupOf = (lock: NftablesLock) => {
    const key = refKey(lock.ref);
    let group = groups.get(key);
    if (!group) groups.set(key, (group = { lock, tuples: [] }));
    return group.tuples;
  };
  const givenGroups = [...given.values()].map(groupOf);
  // The images of one checkpoint name the same table: the last one's group is reused without
  // building its key again. An image is a ConnectionTuple itself (local, remote).
  let last: { table: string; netns?: string; tuples?: ConnectionTuple[] } | undefined;
  for (const image of images) {
    for (const tuples of givenGroups) tuples.push(image);
    if (!image.lock || options.unlock === false) continue;
    if (last && image.lock.table === last.table && image.lock.netns === last.netns) {
      last.tuples?.push(image);
      continue;
    }
    last = { table: image.lock.table, netns: image.lock.netns };
    const key = refKey(image.lock);
    if (given.has(key)) continue;
    let lock = ownedLock(image.lock);
    if (lock === undefined && image.lock.netns === options.netns) {
      // validateConnectionImage checked the table name; the namespace is options.netns.
      lock = inRestoreNetns.get(key);
      if (lock === undefined) inRestoreNetns.set(key, (lock = NftablesLock.fromRef(image.lock)));
    }
    if (lock === undefined) {
      throw new SoccrError(
        `the image's lock (table ${image.lock.table} in ${image.lock.netns ?? 'our namespace'}) is neither a lock of this process nor in the namespace of this restore (${options.netns ?? 'ours'}): ` +
          'pass NftablesLock.fromRef(image.lock) in options.locks if you trust where the image came from, or unlock: false',
        { code: 'ERR_UNTRUSTED_LOCK' },
      );
    }
    last.tuples = groupOf(lock);
    last.tuples.push(image);
  }
  return groups;
}

/** Removes the restored 4-tuples from their locks, one transaction per table. A tuple or table missing is not an error. */
async function releaseLocks(groups: LockGroups): Promise<void> {
  for (const { lock, tuples } of groups.values()) {
    await lock.remove(tuples).catch((error: { code?: string }) => {
      // Not in this table (or the table is not in this namespace or host): nothing to release.
      if (error.code !== 'ENOENT') throw error;
    });
  }
}

/**
 * restoreConnections up to, not including, going live: every connection is rebuilt (bound,
 * connected without a SYN, queues and window restored) but stays in repair mode behind its locks
 * until commit(). A handover confirms its restores to the source first and commits only once the
 * source has let go of its copies: if this side dies before that, its copies vanish without a FIN
 * or RST and the source can resume its own. Fails as a whole (nothing left open or in repair
 * mode): same errors as restoreConnections.
 */
export async function stageRestoreConnections(
  images: readonly ConnectionImage[],
  options: RestoreOptions = {},
): Promise<StagedRestore> {
  if (!Array.isArray(images)) throw new InvalidArgumentError('images must be an array', 'ERR_INVALID_ARG_TYPE');
  checkRestoreOptions(options);
  for (let i = 0; i < images.length; i++) validateConnectionImage(images[i]); // holes too (forEach skips them)
  const locks = lockGroups(images, options);
  const binding = soccrBinding();
  const ops = binding.socketOps;

  // Most connections go through one native batch call: their sockets are created at once and
  // restored off the JS thread (on a few threads for large batches) while this thread builds
  // their net.Sockets, which do not touch the fds until they read. Those whose unsent data stays
  // in the image (our FIN is queued behind it) need libsoccr_resume to order data and FIN: they
  // keep a libsoccr handle and are restored here. Repair mode stays on until the locks are gone.
  interface Restored {
    fd: number;
    /** Only for connections that need libsoccr_resume. */
    native?: NativeSoccrHandle;
    unsent: Buffer;
  }
  const restored: Restored[] = new Array<Restored>(images.length);
  const batchIndexes: number[] = [];
  const prepared = images.map((image, i) => {
    const d = deferUnsent(image);
    if (d.skData.unsqLen === 0) batchIndexes.push(i);
    return d;
  });
  const handles: Restored[] = [];
  const batchFds = new Int32Array(batchIndexes.length).fill(-1);
  let restoring: Promise<void> = Promise.resolve();
  const rollback = async () => {
    for (const r of handles) {
      r.native?.release();
      ops.closeFd(r.fd); // repair mode is still on: the connection vanishes silently
    }
    await restoring.catch(() => undefined); // the batch's fds are in use until it settles
    for (const fd of batchFds) if (fd >= 0) ops.closeFd(fd); // repair on, or never connected: silent
  };
  try {
    const packed = new Uint32Array(PACKED_WORDS * Math.max(1, batchIndexes.length));
    const queues: (Buffer | null)[] = new Array<Buffer | null>(2 * batchIndexes.length);
    batchIndexes.forEach((imageIndex, j) => {
      const image = images[imageIndex];
      const base = j * PACKED_WORDS;
      writeSkDataWords(prepared[imageIndex].skData, packed, base); // validated with the image above
      if (
        !socketAddressToWords(image.local, packed, base + SK_DATA_WORDS) ||
        !socketAddressToWords(image.remote, packed, base + SK_DATA_WORDS + 8)
      ) {
        throw new InvalidArgumentError('image addresses do not parse');
      }
      queues[2 * j] = image.recvQueue;
      queues[2 * j + 1] = prepared[imageIndex].sendQueue;
    });
    if (batchIndexes.length > 0) restoring = binding.soccrRestoreBatch(packed, queues, batchFds, options.netns);
    batchIndexes.forEach((imageIndex, j) => {
      restored[imageIndex] = { fd: batchFds[j], unsent: prepared[imageIndex].unsent };
    });
    const one = new Uint32Array(PACKED_WORDS);
    images.forEach((image, i) => {
      if (restored[i]) return;
      const { skData, sendQueue, unsent } = prepared[i];
      writeSkDataWords(skData, one);
      if (
        !socketAddressToWords(image.local, one, SK_DATA_WORDS) ||
        !socketAddressToWords(image.remote, one, SK_DATA_WORDS + 8)
      ) {
        throw new InvalidArgumentError('image addresses do not parse');
      }
      const fd = ops.tcpSocket(image.family, options.netns);
      let native: NativeSoccrHandle;
      try {
        native = new binding.SoccrHandle(fd, false); // borrowed: one fd per connection, not two
      } catch (error) {
        ops.closeFd(fd);
        throw error;
      }
      const entry = { fd, native, unsent };
      handles.push(entry);
      native.restorePacked(one, image.recvQueue, sendQueue);
      restored[i] = entry;
    });
  } catch (error) {
    await rollback();
    throw fromNativeError(SoccrError, error, 'restore');
  }

  // The net.Sockets own the fds from here: destroying one closes its fd (silently, repair on).
  // Paused, and without pendingRead yet: unshift() would restart reading the fd (next tick) while
  // the restore still runs on it or repair mode is on (read fails: ENOTCONN/EPERM, and the socket
  // closes the fd under the restore). startReading() adds it after the resume.
  const sockets: net.Socket[] = [];
  try {
    for (const r of restored) sockets.push(adoptOwnTcpFd(r.fd, options.allowHalfOpen ?? false, true));
  } catch (error) {
    // Not expected (our own TCP fds); still, nothing may close a fd the restore is using.
    await restoring.catch(() => undefined);
    restored.forEach((r) => r.native?.release());
    sockets.forEach((socket) => socket.destroy());
    for (const r of restored.slice(sockets.length)) ops.closeFd(r.fd);
    throw fromNativeError(SoccrError, error, 'restore');
  }
  const closeAll = () => {
    restored.forEach((r) => r.native?.release());
    sockets.forEach((socket) => socket.destroy());
  };
  try {
    await restoring;
  } catch (error) {
    closeAll();
    throw fromNativeError(SoccrError, error, 'restore');
  }

  let settled = false;
  const commit = async (): Promise<net.Socket[]> => {
    if (settled)
      throw new SoccrError('this staged restore was already committed or aborted', { code: 'ERR_RESTORE_SETTLED' });
    settled = true;
    try {
      await releaseLocks(locks);
    } catch (error) {
      closeAll();
      throw error;
    }

    binding.soccrResumeBatch(batchFds);
    return restored.map((r, i) => {
      r.native?.resume();
      const socket = sockets[i];
      startReading(socket, images[i].pendingRead);
      if (r.unsent.length > 0) socket.write(r.unsent);
      // Our FIN was already sent or queued: Node's side must be ended too (the kernel's shutdown()
      // of an already shut socket is a no-op), so the application cannot write after FIN.
      if (OUR_FIN_STATES.has(images[i].skData.state)) socket.end();
      return socket;
    });
  };
  return {
    commit,
    abort: () => {
      if (settled) return;
      settled = true;
      closeAll();
    },
  };
}
