/**
 * Whole-process live migration through CRIU (issue #5): pre-dumps while the server runs (when
 * CRIU can track memory), a final dump with its TCP connections (tcp_established, nftables lock),
 * the images carried to the target (a copied directory, or CRIU's page server), the service
 * address moved by the caller's hook, and a restore inside the target's network namespace.
 *
 * Failure design (the server is never lost, and its peers never see a reset):
 * - Anything before or during the final dump fails: CRIU resumes the task where it was and
 *   removes its network lock (CRIU does this itself unless leave_stopped, which we never set), so
 *   the server keeps serving on the source; we check the pid is alive and say so.
 * - Anything after the dump fails (transfer, moveAddress, target restore, an abort): the dump's
 *   images are complete and the source's connections are still held by CRIU's nftables lock, so
 *   we move the address back (moveAddressBack) and restore the same images on the source. The
 *   peers see only a longer pause. Only if that restore fails too is the process not running
 *   (ERR_MIGRATION_LOST; the images stay for a manual restore).
 * We chose restore-on-source over dumping with leave_running: with leave_running the source copy
 * keeps running (and talking) while the target copy starts, so both would own the connections.
 *
 * Around the restore: from the address move until the restore has succeeded, the target
 * namespace holds the moved 4-tuples with a copy of CRIU's lock table (else a peer's
 * retransmission meets an address with no socket and gets RST). A target CRIU that dies late can
 * leave a half-restored copy there; the rollback kills it while the hold still drops its packets.
 * In page-server mode a page server that dies mid-dump would block the dump (and the frozen task)
 * forever, so a watchdog ends the target side, the dump fails and CRIU resumes the task.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { locateCriu, type CriuOptions, type PageServerChild } from '../criu';
import { describeValue, NodeCriuError } from '../errors';
import { procStatFields } from '../proc';
import {
  checkNetns,
  checkTaskNetns,
  conflictingSockets,
  copyLockTable,
  criuInNetns,
  criuLockTables,
  deleteTables,
  processTcpTuples,
  type NetnsCriu,
} from './process-criu';
import {
  describeFailure,
  describeTask,
  isPidFree,
  pageServerFailed,
  ProcessMigrationError,
  waitForPidFree,
  type ProcessMigrationPhase,
} from './process-errors';
import {
  copyImages,
  freshDir,
  openPageChannel,
  pagesBytes,
  prepareLayout,
  readDumpStats,
  readTreePids,
  readTreeTasks,
  type ImagesLayout,
  type PageChannel,
} from './process-images';
import {
  checkPid,
  validateProcessMigrationOptions,
  type ProcessMigrationOptions,
  type ProcessMigrationResult,
} from './process-options';

export type { ProcessMigrationOptions, ProcessMigrationResult, ProcessMigrationProgress } from './process-options';
export { describeFailure };

const PAGE_SIZE = 4096;
const DEFAULT_MAX_PRE_DUMPS = 5;
/** phaul's rule: a pre-dump that copied fewer pages than this is good enough. */
const DEFAULT_MIN_PAGES = 64;

type Phases = ProcessMigrationResult['phases'];

/**
 * phaul's rule for ending the pre-dump loop: stop when the last pre-dump copied little (fewer
 * than `minPages`), or when the copies stop shrinking (the task dirties memory as fast as we copy
 * it, so another round would not shorten the final, frozen one).
 */
export function preDumpsAreDone(pagesWritten: number, previous: number | undefined, minPages: number): boolean {
  return pagesWritten < minPages || (previous !== undefined && pagesWritten >= previous);
}

/** How long a restore waits for the dumped tree's task ids to become free. */
const TREE_FREE_TIMEOUT_MS = 30000;
/** Restores of the same images on the source before the server counts as lost. */
const ROLLBACK_ATTEMPTS = 3;
/** How long a restore waits for sockets that already hold the moved 4-tuples to go away. */
const CONFLICTS_TIMEOUT_MS = 10000;

/**
 * CRIU restores every task AND every thread with its original id (clone3 set_tid) and fails if
 * one is taken: the root's pid ("Can't fork") or any thread id ("Unable to create a thread: -17",
 * which also fails the rollback while it lasts). The dump's SIGKILL leaves the tasks as zombies
 * until reaped (the root by its parent, the others by init, here only every ~2 s), and once they
 * are gone their thread ids are free for any new process: pid_max is 32768 here, so on a busy
 * machine (thousands of short `nft`/`ip`/compiler processes a minute) the ids wrap around within
 * minutes and a short-lived process can hold one of them at the moment of the restore. Waits
 * (bounded) until every id of the dumped tree is free; `onWait` hears which ones it waits for
 * (described: who holds them). Returns the ones still taken at the end, described.
 */
async function waitForTreeFree(
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

class Migration {
  readonly phases: Phases = { preDump: 0, dump: 0, transfer: 0, moveAddress: 0, restore: 0, total: 0 };
  readonly iterations: ProcessMigrationResult['iterations'] = [];
  readonly signal: AbortSignal | undefined;
  readonly transfer: 'directory' | 'page-server';
  readonly base: CriuOptions;
  /** parent_img for the final dump (set when pre-dumps ran). */
  parent: string | undefined;
  moved = false;
  memoryTracking = false;
  /** Our copy of CRIU's lock in the target namespace, held from moveAddress until the restore. */
  hold: string | undefined;
  /** The 4-tuples of the process's connections (read before the dump), to find sockets that would block their restore. */
  tuples = new Set<string>();
  /**
   * The target namespace's identity, taken while it certainly exists: it may vanish midway
   * (`ip netns del`, the target "host" failing) while a half-restored copy still runs in it.
   */
  readonly targetNs: { dev: number; ino: number };

  constructor(
    readonly options: ProcessMigrationOptions,
    readonly layout: ImagesLayout,
    readonly source: NetnsCriu,
    readonly target: NetnsCriu,
  ) {
    const signals = [
      options.signal,
      options.timeoutMs !== undefined ? AbortSignal.timeout(options.timeoutMs) : undefined,
    ].filter((s): s is AbortSignal => s !== undefined);
    this.signal = signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    this.transfer = options.transfer ?? 'directory';
    const { dev, ino } = fs.statSync(options.target?.netns ?? '/proc/self/ns/net');
    this.targetNs = { dev, ino };
    this.base = { ...options.criuOptions, tcpEstablished: true, networkLock: 'nftables' };
  }

  emit(phase: string, detail?: Record<string, unknown>): void {
    try {
      this.options.onProgress?.(detail === undefined ? { phase } : { phase, detail });
    } catch {
      // a throwing listener must not break a migration halfway
    }
  }

  async timed<T>(phase: keyof Phases, body: () => Promise<T>, detail?: Record<string, unknown>): Promise<T> {
    this.emit(phase, { state: 'start', ...detail });
    const started = performance.now();
    try {
      return await body();
    } finally {
      const ms = performance.now() - started;
      this.phases[phase] += ms;
      this.emit(phase, { state: 'end', ms: Math.round(ms * 10) / 10 });
    }
  }

  aborted(): boolean {
    return this.signal?.aborted === true;
  }

  abortReason(): Error {
    const reason: unknown = this.signal?.reason;
    return reason instanceof Error
      ? reason
      : new NodeCriuError(`aborted: ${describeValue(reason)}`, { code: 'ABORT_ERR', cause: reason });
  }

  /** Before the dump: nothing was touched yet. */
  checkAbort(phase: ProcessMigrationPhase): void {
    if (!this.aborted()) return;
    throw new ProcessMigrationError(
      `migration aborted before ${phase}: ${this.abortReason().message}; the server keeps running on the source`,
      {
        code: 'ERR_MIGRATION_ABORTED',
        phase,
        serverOn: 'source',
        pid: this.options.pid,
        cause: this.abortReason(),
      },
    );
  }

  /** Pre-dumps while the task runs; copies each to the target side as it goes (pages move early). */
  async preDumps(): Promise<void> {
    const features = await this.source.criu.featureCheck({ memTrack: true });
    this.memoryTracking = features.memTrack === true;
    const plan = this.options.preDump === false ? undefined : (this.options.preDump ?? {});
    if (plan === undefined) return;
    if (!this.memoryTracking) {
      this.emit('preDump', {
        state: 'skipped',
        reason:
          'CRIU cannot track memory changes on this kernel (CONFIG_MEM_SOFT_DIRTY off): every pre-dump would be a full copy and CRIU 4.2 aborts it',
      });
      return;
    }
    const max = plan.maxIterations ?? DEFAULT_MAX_PRE_DUMPS;
    const minPages = plan.minPages ?? DEFAULT_MIN_PAGES;
    let previous: number | undefined;
    await this.timed('preDump', async () => {
      for (let index = 1; index <= max; index++) {
        this.checkAbort('preDump');
        const dir = freshDir(path.join(this.layout.source, `pre-${index}`));
        const started = performance.now();
        await this.source.criu.singlePreDump({
          ...this.base,
          pid: this.options.pid,
          imagesDir: dir,
          trackMem: true,
          ...(this.parent !== undefined ? { parentImg: this.parent } : {}),
        });
        const written = readDumpStats(dir)?.pagesWritten ?? Math.ceil(pagesBytes(dir) / PAGE_SIZE);
        await copyImages(dir, freshDir(path.join(this.layout.target, `pre-${index}`)));
        const ms = performance.now() - started;
        this.iterations.push({ index, pagesWritten: written, ms });
        this.parent = `../pre-${index}`;
        this.emit('preDump', { state: 'iteration', index, pagesWritten: written, ms: Math.round(ms) });
        if (preDumpsAreDone(written, previous, minPages)) break;
        previous = written;
      }
    });
  }

  /** Final dump (pages to the target's page server in that mode). Throws only with the task resumed on the source. */
  async dump(): Promise<{ dumpDir: string; targetDir: string; pageServer?: PageServerChild }> {
    const dumpDir = freshDir(path.join(this.layout.source, 'dump'));
    const targetDir = freshDir(path.join(this.layout.target, 'dump'));
    const chain = this.parent !== undefined ? { parentImg: this.parent, trackMem: true } : {};
    let channel: PageChannel | undefined;
    let pageServer: PageServerChild | undefined;
    try {
      if (this.transfer === 'page-server') {
        channel = await openPageChannel();
        pageServer = await this.target.criu.pageServerChld({
          imagesDir: targetDir,
          ps: { fd: channel.serverFd },
          ...chain,
        });
        channel.closeServerEnd();
        this.emit('transfer', { state: 'page-server', pid: pageServer.pid });
      }
      const ps = channel !== undefined ? { ps: { fd: channel.clientFd } } : {};
      // Page-server mode can be aborted mid-dump safely: killing the page server breaks CRIU's
      // page stream, so the dump fails and CRIU resumes the task on the source. (Killing CRIU
      // itself could leave the task stopped with its parasite inside, so we never do that.)
      const server = pageServer;
      const onAbort = (): void => {
        if (server !== undefined) void server.close();
      };
      this.signal?.addEventListener('abort', onAbort, { once: true });
      // The target's swrk keeps its own copy of the page server's socket, so a page server that
      // dies alone would leave the dumping CRIU (and the frozen task) waiting forever: end the
      // whole target side as soon as the page server exits abnormally.
      const watchdog =
        server === undefined
          ? undefined
          : setInterval(() => {
              if (pageServerFailed(server.pid)) void server.close();
            }, 50);
      try {
        await this.timed('dump', () =>
          this.source.criu.dump({ ...this.base, pid: this.options.pid, imagesDir: dumpDir, ...chain, ...ps }),
        );
      } finally {
        if (watchdog !== undefined) clearInterval(watchdog);
        this.signal?.removeEventListener('abort', onAbort);
      }
    } catch (error) {
      channel?.close();
      await pageServer?.close();
      await new Promise((resolve) => setTimeout(resolve, 50));
      let alive = true;
      try {
        checkPid(this.options.pid);
      } catch {
        alive = false;
      }
      throw new ProcessMigrationError(
        `CRIU could not dump process ${this.options.pid}: ${describeFailure(error)}; ${alive ? 'it keeps running on the source' : 'it is no longer running'}`,
        {
          code: 'ERR_MIGRATION_DUMP_FAILED',
          phase: 'dump',
          serverOn: alive ? 'source' : 'none',
          pid: this.options.pid,
          cause: error,
        },
      );
    }
    channel?.close();
    return { dumpDir, targetDir, ...(pageServer !== undefined ? { pageServer } : {}) };
  }

  /** After the dump: the page server's exit, then the non-page images copied to the target. */
  async carry(dirs: { dumpDir: string; targetDir: string; pageServer?: PageServerChild }): Promise<void> {
    await this.timed('transfer', async () => {
      if (dirs.pageServer !== undefined) {
        // After a successful dump the page server has written everything and exits; bounded
        // so a hung target ends in a rollback instead of an outage.
        const status = await dirs.pageServer.waitPid({ timeoutMs: 30000 });
        if (status.exitCode !== 0) {
          throw new NodeCriuError(`the page server exited with ${status.signal ?? `code ${String(status.exitCode)}`}`, {
            code: 'ERR_PAGE_SERVER_FAILED',
          });
        }
      }
      await copyImages(dirs.dumpDir, dirs.targetDir);
    });
  }

  /**
   * Waits (bounded) until `netns` has no socket with one of the moved connections' 4-tuples
   * (see conflictingSockets: CRIU's restore fails on them with "Unable to open fd=N"); returns
   * what is still there, summarised.
   */
  async waitForNoConflicts(
    netns: string | undefined,
    phase: 'restore' | 'rollback',
    attempt?: number,
  ): Promise<string[]> {
    let found = conflictingSockets(netns, this.tuples);
    if (found.length === 0) return [];
    this.emit(phase, { state: 'conflicting-sockets', sockets: found, ...(attempt !== undefined ? { attempt } : {}) });
    const deadline = performance.now() + CONFLICTS_TIMEOUT_MS;
    while (found.length > 0 && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      found = conflictingSockets(netns, this.tuples);
    }
    return found;
  }

  releaseHold(): void {
    if (this.hold !== undefined) deleteTables(this.options.target?.netns, [this.hold]);
    this.hold = undefined;
  }

  /**
   * After a failed target restore: a target CRIU that died late (the target "host" failing
   * midway) can leave the restored tree behind in the target namespace, stuck or even running,
   * holding the pid the source restore needs. It cannot have exchanged a byte on the moved
   * connections (our hold drops them in both directions), so it is killed while the hold is
   * still in place; whatever it sends while dying is dropped too.
   */
  async removeTargetLeftovers(dumpDir: string): Promise<number[]> {
    const targetNs = this.targetNs;
    const killed: number[] = [];
    for (const pid of readTreePids(dumpDir)) {
      try {
        const ns = fs.statSync(`/proc/${pid}/ns/net`);
        if (ns.ino !== targetNs.ino || ns.dev !== targetNs.dev) continue;
        process.kill(pid, 'SIGKILL');
        killed.push(pid);
      } catch {
        // not there (the normal case: CRIU cleaned up after itself)
      }
    }
    for (const pid of killed) await waitForPidFree(pid);
    if (killed.length > 0) this.emit('rollback', { state: 'removed-target-leftovers', pids: killed });
    return killed;
  }

  /**
   * After a failed restore on the source: a CRIU that failed normally killed what it had made,
   * but one that died (or whose task outlived it) leaves a copy holding the tree's ids. Kills the
   * tasks with the tree's pids in the source namespace that started after `since` (uptime
   * seconds): the original was killed by the dump, so such a task can only be our restore's.
   */
  async removeSourceLeftovers(dumpDir: string, since: number): Promise<number[]> {
    const sourceNs = fs.statSync(this.options.source?.netns ?? '/proc/self/ns/net');
    const killed: number[] = [];
    for (const pid of readTreePids(dumpDir)) {
      try {
        const ns = fs.statSync(`/proc/${pid}/ns/net`);
        if (ns.ino !== sourceNs.ino || ns.dev !== sourceNs.dev) continue;
        const fields = procStatFields(pid);
        if (fields === undefined) continue;
        const startedAt = Number(fields[22 - 3]) / 100; // clock ticks (USER_HZ 100)
        if (startedAt < since) continue;
        process.kill(pid, 'SIGKILL');
        killed.push(pid);
      } catch {
        // not there
      }
    }
    for (const pid of killed) await waitForPidFree(pid);
    if (killed.length > 0) this.emit('rollback', { state: 'removed-source-leftovers', pids: killed });
    return killed;
  }

  /** Puts the server back on the source from `dir`; returns its pid or throws ERR_MIGRATION_LOST. */
  async rollback(phase: ProcessMigrationPhase, cause: unknown, dir: string, dumpDir?: string): Promise<never> {
    this.emit('rollback', { state: 'start', after: phase, reason: describeFailure(cause) });
    if (phase === 'restore' && dumpDir !== undefined) await this.removeTargetLeftovers(dumpDir);
    let rollbackError: unknown;
    if (this.moved && this.options.moveAddressBack !== undefined) {
      try {
        await this.options.moveAddressBack();
      } catch (error) {
        rollbackError = error;
      }
    }
    // The address has left the target (or never arrived): its hold is no longer needed.
    this.releaseHold();
    // The images are complete and the source's connections stay locked by CRIU's table there, so
    // a restore that fails for a passing reason (an id of the tree taken by a short-lived
    // process, a zombie not yet reaped) is tried again, after waiting for the ids and removing
    // whatever the failed attempt left, before the server counts as lost.
    const failures: unknown[] = [];
    let taken: string[] = [];
    let lastConflicts: string[] = [];
    for (let attempt = 1; attempt <= ROLLBACK_ATTEMPTS; attempt++) {
      if (dumpDir !== undefined)
        taken = await waitForTreeFree(dumpDir, (busy) =>
          this.emit('rollback', { state: 'waiting-for-ids', attempt, taken: busy }),
        );
      else
        taken = (await waitForPidFree(this.options.pid, TREE_FREE_TIMEOUT_MS)) ? [] : [describeTask(this.options.pid)];
      const conflicts = await this.waitForNoConflicts(this.options.source?.netns, 'rollback', attempt);
      const since = Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]) - 1;
      let restored: { pid: number };
      try {
        restored = await this.source.criu.restore({
          ...this.base,
          imagesDir: dir,
          logFile: attempt === 1 ? 'criu-rollback.log' : `criu-rollback-${attempt}.log`,
        });
      } catch (error) {
        failures.push(error);
        this.emit('rollback', {
          state: 'attempt-failed',
          attempt,
          reason: describeFailure(error),
          ...(taken.length > 0 ? { taken } : {}),
          ...(conflicts.length > 0 ? { conflicts } : {}),
        });
        lastConflicts = conflicts;
        if (dumpDir !== undefined) await this.removeSourceLeftovers(dumpDir, since);
        continue;
      }
      this.emit('rollback', { state: 'end', pid: restored.pid, attempts: attempt });
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

  async run(): Promise<ProcessMigrationResult> {
    const started = performance.now();
    this.checkAbort('preDump');
    await this.preDumps();
    this.checkAbort('dump');
    // The target may have vanished since the start (its namespace deleted): better to stop here,
    // with the server untouched, than to dump, fail to restore and roll back.
    if (this.options.target?.netns !== undefined) checkNetns(this.options.target.netns, 'target.netns');
    const locksBefore = criuLockTables(this.options.source?.netns);
    this.tuples = processTcpTuples(this.options.pid);
    const dirs = await this.dump();
    // Directory mode: the source's own copy is complete. Page-server mode: the pages are only on
    // the target side (on one machine we can read them; across hosts they would be sent back).
    const rollbackDir = this.transfer === 'page-server' ? dirs.targetDir : dirs.dumpDir;
    try {
      await this.carry(dirs);
    } catch (error) {
      if (this.transfer === 'page-server') await copyImages(dirs.dumpDir, dirs.targetDir).catch(() => undefined);
      return this.rollback('transfer', error, rollbackDir, dirs.dumpDir);
    }
    const locksAfter = criuLockTables(this.options.source?.netns).filter((t) => !locksBefore.includes(t));
    if (this.options.target?.netns !== this.options.source?.netns && locksAfter.length > 0) {
      const name = `node-criu-hold-${this.options.pid}-${randomBytes(3).toString('hex')}`;
      this.hold = copyLockTable(this.options.source?.netns, locksAfter[0], this.options.target?.netns, name);
      if (this.hold === undefined)
        this.emit('moveAddress', {
          state: 'warning',
          reason: 'could not hold the connections in the target namespace (nft missing?); a peer may see a reset',
        });
      else this.emit('moveAddress', { state: 'hold', table: this.hold });
    }
    let phase: ProcessMigrationPhase = 'moveAddress';
    let restoredPid: number;
    try {
      if (this.aborted()) throw this.abortReason();
      if (this.options.moveAddress !== undefined) {
        this.moved = true;
        await this.timed('moveAddress', this.options.moveAddress);
      }
      if (this.aborted()) throw this.abortReason();
      phase = 'restore';
      // On failure the hold stays until the rollback has moved the address back.
      const restored = await this.timed('restore', async () => {
        await waitForTreeFree(dirs.dumpDir, (taken) => this.emit('restore', { state: 'waiting-for-ids', taken }));
        const conflicts = await this.waitForNoConflicts(this.options.target?.netns, 'restore');
        if (conflicts.length > 0) {
          throw new NodeCriuError(
            `the target namespace already has sockets with the 4-tuples of connections to restore (${conflicts.join(', ')}); CRIU cannot restore those (EADDRNOTAVAIL)`,
            { code: 'ERR_MIGRATION_TUPLE_IN_USE' },
          );
        }
        return this.target.criu.restore({ ...this.base, imagesDir: dirs.targetDir });
      });
      restoredPid = restored.pid;
      this.releaseHold();
    } catch (error) {
      return this.rollback(phase, error, rollbackDir, dirs.dumpDir);
    }
    const downtimeMs = this.phases.dump + this.phases.transfer + this.phases.moveAddress + this.phases.restore;
    // CRIU leaves its lock table in the source namespace after a successful dump (so the source
    // never answers the moved connections with RST); the process lives on the target now.
    const stale = criuLockTables(this.options.source?.netns).filter((t) => !locksBefore.includes(t));
    if (stale.length > 0) deleteTables(this.options.source?.netns, stale);
    this.phases.total = performance.now() - started;
    const dumpStats = readDumpStats(dirs.dumpDir);
    const result: ProcessMigrationResult = {
      restoredPid,
      iterations: this.iterations,
      phases: this.phases,
      downtimeMs,
      memoryTracking: this.memoryTracking,
      transfer: this.transfer,
      pagesBytes: pagesBytes(dirs.targetDir),
      imagesDir: dirs.targetDir,
      ...(dumpStats !== undefined ? { dumpStats } : {}),
    };
    this.emit('done', { restoredPid, downtimeMs: Math.round(downtimeMs) });
    return result;
  }
}

/** Moves the process tree rooted at options.pid to the target network namespace (see the file comment). */
export async function migrateProcess(options: ProcessMigrationOptions): Promise<ProcessMigrationResult> {
  validateProcessMigrationOptions(options);
  checkPid(options.pid);
  if (options.source?.netns !== undefined) checkNetns(options.source.netns, 'source.netns');
  if (options.target?.netns !== undefined) checkNetns(options.target.netns, 'target.netns');
  checkTaskNetns(options.pid, options.source?.netns, 'source.netns');
  const command = locateCriu(options.criuPath !== undefined ? { criuPath: options.criuPath } : {});
  let layout: ImagesLayout;
  try {
    layout = prepareLayout(options.imagesDir);
  } catch (error) {
    // Nothing was touched yet: a full, read-only or missing filesystem says so with its errno
    // (kept as the code, whoever reported it), an unsafe directory with its own code.
    const e = error as NodeJS.ErrnoException;
    throw new ProcessMigrationError(`cannot prepare the images directory ${options.imagesDir}: ${e.message}`, {
      code: e.code ?? 'ERR_MIGRATION_IMAGES_DIR',
      phase: 'check',
      serverOn: 'source',
      pid: options.pid,
      cause: error,
    });
  }
  const source = criuInNetns(command.path, options.source?.netns);
  let target: NetnsCriu | undefined;
  try {
    target = criuInNetns(command.path, options.target?.netns);
    return await new Migration(options, layout, source, target).run();
  } finally {
    await source.close();
    await target?.close();
  }
}
