/**
 * Errors of the whole-process route. A migration that fails says where the server runs now
 * (`serverOn`): 'source' when it never stopped or was restored there again, 'target' when only
 * a later step (cleanup) failed, 'none' when even the rollback failed (the images are kept so it
 * can be restored by hand: `node-criu restore --images-dir <imagesDir> --netns <source>`).
 */
import * as fs from 'node:fs';

import { NodeCriuError } from '../errors';

export type ProcessMigrationPhase = 'check' | 'preDump' | 'dump' | 'transfer' | 'moveAddress' | 'restore' | 'rollback';

export interface ProcessMigrationErrorDetails {
  code: string;
  phase: ProcessMigrationPhase;
  serverOn: 'source' | 'target' | 'none';
  /** pid of the server where it runs now (the original pid after a dump failure or rollback). */
  pid?: number;
  /** The images a manual restore would use, when the process is not running anywhere. */
  imagesDir?: string;
  /** The rollback's own failure, when there was one. */
  rollbackError?: unknown;
  cause?: unknown;
}

/**
 * code: ERR_MIGRATION_DUMP_FAILED (CRIU failed to dump; the server kept running on the source),
 * ERR_MIGRATION_ROLLED_BACK (a later step failed; the server was restored on the source),
 * ERR_MIGRATION_LOST (the rollback failed too), ERR_MIGRATION_ABORTED (signal/timeout before the
 * dump: nothing was touched), ERR_PID_NOT_FOUND, ERR_NETNS_NOT_FOUND (also when the target
 * namespace vanished before the dump), ERR_NETNS_MISMATCH (the process runs in another namespace
 * than source.netns), ERR_NSENTER_NOT_FOUND, or an errno name ('ENOSPC', 'EACCES', 'EROFS') when
 * the images directory or CRIU's wrapper in the temporary directory cannot be written (phase
 * 'check', nothing touched). A missing CRIU is the Criu client's CriuConnectionError
 * ERR_CRIU_NOT_FOUND (nothing touched either).
 */
export class ProcessMigrationError extends NodeCriuError {
  readonly phase: ProcessMigrationPhase;
  readonly serverOn: 'source' | 'target' | 'none';
  readonly pid?: number;
  readonly imagesDir?: string;
  readonly rollbackError?: unknown;

  constructor(message: string, details: ProcessMigrationErrorDetails) {
    super(message, { code: details.code, cause: details.cause });
    this.phase = details.phase;
    this.serverOn = details.serverOn;
    if (details.pid !== undefined) this.pid = details.pid;
    if (details.imagesDir !== undefined) this.imagesDir = details.imagesDir;
    if (details.rollbackError !== undefined) this.rollbackError = details.rollbackError;
  }
}

/**
 * The most telling line of a CRIU failure: CRIU's own cr_errmsg is its FIRST error line, which
 * here is always the harmless "Can't setup RLIMIT_NOFILE"; the last error line of its log says
 * why the operation failed.
 */
export function describeFailure(error: unknown): string {
  const e = error as { message?: string; logTail?: string; logFile?: string };
  const lines = (e.logTail ?? '').split('\n').filter((line) => /Error \(/.test(line) && !/RLIMIT_NOFILE/.test(line));
  const reason = lines.length > 0 ? lines.map((line) => line.replace(/^\([\d.]+\)\s*/, '')).slice(-2).join(' / ') : undefined;
  const message = e.message ?? String(error);
  return reason !== undefined ? `${reason}${e.logFile ? ` (log: ${e.logFile})` : ''}` : message;
}

/**
 * Whether the page server (a child of the target's swrk, which reaps it only on WAIT_PID) has
 * exited with a failure: a zombie whose exit code (/proc/PID/stat field 52) is not 0, or gone.
 */
export function pageServerFailed(pid: number): boolean {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return true;
  }
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] !== 'Z') return false;
  return Number(fields[49]) !== 0;
}

/** Waits (bounded, 10 s) until no process has `pid`, zombies included. */
export async function waitForPidFree(pid: number): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
