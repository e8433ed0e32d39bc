/** The `soccr` namespace: libsoccr's calls, fd helpers, and the Node-side socket helpers a handover needs. */
import * as net from 'node:net';

import { InvalidArgumentError, fromNativeError } from '../errors';
import { checkNetnsPath, MAX_FD } from '../security';
import { fromNativeSockaddr } from './address';
import { SoccrError } from './errors';
import { soccrBinding } from './native';
import type { ConnectionTuple } from './nft-lock';
import * as nodeSocket from './node-socket';

import * as handle from './handle';
import * as nativeLog from './native';
import * as nftLock from './nft-lock';
import * as oneshot from './oneshot';

// Import aliases compile to plain data properties of this module's exports object; `export {..}
// from` would compile to accessors, which put the object in dictionary mode and cost every
// soccr.* call a getter call and a dictionary lookup (measured on the one-call path).
export import pause = handle.pause;
export import pauseNewSocket = handle.pauseNewSocket;
export import SoccrHandle = handle.SoccrHandle;
export type { QueueName } from './handle';
export import dumpFd = oneshot.dumpFd;
export import restoreFd = oneshot.restoreFd;
export type { RestoreFdOptions, SocketDump } from './oneshot';
export import setLogger = nativeLog.setLogger;
export type { SoccrLogger } from './native';
export import sweepStaleLocks = nftLock.sweepStaleLocks;
export type { SweptLock } from './nft-lock';

function fdOf(socketOrFd: net.Socket | number): number {
  if (typeof socketOrFd === 'number') {
    if (!Number.isInteger(socketOrFd) || socketOrFd < 0)
      throw new InvalidArgumentError('fd must be a non-negative integer', 'ERR_INVALID_ARG_TYPE');
    if (socketOrFd > MAX_FD) throw new InvalidArgumentError(`fd must be at most ${MAX_FD}`, 'ERR_OUT_OF_RANGE');
    return socketOrFd;
  }
  return nodeSocket.socketFd(socketOrFd);
}

function call<T>(context: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    throw fromNativeError(SoccrError, error, context);
  }
}

/** A new non-blocking TCP socket fd of `family`, created inside the netns at `netns` if given. */
export function createTcpSocket(family: 4 | 6, options: { netns?: string } = {}): number {
  if (family !== 4 && family !== 6) throw new InvalidArgumentError('family must be 4 or 6');
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  if (options.netns !== undefined) checkNetnsPath(options.netns);
  return call('socket', () => soccrBinding().socketOps.tcpSocket(family, options.netns));
}

/** Closes an fd this package handed out and nobody adopted. */
export function closeFd(fd: number): void {
  call('close', () => soccrBinding().socketOps.closeFd(fdOf(fd)));
}

/** Drop every packet for this socket before TCP sees it (SO_ATTACH_FILTER, `ret #0`): a per-socket lock. */
export function attachDropFilter(socketOrFd: net.Socket | number): void {
  const fd = fdOf(socketOrFd);
  call('attach drop filter', () => soccrBinding().socketOps.attachDropFilter(fd));
}

export function detachFilter(socketOrFd: net.Socket | number): void {
  const fd = fdOf(socketOrFd);
  call('detach filter', () => soccrBinding().socketOps.detachFilter(fd));
}

/** The fd of a live net.Socket (still owned by Node). */
export function fdOfSocket(socket: net.Socket): number {
  return nodeSocket.socketFd(socket);
}

/** Whether the socket is in repair mode (TCP_REPAIR), for checks and tests. */
export function isInRepairMode(socketOrFd: net.Socket | number): boolean {
  const fd = fdOf(socketOrFd);
  return call('socket info', () => soccrBinding().socketOps.socketInfo(fd)).repair === 1;
}

/** Hands a connected TCP fd (e.g. restored and resumed) to a new net.Socket, which owns it. */
export function adoptSocket(fd: number): net.Socket {
  return nodeSocket.adoptFd(fdOf(fd));
}

/** The 4-tuple of a live, connected TCP net.Socket as the kernel has it (getsockname/getpeername). */
export function connectionTuple(socket: net.Socket): ConnectionTuple {
  const fd = nodeSocket.socketFd(socket);
  const ops = soccrBinding().socketOps;
  return {
    local: fromNativeSockaddr(call('getsockname', () => ops.sockName(fd))),
    remote: fromNativeSockaddr(call('getpeername', () => ops.peerName(fd))),
  };
}

function checkSocket(socket: unknown): asserts socket is net.Socket {
  if (!(socket instanceof net.Socket))
    throw new InvalidArgumentError('socket must be a net.Socket', 'ERR_INVALID_ARG_TYPE');
}

/**
 * Sets SO_REUSEADDR. A connection restored from an image starts without it, where one accepted
 * from a Node listener inherited it; a server listening on the connection's port afterwards
 * needs it on every connection bound there (else EADDRINUSE).
 */
export function setReuseAddress(socketOrFd: net.Socket | number, on: boolean): void {
  const fd = fdOf(socketOrFd);
  if (typeof on !== 'boolean') throw new InvalidArgumentError('on must be a boolean', 'ERR_INVALID_ARG_TYPE');
  call('set SO_REUSEADDR', () => soccrBinding().socketOps.setReuseAddr(fd, on));
}

/**
 * Stops Node (libuv) reading the socket: data and a FIN that arrive stay in the kernel, so
 * nothing ends or destroys the net.Socket meanwhile. Returns whether it was reading (false for a
 * destroyed socket), for restartReading.
 */
export function stopReading(socket: net.Socket): boolean {
  checkSocket(socket);
  return socket.destroyed ? false : nodeSocket.stopReading(socket);
}

/** Undoes stopReading: reads again if `wasReading` (a destroyed socket is left alone). */
export function restartReading(socket: net.Socket, wasReading: boolean): void {
  checkSocket(socket);
  if (typeof wasReading !== 'boolean')
    throw new InvalidArgumentError('wasReading must be a boolean', 'ERR_INVALID_ARG_TYPE');
  nodeSocket.restartReading(socket, wasReading);
}

/**
 * Resolves once everything the application wrote is in the kernel (Node's write buffer is
 * empty). The send buffer is raised first, so a peer that does not read cannot block it.
 * Rejects with SoccrError ERR_FLUSH_TIMEOUT (default 10000 ms) or ERR_SOCKET_DESTROYED.
 */
export async function flushWrites(socket: net.Socket, options: { timeoutMs?: number } = {}): Promise<void> {
  checkSocket(socket);
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  const { timeoutMs = 10000 } = options;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0)
    throw new InvalidArgumentError('timeoutMs must be >= 0', 'ERR_OUT_OF_RANGE');
  await nodeSocket.flushWrites(socket, timeoutMs);
}

/**
 * Bytes Node has read from the kernel that the application has not consumed yet (without
 * emitting them). `take`: Node's buffer is emptied too, before the socket is handed away or
 * destroyed. SoccrError ERR_SOCKET_INTERNALS if the buffer is not plain bytes.
 */
export function unreadBytes(socket: net.Socket, options: { take?: boolean } = {}): Buffer {
  checkSocket(socket);
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  if (options.take !== undefined && typeof options.take !== 'boolean')
    throw new InvalidArgumentError('take must be a boolean', 'ERR_INVALID_ARG_TYPE');
  return nodeSocket.pendingReadBytes(socket, options.take ?? false);
}
