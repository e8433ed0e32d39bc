/**
 * Putting the server back on the source after a failure that followed the dump: the images are
 * complete and the lock in the source namespace still holds the connections, so the same
 * images are restored there (tried again for passing reasons) after removing whatever a failed
 * restore left behind. Only if every attempt fails is the server lost (ERR_MIGRATION_LOST).
 */
import type { Criu, CriuOptions } from '../criu';
import { namespaceId, OWN_NETNS, pidNetnsId, sameNamespace, type NamespaceId } from '../sys/netns';
import { startTimeOf, uptimeSeconds, USER_HZ } from '../sys/proc';
import {
  describeFailure,
  describeTask,
  ProcessMigrationError,
  waitForPidFree,
  type ProcessMigrationPhase,
} from './process-errors';
import { readTreePids } from './process-images';
import type { ProcessMigrationOptions } from './process-options';
import { TREE_FREE_TIMEOUT_MS, waitForNoConflicts, waitForTreeFree } from './process-waits';

/** Restores of the same images on the source before the server counts as lost. */
const ROLLBACK_ATTEMPTS = 3;

/** What the rollback needs of a migration in progress. */
export interface RollbackContext {
  readonly options: ProcessMigrationOptions;
  readonly base: CriuOptions;
  /** base plus the external files the dump declared (inherit_fd). */
  readonly restoreBase: CriuOptions;
  readonly source: { criu: Criu };
  /** The target namespace's identity, taken while it certainly existed. */
  readonly targetNs: NamespaceId;
  /** The moved connections' 4-tuples (sockets holding them block a restore). */
  readonly tuples: Set<string>;
  /** Whether the caller's moveAddress ran (then moveAddressBack runs). */
  readonly moved: boolean;
  emit(phase: string, detail?: Record<string, unknown>): void;
  /** Releases the lock's hold in the target namespace, if any. */
  releaseHold(): Promise<void>;
  /** Releases the source's lock once the restore there succeeded (the restored sockets take the packets). */
  releaseSourceLock(): Promise<void>;
}

/** SIGKILLs the tree's pids that pass `mine`, waits until they are free; resolves with them. */
async function killTreeTasks(dumpDir: string, mine: (pid: number) => boolean): Promise<number[]> {
  const killed: number[] = [];
  for (const pid of readTreePids(dumpDir)) {
    try {
      if (!mine(pid)) continue;
      process.kill(pid, 'SIGKILL');
      killed.push(pid);
    } catch {
      // not there (the normal case: CRIU cleaned up after itself)
    }
  }
  for (const pid of killed) await waitForPidFree(pid);
  return killed;
}

/**
 * After a failed target restore: a target CRIU that died late (the target "host" failing
 * midway) can leave the restored tree behind in the target namespace, stuck or even running,
 * holding the pid the source restore needs. It cannot have exchanged a byte on the moved
 * connections (our hold drops them in both directions), so it is killed while the hold is
 * still in place; whatever it sends while dying is dropped too.
 */
async function removeTargetLeftovers(ctx: RollbackContext, dumpDir: string): Promise<number[]> {
  const killed = await killTreeTasks(dumpDir, (pid) => {
    const ns = pidNetnsId(pid);
    return ns !== undefined && sameNamespace(ns, ctx.targetNs);
  });
  if (killed.length > 0) ctx.emit('rollback', { state: 'removed-target-leftovers', pids: killed });
  return killed;
}

/**
 * After a failed restore on the source: a CRIU that failed normally killed what it had made,
 * but one that died (or whose task outlived it) leaves a copy holding the tree's ids. Kills the
 * tasks with the tree's pids in the source namespace that started after `since` (uptime
 * seconds): the original was killed by the dump, so such a task can only be our restore's.
 */
async function removeSourceLeftovers(ctx: RollbackContext, dumpDir: string, since: number): Promise<number[]> {
  const sourceNs = namespaceId(ctx.options.source?.netns ?? OWN_NETNS);
  const killed = await killTreeTasks(dumpDir, (pid) => {
    const ns = pidNetnsId(pid);
    const start = startTimeOf(pid);
    return ns !== undefined && sameNamespace(ns, sourceNs) && start !== undefined && Number(start) / USER_HZ >= since;
  });
  if (killed.length > 0) ctx.emit('rollback', { state: 'removed-source-leftovers', pids: killed });
  return killed;
}

/** Puts the server back on the source from `dir`; always throws (ERR_MIGRATION_ROLLED_BACK or ERR_MIGRATION_LOST). */
export async function rollback(
  ctx: RollbackContext,
  phase: ProcessMigrationPhase,
  cause: unknown,
  dir: string,
  dumpDir?: string,
): Promise<never> {
  const { options } = ctx;
  ctx.emit('rollback', { state: 'start', after: phase, reason: describeFailure(cause) });
  if (phase === 'restore' && dumpDir !== undefined) await removeTargetLeftovers(ctx, dumpDir);
  let rollbackError: unknown;
  if (ctx.moved && options.moveAddressBack !== undefined) {
    try {
      await options.moveAddressBack();
    } catch (error) {
      rollbackError = error;
    }
  }
  // The address has left the target (or never arrived): its hold is no longer needed.
  await ctx.releaseHold();
  // The images are complete and the source's connections stay locked there, so
  // a restore that fails for a passing reason (an id of the tree taken by a short-lived
  // process, a zombie not yet reaped) is tried again, after waiting for the ids and removing
  // whatever the failed attempt left, before the server counts as lost.
  const failures: unknown[] = [];
  let taken: string[] = [];
  let lastConflicts: string[] = [];
  for (let attempt = 1; attempt <= ROLLBACK_ATTEMPTS; attempt++) {
    if (dumpDir !== undefined)
      taken = await waitForTreeFree(dumpDir, (busy) =>
        ctx.emit('rollback', { state: 'waiting-for-ids', attempt, taken: busy }),
      );
    else taken = (await waitForPidFree(options.pid, TREE_FREE_TIMEOUT_MS)) ? [] : [describeTask(options.pid)];
    const conflicts = await waitForNoConflicts(options.source?.netns, ctx.tuples, (sockets) =>
      ctx.emit('rollback', { state: 'conflicting-sockets', sockets, attempt }),
    );
    const since = uptimeSeconds() - 1;
    let restored: { pid: number };
    try {
      restored = await ctx.source.criu.restore({
        ...ctx.restoreBase,
        imagesDir: dir,
        logFile: attempt === 1 ? 'criu-rollback.log' : `criu-rollback-${attempt}.log`,
      });
    } catch (error) {
      failures.push(error);
      ctx.emit('rollback', {
        state: 'attempt-failed',
        attempt,
        reason: describeFailure(error),
        ...(taken.length > 0 ? { taken } : {}),
        ...(conflicts.length > 0 ? { conflicts } : {}),
      });
      lastConflicts = conflicts;
      if (dumpDir !== undefined) await removeSourceLeftovers(ctx, dumpDir, since);
      continue;
    }
    await ctx.releaseSourceLock();
    ctx.emit('rollback', { state: 'end', pid: restored.pid, attempts: attempt });
    throw new ProcessMigrationError(
      `migration failed during ${phase} (${describeFailure(cause)}); the server was restored on the source as pid ${restored.pid}${attempt > 1 ? ` (at attempt ${attempt}: ${failures.map(describeFailure).join('; ')})` : ''}`,
      {
        code: 'ERR_MIGRATION_ROLLED_BACK',
        phase,
        serverOn: 'source',
        pid: restored.pid,
        cause,
        ...(rollbackError ? { rollbackError } : {}),
      },
    );
  }
  const last = failures[failures.length - 1];
  throw new ProcessMigrationError(
    `migration failed during ${phase} (${describeFailure(cause)}) and restoring on the source failed too, ${ROLLBACK_ATTEMPTS} times (${failures.map(describeFailure).join('; ')})${taken.length > 0 ? `; task ids of the tree still taken: ${taken.join(', ')}` : ''}${lastConflicts.length > 0 ? `; sockets with the connections' 4-tuples in the source namespace: ${lastConflicts.join(', ')}` : ''}; the images are kept in ${dir}`,
    { code: 'ERR_MIGRATION_LOST', phase: 'rollback', serverOn: 'none', imagesDir: dir, cause, rollbackError: last },
  );
}
