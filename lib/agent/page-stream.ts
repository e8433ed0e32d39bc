/**
 * CRIU's page stream on the agent's channel (a lazy session, protocol.ts): the channel stays the
 * only connection between the hosts, and the pages travel as PAGE_DATA frames beside the
 * protocol's own messages.
 *
 * PageChannel owns all reading of the FramedConnection from its creation on: a pump takes frame
 * after frame and routes PAGE_DATA / PAGE_END to `pages` (a Duplex for lazy-pages.ts's relay) and
 * every other frame to next() (RESTORED, RESTORE_FAILED, ...). Backpressure both ways: the pump
 * stops taking frames while `pages` holds more than it wants (push() returned false) until the
 * relay reads again, and the FramedConnection then stops reading the socket, so the peer's TLS
 * writes block; writes to `pages` become PAGE_DATA frames of at most the frame maximum, each
 * waiting for the channel's drain.
 *
 * Bounded: page frames are refused (ERR_AGENT_PROTOCOL) before attach() (the attach point: RESTORE
 * sent or received) and after the peer's PAGE_END; control frames waiting unread are limited
 * (maxControlFrames). Writes to `pages` before attach() wait, unsent. A failure of the channel (or
 * a protocol error) rejects next() and destroys `pages` with it unless both its directions had
 * already ended; `pages` destroyed early never closes the channel (its owner does, after saying
 * why on it).
 */
import type * as net from 'node:net';
import { Duplex } from 'node:stream';

import type { Frame, FramedConnection } from '../transport/framed';
import { TransportError } from '../transport/errors';
import { WaitQueue } from '../transport/wait-queue';
import { AGENT_MAX_PAYLOAD, AgentProtocolError, checkPageFrame, messageName, MSG } from './protocol';

export interface PageChannelOptions {
  /** Control frames that may wait unread (default 8; 0: any control frame breaks the protocol). */
  maxControlFrames?: number;
  /**
   * Pass the peer's PAGE_END on only once our own direction has ended (the source: its CRIU ends
   * the stream after answering the last request, which the target's end may overtake).
   */
  endAfterOwnEnd?: boolean;
}

class PageDuplex extends Duplex {
  constructor(private readonly owner: PageChannel) {
    super({ allowHalfOpen: true, readableHighWaterMark: AGENT_MAX_PAYLOAD });
  }

  override _read(): void {
    this.owner.wake();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.owner.sendPages(chunk).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.owner.sendEnd().then(() => callback(), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.owner.wake();
    callback(error);
  }
}

export class PageChannel {
  /** The page stream, for startLazyDump / startLazyRestore. */
  readonly pages: Duplex;
  private readonly maxControl: number;
  private readonly control = new WaitQueue<Frame>();
  private failure: Error | undefined;
  private attached = false;
  private peerEnded = false;
  private paused = false;
  private resume: (() => void) | undefined;
  private resolveOpened!: () => void;
  private rejectOpened!: (error: Error) => void;
  private readonly opened = new Promise<void>((resolve, reject) => {
    this.resolveOpened = resolve;
    this.rejectOpened = reject;
  });
  /** Resolves when the pump stopped (the channel failed or closed). */
  readonly stopped: Promise<void>;
  /** Resolves when the peer's PAGE_END arrived; rejects if the channel failed first. */
  readonly peerEnd: Promise<void>;
  private resolvePeerEnd!: () => void;
  private rejectPeerEnd!: (error: Error) => void;

  constructor(
    readonly channel: FramedConnection,
    private readonly options: PageChannelOptions = {},
  ) {
    this.opened.catch(() => undefined);
    this.peerEnd = new Promise<void>((resolve, reject) => {
      this.resolvePeerEnd = resolve;
      this.rejectPeerEnd = reject;
    });
    this.peerEnd.catch(() => undefined);
    this.maxControl = options.maxControlFrames ?? 8;
    this.pages = new PageDuplex(this);
    // Its failure is the relay's to read (or nobody's, when no relay was opened): never uncaught.
    this.pages.on('error', () => undefined);
    // Page requests are small and each waits for its answer: no Nagle delay on the channel.
    (channel.stream as Partial<net.Socket>).setNoDelay?.(true);
    this.stopped = this.pump();
  }

  /** The attach point: page frames are valid from now on, and held writes go out. */
  attach(): void {
    if (this.attached) return;
    this.attached = true;
    this.resolveOpened();
  }

  /** The next frame that is not a page frame; rejects when the channel failed, or `signal` aborts. */
  next(signal?: AbortSignal): Promise<Frame> {
    return this.control.take(signal, abortError);
  }

  /** The channel's failure, if any (a protocol error of the peer, the connection lost). */
  get failed(): Error | undefined {
    return this.failure ?? this.channel.failed;
  }

  /** Ends the channel (the peer sees EOF after what was written); destroys `pages` if still open. */
  close(): void {
    this.channel.close();
  }

  /** @internal the relay reads again, or `pages` is gone: take frames again. */
  wake(): void {
    this.paused = false;
    const resume = this.resume;
    this.resume = undefined;
    resume?.();
  }

  /** @internal */
  async sendPages(chunk: Buffer): Promise<void> {
    await this.opened;
    for (let offset = 0; offset < chunk.length; offset += AGENT_MAX_PAYLOAD)
      await this.channel.send(MSG.PAGE_DATA, 0, chunk.subarray(offset, offset + AGENT_MAX_PAYLOAD));
  }

  /** @internal */
  async sendEnd(): Promise<void> {
    await this.opened;
    await this.channel.send(MSG.PAGE_END, 0);
  }

  private async pump(): Promise<void> {
    for (;;) {
      if (this.paused && !this.pages.destroyed) await new Promise<void>((resolve) => (this.resume = resolve));
      let frame: Frame;
      try {
        frame = await this.channel.receive();
      } catch (error) {
        this.fail(error as Error);
        return;
      }
      try {
        this.route(frame);
      } catch (error) {
        this.fail(error as Error);
        return;
      }
    }
  }

  private route(frame: Frame): void {
    if (frame.type === MSG.PAGE_DATA || frame.type === MSG.PAGE_END) {
      const what = messageName(frame.type);
      if (!this.attached) throw new AgentProtocolError(`${what} before the page stream was attached`);
      if (this.peerEnded) throw new AgentProtocolError(`${what} after PAGE_END`);
      checkPageFrame(frame);
      if (frame.type === MSG.PAGE_END) {
        this.peerEnded = true;
        this.resolvePeerEnd();
        const end = (): void => void (this.pages.destroyed || this.pages.push(null));
        if (this.options.endAfterOwnEnd === true && !this.pages.writableFinished) this.pages.once('finish', end);
        else end();
        return;
      }
      // Once the relay has given up (pages destroyed), what is still in flight is dropped.
      if (!this.pages.destroyed && !this.pages.push(frame.payload)) this.paused = true;
      return;
    }
    if (this.control.waiting === 0 && this.control.length >= this.maxControl)
      throw new AgentProtocolError(`unexpected ${messageName(frame.type)} (${this.control.length} messages unread)`);
    this.control.push(frame);
  }

  private fail(error: Error): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    this.rejectOpened(error);
    this.rejectPeerEnd(error);
    this.control.fail(error);
    const pages = this.pages;
    if (!pages.destroyed && !(pages.readableEnded && pages.writableFinished)) pages.destroy(error);
  }
}

function abortError(signal: AbortSignal): TransportError {
  const reason = signal.reason as { name?: string } | undefined;
  const timedOut = reason?.name === 'TimeoutError';
  return new TransportError(timedOut ? 'timed out' : 'aborted', {
    code: timedOut ? 'ETIMEDOUT' : 'ABORT_ERR',
    cause: reason,
  });
}
