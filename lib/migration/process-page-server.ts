/**
 * Page-server mode of the local process route: the target's CRIU page server receives the final
 * dump's pages over a connected TCP pair (openPageChannel), guarded so that a page server that
 * dies or an abort never leaves the dumping CRIU (and the frozen task) waiting forever.
 */
import type { Criu, CriuOptions, PageServerChild } from '../criu';
import { NodeCriuError } from '../errors';
import { pageServerFailed } from './process-errors';
import { openPageChannel, type PageChannel } from './process-images';

export interface PageServerSide {
  channel: PageChannel;
  server: PageServerChild;
  /** The dump's ps option (the dumping CRIU's end of the channel). */
  ps: Pick<CriuOptions, 'ps'>;
}

/** Starts the target's page server writing into `targetDir` (`chain`: the pre-dump parent, if any). */
export async function startPageServer(
  criu: Criu,
  targetDir: string,
  chain: Pick<CriuOptions, 'parentImg' | 'trackMem'>,
): Promise<{ channel: PageChannel; server?: PageServerChild }> {
  const channel = await openPageChannel();
  try {
    const server = await criu.pageServerChld({ imagesDir: targetDir, ps: { fd: channel.serverFd }, ...chain });
    channel.closeServerEnd();
    return { channel, server };
  } catch (error) {
    channel.close();
    throw error;
  }
}

/**
 * While the dump runs: an abort kills the page server, which breaks CRIU's page stream, so the
 * dump fails and CRIU resumes the task (killing CRIU itself could leave the task stopped with its
 * parasite inside: never done). The target's swrk keeps its own copy of the page server's socket,
 * so a page server that dies alone would leave the dumping CRIU waiting forever: the whole
 * target side is ended as soon as it exits abnormally. Returns the guard's removal.
 */
export function guardPageServer(server: PageServerChild, signal: AbortSignal | undefined): () => void {
  const onAbort = (): void => void server.close();
  signal?.addEventListener('abort', onAbort, { once: true });
  const watchdog = setInterval(() => {
    if (pageServerFailed(server.pid)) void server.close();
  }, 50);
  return () => {
    clearInterval(watchdog);
    signal?.removeEventListener('abort', onAbort);
  };
}

/** After a successful dump the page server has written everything and exits; bounded (a hung target ends in a rollback). */
export async function pageServerDone(server: PageServerChild): Promise<void> {
  const status = await server.waitPid({ timeoutMs: 30000 });
  if (status.exitCode !== 0) {
    throw new NodeCriuError(`the page server exited with ${status.signal ?? `code ${String(status.exitCode)}`}`, {
      code: 'ERR_PAGE_SERVER_FAILED',
    });
  }
}
