/** The public types of migrateProcess and their validation (before anything is touched). */

import type { CriuOptions } from '../criu';
import { InvalidArgumentError } from '../errors';
import { procState } from '../sys/proc';
import { describeFailure, ProcessMigrationError } from './process-errors';
import type { CriuDumpStats, CriuRestoreStats } from './process-images';

export interface ProcessMigrationProgress {
  phase: string;
  detail?: Record<string, unknown>;
}

export interface ProcessMigrationOptions {
  /** Root of the process tree to move. */
  pid: number;
  /** The network namespace the tree runs in (a /run/netns/NAME path); default: our own. */
  source?: { netns?: string };
  /** The network namespace to restore it into; default: our own. */
  target?: { netns?: string };
  /** Created 0700 if missing; source/ and target/ (each with pre-N/ and dump/) go inside. */
  imagesDir: string;
  /** How pages reach the target: a copied directory (default) or CRIU's page server. */
  transfer?: 'directory' | 'page-server';
  /**
   * Pre-dumps while the server runs (default on, bounded). Needs CRIU memory tracking
   * (CONFIG_MEM_SOFT_DIRTY); without it they are skipped (CRIU 4.2.1 aborts a pre-dump then).
   */
  preDump?: false | { maxIterations?: number; minPages?: number };
  /** Moves the service address to the target; called after the final dump, before restore. */
  moveAddress?: () => Promise<void>;
  /** Moves it back to the source; called only when rolling back after moveAddress ran. */
  moveAddressBack?: () => Promise<void>;
  criuPath?: string;
  /** Extra CRIU options for the dump and the restores (e.g. { shellJob: true }). */
  criuOptions?: CriuOptions;
  onProgress?: (event: ProcessMigrationProgress) => void;
  /**
   * Honoured between phases: CRIU is never killed while it holds the task (that could leave it
   * stopped with a parasite inside). An abort before the dump leaves everything untouched; after
   * the dump it rolls the server back onto the source.
   */
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface ProcessMigrationResult {
  /** pid of the restored root on the target (CRIU restores the original pid). */
  restoredPid: number;
  iterations: Array<{ index: number; pagesWritten?: number; ms: number }>;
  /** Milliseconds per phase. */
  phases: Record<'preDump' | 'dump' | 'transfer' | 'moveAddress' | 'restore' | 'total', number>;
  /** From the final dump's freeze until the restored task resumed (dump+transfer+move+restore). */
  downtimeMs: number;
  /** Whether CRIU can track memory changes here (if not, pre-dumps were skipped). */
  memoryTracking: boolean;
  /** CRIU's own statistics of the final dump (stats-dump), when readable. */
  dumpStats?: CriuDumpStats;
  /** CRIU's own statistics of the restore on the target (stats-restore), when readable. */
  restoreStats?: CriuRestoreStats;
  /**
   * Parts of the phases, ms: lockPrepare (before the dump, the server running), hold (the target
   * takes the connections' tuples), restoreWaits (the dumped ids and 4-tuples free on the target),
   * criuRestore (CRIU's restore call), release (the target's hold lifted).
   */
  steps: Record<'lockPrepare' | 'hold' | 'restoreWaits' | 'criuRestore' | 'release', number>;
  transfer: 'directory' | 'page-server';
  /** Bytes of images written by the final dump (pages-*.img). */
  pagesBytes: number;
  /** Where the restore read its images from. */
  imagesDir: string;
}

const KEYS = new Set([
  'pid',
  'source',
  'target',
  'imagesDir',
  'transfer',
  'preDump',
  'moveAddress',
  'moveAddressBack',
  'criuPath',
  'criuOptions',
  'onProgress',
  'signal',
  'timeoutMs',
]);

function checkFunction(value: unknown, name: string): void {
  if (value !== undefined && typeof value !== 'function')
    throw new InvalidArgumentError(`options.${name} must be a function`, 'ERR_INVALID_ARG_TYPE');
}

function checkSide(value: unknown, name: string): void {
  if (value === undefined) return;
  if (typeof value !== 'object' || value === null)
    throw new InvalidArgumentError(`options.${name} must be an object`, 'ERR_INVALID_ARG_TYPE');
  for (const key of Object.keys(value))
    if (key !== 'netns') throw new InvalidArgumentError(`options.${name}: unknown option '${key}'`);
  const netns = (value as { netns?: unknown }).netns;
  if (netns !== undefined && (typeof netns !== 'string' || netns === '')) {
    throw new InvalidArgumentError(`options.${name}.netns must be a non-empty path`, 'ERR_INVALID_ARG_TYPE');
  }
}

export function validateProcessMigrationOptions(options: unknown): asserts options is ProcessMigrationOptions {
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o))
    if (!KEYS.has(key)) throw new InvalidArgumentError(`options: unknown option '${key}'`);
  if (!Number.isInteger(o.pid) || (o.pid as number) < 1)
    throw new InvalidArgumentError(`options.pid must be a positive integer, got ${String(o.pid)}`, 'ERR_OUT_OF_RANGE');
  if (typeof o.imagesDir !== 'string' || o.imagesDir === '')
    throw new InvalidArgumentError('options.imagesDir must be a non-empty path', 'ERR_INVALID_ARG_TYPE');
  checkSide(o.source, 'source');
  checkSide(o.target, 'target');
  if (o.transfer !== undefined && o.transfer !== 'directory' && o.transfer !== 'page-server') {
    throw new InvalidArgumentError(`options.transfer must be 'directory' or 'page-server', got ${String(o.transfer)}`);
  }
  if (o.preDump !== undefined && o.preDump !== false) {
    if (typeof o.preDump !== 'object' || o.preDump === null)
      throw new InvalidArgumentError('options.preDump must be false or an object', 'ERR_INVALID_ARG_TYPE');
    const { maxIterations, minPages, ...rest } = o.preDump as Record<string, unknown>;
    if (Object.keys(rest).length > 0)
      throw new InvalidArgumentError(`options.preDump: unknown option '${Object.keys(rest)[0]}'`);
    if (
      maxIterations !== undefined &&
      (!Number.isInteger(maxIterations) || (maxIterations as number) < 1 || (maxIterations as number) > 32)
    ) {
      throw new InvalidArgumentError(
        'options.preDump.maxIterations must be an integer from 1 to 32',
        'ERR_OUT_OF_RANGE',
      );
    }
    if (minPages !== undefined && (!Number.isInteger(minPages) || (minPages as number) < 0)) {
      throw new InvalidArgumentError('options.preDump.minPages must be a non-negative integer', 'ERR_OUT_OF_RANGE');
    }
  }
  checkFunction(o.moveAddress, 'moveAddress');
  checkFunction(o.moveAddressBack, 'moveAddressBack');
  checkFunction(o.onProgress, 'onProgress');
  if (o.criuPath !== undefined && (typeof o.criuPath !== 'string' || o.criuPath === '')) {
    throw new InvalidArgumentError('options.criuPath must be a non-empty string', 'ERR_INVALID_ARG_TYPE');
  }
  if (o.criuOptions !== undefined && (typeof o.criuOptions !== 'object' || o.criuOptions === null)) {
    throw new InvalidArgumentError('options.criuOptions must be an object', 'ERR_INVALID_ARG_TYPE');
  }
  for (const key of ['pid', 'imagesDir', 'parentImg', 'ps', 'leaveRunning', 'leaveStopped'] as const) {
    if (o.criuOptions !== undefined && (o.criuOptions as Record<string, unknown>)[key] !== undefined) {
      throw new InvalidArgumentError(`options.criuOptions.${key} is set by migrateProcess itself`);
    }
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
    throw new InvalidArgumentError('options.signal must be an AbortSignal', 'ERR_INVALID_ARG_TYPE');
  if (
    o.timeoutMs !== undefined &&
    (typeof o.timeoutMs !== 'number' || !Number.isFinite(o.timeoutMs) || o.timeoutMs <= 0 || o.timeoutMs > 2 ** 31 - 1)
  ) {
    throw new InvalidArgumentError('options.timeoutMs must be a positive number of milliseconds', 'ERR_OUT_OF_RANGE');
  }
}

/** The pid exists and is not a zombie; else ERR_PID_NOT_FOUND. */
export function checkPid(pid: number): void {
  const state = procState(pid);
  if (state === undefined || state === 'Z' || state === 'X') {
    throw new ProcessMigrationError(`process ${pid} not found${state ? ' (it has exited)' : ''}`, {
      code: 'ERR_PID_NOT_FOUND',
      phase: 'check',
      serverOn: 'none',
    });
  }
}

/** A dump that failed: ERR_MIGRATION_DUMP_FAILED, saying whether the process still runs on the source. */
export function dumpFailed(pid: number, error: unknown, what = ''): ProcessMigrationError {
  let alive = true;
  try {
    checkPid(pid);
  } catch {
    alive = false;
  }
  return new ProcessMigrationError(
    `CRIU could not dump process ${pid}${what}: ${describeFailure(error)}; ${alive ? 'it keeps running on the source' : 'it is no longer running'}`,
    { code: 'ERR_MIGRATION_DUMP_FAILED', phase: 'dump', serverOn: alive ? 'source' : 'none', pid, cause: error },
  );
}
