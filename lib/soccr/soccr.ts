/** The `soccr` namespace: libsoccr's calls and the socket helpers a restore needs. */
import * as net from 'node:net';

import { InvalidArgumentError, fromNativeError } from '../errors';
import { checkNetnsPath, MAX_FD } from '../security';
import { SoccrError } from './errors';
import { soccrBinding } from './native';
import { adoptFd, socketFd } from './node-socket';

export { pause, pauseNewSocket, SoccrHandle } from './handle';
export type { QueueName } from './handle';
export { dumpFd, restoreFd } from './oneshot';
export type { RestoreFdOptions, SocketDump } from './oneshot';
export { setLogger } from './native';
export type { SoccrLogger } from './native';
export { sweepStaleLocks } from './nft-lock';
export type { SweptLock } from './nft-lock';

function fdOf(socketOrFd: net.Socket | number): number {
  if (typeof socketOrFd === 'number') {
    if (!Number.isInteger(socketOrFd) || socketOrFd < 0)
      throw new InvalidArgumentError('fd must be a non-negative integer', 'ERR_INVALID_ARG_TYPE');
    if (socketOrFd > MAX_FD) throw new InvalidArgumentError(`fd must be at most ${MAX_FD}`, 'ERR_OUT_OF_RANGE');
    return socketOrFd;
  }
  return socketFd(socketOrFd);
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
  return socketFd(socket);
}

/** Whether the socket is in repair mode (TCP_REPAIR), for checks and tests. */
export function isInRepairMode(socketOrFd: net.Socket | number): boolean {
  const fd = fdOf(socketOrFd);
  return call('socket info', () => soccrBinding().socketOps.socketInfo(fd)).repair === 1;
}

/** Hands a connected TCP fd (e.g. restored and resumed) to a new net.Socket, which owns it. */
export function adoptSocket(fd: number): net.Socket {
  return adoptFd(fdOf(fd));
}
