/** Options of the connection-level calls (checkpoint, hold, restore) and their validation. */
import { InvalidArgumentError } from '../errors';
import { checkNetnsPath } from '../security';
import { describeValue } from './errors';
import { isNftablesLock, type NftablesLock } from './nft-lock';

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

export const DEFAULT_FLUSH_TIMEOUT_MS = 10000;

function checkObject(options: unknown): void {
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
}

export function checkFlushTimeout(value: unknown): void {
  if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || value < 0))
    throw new InvalidArgumentError('flushTimeoutMs must be >= 0', 'ERR_OUT_OF_RANGE');
}

export function checkCheckpointOptions(options: unknown): asserts options is CheckpointOptions {
  checkObject(options);
  const o = options as CheckpointOptions;
  if (o.keepRunning !== undefined && typeof o.keepRunning !== 'boolean')
    throw new InvalidArgumentError('keepRunning must be a boolean', 'ERR_INVALID_ARG_TYPE');
  if (o.lock !== undefined && !isNftablesLock(o.lock) && !['nftables', 'filter', 'none'].includes(o.lock as string)) {
    throw new InvalidArgumentError(
      `lock must be 'nftables', 'filter', 'none' or an NftablesLock (got ${describeValue(o.lock)})`,
    );
  }
  if (o.netns !== undefined) checkNetnsPath(o.netns);
  checkFlushTimeout(o.flushTimeoutMs);
}

export function checkRestoreOptions(options: unknown): asserts options is RestoreOptions {
  checkObject(options);
  const o = options as RestoreOptions;
  if (o.netns !== undefined) checkNetnsPath(o.netns);
  // Spread: every() skips the holes of a sparse array ([,]), which would reach the restore as undefined.
  if (o.locks !== undefined && (!Array.isArray(o.locks) || ![...o.locks].every((l) => isNftablesLock(l))))
    throw new InvalidArgumentError('locks must be an array of NftablesLock', 'ERR_INVALID_ARG_TYPE');
}

export function checkSocketArray(sockets: unknown): asserts sockets is unknown[] {
  if (!Array.isArray(sockets)) throw new InvalidArgumentError('sockets must be an array', 'ERR_INVALID_ARG_TYPE');
}

export function checkNoRepeats(sockets: readonly unknown[]): void {
  if (new Set(sockets).size !== sockets.length) throw new InvalidArgumentError('sockets must not repeat');
}
