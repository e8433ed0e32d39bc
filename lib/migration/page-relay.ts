/**
 * CRIU's page stream carried over any Duplex (a TLS socket between hosts, a TCP socket, ...).
 *
 * CRIU takes its page-server socket as an fd (ps-socket) and wants a blocking socket: we make a
 * connected loopback TCP pair, hand one end (made blocking) to CRIU and keep the other as a Node
 * socket, whose bytes are copied both ways to and from the Duplex with backpressure (pipe).
 *
 * Ends: CRIU's side ending (it closes after the last exchange, PS_IOV_FORCE_CLOSE and its answer)
 * is the only clean end: it is passed on to the Duplex and `done` resolves. The Duplex ending,
 * closing or failing first, CRIU's socket failing, an abort or the timeout is a failure: `done`
 * rejects, the Duplex is destroyed, and CRIU's socket is left open and paused (CRIU blocks on it)
 * so that its owner can first put the processes in a safe state and then call reset(), which
 * sends CRIU a RST: CRIU must see an error, never a clean end (its lazy page server takes an
 * end of stream at a request boundary for success and would kill the source tree).
 */
import type * as net from 'node:net';
import type { Duplex } from 'node:stream';

import { NodeCriuError, InvalidArgumentError } from '../errors';
import { blockingFdOf, connectLoopbackPair } from './process-images';

/** code: ERR_LAZY_PAGES_STREAM_ENDED, ERR_LAZY_PAGES_STREAM_FAILED, ERR_LAZY_PAGES_CRIU_SOCKET, ERR_LAZY_PAGES_TIMEOUT, ABORT_ERR, or another ERR_LAZY_PAGES_* of lazy-pages.ts. */
export class LazyPagesError extends NodeCriuError {
  /** Where the process runs after the failure (lazy-pages.ts fills it in). */
  serverOn?: 'source' | 'target' | 'none';
}

export interface PageRelayStats {
  /** Bytes CRIU wrote that went out on the Duplex. */
  fromCriu: number;
  /** Bytes from the Duplex that went to CRIU. */
  toCriu: number;
}

export interface PageRelay {
  /** CRIU's end of the pair, for ps-socket (ours until handOver()). */
  readonly criuFd: number;
  /** Closes our copy of CRIU's end once CRIU has its own (a dead CRIU then ends the relay). */
  handOver(): void;
  /** Resolves when CRIU ended the stream cleanly; rejects (LazyPagesError) on any other end. */
  readonly done: Promise<PageRelayStats>;
  readonly stats: PageRelayStats;
  /** Ends the relay with `reason` if it has not ended; CRIU's socket stays open (see reset). */
  stop(reason: Error): void;
  /** Ends the relay with `reason` (if it has not ended) and resets CRIU's socket. Idempotent. */
  reset(reason?: Error): void;
}

export interface PageRelayOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /**
   * How long the Duplex may have ended before CRIU's side ends too (default 0: a failure at once).
   * The target side uses a grace: the source's last bytes and its end can overtake the lazy-pages
   * daemon's own close; the end is never passed on to CRIU (it could not tell it from success).
   */
  streamEndGraceMs?: number;
}

export function checkDuplex(value: unknown, name: string): asserts value is Duplex {
  const d = value as Partial<Duplex> | null;
  if (
    typeof d !== 'object' ||
    d === null ||
    typeof d.pipe !== 'function' ||
    typeof d.write !== 'function' ||
    typeof d.on !== 'function'
  )
    throw new InvalidArgumentError(`${name} must be a Duplex stream`, 'ERR_INVALID_ARG_TYPE');
  if (d.destroyed === true || d.readableEnded === true || d.writableEnded === true)
    throw new InvalidArgumentError(`${name} is already ended or destroyed`, 'ERR_INVALID_ARG_VALUE');
}

export function checkCallOptions(options: { signal?: unknown; timeoutMs?: unknown }): void {
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal))
    throw new InvalidArgumentError('options.signal must be an AbortSignal', 'ERR_INVALID_ARG_TYPE');
  const t = options.timeoutMs;
  if (t !== undefined && (typeof t !== 'number' || !Number.isFinite(t) || t <= 0 || t > 2 ** 31 - 1))
    throw new InvalidArgumentError('options.timeoutMs must be a positive number of milliseconds', 'ERR_OUT_OF_RANGE');
}

/** Opens the loopback pair and starts copying between our end and `stream`. */
export async function openPageRelay(stream: Duplex, options: PageRelayOptions = {}): Promise<PageRelay> {
  checkDuplex(stream, 'stream');
  checkCallOptions(options);
  const g = options.streamEndGraceMs;
  if (g !== undefined && (typeof g !== 'number' || !Number.isFinite(g) || g < 0 || g > 60000))
    throw new InvalidArgumentError('options.streamEndGraceMs must be 0..60000', 'ERR_OUT_OF_RANGE');
  const { peer, client } = await connectLoopbackPair();
  let criuFd: number;
  try {
    criuFd = await blockingFdOf(peer);
  } catch (error) {
    peer.destroy();
    client.destroy();
    throw error;
  }
  return startRelay(peer, client, criuFd, stream, options);
}

function startRelay(
  peer: net.Socket,
  ours: net.Socket,
  criuFd: number,
  stream: Duplex,
  options: PageRelayOptions,
): PageRelay {
  const stats: PageRelayStats = { fromCriu: 0, toCriu: 0 };
  let settled = false;
  let resolveDone!: (stats: PageRelayStats) => void;
  let rejectDone!: (error: Error) => void;
  const done = new Promise<PageRelayStats>((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  done.catch(() => {}); // the owner reads it; an unread failure must not crash the process
  let timer: NodeJS.Timeout | undefined;
  let graceTimer: NodeJS.Timeout | undefined;
  const onAbort = (): void => {
    const reason: unknown = options.signal?.reason;
    fail(
      new LazyPagesError(`page relay aborted: ${reason instanceof Error ? reason.message : String(reason)}`, {
        code: 'ABORT_ERR',
        cause: reason,
      }),
    );
  };
  const cleanupWatchers = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    if (graceTimer !== undefined) clearTimeout(graceTimer);
    options.signal?.removeEventListener('abort', onAbort);
  };
  const fail = (error: Error): void => {
    if (settled) return;
    settled = true;
    cleanupWatchers();
    ours.unpipe(stream);
    stream.unpipe(ours);
    ours.pause(); // CRIU's socket stays open, unread, until reset()
    stream.destroy();
    rejectDone(error);
  };
  // Requests are small and each waits for its answer: no Nagle delay on our hops.
  ours.setNoDelay(true);
  (stream as Partial<net.Socket>).setNoDelay?.(true);
  ours.on('data', (chunk: Buffer) => (stats.fromCriu += chunk.length));
  stream.on('data', (chunk: Buffer) => (stats.toCriu += chunk.length));
  ours.pipe(stream, { end: false });
  stream.pipe(ours, { end: false });
  ours.on('end', () => {
    // CRIU closed its end after the last exchange: pass the end on, then we are done.
    if (settled) return;
    stream.end(() => {
      if (settled) return;
      settled = true;
      cleanupWatchers();
      ours.destroy();
      resolveDone(stats);
    });
  });
  ours.on('error', (error) =>
    fail(
      new LazyPagesError(`CRIU's page socket failed: ${error.message}`, {
        code: 'ERR_LAZY_PAGES_CRIU_SOCKET',
        cause: error,
      }),
    ),
  );
  const streamEnded = (): void => {
    if (settled || graceTimer !== undefined) return;
    const early = (): void =>
      fail(new LazyPagesError('the page stream ended before CRIU finished', { code: 'ERR_LAZY_PAGES_STREAM_ENDED' }));
    if (!(options.streamEndGraceMs! > 0)) return early();
    graceTimer = setTimeout(early, options.streamEndGraceMs);
  };
  stream.on('end', streamEnded);
  stream.on('close', streamEnded);
  stream.on('error', (error) =>
    fail(
      new LazyPagesError(`the page stream failed: ${error.message}`, {
        code: 'ERR_LAZY_PAGES_STREAM_FAILED',
        cause: error,
      }),
    ),
  );
  if (options.signal?.aborted) onAbort();
  else options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.timeoutMs !== undefined) {
    timer = setTimeout(
      () =>
        fail(
          new LazyPagesError(`the page transfer did not end within ${options.timeoutMs} ms`, {
            code: 'ERR_LAZY_PAGES_TIMEOUT',
          }),
        ),
      options.timeoutMs,
    );
  }
  return {
    criuFd,
    stats,
    done,
    handOver: () => {
      if (!peer.destroyed) peer.destroy();
    },
    stop: (reason: Error) => fail(reason),
    reset: (reason?: Error) => {
      fail(reason ?? new LazyPagesError('the page relay was reset', { code: 'ERR_LAZY_PAGES_RESET' }));
      if (!peer.destroyed) peer.destroy();
      if (!ours.destroyed) ours.resetAndDestroy();
    },
  };
}
