/**
 * What a restore of a dumped tree waits for: CRIU restores every task and thread with its old
 * id and every connection with its 4-tuple, so those must be free first. Both waits are bounded
 * by time and report what they waited for.
 */
import { NodeCriuError } from '../errors';
import { conflictingSockets } from './process-criu';
import { describeTask, isPidFree, ProcessMigrationError, waitForPidFree } from './process-errors';
import { readTreeTasks } from './process-images';

/** How long a restore waits for the dumped tree's task ids to become free. */
export const TREE_FREE_TIMEOUT_MS = 30000;
/** How long a restore waits for sockets that already hold the moved 4-tuples to go away. */
const CONFLICTS_TIMEOUT_MS = 10000;
const CONFLICTS_POLL_MS = 200;

/**
 * CRIU restores every task AND every thread with its original id (clone3 set_tid) and fails if
 * one is taken: the root's pid ("Can't fork") or any thread id ("Unable to create a thread: -17",
 * which also fails the rollback while it lasts). The dump's SIGKILL leaves the tasks as zombies
 * until reaped, and once they are gone their ids are free for any new process: pids wrap around,
 * and a short-lived process can hold one of them at the moment of the restore
 * (docs/reliability/soak.md). Waits (bounded) until every id of the dumped tree is free;
 * `onWait` hears which ones it waits for (described: who holds them). Resolves with the ones
 * still taken at the end, described.
 */
export async function waitForTreeFree(
  dumpDir: string,
  onWait?: (taken: string[]) => void,
  timeoutMs = TREE_FREE_TIMEOUT_MS,
): Promise<string[]> {
  const tids = readTreeTasks(dumpDir).tids;
  const busy = tids.filter((tid) => !isPidFree(tid));
  if (busy.length === 0) return [];
  onWait?.(busy.map(describeTask));
  const deadline = performance.now() + timeoutMs;
  const taken: string[] = [];
  for (const tid of busy) {
    if (!(await waitForPidFree(tid, Math.max(0, deadline - performance.now())))) taken.push(describeTask(tid));
  }
  return taken;
}

/**
 * Waits (bounded) until `netns` has no socket with one of `tuples` (see conflictingSockets:
 * CRIU's restore fails on them with "Unable to open fd=N"); `onFound` hears the first finding.
 * Resolves with what is still there, summarised.
 */
export async function waitForNoConflicts(
  netns: string | undefined,
  tuples: Set<string>,
  onFound: (sockets: string[]) => void,
): Promise<string[]> {
  let found = await conflictingSockets(netns, tuples);
  if (found.length === 0) return [];
  onFound(found);
  const deadline = performance.now() + CONFLICTS_TIMEOUT_MS;
  while (found.length > 0 && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, CONFLICTS_POLL_MS));
    found = await conflictingSockets(netns, tuples);
  }
  return found;
}

type Emit = (detail: Record<string, unknown>) => void;

/**
 * Before the dump, the server still running: the target namespace must have no socket with the
 * connections' 4-tuples (only leftovers of earlier connections can; the address is not there
 * yet). Waited for; throws ERR_MIGRATION_TUPLE_IN_USE (phase check, server untouched).
 */
export async function checkTargetTuples(
  netns: string | undefined,
  tuples: Set<string>,
  emit: Emit,
  pid: number,
): Promise<void> {
  const conflicts = await waitForNoConflicts(netns, tuples, (sockets) =>
    emit({ state: 'conflicting-sockets', sockets }),
  );
  if (conflicts.length > 0) {
    throw new ProcessMigrationError(
      `the target namespace already has sockets with the 4-tuples of connections to restore (${conflicts.join(', ')}); CRIU cannot restore those (EADDRNOTAVAIL); the server keeps running on the source`,
      { code: 'ERR_MIGRATION_TUPLE_IN_USE', phase: 'check', serverOn: 'source', pid },
    );
  }
}

/**
 * Just before the restore, both at once: the dumped tree's task ids free again, and no socket in
 * the target with a moved 4-tuple (one may have come up since checkTargetTuples). Throws
 * ERR_MIGRATION_TUPLE_IN_USE (a NodeCriuError: the caller rolls back).
 */
export async function waitBeforeRestore(
  dumpDir: string,
  netns: string | undefined,
  tuples: Set<string>,
  emit: Emit,
): Promise<void> {
  const [, conflicts] = await Promise.all([
    waitForTreeFree(dumpDir, (taken) => emit({ state: 'waiting-for-ids', taken })),
    waitForNoConflicts(netns, tuples, (sockets) => emit({ state: 'conflicting-sockets', sockets })),
  ]);
  if (conflicts.length > 0) {
    throw new NodeCriuError(
      `the target namespace already has sockets with the 4-tuples of connections to restore (${conflicts.join(', ')}); CRIU cannot restore those (EADDRNOTAVAIL)`,
      { code: 'ERR_MIGRATION_TUPLE_IN_USE' },
    );
  }
}
