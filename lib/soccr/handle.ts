/**
 * The low-level API: libsoccr's calls on one socket, as `soccr.pause(socketOrFd)` returns them.
 * The caller must block the data flow first (see attachDropFilter / NftablesLock) and, for a
 * net.Socket, must not have unflushed writes (checkpointConnection handles both).
 */
import * as net from 'node:net';

import { InvalidArgumentError, fromNativeError } from '../errors';
import { checkNetnsPath } from '../security';
import { fromNativeSockaddr, socketAddressFromWords, toNativeSockaddr } from './address';
import type { SocketAddress } from './address';
import type { NativeSockaddr, NativeSocketInfo, NativeSoccrHandle, SoccrBinding } from './binding-types';
import { SoccrError, describeValue } from './errors';
import { soccrBinding } from './native';
import { restartReading, socketFd, stopReading } from './node-socket';
import { PACKED_WORDS, SK_DATA_WORDS, packAddress, packSkData, transferMask } from './oneshot-pack';
import { RESTORABLE_STATES, TcpState, skDataFromWords, skDataToWords, tcpStateName } from './sk-data';
import type { SkData } from './sk-data';

export type QueueName = 'recv' | 'send';

const pausedSockets = new FinalizationRegistry<() => void>((onCollected) => onCollected());

const QUEUE_IDS = { recv: 1, send: 2 } as const;

function queueId(queue: unknown): 1 | 2 {
  if (queue !== 'recv' && queue !== 'send')
    throw new InvalidArgumentError(`queue must be 'recv' or 'send' (got ${describeValue(queue)})`);
  return QUEUE_IDS[queue];
}

function nativeCall<T>(context: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    throw fromNativeError(SoccrError, error, context);
  }
}

function nativeAddress(address: SocketAddress, name: string): NativeSockaddr {
  const sa = typeof address === 'object' && address !== null ? toNativeSockaddr(address) : undefined;
  if (!sa) throw new InvalidArgumentError(`${name} must be {family: 4|6, address, port} with a valid IP address`);
  return sa;
}

/** Scratch words for restore(): filled and consumed within one synchronous call. */
const restoreWords = new Uint32Array(PACKED_WORDS);
const EMPTY = Buffer.alloc(0);
const NO_OPTIONS: { transfer?: boolean } = Object.freeze({});

function bytesArg(bytes: unknown, name: string): Uint8Array {
  if (!(bytes instanceof Uint8Array))
    throw new InvalidArgumentError(`${name} must be a Buffer or Uint8Array`, 'ERR_INVALID_ARG_TYPE');
  return bytes;
}

/**
 * A paused socket (TCP_REPAIR on). Owns a dup of the fd: resume() turns repair off and closes the
 * dup; release() closes the dup and leaves repair on (closing the last fd then drops the
 * connection silently). A handle garbage-collected while open is resumed.
 */
export class SoccrHandle {
  #native: NativeSoccrHandle;
  #skData: SkData | undefined;
  /** What save(out) filled: sk_data, then own and peer address (family 0: not available). */
  #saved: Uint32Array | undefined;
  /** The queue copies saveWithQueues returned, until getQueueBytes hands each out. */
  #queues: [Buffer | undefined, Buffer | undefined] | undefined;
  #onDone: (() => void) | undefined;

  /**
   * @internal use soccr.pause(). For a net.Socket: `onResumed` restarts its reading after
   * resume(); `onCollected` runs if the handle is garbage-collected while open (the native side
   * resumes its dup in its own finalizer, in no guaranteed order with this one, so onCollected
   * turns repair off itself before Node reads again).
   */
  constructor(native: NativeSoccrHandle, socketHooks?: { onResumed: () => void; onCollected: () => void }) {
    this.#native = native;
    this.#onDone = socketHooks?.onResumed;
    if (socketHooks) pausedSockets.register(this, socketHooks.onCollected, this);
  }

  /** The handle's own fd (a dup), -1 after resume()/release(). */
  get fd(): number {
    return this.#native.fd;
  }

  get closed(): boolean {
    return this.#native.fd < 0;
  }

  /** libsoccr_save on first call (cached after): every sk_data field. */
  getSkData(): SkData {
    if (!this.#skData) {
      // One native call: sk_data, both addresses (libsoccr_get_addr, kept for get*Address) and
      // a copy of each queue (handed out by the first getQueueBytes of that queue).
      const words = new Uint32Array(PACKED_WORDS);
      const native = this.#native;
      let queues: ArrayBuffer | [ArrayBuffer, ArrayBuffer] | undefined;
      try {
        queues = native.saveWithQueues(words);
      } catch (error) {
        throw fromNativeError(SoccrError, error, 'libsoccr save');
      }
      if (Array.isArray(queues)) {
        this.#queues = [Buffer.from(queues[0]), Buffer.from(queues[1])];
      } else if (queues !== undefined) {
        this.#queues = words[1] !== 0 ? [Buffer.from(queues), undefined] : [undefined, Buffer.from(queues)];
      }
      this.#saved = words;
      this.#skData = skDataFromWords(words);
    }
    return this.#skData;
  }

  /** The saved receive or send queue (saves first if needed); each call returns its own copy. */
  getQueueBytes(queue: QueueName): Buffer {
    const id = queueId(queue);
    const data = this.getSkData();
    if ((id === 1 ? data.inqLen : data.outqLen) === 0) return EMPTY;
    const copies = this.#queues;
    const copy = copies?.[id - 1];
    if (copies && copy) {
      copies[id - 1] = undefined; // the first caller owns it; later calls get new copies
      return copy;
    }
    return nativeCall('libsoccr get queue', () => this.#native.getQueueBytes(id)) ?? EMPTY;
  }

  /** The socket's own address (libsoccr_get_addr). */
  getLocalAddress(): SocketAddress {
    const saved = this.#saved;
    if (saved && saved[SK_DATA_WORDS] !== 0) return socketAddressFromWords(saved, SK_DATA_WORDS);
    return fromNativeSockaddr(nativeCall('libsoccr get_addr', () => this.#native.getAddr(true)));
  }

  /** The peer's address (libsoccr_get_addr). */
  getRemoteAddress(): SocketAddress {
    const saved = this.#saved;
    if (saved && saved[SK_DATA_WORDS + 8] !== 0) return socketAddressFromWords(saved, SK_DATA_WORDS + 8);
    return fromNativeSockaddr(nativeCall('libsoccr get_addr', () => this.#native.getAddr(false)));
  }

  /**
   * One-call restore onto this (fresh, paused) socket: bind, connect without SYN, queues, window.
   * `transfer`: as soccr.restoreFd's, the queue buffers are detached (freed) after a success.
   */
  restore(
    data: SkData,
    local: SocketAddress,
    remote: SocketAddress,
    recvQueue: Uint8Array,
    sendQueue: Uint8Array,
    options: { transfer?: boolean } = NO_OPTIONS,
  ): void {
    // Packed words instead of address objects: native code reads no JS properties.
    const words = restoreWords;
    packSkData(data, words);
    packAddress(local, 'local', words, SK_DATA_WORDS);
    packAddress(remote, 'remote', words, SK_DATA_WORDS + 8);
    if (bytesArg(recvQueue, 'recvQueue').length !== words[1])
      throw new InvalidArgumentError('recvQueue length must equal inqLen');
    if (bytesArg(sendQueue, 'sendQueue').length !== words[3])
      throw new InvalidArgumentError('sendQueue length must equal outqLen');
    if (typeof options !== 'object' || options === null)
      throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
    const transfer = options.transfer;
    if (transfer !== undefined && typeof transfer !== 'boolean')
      throw new InvalidArgumentError('transfer must be a boolean', 'ERR_INVALID_ARG_TYPE');
    const native = this.#native;
    try {
      native.restorePacked(words, recvQueue, sendQueue, transfer === true ? transferMask(recvQueue, sendQueue) : 0);
    } catch (error) {
      throw fromNativeError(SoccrError, error, 'libsoccr restore');
    }
  }

  /** Staged restore 1/4: sequence numbers. Then bind() and connect(). */
  setSkDataUnbound(data: SkData): void {
    const words = skDataToWords(data);
    nativeCall('libsoccr set_sk_data_unbound', () => this.#native.setSkDataUnbound(words));
  }

  /** bind() the paused socket (repair mode: no SO_REUSEADDR needed). */
  bind(local: SocketAddress): void {
    const sa = nativeAddress(local, 'local');
    nativeCall('bind', () => soccrBinding().socketOps.bind(this.#openFd('bind'), sa));
  }

  /** connect() the paused socket: in repair mode this establishes it without sending a SYN. */
  connect(remote: SocketAddress): void {
    const sa = nativeAddress(remote, 'remote');
    nativeCall('connect', () => soccrBinding().socketOps.connect(this.#openFd('connect'), sa));
  }

  /** Staged restore 2/4: MSS, window scale, SACK, timestamps. */
  setSkDataNoq(data: SkData): void {
    const words = skDataToWords(data);
    nativeCall('libsoccr set_sk_data_noq', () => this.#native.setSkDataNoq(words));
  }

  /** Staged restore 3/4: one queue's bytes (inqLen / outqLen of them). */
  setQueueBytes(data: SkData, queue: QueueName, bytes: Uint8Array): void {
    const words = skDataToWords(data);
    const id = queueId(queue);
    bytesArg(bytes, 'bytes');
    if (bytes.length !== (id === 1 ? data.inqLen : data.outqLen)) {
      throw new InvalidArgumentError(`${queue} queue bytes must be ${id === 1 ? 'inqLen' : 'outqLen'} long`);
    }
    nativeCall('libsoccr restore_queue', () => this.#native.restoreQueue(words, id, bytes));
  }

  /** Staged restore 4/4: window and FIN state. Then resume(). */
  setSkData(data: SkData): void {
    const words = skDataToWords(data);
    nativeCall('libsoccr set_sk_data', () => this.#native.setSkData(words));
  }

  /**
   * Repair off (the kernel sends a window probe), pending unsent data goes out; idempotent. A
   * net.Socket given to pause() reads again.
   */
  resume(): void {
    this.#native.resume();
    this.#finish(true);
  }

  /**
   * Frees the handle and closes its dup, leaving repair mode on; idempotent. A net.Socket given to
   * pause() stays stopped (reading in repair mode fails): destroy it to drop the connection
   * silently.
   */
  release(): void {
    this.#native.release();
    this.#finish(false);
  }

  #openFd(what: string): number {
    const fd = this.#native.fd;
    if (fd < 0) throw new SoccrError(`${what}: handle already resumed or released`, { code: 'EBADF', syscall: what });
    return fd;
  }

  #finish(resumed: boolean): void {
    const done = this.#onDone;
    this.#onDone = undefined;
    if (done) {
      pausedSockets.unregister(this);
      if (resumed) done();
    }
  }
}

/**
 * Checks that `fd` is a connected TCP socket in a state libsoccr can save. Throws SoccrError:
 * ENOTSOCK (kernel), ERR_SOCKET_NOT_TCP, ERR_SOCKET_LISTENING, ENOTCONN, ERR_SOCKET_STATE.
 */
export function checkConnectedTcp(fd: number): NativeSocketInfo {
  const ops = soccrBinding().socketOps;
  const info = nativeCall('socket info', () => ops.socketInfo(fd));
  if ((info.domain !== 4 && info.domain !== 6) || info.tcpState < 0) {
    throw new SoccrError('not a TCP socket', { code: 'ERR_SOCKET_NOT_TCP' });
  }
  if (info.acceptConn || info.tcpState === TcpState.LISTEN)
    throw new SoccrError('socket is listening', { code: 'ERR_SOCKET_LISTENING' });
  nativeCall('getpeername', () => ops.peerName(fd)); // ENOTCONN for unconnected sockets
  if (
    !RESTORABLE_STATES.has(info.tcpState) ||
    info.tcpState === TcpState.CLOSE ||
    info.tcpState === TcpState.SYN_SENT
  ) {
    throw new SoccrError(`TCP state ${tcpStateName(info.tcpState) ?? info.tcpState} cannot be checkpointed`, {
      code: 'ERR_SOCKET_STATE',
    });
  }
  return info;
}

/** pause()'s check words: [TCP state, SO_REUSEADDR] (net.Socket) or [TCP state] (fd). */
const checkWithReuse = new Uint32Array(2);
const checkStateOnly = checkWithReuse.subarray(0, 1);

/**
 * dup + TCP state check + libsoccr_pause in one native call (the state check is the fast path of
 * checkConnectedTcp); when it fails, checkConnectedTcp names the precise problem.
 */
function pauseChecked(fd: number, check: Uint32Array): NativeSoccrHandle {
  const binding: SoccrBinding = soccrBinding();
  try {
    return new binding.SoccrHandle(fd, true, check);
  } catch (error) {
    checkConnectedTcp(fd);
    throw fromNativeError(SoccrError, error, 'libsoccr pause');
  }
}

function fdArg(fd: number): number {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff)
    throw new InvalidArgumentError('fd must be a non-negative integer', 'ERR_INVALID_ARG_TYPE');
  return fd;
}

/**
 * libsoccr_pause on a connected socket (TCP_REPAIR on). For a net.Socket, libuv stops reading it
 * until resume(); it must not have bytes in Node's write buffer (ERR_SOCKET_WRITE_PENDING):
 * checkpointConnection flushes them first.
 */
export function pause(socketOrFd: net.Socket | number): SoccrHandle {
  if (typeof socketOrFd === 'number') {
    const fd = fdArg(socketOrFd);
    return new SoccrHandle(pauseChecked(fd, checkStateOnly));
  }
  const socket = socketOrFd;
  const fd = socketFd(socket);
  if (socket.writableLength > 0) {
    throw new SoccrError(`${socket.writableLength} bytes are still in Node's write buffer`, {
      code: 'ERR_SOCKET_WRITE_PENDING',
    });
  }
  const wasReading = stopReading(socket);
  try {
    const native = pauseChecked(fd, checkWithReuse);
    const reuseAddr = checkWithReuse[1] === 1;
    return new SoccrHandle(native, {
      onResumed: () => restartReading(socket, wasReading),
      onCollected: () => {
        if (socket.destroyed) return;
        try {
          soccrBinding().socketOps.setRepair(fd, false, reuseAddr);
        } catch {
          return; // the socket is gone
        }
        restartReading(socket, wasReading);
      },
    });
  } catch (error) {
    restartReading(socket, wasReading);
    throw error;
  }
}

/** For restoring: a new non-blocking TCP socket fd (optionally in the netns at `netns`), paused. */
export function pauseNewSocket(family: 4 | 6, netns?: string): { fd: number; handle: SoccrHandle } {
  if (family !== 4 && family !== 6)
    throw new InvalidArgumentError(`family must be 4 or 6 (got ${describeValue(family)})`);
  if (netns !== undefined) checkNetnsPath(netns);
  const ops = soccrBinding().socketOps;
  const fd = nativeCall('socket', () => ops.tcpSocket(family, netns));
  try {
    return { fd, handle: new SoccrHandle(nativeCall('libsoccr pause', () => new (soccrBinding().SoccrHandle)(fd))) };
  } catch (error) {
    ops.closeFd(fd);
    throw error;
  }
}
