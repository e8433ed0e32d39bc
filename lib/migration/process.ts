/**
 * Whole-process live migration through CRIU: pre-dumps while the server runs (when
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
import * as path from 'node:path';

import { locateCriu, type CriuOptions, type PageServerChild } from '../criu';
import { describeValue, NodeCriuError } from '../errors';
import { namespaceId, OWN_NETNS, type NamespaceId } from '../sys/netns';
import type { TreeSockets } from './process-criu';
import {
  checkNetns,
  checkTaskNetns,
  criuForTask,
  criuInNetns,
  processTcpSockets,
  type NetnsCriu,
  type TaskCriu,
} from './process-criu';
import { describeFailure, ProcessMigrationError, type ProcessMigrationPhase } from './process-errors';
import {
  copyImages,
  freshDir,
  pagesBytes,
  prepareLayout,
  readDumpStats,
  readRestoreStats,
  type ImagesLayout,
  type PageChannel,
} from './process-images';
import {
  checkPid,
  dumpFailed,
  validateProcessMigrationOptions,
  type ProcessMigrationOptions,
  type ProcessMigrationResult,
} from './process-options';
import {
  CriuMigrationLock,
  lockForMigration,
  lockingHandlers,
  NftablesMigrationLock,
  type ConnectionLock,
} from './process-lock';
import { guardPageServer, pageServerDone, startPageServer } from './process-page-server';
import { externalFilesFor, type HeldFiles } from './process-mounts';
import { preDumpsAreDone, runPreDumps } from './process-predump';
import {
  migrateProcessRemote,
  type RemoteProcessMigrationOptions,
  type RemoteProcessMigrationResult,
} from './process-remote';
import { rollback, type RollbackContext } from './process-rollback';
import { checkTargetTuples, waitBeforeRestore } from './process-waits';

export type { ProcessMigrationOptions, ProcessMigrationResult, ProcessMigrationProgress } from './process-options';
export type { RemoteProcessMigrationOptions, RemoteProcessMigrationResult } from './process-remote';
export { describeFailure };
export { preDumpsAreDone };

type Phases = ProcessMigrationResult['phases'];

class Migration implements RollbackContext {
  readonly phases: Phases = { preDump: 0, dump: 0, transfer: 0, moveAddress: 0, restore: 0, total: 0 };
  readonly iterations: ProcessMigrationResult['iterations'] = [];
  readonly steps: ProcessMigrationResult['steps'] = {
    lockPrepare: 0,
    hold: 0,
    restoreWaits: 0,
    criuRestore: 0,
    release: 0,
  };
  readonly signal: AbortSignal | undefined;
  readonly transfer: 'directory' | 'page-server';
  base: CriuOptions;
  /** The connections' lock from the freeze until they run again (process-lock.ts). */
  lock: ConnectionLock | undefined;
  /** Every restore's options: base plus the external files given back (process-mounts.ts). */
  restoreBase: CriuOptions;
  held: HeldFiles | undefined;
  /** parent_img for the final dump (set when pre-dumps ran). */
  parent: string | undefined;
  moved = false;
  memoryTracking = false;
  /** The 4-tuples of the tree's connections (read before the dump, again at the freeze), to lock them and to find sockets that would block their restore. */
  tuples = new Set<string>();
  /** The tree's sockets as read before the dump (the lock's engage compares with them). */
  sockets: TreeSockets = { inodes: new Set(), tuples: new Map() };
  /**
   * The target namespace's identity, taken while it certainly exists: it may vanish midway
   * (`ip netns del`, the target "host" failing) while a half-restored copy still runs in it.
   */
  readonly targetNs: NamespaceId;

  constructor(
    readonly options: ProcessMigrationOptions,
    readonly layout: ImagesLayout,
    readonly source: NetnsCriu,
    readonly target: NetnsCriu,
    /** CRIU for the pre-dumps and the dump: `source`, or one inside the task's mount namespace. */
    readonly dumper: TaskCriu,
  ) {
    const signals = [
      options.signal,
      options.timeoutMs !== undefined ? AbortSignal.timeout(options.timeoutMs) : undefined,
    ].filter((s): s is AbortSignal => s !== undefined);
    this.signal = signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    this.transfer = options.transfer ?? 'directory';
    this.targetNs = namespaceId(options.target?.netns ?? OWN_NETNS);
    this.base = { ...options.criuOptions, tcpEstablished: true, networkLock: 'nftables' };
    this.restoreBase = this.base;
  }

  /** Just before the final dump: the dump's `external` and the restores' inherit_fd (process-mounts.ts). */
  externalFiles(): CriuOptions {
    if (this.dumper.mounts.mntns === undefined) return {};
    const made = externalFilesFor(this.options.pid, this.base);
    this.held = made.held;
    this.restoreBase = made.restore;
    if (made.files.length > 0) this.emit('dump', { state: 'external-files', files: made.files });
    return made.dump;
  }

  emit(phase: string, detail?: Record<string, unknown>): void {
    try {
      this.options.onProgress?.(detail === undefined ? { phase } : { phase, detail });
    } catch {
      // a throwing listener must not break a migration halfway
    }
  }

  /** Times a part of a phase into `steps`. */
  async step<T>(name: keyof ProcessMigrationResult['steps'], body: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await body();
    } finally {
      this.steps[name] += performance.now() - started;
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
    Object.assign(this, await runPreDumps(this));
  }

  /** Final dump (pages to the target's page server in that mode). Throws only with the task resumed on the source. */
  async dump(): Promise<{ dumpDir: string; targetDir: string; pageServer?: PageServerChild }> {
    const dumpDir = freshDir(path.join(this.layout.source, 'dump'));
    const targetDir = freshDir(path.join(this.layout.target, 'dump'));
    const chain = this.parent !== undefined ? { parentImg: this.parent, trackMem: true } : {};
    const ext = this.externalFiles();
    let channel: PageChannel | undefined;
    let pageServer: PageServerChild | undefined;
    try {
      if (this.transfer === 'page-server') {
        ({ channel, server: pageServer } = await startPageServer(this.target.criu, targetDir, chain));
        this.emit('transfer', { state: 'page-server', pid: pageServer?.pid });
      }
      const ps = channel !== undefined ? { ps: { fd: channel.clientFd } } : {};
      const unguard = pageServer !== undefined ? guardPageServer(pageServer, this.signal) : undefined;
      const handlers = lockingHandlers(this.lock as ConnectionLock, this.options.pid, this.sockets, (tuples) => {
        this.tuples = tuples;
        this.emit('dump', { state: 'locked', connections: tuples.size });
      });
      try {
        await this.timed('dump', () =>
          this.dumper.criu.dump(
            { ...this.base, ...ext, ...chain, ...ps, pid: this.options.pid, imagesDir: dumpDir },
            handlers,
          ),
        );
      } finally {
        unguard?.();
      }
    } catch (error) {
      channel?.close();
      await pageServer?.close();
      // CRIU resumed the tree with its sockets out of repair: their packets may pass again.
      await this.lock?.releaseTarget();
      await this.lock?.releaseSource();
      await new Promise((resolve) => setTimeout(resolve, 50));
      throw dumpFailed(this.options.pid, error);
    }
    channel?.close();
    return { dumpDir, targetDir, ...(pageServer !== undefined ? { pageServer } : {}) };
  }

  /** After the dump: the page server's exit, then the non-page images copied to the target. */
  async carry(dirs: { dumpDir: string; targetDir: string; pageServer?: PageServerChild }): Promise<void> {
    await this.timed('transfer', async () => {
      if (dirs.pageServer !== undefined) await pageServerDone(dirs.pageServer);
      await copyImages(dirs.dumpDir, dirs.targetDir);
    });
  }

  async releaseHold(): Promise<void> {
    await this.lock?.releaseTarget();
  }

  async releaseSourceLock(): Promise<void> {
    await this.lock?.releaseSource();
  }

  /** Our lock, or CRIU's when ours cannot be made (then the dump uses CRIU's network lock). */
  async prepareLock(): Promise<void> {
    const { source, target } = this.options;
    const otherTarget = target?.netns !== source?.netns ? target?.netns : null;
    ({ lock: this.lock, base: this.base } = await lockForMigration(this, source?.netns, otherTarget));
    this.restoreBase = this.base;
  }

  rollback(phase: ProcessMigrationPhase, cause: unknown, dir: string, dumpDir?: string): Promise<never> {
    return rollback(this, phase, cause, dir, dumpDir);
  }

  async run(): Promise<ProcessMigrationResult> {
    const started = performance.now();
    this.checkAbort('preDump');
    await this.preDumps();
    this.checkAbort('dump');
    // The target may have vanished since the start (its namespace deleted): better to stop here,
    // with the server untouched, than to dump, fail to restore and roll back.
    if (this.options.target?.netns !== undefined) checkNetns(this.options.target.netns, 'target.netns');
    this.sockets = processTcpSockets(this.options.pid);
    this.tuples = new Set(this.sockets.tuples.values());
    const emit = (detail: Record<string, unknown>): void => this.emit('restore', detail);
    await Promise.all([
      checkTargetTuples(this.options.target?.netns, this.tuples, emit, this.options.pid),
      this.step('lockPrepare', () => this.prepareLock()),
    ]).catch(async (error: unknown) => {
      await this.lock?.releaseTarget();
      await this.lock?.releaseSource();
      throw error;
    });
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
    const lock = this.lock as ConnectionLock;
    try {
      // The hold is what makes the address move safe: its failure (the target gone) is the move's.
      await this.step('hold', () => lock.holdOnTarget());
    } catch (error) {
      return this.rollback('moveAddress', error, rollbackDir, dirs.dumpDir);
    }
    if (this.options.target?.netns !== this.options.source?.netns)
      this.emit('moveAddress', { state: 'hold', lock: lock.describe() });
    if (lock instanceof CriuMigrationLock && lock.holdMissing)
      this.emit('moveAddress', {
        state: 'warning',
        reason: 'could not hold the connections in the target namespace (nft missing?); a peer may see a reset',
      });
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
      // Until the hold is lifted the peers' packets are dropped: part of the pause.
      const restored = await this.timed('restore', async () => {
        await this.step('restoreWaits', () =>
          waitBeforeRestore(dirs.dumpDir, this.options.target?.netns, this.tuples, emit),
        );
        const made = await this.step('criuRestore', () =>
          this.target.criu.restore({ ...this.restoreBase, imagesDir: dirs.targetDir }),
        );
        await this.step('release', () => this.lock?.releaseTarget(true) ?? Promise.resolve());
        if (lock instanceof NftablesMigrationLock && lock.heldPackets !== undefined)
          this.emit('restore', { state: 'released', heldPackets: lock.heldPackets });
        return made;
      });
      restoredPid = restored.pid;
    } catch (error) {
      return this.rollback(phase, error, rollbackDir, dirs.dumpDir);
    }
    const downtimeMs = this.phases.dump + this.phases.transfer + this.phases.moveAddress + this.phases.restore;
    // The source's lock kept the moved connections from being answered with RST; they live on the target now.
    await this.releaseSourceLock();
    this.phases.total = performance.now() - started;
    const dumpStats = readDumpStats(dirs.dumpDir);
    const restoreStats = readRestoreStats(dirs.targetDir);
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
      ...(restoreStats !== undefined ? { restoreStats } : {}),
      steps: this.steps,
    };
    this.emit('done', { restoredPid, downtimeMs: Math.round(downtimeMs) });
    return result;
  }
}

/**
 * Moves the process tree rooted at options.pid to the target network namespace (see the file
 * comment), or with `to` to another host's migration agent (process-remote.ts).
 */
export function migrateProcess(options: RemoteProcessMigrationOptions): Promise<RemoteProcessMigrationResult>;
export function migrateProcess(options: ProcessMigrationOptions): Promise<ProcessMigrationResult>;
export async function migrateProcess(
  options: ProcessMigrationOptions | RemoteProcessMigrationOptions,
): Promise<ProcessMigrationResult | RemoteProcessMigrationResult> {
  if (typeof options === 'object' && options !== null && 'to' in options && options.to !== undefined)
    return migrateProcessRemote(options);
  return migrateLocally(options as ProcessMigrationOptions);
}

async function migrateLocally(options: ProcessMigrationOptions): Promise<ProcessMigrationResult> {
  validateProcessMigrationOptions(options);
  checkPid(options.pid);
  if (options.source?.netns !== undefined) checkNetns(options.source.netns, 'source.netns');
  if (options.target?.netns !== undefined) checkNetns(options.target.netns, 'target.netns');
  checkTaskNetns(options.pid, options.source?.netns, 'source.netns');
  const command = locateCriu(options.criuPath !== undefined ? { criuPath: options.criuPath } : {});
  // A task with its own mount namespace is dumped from inside it; restores run in ours (process-mounts.ts).
  const dumper = criuForTask(command.path, { pid: options.pid, ...options.source });
  let layout: ImagesLayout;
  try {
    layout = prepareLayout(options.imagesDir);
  } catch (error) {
    await dumper.close();
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
  let source: NetnsCriu | undefined;
  let target: NetnsCriu | undefined;
  let migration: Migration | undefined;
  try {
    source = dumper.mounts.mntns === undefined ? dumper : criuInNetns(command.path, options.source?.netns);
    target = criuInNetns(command.path, options.target?.netns);
    migration = new Migration(options, layout, source, target, dumper);
    return await migration.run();
  } finally {
    migration?.held?.close();
    if (source !== dumper) await source?.close();
    await dumper.close();
    await target?.close();
  }
}
