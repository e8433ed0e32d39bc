/**
 * One-call forms of the low-level sequences, for callers that want the whole dump or restore of
 * one socket at once: one native call each (csrc/soccr_oneshot.cc), no handle object, no dup.
 *   dumpFd(fd)     = pause(fd) + getSkData + getQueueBytes x2 + get*Address + release
 *   restoreFd(...) = pauseNewSocket + restore + resume, returning the connected fd
 * The caller must block the connection's traffic first, as for pause().
 */
import { InvalidArgumentError, fromNativeError } from '../errors';
import { checkNetnsPath } from '../security';
import type { SocketAddress } from './address';
import { SoccrError } from './errors';
import { checkConnectedTcp } from './handle';
import { soccrBinding } from './native';
import { PACKED_WORDS, SK_DATA_WORDS, packAddress, packSkData, transferMask, unpackAddress } from './oneshot-pack';
import { skDataFromWords } from './sk-data';
import type { SkData } from './sk-data';

/**
 * Scratch words, filled and consumed within one synchronous call: the packed sk_data and
 * addresses, then (dumpFd) each queue's offset in the pool or NOT_POOLED.
 */
const words = new Uint32Array(PACKED_WORDS + 2);
const EMPTY = Buffer.alloc(0);
const NOT_POOLED = 0xffffffff;

/**
 * Small queues (csrc: up to 8 KiB) are peeked into slices of a shared pool, as Node pools small
 * Buffers: a slice costs less than an ArrayBuffer of its own, for the dump and for the GC. The
 * pool is zero-filled, so its other bytes are earlier dumps' queues or zeros, never stale heap.
 */
const POOL_BYTES = 64 * 1024;
const MAX_POOLED = 8 * 1024;
let pool = Buffer.alloc(POOL_BYTES);
let poolOffset = 0;
const NO_OPTIONS: RestoreFdOptions = Object.freeze({});

export interface SocketDump {
  skData: SkData;
  local: SocketAddress;
  remote: SocketAddress;
  recvQueue: Buffer;
  sendQueue: Buffer;
}

export interface RestoreFdOptions {
  /** Create the socket inside the network namespace at this absolute path (e.g. /run/netns/x). */
  netns?: string;
  /**
   * Hand the queue buffers over to the restore, like a transfer list of postMessage(): after a
   * successful restore, the ArrayBuffers under dump.recvQueue and dump.sendQueue are detached
   * (every view of them becomes empty) and their memory is freed at once instead of at a later
   * garbage collection, so the next dump reuses it while it is still in the CPU cache. Only a
   * Buffer that spans its whole ArrayBuffer is handed over (what dumpFd returns); others, and
   * every buffer of a failed restore, stay as they are. Default false.
   */
  transfer?: boolean;
}

/**
 * libsoccr's whole dump of a connected TCP socket fd in one call: pause, save, both queues, both
 * addresses, release. The socket is left in repair mode, like pause() + release(): close it to
 * drop the connection silently (keep its 4-tuple blocked until the restore), or turn repair off
 * to let it run on. On failure the socket is resumed and the error is typed as pause()'s are.
 * A non-empty queue of more than 8 KiB is a Buffer over its own ArrayBuffer (what restoreFd's
 * `transfer` can hand over); a smaller one a slice of a shared pool; empty queues share one
 * empty Buffer.
 */
export function dumpFd(fd: number): SocketDump {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff)
    throw new InvalidArgumentError('fd must be a non-negative integer', 'ERR_INVALID_ARG_TYPE');
  if (POOL_BYTES - poolOffset < 2 * MAX_POOLED) {
    pool = Buffer.alloc(POOL_BYTES); // the old pool lives on in its slices
    poolOffset = 0;
  }
  let queues: ArrayBuffer | [ArrayBuffer, ArrayBuffer] | undefined;
  try {
    queues = soccrBinding().soccrDump(fd, words, pool, poolOffset);
  } catch (error) {
    checkConnectedTcp(fd); // names the precise problem (not TCP, listening, unconnected, state)
    throw fromNativeError(SoccrError, error, 'libsoccr dump');
  }
  const inqLen = words[1];
  const outqLen = words[3];
  const recvAt = inqLen !== 0 ? words[PACKED_WORDS] : NOT_POOLED;
  const sendAt = outqLen !== 0 ? words[PACKED_WORDS + 1] : NOT_POOLED;
  let recvQueue = EMPTY;
  let sendQueue = EMPTY;
  if (recvAt !== NOT_POOLED) {
    recvQueue = pool.subarray(recvAt, recvAt + inqLen);
    poolOffset = (recvAt + inqLen + 7) & ~7;
  }
  if (sendAt !== NOT_POOLED) {
    sendQueue = pool.subarray(sendAt, sendAt + outqLen);
    poolOffset = (sendAt + outqLen + 7) & ~7;
  }
  if (queues !== undefined) {
    // Which queue a lone ArrayBuffer holds follows from the lengths and the pool offsets
    // (csrc/soccr_oneshot.cc).
    if (Array.isArray(queues)) {
      recvQueue = Buffer.from(queues[0]);
      sendQueue = Buffer.from(queues[1]);
    } else if (inqLen !== 0 && recvAt === NOT_POOLED) {
      recvQueue = Buffer.from(queues);
    } else {
      sendQueue = Buffer.from(queues);
    }
  }
  return {
    skData: skDataFromWords(words),
    local: unpackAddress(words, SK_DATA_WORDS),
    remote: unpackAddress(words, SK_DATA_WORDS + 8),
    recvQueue,
    sendQueue,
  };
}

/**
 * libsoccr's whole restore in one call: a new non-blocking TCP socket (in the netns at `netns`
 * if given) with the connection restored and resumed (repair off: the kernel sends its window
 * probe). Returns its fd (adoptSocket() hands it to a net.Socket). On failure nothing is left.
 */
export function restoreFd(dump: SocketDump, options: RestoreFdOptions = NO_OPTIONS): number {
  if (typeof dump !== 'object' || dump === null)
    throw new InvalidArgumentError('dump must be an object', 'ERR_INVALID_ARG_TYPE');
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  const { skData, local, remote, recvQueue, sendQueue } = dump;
  const { netns, transfer } = options;
  packSkData(skData, words);
  if (netns !== undefined) checkNetnsPath(netns);
  if (transfer !== undefined && typeof transfer !== 'boolean')
    throw new InvalidArgumentError('transfer must be a boolean', 'ERR_INVALID_ARG_TYPE');
  packAddress(local, 'local', words, SK_DATA_WORDS);
  packAddress(remote, 'remote', words, SK_DATA_WORDS + 8);
  if (words[SK_DATA_WORDS] !== words[SK_DATA_WORDS + 8])
    throw new InvalidArgumentError('local and remote must be of one family');
  if (!(recvQueue instanceof Uint8Array) || recvQueue.length !== words[1])
    throw new InvalidArgumentError('recvQueue must be a Buffer of skData.inqLen bytes');
  if (!(sendQueue instanceof Uint8Array) || sendQueue.length !== words[3])
    throw new InvalidArgumentError('sendQueue must be a Buffer of skData.outqLen bytes');
  const transferBits = transfer === true ? transferMask(recvQueue, sendQueue) : 0;
  try {
    // One native call: socket (in netns), pause, addresses, queues, restore, resume.
    return soccrBinding().soccrRestore(-1, words, recvQueue, sendQueue, netns, transferBits);
  } catch (error) {
    throw fromNativeError(SoccrError, error, 'libsoccr restore');
  }
}
