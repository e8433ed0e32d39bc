/**
 * The pre-dump loop of the whole-process route: while the server runs, CRIU copies its memory
 * (each round only what changed since the last, when the kernel tracks memory changes), so the
 * final, frozen dump has little left to copy. Each round's images go to the target side at once.
 */
import * as path from 'node:path';

import type { Criu, CriuOptions } from '../criu';
import type { ProcessMigrationPhase } from './process-errors';
import { copyImages, freshDir, pagesBytes, readDumpStats, type ImagesLayout } from './process-images';
import type { ProcessMigrationOptions, ProcessMigrationResult } from './process-options';

const PAGE_SIZE = 4096;
const DEFAULT_MAX_PRE_DUMPS = 5;
/** phaul's rule: a pre-dump that copied fewer pages than this is good enough. */
const DEFAULT_MIN_PAGES = 64;

/**
 * phaul's rule for ending the pre-dump loop: stop when the last pre-dump copied little (fewer
 * than `minPages`), or when the copies stop shrinking (the task dirties memory as fast as we copy
 * it, so another round would not shorten the final, frozen one).
 */
export function preDumpsAreDone(pagesWritten: number, previous: number | undefined, minPages: number): boolean {
  return pagesWritten < minPages || (previous !== undefined && pagesWritten >= previous);
}

/** What the loop needs of a migration in progress. */
export interface PreDumpContext {
  readonly options: ProcessMigrationOptions;
  readonly layout: ImagesLayout;
  readonly base: CriuOptions;
  /** CRIU for the pre-dumps (inside the task's namespaces). */
  readonly dumper: { criu: Criu };
  readonly iterations: ProcessMigrationResult['iterations'];
  emit(phase: string, detail?: Record<string, unknown>): void;
  timed<T>(phase: 'preDump', body: () => Promise<T>): Promise<T>;
  /** Throws (nothing touched yet) when the migration was aborted. */
  checkAbort(phase: ProcessMigrationPhase): void;
}

/**
 * Runs the pre-dumps `options.preDump` asks for (none without memory tracking); resolves with
 * whether CRIU tracks memory and the last pre-dump (the final dump's parent_img), if any ran.
 */
export async function runPreDumps(ctx: PreDumpContext): Promise<{ memoryTracking: boolean; parent?: string }> {
  const features = await ctx.dumper.criu.featureCheck({ memTrack: true });
  const memoryTracking = features.memTrack === true;
  const plan = ctx.options.preDump === false ? undefined : (ctx.options.preDump ?? {});
  if (plan === undefined) return { memoryTracking };
  if (!memoryTracking) {
    ctx.emit('preDump', {
      state: 'skipped',
      reason:
        'CRIU cannot track memory changes on this kernel (CONFIG_MEM_SOFT_DIRTY off): every pre-dump would be a full copy and CRIU 4.2 aborts it',
    });
    return { memoryTracking };
  }
  const max = plan.maxIterations ?? DEFAULT_MAX_PRE_DUMPS;
  const minPages = plan.minPages ?? DEFAULT_MIN_PAGES;
  let previous: number | undefined;
  let parent: string | undefined;
  await ctx.timed('preDump', async () => {
    for (let index = 1; index <= max; index++) {
      ctx.checkAbort('preDump');
      const dir = freshDir(path.join(ctx.layout.source, `pre-${index}`));
      const started = performance.now();
      await ctx.dumper.criu.singlePreDump({
        ...ctx.base,
        pid: ctx.options.pid,
        imagesDir: dir,
        trackMem: true,
        ...(parent !== undefined ? { parentImg: parent } : {}),
      });
      const written = readDumpStats(dir)?.pagesWritten ?? Math.ceil(pagesBytes(dir) / PAGE_SIZE);
      await copyImages(dir, freshDir(path.join(ctx.layout.target, `pre-${index}`)));
      const ms = performance.now() - started;
      ctx.iterations.push({ index, pagesWritten: written, ms });
      parent = `../pre-${index}`;
      ctx.emit('preDump', { state: 'iteration', index, pagesWritten: written, ms: Math.round(ms) });
      if (preDumpsAreDone(written, previous, minPages)) break;
      previous = written;
    }
  });
  return parent === undefined ? { memoryTracking } : { memoryTracking, parent };
}
