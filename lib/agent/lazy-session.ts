/**
 * The agent's end of a lazy (post-copy) session, after RESTORED was sent: the restored tree runs
 * and faults its missing pages in over the channel (page-stream.ts). The session lasts until the
 * lazy-pages daemon has every page (it exited 0) and the source's PAGE_END arrived (its CRIU
 * closed the stream after the last answer), bounded; ending it earlier would cut the source's
 * last exchange. If the pages do not all arrive, startLazyRestore has killed the restored tree
 * (post-copy has no way back: the source killed its copy when it committed), and the service
 * address is taken away again.
 */
import type { LazyRestore } from '../migration/lazy-pages';
import type { MoveAddress } from './protocol';
import type { PageChannel } from './page-stream';
import { undoAddress } from './restore';

/** How long the source's PAGE_END may follow the last page here. */
const PEER_END_TIMEOUT_MS = 30_000;

export async function finishLazySession(
  lazy: LazyRestore,
  pages: PageChannel,
  moveAddress: MoveAddress | undefined,
  emit: (state: string, detail?: Record<string, unknown>) => void,
): Promise<void> {
  try {
    const stats = await lazy.pagesArrived;
    emit('done', { toCriu: stats.toCriu, fromCriu: stats.fromCriu, ms: Math.round(stats.ms) });
  } catch (error) {
    const e = error as { code?: string; message?: string };
    emit('failed', { code: e.code ?? 'ERR_LAZY_PAGES_TRANSFER_FAILED', message: e.message ?? String(error) });
    await undoAddress(moveAddress);
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), PEER_END_TIMEOUT_MS)));
  const end = await Promise.race([
    pages.peerEnd.then(
      () => 'ended' as const,
      () => 'failed' as const,
    ),
    late,
  ]);
  clearTimeout(timer);
  if (end !== 'ended') emit('source-end', { state: end });
}
