/**
 * Errors of the whole-process route. A migration that fails says where the server runs now
 * (`serverOn`): 'source' when it never stopped or was restored there again, 'target' when only
 * a later step (cleanup) failed, 'none' when even the rollback failed (the images are kept so it
 * can be restored by hand: `node-criu restore --images-dir <imagesDir> --netns <source>`).
 */
import { NodeCriuError } from '../errors';
import { procStatFields, procStatus, STAT, stateLetter, statField } from '../sys/proc';

export type ProcessMigrationPhase = 'check' | 'preDump' | 'dump' | 'transfer' | 'moveAddress' | 'restore' | 'rollback';

export interface ProcessMigrationErrorDetails {
  code: string;
  phase: ProcessMigrationPhase;
  serverOn: 'source' | 'target' | 'none' | 'unknown';
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
 * ERR_MIGRATION_LOST (the rollback failed too), ERR_MIGRATION_UNCERTAIN (two hosts: the channel to
 * the agent was lost after RESTORE was sent; serverOn 'unknown', nothing rolled back), ERR_MIGRATION_ABORTED (signal/timeout before the
 * dump: nothing was touched), ERR_PID_NOT_FOUND, ERR_NETNS_NOT_FOUND (also when the target
 * namespace vanished before the dump), ERR_NETNS_MISMATCH (the process runs in another namespace
 * than source.netns), ERR_NSENTER_NOT_FOUND, ERR_MIGRATION_PRIVATE_MOUNTS (the tree has files open
 * or mapped on mounts private to its mount namespace), ERR_MIGRATION_MOUNT_NAMESPACES (its tasks
 * are in several mount namespaces), ERR_MIGRATION_CRIU_UNREACHABLE (criu is not the same file
 * inside its mount namespace), or an errno name ('ENOSPC', 'EACCES', 'EROFS') when
 * the images directory or CRIU's wrapper in the temporary directory cannot be written (phase
 * 'check', nothing touched). A missing CRIU is the Criu client's CriuConnectionError
 * ERR_CRIU_NOT_FOUND (nothing touched either).
 */
export class ProcessMigrationError extends NodeCriuError {
  readonly phase: ProcessMigrationPhase;
  readonly serverOn: 'source' | 'target' | 'none' | 'unknown';
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
 * The most telling lines of a CRIU failure: CRIU's own cr_errmsg is its FIRST error line, which
 * here is always the harmless "Can't setup RLIMIT_NOFILE". Of the rest, the first says what went
 * wrong (e.g. "Can't bind inet socket: Address already in use", "Unable to create a thread: -17")
 * and the last how the operation ended; the ones between only repeat it ("Unable to open fd=N",
 * "N exited, status=1"), so they are left out.
 */
export function describeFailure(error: unknown): string {
  const e = error as { message?: string; logTail?: string; logFile?: string };
  const lines = (e.logTail ?? '')
    .split('\n')
    .filter((line) => /Error \(/.test(line) && !/RLIMIT_NOFILE/.test(line))
    .map((line) => line.replace(/^\([\d.]+\)\s*/, ''));
  const reason =
    lines.length === 0 ? undefined : (lines.length <= 2 ? lines : [lines[0], lines[lines.length - 1]]).join(' / ');
  const message = e.message ?? String(error);
  return reason !== undefined ? `${reason}${e.logFile ? ` (log: ${e.logFile})` : ''}` : message;
}

/**
 * Whether the page server (a child of the target's swrk, which reaps it only on WAIT_PID) has
 * exited with a failure: a zombie whose exit code (/proc/PID/stat field 52) is not 0, or gone.
 */
export function pageServerFailed(pid: number): boolean {
  let fields: string[] | undefined;
  try {
    fields = procStatFields(pid);
  } catch {
    return true;
  }
  if (fields === undefined) return true;
  if (statField(fields, STAT.state) !== 'Z') return false;
  return Number(statField(fields, STAT.exitCode)) !== 0;
}

/** Whether no task (process or thread, zombies included) has the id `pid`. */
export function isPidFree(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'EPERM';
  }
}

/**
 * Waits (bounded by time, not by turns: a loaded machine runs fewer of them) until no task has
 * the id `pid` (a process or a thread id; zombies included). Returns whether it is free.
 */
export async function waitForPidFree(pid: number, timeoutMs = 10000): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (isPidFree(pid)) return true;
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Who has the task id `tid` now, for error messages: "1234 (nft, thread of 1234)". */
export function describeTask(tid: number): string {
  try {
    const status = procStatus(tid);
    if (status === undefined) return `${tid}`;
    const name = status.get('Name') ?? '?';
    const tgid = status.get('Tgid') ?? '?';
    const state = stateLetter(status) ?? '?';
    return `${tid} (${name}, state ${state}${tgid !== String(tid) ? `, a thread of ${tgid}` : ''})`;
  } catch {
    return `${tid}`;
  }
}
