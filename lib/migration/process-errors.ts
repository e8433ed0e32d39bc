/**
 * Errors of the whole-process route. A migration that fails says where the server runs now
 * (`serverOn`): 'source' when it never stopped or was restored there again, 'target' when only
 * a later step (cleanup) failed, 'none' when even the rollback failed (the images are kept so it
 * can be restored by hand: `node-criu restore --images-dir <imagesDir> --netns <source>`).
 */
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
 * dump: nothing was touched), ERR_PID_NOT_FOUND, ERR_NETNS_NOT_FOUND, ERR_NETNS_MISMATCH (the
 * process runs in another namespace than source.netns), ERR_NSENTER_NOT_FOUND. A missing CRIU
 * is the Criu client's CriuConnectionError ERR_CRIU_NOT_FOUND (nothing touched either).
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
