/**
 * The Node side of a connection: its fd, libuv's reading, Node's write buffer (flushed into the
 * kernel before a checkpoint) and Node's read buffer (carried in the image as pendingRead). The
 * net.Socket internals it needs (_handle, _readableState) are used here only.
 */
import * as net from 'node:net';

import { InvalidArgumentError } from '../errors';
import { SoccrError } from './errors';
import { soccrBinding } from './native';

/** The parts of Node's TCPWrap handle this file uses. */
interface TcpWrapLike {
  fd: number;
  reading: boolean;
  readStop(): number;
  readStart(): number;
}

interface SocketInternals {
  _handle: TcpWrapLike | null;
  _readableState: { buffer: unknown; length: number; bufferIndex?: number };
}

/** Zero-length, shared: nothing in it to change. */
const EMPTY = Buffer.alloc(0);

function internals(socket: net.Socket): SocketInternals {
  return socket as unknown as SocketInternals;
}

/** Validates that `socket` is a live, connected TCP net.Socket and returns its fd (still Node's). */
export function socketFd(socket: net.Socket): number {
  if (!(socket instanceof net.Socket))
    throw new InvalidArgumentError('socket must be a net.Socket', 'ERR_INVALID_ARG_TYPE');
  if (socket.destroyed) throw new SoccrError('socket is destroyed', { code: 'ERR_SOCKET_DESTROYED' });
  if (socket.connecting) throw new SoccrError('socket is still connecting', { code: 'ERR_SOCKET_CONNECTING' });
  const handle = internals(socket)._handle;
  if (!handle || typeof handle.fd !== 'number' || handle.fd < 0) {
    throw new SoccrError('socket has no file descriptor', { code: 'ERR_SOCKET_DESTROYED' });
  }
  return handle.fd;
}

/** The fd of Node's handle as it is now (no validation), or -1 without a handle. */
export function handleFd(socket: net.Socket): number {
  const fd = internals(socket)._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/** Stops libuv reading the socket; returns whether it was reading (for restartReading). */
export function stopReading(socket: net.Socket): boolean {
  const handle = internals(socket)._handle;
  if (!handle) return false;
  const wasReading = handle.reading;
  handle.readStop();
  handle.reading = false;
  return wasReading;
}

export function restartReading(socket: net.Socket, wasReading: boolean): void {
  const handle = internals(socket)._handle;
  if (!handle || !wasReading || socket.destroyed) return;
  handle.reading = true;
  handle.readStart();
}

/**
 * Bytes Node has read but the application has not consumed, without emitting them. `remove`
 * empties Node's buffer (the socket is being destroyed); otherwise it is left as it was.
 */
export function pendingReadBytes(socket: net.Socket, remove: boolean): Buffer {
  const state = internals(socket)._readableState;
  if (!state || state.length === 0) return EMPTY;
  const chunks: Buffer[] = [];
  const buffer = state.buffer as { [Symbol.iterator]?: () => Iterator<unknown>; clear?: () => void } | unknown[];
  if (Array.isArray(buffer)) {
    // Node >= 22: an array with a read index.
    for (const chunk of buffer.slice(state.bufferIndex ?? 0)) chunks.push(Buffer.from(chunk as Uint8Array));
    if (remove) {
      buffer.length = 0;
      state.bufferIndex = 0;
    }
  } else if (buffer && typeof (buffer as { [Symbol.iterator]?: unknown })[Symbol.iterator] === 'function') {
    // Node 20: BufferList.
    for (const chunk of buffer as Iterable<unknown>) chunks.push(Buffer.from(chunk as Uint8Array));
    if (remove) (buffer as { clear: () => void }).clear();
  } else {
    throw new SoccrError('cannot read net.Socket buffer on this Node version', { code: 'ERR_SOCKET_INTERNALS' });
  }
  const bytes = Buffer.concat(chunks);
  if (bytes.length !== state.length) {
    // Object mode or string chunks: refuse rather than guess.
    throw new SoccrError('net.Socket read buffer is not plain bytes', { code: 'ERR_SOCKET_INTERNALS' });
  }
  if (remove) state.length = 0;
  return bytes;
}

/**
 * Resolves once everything the application wrote is in the kernel (Node's writable buffer and
 * libuv's queue are empty). The kernel send buffer is raised with SO_SNDBUFFORCE first, so the
 * flush completes even when the peer is not reading. Rejects with ERR_FLUSH_TIMEOUT.
 */
export async function flushWrites(socket: net.Socket, timeoutMs: number): Promise<void> {
  while (socket.writableCorked > 0) socket.uncork();
  if (socket.writableLength === 0) return;
  const ops = soccrBinding().socketOps;
  const fd = socketFd(socket);
  try {
    const current = ops.sendBufferSize(fd);
    // sk_sndbuf counts skb overhead too; twice the payload plus slack is comfortably enough.
    ops.setSendBufferForce(fd, Math.min(0x3fffffff, current + 2 * socket.writableLength + 262144));
  } catch (error) {
    throw new SoccrError(`cannot raise the send buffer to flush ${socket.writableLength} bytes`, {
      code: (error as { code?: string }).code ?? 'ERR_NATIVE',
      errno: (error as { errno?: number }).errno,
      syscall: (error as { syscall?: string }).syscall,
      cause: error,
    });
  }
  const started = Date.now();
  while (socket.writableLength > 0) {
    if (socket.destroyed) throw new SoccrError('socket was destroyed while flushing', { code: 'ERR_SOCKET_DESTROYED' });
    if (Date.now() - started > timeoutMs) {
      throw new SoccrError(`${socket.writableLength} bytes still in Node's write buffer after ${timeoutMs} ms`, {
        code: 'ERR_FLUSH_TIMEOUT',
      });
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/**
 * Wraps a connected TCP fd (ownership passes to the socket) in a net.Socket. With `paused`, libuv
 * does not read it yet (the fd may still be in repair mode, where a plain read fails): call
 * startReading once it is resumed. Never pass `pendingRead` with `paused`: unshift() restarts
 * reading (on the next tick) — give it to startReading instead.
 */
export function adoptFd(fd: number, pendingRead?: Buffer, allowHalfOpen = false, paused = false): net.Socket {
  const socket = new net.Socket({
    fd,
    readable: true,
    writable: true,
    allowHalfOpen,
    pauseOnCreate: paused,
  } as net.SocketConstructorOpts);
  if (pendingRead && pendingRead.length > 0) socket.unshift(pendingRead);
  return socket;
}

interface TcpWrapConstructor {
  new (type: number): { open(fd: number): number; close(): void };
}

let tcpWrap: { TCP: TcpWrapConstructor; socketType: number } | null | undefined;

/**
 * Node's TCP handle class, or null where it is not reachable without a warning (process.binding
 * is deprecated: under --pending-deprecation it warns, so it is not used there).
 */
function tcpWrapClass(): { TCP: TcpWrapConstructor; socketType: number } | null {
  if (tcpWrap !== undefined) return tcpWrap;
  tcpWrap = null;
  const flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  const getBinding = (process as unknown as { binding?: (name: string) => unknown }).binding;
  if (typeof getBinding === 'function' && !flags.includes('--pending-deprecation')) {
    try {
      const binding = getBinding.call(process, 'tcp_wrap') as {
        TCP?: TcpWrapConstructor;
        constants?: { SOCKET?: number };
      };
      if (typeof binding.TCP === 'function' && typeof binding.constants?.SOCKET === 'number') {
        tcpWrap = { TCP: binding.TCP, socketType: binding.constants.SOCKET };
      }
    } catch {
      tcpWrap = null;
    }
  }
  return tcpWrap;
}

/**
 * adoptFd for a TCP socket fd this package just created (restoreConnections): the handle is
 * opened directly, skipping net.Socket({fd})'s type probe (isatty, fstat, getsockname,
 * getsockopt), which a large batch would pay per socket. Falls back to adoptFd where Node's TCP
 * handle class is not reachable.
 */
export function adoptOwnTcpFd(fd: number, allowHalfOpen: boolean, paused: boolean): net.Socket {
  const wrap = tcpWrapClass();
  if (!wrap) return adoptFd(fd, undefined, allowHalfOpen, paused);
  const handle = new wrap.TCP(wrap.socketType);
  const err = handle.open(fd);
  if (err) {
    handle.close();
    return adoptFd(fd, undefined, allowHalfOpen, paused); // Node's own path (and error) for it
  }
  return new net.Socket({
    handle,
    readable: true,
    writable: true,
    allowHalfOpen,
    pauseOnCreate: paused,
  } as net.SocketConstructorOpts);
}

/**
 * Undoes adoptFd's `paused`: back to a fresh socket's state (reading, not yet flowing), with
 * `pendingRead` (bytes Node had read before the checkpoint) first in line. Only once the fd is
 * resumed: unshift() itself restarts reading.
 */
export function startReading(socket: net.Socket, pendingRead?: Buffer): void {
  if (pendingRead && pendingRead.length > 0) socket.unshift(pendingRead);
  (socket as unknown as { readableFlowing: boolean | null }).readableFlowing = null;
  socket.read(0);
}
