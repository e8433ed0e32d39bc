/**
 * Frames over a byte stream (TCP, TLS, unix stream), for every protocol of ours that crosses a
 * stream: a 16-byte header, then the payload.
 *   0 u32 magic   4 u8 version   5 u8 type   6 u16 flags   8 u32 id   12 u32 payload length
 * The receiver is built for a hostile peer: the header is checked before a payload byte is kept,
 * a frame may not exceed the format's small maximum (large data goes as many frames), a payload
 * is copied once into a buffer of its announced size (no re-copying per read), and the socket
 * stops being read while too many frames wait unreceived (the peer's writes then block in TCP).
 * The sender waits for 'drain' (write backpressure).
 */
import type { Duplex } from 'node:stream';

import { TransportError } from './errors';
import { WaitQueue } from './wait-queue';

export const FRAME_HEADER_BYTES = 16;

export interface FrameFormat {
  /** Protocol identifier in the first 4 bytes. */
  magic: number;
  version: number;
  /** Largest payload accepted (and sent) in one frame. */
  maxPayload: number;
  /** Frame types this protocol knows; anything else is refused before its payload is read. */
  types: ReadonlySet<number>;
  /** Names for messages ("HELLO"), for errors. */
  name?: (type: number) => string;
}

export interface Frame {
  type: number;
  flags: number;
  id: number;
  payload: Buffer;
}

function frameError(message: string, code = 'ERR_FRAME_INVALID'): TransportError {
  return new TransportError(message, { code });
}

export function encodeFrameHeader(format: FrameFormat, type: number, id: number, length: number, flags = 0): Buffer {
  if (length > format.maxPayload)
    throw frameError(`frame payload of ${length} bytes exceeds ${format.maxPayload}`, 'ERR_FRAME_TOO_LARGE');
  const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  header.writeUInt32BE(format.magic >>> 0, 0);
  header.writeUInt8(format.version, 4);
  header.writeUInt8(type, 5);
  header.writeUInt16BE(flags, 6);
  header.writeUInt32BE(id >>> 0, 8);
  header.writeUInt32BE(length, 12);
  return header;
}

/**
 * Incremental decoder: push() chunks as they arrive, get whole frames back. Throws a
 * TransportError (ERR_FRAME_INVALID, ERR_FRAME_VERSION, ERR_FRAME_TOO_LARGE) at the first bad
 * header; the decoder is unusable afterwards.
 */
export class FrameDecoder {
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerFill = 0;
  private current: { type: number; flags: number; id: number; payload: Buffer; fill: number } | undefined;
  private broken = false;

  constructor(private readonly format: FrameFormat) {}

  push(chunk: Buffer): Frame[] {
    if (this.broken) throw frameError('frame decoder used after a protocol error');
    const frames: Frame[] = [];
    let offset = 0;
    try {
      while (offset < chunk.length) {
        if (this.current === undefined) {
          const take = Math.min(FRAME_HEADER_BYTES - this.headerFill, chunk.length - offset);
          chunk.copy(this.header, this.headerFill, offset, offset + take);
          this.headerFill += take;
          offset += take;
          if (this.headerFill < FRAME_HEADER_BYTES) break;
          this.headerFill = 0;
          this.current = this.parseHeader();
        }
        const frame = this.current;
        const take = Math.min(frame.payload.length - frame.fill, chunk.length - offset);
        chunk.copy(frame.payload, frame.fill, offset, offset + take);
        frame.fill += take;
        offset += take;
        if (frame.fill === frame.payload.length) {
          frames.push({ type: frame.type, flags: frame.flags, id: frame.id, payload: frame.payload });
          this.current = undefined;
        }
      }
    } catch (error) {
      this.broken = true;
      throw error;
    }
    return frames;
  }

  /** Bytes of a frame started but not finished (0 between frames). */
  get pending(): number {
    return this.headerFill + (this.current?.fill ?? 0);
  }

  private parseHeader(): { type: number; flags: number; id: number; payload: Buffer; fill: number } {
    const h = this.header;
    if (h.readUInt32BE(0) !== this.format.magic >>> 0) throw frameError('not a frame of this protocol (bad magic)');
    const version = h.readUInt8(4);
    if (version !== this.format.version)
      throw frameError(`protocol version ${version} (this side speaks ${this.format.version})`, 'ERR_FRAME_VERSION');
    const type = h.readUInt8(5);
    if (!this.format.types.has(type)) throw frameError(`unknown frame type ${type}`);
    const length = h.readUInt32BE(12);
    if (length > this.format.maxPayload)
      throw frameError(
        `${this.format.name?.(type) ?? `type ${type}`} frame of ${length} bytes (at most ${this.format.maxPayload})`,
        'ERR_FRAME_TOO_LARGE',
      );
    return { type, flags: h.readUInt16BE(6), id: h.readUInt32BE(8), payload: Buffer.allocUnsafe(length), fill: 0 };
  }
}

export interface FramedConnectionOptions {
  /** Frames received but not yet taken by receive() before reading pauses (default 64). */
  maxQueuedFrames?: number;
}

/**
 * A framed conversation over a Duplex (a net.Socket or tls.TLSSocket). receive() takes the next
 * frame in order; send() resolves once the stream accepted the bytes without exceeding its
 * buffer. Any protocol error, the peer's end or a stream error fails every pending and later call
 * with the same TransportError (ERR_FRAME_*, ERR_TRANSPORT_DISCONNECTED, or the stream's error as
 * `cause`) and destroys the stream. close() is idempotent.
 */
export class FramedConnection {
  private readonly decoder: FrameDecoder;
  private readonly inbox = new WaitQueue<Frame>();
  private readonly maxQueued: number;
  private failure: TransportError | undefined;
  private paused = false;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- stream listeners of several signatures
  private readonly listeners: Record<string, (...args: any[]) => void>;

  constructor(
    readonly stream: Duplex,
    readonly format: FrameFormat,
    options: FramedConnectionOptions = {},
  ) {
    this.decoder = new FrameDecoder(format);
    this.maxQueued = options.maxQueuedFrames ?? 64;
    this.listeners = {
      data: (chunk: Buffer) => this.onData(chunk),
      end: () =>
        this.fail(new TransportError('the peer closed the connection', { code: 'ERR_TRANSPORT_DISCONNECTED' })),
      close: () => this.fail(new TransportError('the connection closed', { code: 'ERR_TRANSPORT_DISCONNECTED' })),
      error: (error: NodeJS.ErrnoException) =>
        this.fail(
          new TransportError(`connection failed: ${error.message}`, {
            code: error.code?.startsWith('ERR_SSL')
              ? 'ERR_TLS_HANDSHAKE'
              : (error.code ?? 'ERR_TRANSPORT_DISCONNECTED'),
            cause: error,
          }),
        ),
    };
    for (const [event, listener] of Object.entries(this.listeners)) stream.on(event, listener);
  }

  /**
   * Hands the stream back, unframed, for the rest of the conversation (e.g. a raw byte stream that
   * follows a handshake). Only between frames, with nothing queued: the peer must not send past
   * the frame that announced the switch before it is told to go on.
   */
  release(): Duplex {
    if (this.failure) throw this.failure;
    if (this.inbox.length > 0 || this.decoder.pending > 0)
      throw new TransportError('cannot release a framed stream with data still queued', { code: 'ERR_FRAME_INVALID' });
    for (const [event, listener] of Object.entries(this.listeners)) this.stream.removeListener(event, listener);
    this.stream.pause();
    this.failure = new TransportError('the stream was released', { code: 'ERR_TRANSPORT_CLOSED' });
    this.inbox.fail(this.failure);
    return this.stream;
  }

  get failed(): TransportError | undefined {
    return this.failure;
  }

  /** The next frame; rejects when the conversation failed or ended, or `signal` aborts. */
  receive(signal?: AbortSignal): Promise<Frame> {
    const next = this.inbox.take(signal, abortError);
    this.resumeIfRoom();
    return next;
  }

  /** Sends one frame (payload ≤ format.maxPayload); resolves when the stream can take more. */
  async send(
    type: number,
    id: number,
    payload: Uint8Array = Buffer.alloc(0),
    signal?: AbortSignal,
    flags = 0,
  ): Promise<void> {
    if (this.failure) throw this.failure;
    const header = encodeFrameHeader(this.format, type, id, payload.byteLength, flags);
    const more = this.stream.write(payload.byteLength === 0 ? header : Buffer.concat([header, payload]));
    if (!more) await this.drained(signal);
  }

  /** Sends `data` as consecutive frames of at most maxPayload bytes each (the last may be empty only if data is). */
  async sendChunked(type: number, id: number, data: Uint8Array, signal?: AbortSignal): Promise<number> {
    let frames = 0;
    for (let offset = 0; offset < data.byteLength || frames === 0; offset += this.format.maxPayload) {
      await this.send(type, id, data.subarray(offset, offset + this.format.maxPayload), signal);
      frames++;
    }
    return frames;
  }

  /** Ends our side after what was written (the peer sees EOF), then destroys. Idempotent. */
  close(): void {
    this.fail(new TransportError('connection closed', { code: 'ERR_TRANSPORT_CLOSED' }));
  }

  private drained(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (error?: Error): void => {
        this.stream.removeListener('drain', onDrain);
        this.stream.removeListener('close', onClose);
        signal?.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve();
      };
      const onDrain = (): void => done();
      const onClose = (): void =>
        done(this.failure ?? new TransportError('the connection closed', { code: 'ERR_TRANSPORT_DISCONNECTED' }));
      const onAbort = (): void => done(abortError(signal as AbortSignal));
      if (signal?.aborted) return onAbort();
      this.stream.once('drain', onDrain);
      this.stream.once('close', onClose);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  private onData(chunk: Buffer): void {
    if (this.failure) return;
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (error) {
      this.fail(error as TransportError);
      return;
    }
    for (const frame of frames) this.inbox.push(frame);
    if (this.inbox.length >= this.maxQueued && !this.paused) {
      this.paused = true;
      this.stream.pause();
    }
  }

  private resumeIfRoom(): void {
    if (this.paused && this.inbox.length < this.maxQueued / 2 && !this.failure) {
      this.paused = false;
      this.stream.resume();
    }
  }

  private fail(error: TransportError): void {
    if (this.failure) return;
    this.failure = error;
    // Frames that arrived before the peer's end (or a later bad frame) are still received, in
    // order, before the error: a last message followed by EOF is the normal end of a protocol.
    if (error.code === 'ERR_TRANSPORT_CLOSED') this.inbox.drain();
    this.inbox.fail(error);
    // What was written before a close() still goes out (end() flushes); whatever the peer still
    // sends is read and dropped until its own end, since closing with unread data would answer
    // it with a RST. A peer that never ends is cut off after 5 s.
    if (error.code === 'ERR_TRANSPORT_CLOSED') {
      const destroy = (): void => void this.stream.destroy();
      this.stream.once('end', destroy);
      this.stream.resume();
      this.stream.end();
      setTimeout(destroy, 5000).unref();
    } else {
      this.stream.destroy();
    }
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
