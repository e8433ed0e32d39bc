/**
 * checkpointConnection(s): a live net.Socket's connection into a ConnectionImage, without losing a
 * byte in either direction and without the peer seeing a reset (ConnectionLock explains the lock).
 * pauseConnections is the shared core: holdConnections keeps the originals paused instead.
 */
import type * as net from 'node:net';

import { fromNativeError } from '../errors';
import { socketAddressFromWords } from './address';
import {
  DEFAULT_FLUSH_TIMEOUT_MS,
  checkCheckpointOptions,
  checkNoRepeats,
  checkSocketArray,
} from './connection-options';
import type { CheckpointOptions, ConnectionLock } from './connection-options';
import { SoccrError } from './errors';
import { checkConnectedTcp } from './handle';
import { CONNECTION_IMAGE_VERSION } from './image';
import type { ConnectionImage } from './image';
import { soccrBinding } from './native';
import { isNftablesLock, NftablesLock, processLock } from './nft-lock';
import type { ConnectionTuple } from './nft-lock';
import { flushWrites, handleFd, pendingReadBytes, restartReading, socketFd, stopReading } from './node-socket';
import { SK_DATA_WORDS } from './oneshot-pack';
import { RESTORABLE_STATES, TcpState, skDataFromWords, tcpStateName } from './sk-data';

/** Zero-length, so one instance serves every empty queue of a batch. */
const EMPTY = Buffer.alloc(0);

/** One original connection between its pause and its close or resume. */
export interface PausedConnection {
  socket: net.Socket;
  fd: number;
  /** SO_REUSEADDR before repair mode, re-applied when repair goes off again. */
  reuseAddr: boolean;
  wasReading: boolean;
  filtered: boolean;
  /** In repair mode (no libsoccr handle is kept, so no dup is held). */
  repair: boolean;
}

export interface PausedBatch {
  entries: PausedConnection[];
  images: ConnectionImage[];
  /** Removes the batch's 4-tuples from its nftables lock, if it has one; never throws. */
  unlock(): Promise<void>;
}

/** Ends repair mode and the filter, restarts reading: the original runs on. */
export function unpause(entry: PausedConnection): void {
  const ops = soccrBinding().socketOps;
  if (entry.repair) {
    ops.setRepair(entry.fd, false, entry.reuseAddr);
    entry.repair = false;
  }
  if (entry.filtered) {
    entry.filtered = false;
    try {
      ops.detachFilter(entry.fd);
    } catch {
      // The socket may be gone already; nothing else to undo.
    }
  }
  restartReading(entry.socket, entry.wasReading);
}

/**
 * Closes paused originals: in repair mode, closing Node's fd (the last one) drops the connection
 * without FIN or RST. The kernel's teardown runs on a few threads first (each fd number then
 * holds a placeholder until its net.Socket is destroyed right below, which closes that).
 */
export function closePaused(entries: readonly PausedConnection[]): void {
  try {
    soccrBinding().soccrDropBatch(Int32Array.from(entries, (entry) => entry.fd));
  } catch {
    // No fd for the placeholder (EMFILE): each destroy() below closes its socket itself.
  }
  for (const entry of entries) {
    entry.repair = false;
    pendingReadBytes(entry.socket, true);
    entry.socket.destroy();
  }
}

/** flushWrites for the sockets that have something in Node's write buffer (usually none). */
async function flushAll(sockets: readonly net.Socket[], timeoutMs: number): Promise<void> {
  const pending = sockets.filter((s) => s.writableLength > 0 || s.writableCorked > 0);
  if (pending.length > 0) await Promise.all(pending.map((socket) => flushWrites(socket, timeoutMs)));
}

/** The socket's fd now, or -1 once Node has closed it. */
export function liveFd(socket: net.Socket): number {
  try {
    return socketFd(socket);
  } catch {
    return -1;
  }
}

/** States a live connection can be checkpointed in: restorable, and neither closed nor still connecting. */
const CHECKPOINTABLE: ReadonlySet<number> = new Set(
  [...RESTORABLE_STATES].filter((state) => state !== TcpState.CLOSE && state !== TcpState.SYN_SENT),
);

/** Words per socket of soccrInspectBatch (as inspectTcp): state, SO_REUSEADDR, own and peer address. */
const INSPECT_WORDS = 18;

/**
 * State, SO_REUSEADDR and 4-tuple of every socket, in one native call for the whole batch. When a
 * socket fails, inspectTcp and checkConnectedTcp say precisely why.
 */
function inspectSockets(fds: Int32Array): { tuples: ConnectionTuple[]; reuseAddr: boolean[] } {
  const ops = soccrBinding().socketOps;
  const words = new Uint32Array(INSPECT_WORDS * fds.length);
  soccrBinding().soccrInspectBatch(fds, words);
  const tuples: ConnectionTuple[] = [];
  const reuseAddr: boolean[] = [];
  for (let i = 0; i < fds.length; i++) {
    const at = i * INSPECT_WORDS;
    let state = words[at];
    if (state === 0) {
      // The batch could not inspect it: the single call throws the failing call's error.
      const one = new Uint32Array(INSPECT_WORDS);
      try {
        ops.inspectTcp(fds[i], one);
      } catch (error) {
        checkConnectedTcp(fds[i]);
        throw fromNativeError(SoccrError, error, 'checkpoint');
      }
      words.set(one, at);
      state = one[0];
    }
    if (!CHECKPOINTABLE.has(state)) {
      checkConnectedTcp(fds[i]);
      throw new SoccrError(`TCP state ${tcpStateName(state) ?? state} cannot be checkpointed`, {
        code: 'ERR_SOCKET_STATE',
      });
    }
    reuseAddr.push(words[at + 1] === 1);
    tuples.push({ local: socketAddressFromWords(words, at + 2), remote: socketAddressFromWords(words, at + 10) });
  }
  return { tuples, reuseAddr };
}

export interface PauseSpec {
  lock: ConnectionLock;
  netns?: string;
  flushTimeoutMs: number;
  /** Record the nftables lock in the images (their restore removes it). */
  lockRef: boolean;
  /**
   * The caller closes the originals (closePaused) as soon as this resolves, before any I/O
   * callback can run: libuv's reading then need not be stopped (closing stops it).
   */
  closeAfter?: boolean;
}

/**
 * Flushes, locks, pauses and saves every socket (validated arguments). On return every original
 * is in repair mode (behind its drop filter with lock 'filter') with reading stopped; on failure
 * nothing is left paused, filtered or locked.
 */
export async function pauseConnections(sockets: readonly net.Socket[], spec: PauseSpec): Promise<PausedBatch> {
  const binding = soccrBinding();
  const fds = Int32Array.from(sockets, (socket) => socketFd(socket)); // from() visits holes; map skips them
  const { tuples, reuseAddr } = inspectSockets(fds);

  await flushAll(sockets, spec.flushTimeoutMs);

  let lock: NftablesLock | undefined;
  if (isNftablesLock(spec.lock)) lock = spec.lock;
  else if (spec.lock === 'nftables') lock = await processLock(spec.netns);
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
      await flushAll(sockets, spec.flushTimeoutMs);
    } catch (error) {
      await unlock();
      throw error;
    }
  }
  // While the lock was being installed, Node kept reading: a peer's RST (or its FIN, unless
  // allowHalfOpen) may have destroyed a socket and closed its fd, whose number may already belong
  // to another file. Nothing may touch those numbers now.
  const gone = sockets.findIndex((socket, i) => socket.destroyed || handleFd(socket) !== fds[i]);
  if (gone >= 0) {
    await unlock();
    throw new SoccrError(`socket ${gone} was closed or reset by its peer while its checkpoint was being locked`, {
      code: 'ERR_SOCKET_DESTROYED',
    });
  }

  // From here to the end nothing awaits: no JS can read, write or close these sockets meanwhile.
  const entries: PausedConnection[] = sockets.map((socket, i) => ({
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
  try {
    if (!spec.closeAfter) for (const entry of entries) entry.wasReading = stopReading(entry.socket);
    // One native call for every socket's libsoccr sequence (the 'filter' lock's drop filter, then
    // pause, save, queues, release; repair stays on, no handle kept), spread over a few threads
    // for large batches.
    const dumped = new Uint8Array(count);
    let queues: (Buffer | null)[];
    try {
      queues = binding.soccrDumpBatch(fds, packed, dumped, spec.lock === 'filter');
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
      if (lock && spec.lockRef) image.lock = lock.ref;
      images.push(image);
    }
  } catch (error) {
    entries.forEach(unpause);
    await unlock();
    throw fromNativeError(SoccrError, error, 'checkpoint');
  }
  return { entries, images, unlock };
}

/** checkpointConnection for many sockets at once: one flush wait, one nftables batch. */
export async function checkpointConnections(
  sockets: readonly net.Socket[],
  options: CheckpointOptions = {},
): Promise<ConnectionImage[]> {
  checkSocketArray(sockets);
  checkCheckpointOptions(options);
  checkNoRepeats(sockets);
  const keepRunning = options.keepRunning ?? false;
  const batch = await pauseConnections(sockets, {
    lock: options.lock ?? (keepRunning ? 'filter' : 'nftables'),
    netns: options.netns,
    flushTimeoutMs: options.flushTimeoutMs ?? DEFAULT_FLUSH_TIMEOUT_MS,
    lockRef: !keepRunning,
    closeAfter: !keepRunning,
  });
  if (keepRunning) {
    batch.entries.forEach(unpause);
    await batch.unlock();
  } else {
    closePaused(batch.entries);
  }
  return batch.images;
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
