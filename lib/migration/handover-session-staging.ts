/**
 * The target's restores while the images still arrive: each batch of checked images is staged
 * (rebuilt in repair mode behind the gap lock, not live: stageRestoreConnections) as soon as the
 * previous batch is, so the restore overlaps the transfer. Staging is no commitment: every staged
 * copy stays silent until DONE, and is dropped on ABORT, a closed channel or the time limit, as
 * before. A batch that cannot be staged yet (its local address has not reached this host: the
 * source moves it while the images travel) waits for STAGE_END, which the source sends only
 * once the address moved; then it is staged as a whole or, failing that, one by one.
 */
import type { ConnectionImage, NftablesLock, StagedRestore } from '../soccr';
import { stageRestoreConnections } from '../soccr';
import type { Failure } from './handover-messages';

/** Images per early restore: the first goes alone, later ones take what arrived meanwhile. */
const MAX_STAGE_BATCH = 512;
/** How often a restore is tried again while the connections' address has not arrived. */
const ADDRESS_POLL_MS = 10;

export interface StagedGroup {
  restore: StagedRestore;
  ids: number[];
}

interface Pending {
  id: number;
  image: ConnectionImage;
}

export const failureOf = (id: number, error: Error): Failure => ({
  id,
  code: ((error as { code?: string }).code ?? 'ERR_RESTORE').slice(0, 64),
  message: error.message.slice(0, 1024),
});

/** Stages the images as one batch or, when that fails, one by one (recording which failed why). */
async function stageEach(
  items: readonly Pending[],
  netns: string | undefined,
): Promise<{ groups: StagedGroup[]; failed: Failure[] }> {
  const options = netns === undefined ? {} : { netns };
  try {
    const restore = await stageRestoreConnections(
      items.map((i) => i.image),
      options,
    );
    return { groups: [{ restore, ids: items.map((i) => i.id) }], failed: [] };
  } catch {
    // One bad image fails the batch (it is rolled back): find which, stage the rest one by one.
    const result: { groups: StagedGroup[]; failed: Failure[] } = { groups: [], failed: [] };
    for (const item of items) {
      try {
        result.groups.push({ restore: await stageRestoreConnections([item.image], options), ids: [item.id] });
      } catch (error) {
        result.failed.push(failureOf(item.id, error as Error));
      }
    }
    return result;
  }
}

export class StagingPipeline {
  readonly groups: StagedGroup[] = [];
  readonly failed: Failure[] = [];
  private readonly pending: Pending[] = [];
  private readonly deferred: Pending[] = [];
  private running: Promise<void> | undefined;
  private error: unknown;
  private stopped = false;
  /** The last try found the connections' local address missing here (it is still on its way). */
  private addressMissing = false;

  /**
   * `lock`: the gap lock (the address moves here); every image is restored behind it, and a
   * 4-tuple HELLO did not announce (`announced`) is added to it before its restore.
   */
  constructor(
    private readonly netns: string | undefined,
    private readonly lock: NftablesLock | undefined,
    private readonly isAnnounced: (image: ConnectionImage) => boolean,
  ) {}

  /** A checked image: staged in the background, in order. */
  add(id: number, image: ConnectionImage): void {
    this.pending.push({ id, image });
    this.running ??= this.pump();
  }

  /** At STAGE_END: everything staged, or failed with its reason. Throws if the gap lock failed. */
  async finish(): Promise<void> {
    await this.settle();
    if (this.error !== undefined) throw this.error;
    const rest = [...this.deferred.splice(0), ...this.pending.splice(0)];
    if (rest.length > 0) {
      const { groups, failed } = await stageEach(rest, this.netns);
      this.groups.push(...groups);
      this.failed.push(...failed);
    }
  }

  /** Stops staging early and waits until no restore runs (before finish, or before aborting). Never throws. */
  async settle(): Promise<void> {
    this.stopped = true;
    for (let running = this.running; running !== undefined; running = this.running) {
      await running;
      if (this.running === running) this.running = undefined;
    }
  }

  /** Ids staged, in staging order. */
  stagedIds(): number[] {
    return this.groups.flatMap((g) => g.ids);
  }

  /**
   * Stages what is pending, a batch at a time. While the connections' address has not arrived,
   * only one image is tried at a time (each try builds its batch's sockets), every ADDRESS_POLL_MS.
   */
  private async pump(): Promise<void> {
    try {
      while (this.pending.length > 0 && this.error === undefined && !this.stopped) {
        const batch = this.pending.splice(0, this.addressMissing ? 1 : MAX_STAGE_BATCH);
        const outcome = await this.stageEarly(batch);
        if (outcome === 'staged') {
          this.addressMissing = false;
        } else if (outcome === 'address-missing') {
          this.pending.unshift(...batch);
          this.addressMissing = true;
          await new Promise((resolve) => setTimeout(resolve, ADDRESS_POLL_MS));
        } else {
          this.deferred.push(...batch); // tried again, one by one if need be, at STAGE_END
        }
      }
    } catch (error) {
      this.error ??= error;
    } finally {
      this.running = undefined;
    }
  }

  private async stageEarly(items: Pending[]): Promise<'staged' | 'address-missing' | 'failed'> {
    if (this.lock) {
      const late = items.filter((i) => !this.isAnnounced(i.image));
      if (late.length > 0) await this.lock.add(late.map(({ image }) => ({ local: image.local, remote: image.remote })));
      // The restore's commit removes each 4-tuple from this table right before it resumes the socket.
      for (const { image } of items) image.lock = this.lock.ref;
    }
    try {
      const restore = await stageRestoreConnections(
        items.map((i) => i.image),
        this.netns === undefined ? {} : { netns: this.netns },
      );
      this.groups.push({ restore, ids: items.map((i) => i.id) });
      return 'staged';
    } catch (error) {
      // Rolled back: nothing of the batch is left.
      return (error as { code?: string }).code === 'EADDRNOTAVAIL' ? 'address-missing' : 'failed';
    }
  }
}
