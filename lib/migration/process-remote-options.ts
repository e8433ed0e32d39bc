/** migrateProcess's two-host form ({ to: agent }): types and validation (before anything is touched). */
import * as net from 'node:net';

import { moveAddressOf, type MoveAddress } from '../agent/protocol';
import type { CriuOptions } from '../criu';
import { InvalidArgumentError } from '../errors';
import { checkTlsCredentials, type TlsCredentials } from '../transport/tls';
import type { ProcessMigrationProgress } from './process-options';
import type { CriuDumpStats } from './process-images';

export interface RemoteProcessMigrationOptions {
  pid: number;
  /** The agent on the target host (node-criu agent / startMigrationAgent). */
  to: { host: string; port: number; tls: TlsCredentials };
  /** The network namespace the tree runs in; default ours. */
  source?: { netns?: string };
  /** Removed here (in the source namespace) after the transfer, added by the agent before its restore. */
  moveAddress?: MoveAddress;
  /**
   * Post-copy: the server restarts on the agent's host before its memory arrives; the pages follow
   * on demand over the same channel (process-remote-lazy.ts). Needs fs.pipe-max-size ≥ 4 MiB (or
   * CAP_SYS_RESOURCE) on both hosts. Once the agent is asked to restore there is no rollback: a
   * failure then loses the process (ERR_MIGRATION_LOST, serverOn 'none').
   */
  lazyPages?: boolean;
  /** Local images (created 0700); default a private temporary directory, deleted after success. */
  imagesDir?: string;
  criuPath?: string;
  /** Extra CRIU options for the dump and a rollback restore (the agent restores with its own). */
  criuOptions?: CriuOptions;
  onProgress?: (event: ProcessMigrationProgress) => void;
  /**
   * Before the dump: stop untouched. After it, before RESTORE is sent: roll back onto the source.
   * After RESTORE is sent: ERR_MIGRATION_UNCERTAIN (the agent may have restored; never rolled back).
   * lazyPages: ignored once RESTORE is sent (aborting the page stream would lose the process).
   */
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface RemoteProcessMigrationResult {
  /** pid of the restored root on the agent's host, in the agent's pid namespace. */
  restoredPid: number;
  phases: Record<'dump' | 'transfer' | 'moveAddress' | 'restore' | 'total', number>;
  /** From the dump's freeze until the agent's RESTORED. */
  downtimeMs: number;
  transfer: 'agent';
  /** Image files and bytes sent. */
  files: number;
  bytes: number;
  pagesBytes: number;
  agent: { host: string; port: number; name?: string; criuVersion: string; kernel: string };
  dumpStats?: CriuDumpStats;
  /** lazyPages: the page stream after the restore (bytes CRIU served here, ms from the dump until all were served). */
  lazyPages?: { bytes: number; ms: number };
}

const KEYS = new Set([
  'pid',
  'to',
  'source',
  'moveAddress',
  'lazyPages',
  'imagesDir',
  'criuPath',
  'criuOptions',
  'onProgress',
  'signal',
  'timeoutMs',
]);

export function validateRemoteOptions(options: unknown): asserts options is RemoteProcessMigrationOptions {
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o))
    if (!KEYS.has(key)) throw new InvalidArgumentError(`options: unknown option '${key}' (with 'to')`);
  if (!Number.isInteger(o.pid) || (o.pid as number) < 1)
    throw new InvalidArgumentError(`options.pid must be a positive integer, got ${String(o.pid)}`, 'ERR_OUT_OF_RANGE');
  const to = o.to as Record<string, unknown> | null;
  if (typeof to !== 'object' || to === null)
    throw new InvalidArgumentError('options.to must be { host, port, tls }', 'ERR_INVALID_ARG_TYPE');
  for (const key of Object.keys(to))
    if (!['host', 'port', 'tls'].includes(key)) throw new InvalidArgumentError(`options.to: unknown option '${key}'`);
  if (typeof to.host !== 'string' || to.host === '' || to.host.length > 253)
    throw new InvalidArgumentError('options.to.host must be a host name or address', 'ERR_INVALID_ARG_TYPE');
  if (net.isIP(to.host) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(to.host))
    throw new InvalidArgumentError('options.to.host must be a host name or address');
  if (!Number.isInteger(to.port) || (to.port as number) < 1 || (to.port as number) > 65535)
    throw new InvalidArgumentError('options.to.port must be an integer 1..65535', 'ERR_OUT_OF_RANGE');
  checkTlsCredentials(to.tls, 'options.to.tls');
  if (o.source !== undefined) {
    const source = o.source as Record<string, unknown> | null;
    if (typeof source !== 'object' || source === null)
      throw new InvalidArgumentError('options.source must be an object', 'ERR_INVALID_ARG_TYPE');
    for (const key of Object.keys(source))
      if (key !== 'netns') throw new InvalidArgumentError(`options.source: unknown option '${key}'`);
    if (source.netns !== undefined && (typeof source.netns !== 'string' || source.netns === ''))
      throw new InvalidArgumentError('options.source.netns must be a non-empty path', 'ERR_INVALID_ARG_TYPE');
  }
  if (o.moveAddress !== undefined) {
    try {
      moveAddressOf(o.moveAddress, 'options.moveAddress');
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message);
    }
  }
  if (o.lazyPages !== undefined && typeof o.lazyPages !== 'boolean')
    throw new InvalidArgumentError('options.lazyPages must be a boolean', 'ERR_INVALID_ARG_TYPE');
  for (const key of ['imagesDir', 'criuPath'] as const)
    if (o[key] !== undefined && (typeof o[key] !== 'string' || o[key] === ''))
      throw new InvalidArgumentError(`options.${key} must be a non-empty string`, 'ERR_INVALID_ARG_TYPE');
  if (o.criuOptions !== undefined) {
    if (typeof o.criuOptions !== 'object' || o.criuOptions === null)
      throw new InvalidArgumentError('options.criuOptions must be an object', 'ERR_INVALID_ARG_TYPE');
    for (const key of ['pid', 'imagesDir', 'parentImg', 'ps', 'leaveRunning', 'leaveStopped'])
      if ((o.criuOptions as Record<string, unknown>)[key] !== undefined)
        throw new InvalidArgumentError(`options.criuOptions.${key} is set by migrateProcess itself`);
  }
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function')
    throw new InvalidArgumentError('options.onProgress must be a function', 'ERR_INVALID_ARG_TYPE');
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
    throw new InvalidArgumentError('options.signal must be an AbortSignal', 'ERR_INVALID_ARG_TYPE');
  if (
    o.timeoutMs !== undefined &&
    (typeof o.timeoutMs !== 'number' || !Number.isFinite(o.timeoutMs) || o.timeoutMs <= 0 || o.timeoutMs > 2 ** 31 - 1)
  )
    throw new InvalidArgumentError('options.timeoutMs must be a positive number of milliseconds', 'ERR_OUT_OF_RANGE');
}
