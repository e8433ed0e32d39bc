/**
 * checkpointConnection / restoreConnection: move a live net.Socket's connection into a
 * ConnectionImage and back into a new net.Socket, without losing a byte in either direction and
 * without the peer seeing a reset. ConnectionLock below explains the lock choice.
 */
import * as net from 'node:net';

import { InvalidArgumentError, fromNativeError } from '../errors';
import { checkNetnsPath } from '../security';
import { socketAddressFromWords, socketAddressToWords } from './address';
import type { NativeSoccrHandle } from './binding-types';
import { SoccrError, describeValue } from './errors';
import { checkConnectedTcp } from './handle';
import { CONNECTION_IMAGE_VERSION, validateConnectionImage } from './image';
import type { ConnectionImage } from './image';
import { soccrBinding } from './native';
import { NftablesLock, processLock } from './nft-lock';
import type { ConnectionTuple } from './nft-lock';
import {
  adoptOwnTcpFd,
  flushWrites,
  pendingReadBytes,
  restartReading,
  socketFd,
  startReading,
  stopReading,
} from './node-socket';
import { TcpState, skDataFromWords, tcpStateName, writeSkDataWords } from './sk-data';
import type { SkData } from './sk-data';

/** sk_data (17 words) + own and peer address (8 words each), as SoccrHandle.save(out) fills it. */
const SK_DATA_WORDS = 17;
const PACKED_WORDS = SK_DATA_WORDS + 16;
/** Zero-length, so one instance serves every empty queue of a batch (10,000 fewer objects). */
const EMPTY = Buffer.alloc(0);

/**
 * 'nftables': the peer's packets for the connection's 4-tuple are dropped by an nftables rule from
 *   before the checkpoint until the restore removes it; covers the time the original socket exists
 *   AND the gap after it is closed (no RST from the source host). The default when the original
 *   is closed.
 * 'filter': a drop-all socket filter on the original socket; covers only the original socket's
 *   lifetime. The default with keepRunning (the original stays, so there is no gap), or when the
 *   gap is covered otherwise (the connection's address leaves the host or namespace).
 * 'none': the caller blocks the traffic itself.
 * An NftablesLock object: use that table (its lifetime is the caller's).
 */
export type ConnectionLock = 'nftables' | 'filter' | 'none' | NftablesLock;

export interface CheckpointOptions {
  /** Keep the original connection running (resume it) instead of closing it silently. Default false. */
  keepRunning?: boolean;
  lock?: ConnectionLock;
  /** Path of the network namespace the socket lives in, for the nftables lock (default: ours). */
  netns?: string;
  /** How long to wait for Node's write buffer to reach the kernel (default 10000 ms). */
  flushTimeoutMs?: number;
}

export interface RestoreOptions {
  /** Create the new socket in the network namespace at this path (default: ours). */
  netns?: string;
  /** Remove the image's nftables lock once restored (default true). */
  unlock?: boolean;
  /**
   * Further locks holding these connections' 4-tuples, released once they are restored (before
   * repair mode ends). E.g. a lock in the target namespace that drops the peer's packets from the
   * moment the address arrives there until the restored socket exists (else that namespace
   * answers them with a RST).
   */
  locks?: readonly NftablesLock[];
  /** net.Socket's allowHalfOpen for the restored sockets (Node's default: false). */
  allowHalfOpen?: boolean;
}

function checkOptions(options: unknown): asserts options is CheckpointOptions {
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  const o = options as CheckpointOptions;
  if (o.keepRunning !== undefined && typeof o.keepRunning !== 'boolean')
    throw new InvalidArgumentError('keepRunning must be a boolean', 'ERR_INVALID_ARG_TYPE');
  if (
    o.lock !== undefined &&
    !(o.lock instanceof NftablesLock) &&
    !['nftables', 'filter', 'none'].includes(o.lock as string)
  ) {
    throw new InvalidArgumentError(
      `lock must be 'nftables', 'filter', 'none' or an NftablesLock (got ${describeValue(o.lock)})`,
    );
  }
  if (o.netns !== undefined) checkNetnsPath(o.netns);
  if (o.flushTimeoutMs !== undefined && (!Number.isFinite(o.flushTimeoutMs) || o.flushTimeoutMs < 0))
    throw new InvalidArgumentError('flushTimeoutMs must be >= 0', 'ERR_OUT_OF_RANGE');
}

interface Paused {
  socket: net.Socket;
  fd: number;
  /** SO_REUSEADDR before repair mode, re-applied when repair goes off again. */
  reuseAddr: boolean;
  wasReading: boolean;
  filtered: boolean;
  /** In repair mode (its libsoccr handle already released, so no dup is held). */
  repair: boolean;
}

/** Ends repair mode and the filter, restarts reading: the original runs on (undo or keepRunning). */
function unpause(entry: Paused): void {
  const ops = soccrBinding().socketOps;
  if (entry.repair) {
    ops.setRepair(entry.fd, false, entry.reuseAddr);
    entry.repair = false;
  }
  if (entry.filtered) {
    try {
      ops.detachFilter(entry.fd);
    } catch {
      // The socket may be gone already; nothing else to undo.
    }
  }
  restartReading(entry.socket, entry.wasReading);
}

/** flushWrites for the sockets that have something in Node's write buffer (usually none). */
async function flushAll(sockets: readonly net.Socket[], timeoutMs: number): Promise<void> {
  const pending = sockets.filter((s) => s.writableLength > 0 || s.writableCorked > 0);
  if (pending.length > 0) await Promise.all(pending.map((socket) => flushWrites(socket, timeoutMs)));
}

/** The socket's fd now, or -1 once Node has closed it. */
function liveFd(socket: net.Socket): number {
  try {
    return socketFd(socket);
  } catch {
    return -1;
  }
}

/** States a live connection can be checkpointed in. */
const CHECKPOINTABLE: ReadonlySet<number> = new Set([
  TcpState.ESTABLISHED,
  TcpState.FIN_WAIT1,
  TcpState.FIN_WAIT2,
  TcpState.CLOSE_WAIT,
  TcpState.LAST_ACK,
  TcpState.CLOSING,
]);

/**
 * State, SO_REUSEADDR and 4-tuple of every socket, one native call each (the fast path of a
 * large batch). When a socket fails, checkConnectedTcp says precisely why.
 */
function inspectSockets(fds: readonly number[]): { tuples: ConnectionTuple[]; reuseAddr: boolean[] } {
  const ops = soccrBinding().socketOps;
  const words = new Uint32Array(18);
  const tuples: ConnectionTuple[] = [];
  const reuseAddr: boolean[] = [];
  for (const fd of fds) {
    try {
      ops.inspectTcp(fd, words);
    } catch (error) {
      checkConnectedTcp(fd);
      throw fromNativeError(SoccrError, error, 'checkpoint');
    }
    if (!CHECKPOINTABLE.has(words[0])) {
      checkConnectedTcp(fd);
      throw new SoccrError(`TCP state ${tcpStateName(words[0]) ?? words[0]} cannot be checkpointed`, {
        code: 'ERR_SOCKET_STATE',
      });
    }
    reuseAddr.push(words[1] === 1);
    tuples.push({ local: socketAddressFromWords(words, 2), remote: socketAddressFromWords(words, 10) });
  }
  return { tuples, reuseAddr };
}

/** checkpointConnection for many sockets at once: one flush wait, one nftables batch. */
export async function checkpointConnections(
  sockets: readonly net.Socket[],
  options: CheckpointOptions = {},
): Promise<ConnectionImage[]> {
  if (!Array.isArray(sockets)) throw new InvalidArgumentError('sockets must be an array', 'ERR_INVALID_ARG_TYPE');
  checkOptions(options);
  const keepRunning = options.keepRunning ?? false;
  const lockKind = options.lock ?? (keepRunning ? 'filter' : 'nftables');
  const flushTimeoutMs = options.flushTimeoutMs ?? 10000;
  if (new Set(sockets).size !== sockets.length) throw new InvalidArgumentError('sockets must not repeat');
  const binding = soccrBinding();
  const fds = Array.from(sockets, (socket) => socketFd(socket)); // Array.from visits holes; map skips them
  const { tuples, reuseAddr } = inspectSockets(fds);

  await flushAll(sockets, flushTimeoutMs);

  let lock: NftablesLock | undefined;
  if (lockKind instanceof NftablesLock) lock = lockKind;
  else if (lockKind === 'nftables') lock = await processLock(options.netns);
  if (lock) await lock.add(tuples);
  const unlock = async () => {
    if (lock) await lock.remove(tuples).catch(() => undefined);
  };

  // The application may have written while nft ran: flush again (ACKs are dropped now, but the
  // raised send buffer has room) until every socket is empty at the same moment.
  for (let attempt = 0; sockets.some((s) => s.writableLength > 0 || s.writableCorked > 0); attempt++) {
    if (attempt === 3 || sockets.some((s) => s.destroyed)) {
      await unlock();
      throw new SoccrError('the application keeps writing while the connection is checkpointed', {
        code: 'ERR_FLUSH_TIMEOUT',
      });
    }
    try {
      await flushAll(sockets, flushTimeoutMs);
    } catch (error) {
      await unlock();
      throw error;
    }
  }
  // While the lock was being installed, Node kept reading: a peer's RST (or its FIN, unless
  // allowHalfOpen) may have destroyed a socket and closed its fd, whose number may already belong
  // to another file. Nothing may touch those numbers now.
  const gone = sockets.findIndex((socket, i) => socket.destroyed || liveFd(socket) !== fds[i]);
  if (gone >= 0) {
    await unlock();
    throw new SoccrError(`socket ${gone} was closed or reset by its peer while its checkpoint was being locked`, {
      code: 'ERR_SOCKET_DESTROYED',
    });
  }

  // From here to the end nothing awaits: no JS can read, write or close these sockets meanwhile.
  // No libsoccr handle outlives its socket's dump (repair stays on), so a batch holds no extra
  // fds; undo and keepRunning turn repair off directly.
  const entries: Paused[] = sockets.map((socket, i) => ({
    socket,
    fd: fds[i],
    reuseAddr: reuseAddr[i],
    wasReading: false,
    filtered: false,
    repair: false,
  }));
  const images: ConnectionImage[] = [];
  const count = entries.length;
  const packed = new Uint32Array(SK_DATA_WORDS * count); // sk_data only: the addresses are known
  const fdArray = Int32Array.from(fds);
  try {
    for (const entry of entries) entry.wasReading = stopReading(entry.socket);
    // One native call for every socket's libsoccr sequence (the 'filter' lock's drop filter, then
    // pause, save, queues, release; repair stays on, no handle kept), spread over a few threads
    // for large batches.
    const dumped = new Uint8Array(count);
    let queues: (Buffer | null)[];
    try {
      queues = binding.soccrDumpBatch(fdArray, packed, dumped, lockKind === 'filter');
    } catch (error) {
      entries.forEach((entry, i) => {
        entry.repair = (dumped[i] & 1) !== 0;
        entry.filtered = (dumped[i] & 2) !== 0;
      });
      throw error;
    }
    for (let i = 0; i < count; i++) {
      entries[i].repair = true;
      entries[i].filtered = (dumped[i] & 2) !== 0;
      const skData = skDataFromWords(packed, i * SK_DATA_WORDS);
      const image: ConnectionImage = {
        version: CONNECTION_IMAGE_VERSION,
        family: tuples[i].local.family,
        local: tuples[i].local,
        remote: tuples[i].remote,
        skData,
        recvQueue: queues[2 * i] ?? EMPTY,
        sendQueue: queues[2 * i + 1] ?? EMPTY,
        sendQueueUnsent: skData.unsqLen,
        pendingRead: pendingReadBytes(entries[i].socket, false),
      };
      if (lock && !keepRunning) image.lock = lock.ref;
      images.push(image);
    }
  } catch (error) {
    entries.forEach(unpause);
    await unlock();
    throw fromNativeError(SoccrError, error, 'checkpoint');
  }

  if (keepRunning) {
    entries.forEach(unpause);
    await unlock();
    return images;
  }
  // Repair mode is on and Node's fd is the last one: closing it drops the connection without FIN
  // or RST. The kernel's teardown runs on a few threads first (each fd number then holds a
  // placeholder until its net.Socket is destroyed right below, which closes that).
  try {
    binding.soccrDropBatch(fdArray);
  } catch {
    // No fd for the placeholder (EMFILE): each destroy() below closes its socket itself.
  }
  for (const entry of entries) {
    pendingReadBytes(entry.socket, true);
    entry.socket.destroy();
  }
  return images;
}

/**
 * Checkpoints a live connection. Node's pending writes are flushed into the kernel first; the
 * traffic is locked (see ConnectionLock); libsoccr saves the connection; then the original is
 * closed silently (default) or resumed (keepRunning).
 */
export async function checkpointConnection(
  socket: net.Socket,
  options: CheckpointOptions = {},
): Promise<ConnectionImage> {
  const [image] = await checkpointConnections([socket], options);
  return image;
}

/**
 * The never-sent tail of the send queue is written through the restored net.Socket (Node queues
 * what the peer cannot take yet, with backpressure) instead of by libsoccr_resume, which writes it
 * synchronously into socket buffers it raises to fit (the first vendor/libsoccr version instead
 * gave up after ~5 s of closed window and lost the rest). Unsent bytes have no sequence numbers on
 * the wire yet, so sending them later yields the same stream. Only while our FIN is not queued:
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

/** restoreConnection for many images: one nftables batch per lock table. */
export async function restoreConnections(
  images: readonly ConnectionImage[],
  options: RestoreOptions = {},
): Promise<net.Socket[]> {
  return (await stageRestore(images, options)).commit();
}

/**
 * Connections rebuilt by stageRestore but not live yet: still in repair mode and still locked, so
 * abandoning them (or the process dying) closes them silently, and nothing the peer sends is
 * acknowledged meanwhile.
 */
export interface StagedRestore {
  /** Removes the locks, ends repair mode: the connections are live net.Sockets from here. */
  commit(): Promise<net.Socket[]>;
  /** Closes them silently (repair mode on): no FIN, no RST, nothing acknowledged. Idempotent. */
  abandon(): void;
}

/**
 * restoreConnections up to, not including, going live. A handover confirms its restores to the
 * source first and only commits once the source has let go of its copies: if this side dies before
 * that, its copies vanish without a FIN or RST and the source can resume its own.
 */
export async function stageRestore(
  images: readonly ConnectionImage[],
  options: RestoreOptions = {},
): Promise<StagedRestore> {
  if (!Array.isArray(images)) throw new InvalidArgumentError('images must be an array', 'ERR_INVALID_ARG_TYPE');
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  if (options.netns !== undefined) checkNetnsPath(options.netns);
  // Spread: every() skips the holes of a sparse array ([,]), which would reach the restore as undefined.
  if (
    options.locks !== undefined &&
    (!Array.isArray(options.locks) || ![...options.locks].every((l) => l instanceof NftablesLock))
  ) {
    throw new InvalidArgumentError('locks must be an array of NftablesLock', 'ERR_INVALID_ARG_TYPE');
  }
  for (let i = 0; i < images.length; i++) validateConnectionImage(images[i]); // holes too (forEach skips them)
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
  const abandon = () => {
    restored.forEach((r) => r.native?.release());
    sockets.forEach((socket) => socket.destroy());
  };
  try {
    await restoring;
  } catch (error) {
    abandon();
    throw fromNativeError(SoccrError, error, 'restore');
  }

  let settled = false;
  const commit = async (): Promise<net.Socket[]> => {
    if (settled)
      throw new SoccrError('this staged restore was already committed or abandoned', { code: 'ERR_RESTORE_SETTLED' });
    settled = true;
    const byLock = new Map<string, { lock: NftablesLock; tuples: ConnectionTuple[] }>();
    const addTo = (lock: NftablesLock, image: ConnectionImage) => {
      const key = `${lock.netns ?? ''}\0${lock.table}`;
      if (!byLock.has(key)) byLock.set(key, { lock, tuples: [] });
      byLock.get(key)?.tuples.push({ local: image.local, remote: image.remote });
    };
    // Images of one checkpoint share a table: fromRef (which validates the name) once per table.
    const byRef = new Map<string, NftablesLock>();
    for (const image of images) {
      if (image.lock && (options.unlock ?? true)) {
        const refKey = `${image.lock.netns ?? ''}\0${image.lock.table}`;
        let lock = byRef.get(refKey);
        if (!lock) byRef.set(refKey, (lock = NftablesLock.fromRef(image.lock)));
        addTo(lock, image);
      }
      for (const lock of options.locks ?? []) addTo(lock, image);
    }
    try {
      for (const { lock, tuples } of byLock.values()) {
        await lock.remove(tuples).catch((error: { code?: string }) => {
          // Not in this table (or the table is not in this namespace or host): nothing to release.
          if (error.code !== 'ENOENT') throw error;
        });
      }
    } catch (error) {
      abandon();
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
    abandon: () => {
      if (settled) return;
      settled = true;
      abandon();
    },
  };
}

/** Restores a connection image into a new, connected net.Socket. */
export async function restoreConnection(image: ConnectionImage, options: RestoreOptions = {}): Promise<net.Socket> {
  const [socket] = await restoreConnections([image], options);
  return socket;
}
