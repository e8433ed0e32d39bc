/**
 * The source's pipelined part of a handover: the CONNECTION messages written in corked batches
 * (one TLS record and one write per batch instead of per connection, awaited per batch, so the
 * target restores the first batch while the next is encoded and sent), and the service address
 * moved while they travel.
 */
import type { ConnectionImage } from '../soccr';
import { encodeConnectionImage, soccr } from '../soccr';
import type { HandoverChannel } from './handover-channel';
import { StreamHandoverChannel } from './handover-channel';
import { HandoverError } from './handover-errors';
import { MessageType, encodeConnection } from './handover-messages';
import type { HandoverMethod } from './handover-messages';
import type { Held } from './handover-source-held';

/** Connections per corked batch: small enough that the target starts restoring early. */
export const SEND_BATCH = 128;

/**
 * Sends the messages in order, corked while the stream takes more: one write (one TLS record) for
 * many small messages. Only the last message before each uncork can wait for 'drain' (write()
 * says so once the buffer is full), so at most one listener waits at a time. A message of more
 * than one frame goes on its own: send() writes its later frames after an await.
 */
async function sendBatch(
  channel: HandoverChannel,
  messages: ReadonlyArray<{ type: MessageType; id: number; body: Buffer; fds?: number[] }>,
  signal: AbortSignal,
): Promise<void> {
  const stream = channel instanceof StreamHandoverChannel ? channel.framed.stream : undefined;
  let next = 0;
  while (next < messages.length) {
    const pending: Promise<void>[] = [];
    stream?.cork();
    try {
      do {
        const { type, id, body, fds } = messages[next];
        if (body.length > channel.maxFramePayload && pending.length > 0) break;
        next++;
        pending.push(channel.send(type, id, body, { signal, ...(fds ? { fds } : {}) }));
        if (body.length > channel.maxFramePayload) break;
      } while (next < messages.length && !stream?.writableNeedDrain);
    } finally {
      stream?.uncork();
    }
    await Promise.all(pending);
  }
}

/**
 * Sends every live connection (its image or, method 'fd', its fd) in batches of SEND_BATCH.
 * `afterFirstBatch` runs once the first batch is out (progress 'transfer').
 */
export async function sendConnections(
  channel: HandoverChannel,
  live: readonly Held[],
  method: HandoverMethod,
  signal: AbortSignal,
  afterFirstBatch: () => Promise<void>,
): Promise<void> {
  for (let start = 0; start < live.length; start += SEND_BATCH) {
    const messages = live.slice(start, start + SEND_BATCH).map((entry) =>
      method === 'fd'
        ? {
            type: MessageType.CONNECTION_FD,
            id: entry.index,
            body: encodeConnection(soccr.unreadBytes(entry.socket), entry.state),
            fds: [soccr.fdOfSocket(entry.socket)],
          }
        : {
            type: MessageType.CONNECTION,
            id: entry.index,
            body: encodeConnection(encodeConnectionImage(entry.image as ConnectionImage), entry.state),
          },
    );
    await sendBatch(channel, messages, signal);
    if (start === 0) await afterFirstBatch();
  }
}

/** The address move, started as soon as every original is paused and awaited before STAGE_END. */
export class AddressMove {
  moved = false;
  failed = false;
  durationMs = 0;
  private running: Promise<void> | undefined;
  private failure: HandoverError | undefined;

  constructor(
    private readonly move: (() => Promise<void>) | undefined,
    private readonly progress: () => Promise<void>,
  ) {}

  get requested(): boolean {
    return this.move !== undefined;
  }

  /** Starts the move (once); a failure is kept for result(). */
  start(): void {
    if (this.move === undefined || this.running !== undefined) return;
    const move = this.move;
    this.running = (async () => {
      await this.progress();
      const started = performance.now();
      try {
        await move();
        this.moved = true;
      } catch (error) {
        // It may have moved the address part of the way: moveAddressBack (if given) undoes that.
        this.failed = true;
        this.failure = new HandoverError(
          `moveAddress failed: ${(error as Error).message}`,
          'ERR_HANDOVER_ADDRESS',
          error,
        );
      } finally {
        this.durationMs = performance.now() - started;
      }
    })().catch((error: unknown) => {
      // The progress hook failed: the move never started.
      this.failure =
        error instanceof HandoverError ? error : new HandoverError(String(error), 'ERR_HANDOVER_FAILED', error);
    });
  }

  /** Waits for the move (starting it if it was not); throws its failure. */
  async result(): Promise<void> {
    this.start();
    await this.running;
    if (this.failure) throw this.failure;
  }

  /** Waits for a running move to end, whatever its outcome (before moving the address back). */
  async settled(): Promise<void> {
    await this.running;
  }
}
