/**
 * The control channel between the process that hands connections over (source) and the one that
 * takes them (target): whole messages (handover-messages.ts) as frames with a 16-byte versioned
 * header over either
 *   - a unix SOCK_SEQPACKET socket (SeqpacketTransport): same host, one frame per datagram; the
 *     only channel that can carry fds (SCM_RIGHTS), so the only one for the fd-passing handover;
 *   - a stream (lib/transport/framed.ts): mutual TLS between hosts, or a unix stream socket.
 * Frames are small (STREAM_FRAME_BYTES, SEQPACKET_FRAME_BYTES); a longer message continues in
 * frames of its type and id with FLAG_MORE. The receiver bounds every message by its limits
 * before it keeps a byte and reassembles linearly (a CONNECTION into one buffer of its declared
 * size, anything else as a list joined once). Every send awaits the transport's backpressure.
 */
import type { Duplex } from 'node:stream';

import { FramedConnection } from '../transport/framed';
import type { Frame } from '../transport/framed';
import type { SeqpacketTransport } from '../transport/seqpacket';
import { WaitQueue } from '../transport/wait-queue';
import { closeFdQuietly, HandoverError } from './handover-errors';
import {
  DEFAULT_LIMITS,
  FLAG_MORE,
  HANDOVER_MAGIC,
  HANDOVER_PROTOCOL_VERSION,
  HEADER_BYTES,
  MESSAGE_TYPES,
  MessageType,
  SEQPACKET_FRAME_BYTES,
  STREAM_FRAME_BYTES,
  checkConnectionSizes,
  connectionPrefix,
  decodeHeader,
  decodeReason,
  encodeHeader,
  encodeReason,
  maxBodyBytes,
  protocolError,
} from './handover-messages';
import type { MessageLimits } from './handover-messages';

export { HANDOVER_PROTOCOL_VERSION, MessageType };

export interface HandoverMessage {
  type: MessageType;
  id: number;
  payload: Buffer;
  /** fds that came with the message (SEQPACKET CONNECTION_FD only); the receiver owns them. */
  fds: number[];
}

interface RawFrame extends Frame {
  fds: number[];
}

/** Errors with which the kernel ends a TCP connection on its own side, the peer unheard. */
const LOCAL_GIVE_UP = new Set(['EPERM', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN']);

/** A channel error as a HandoverError: closed, timed out, aborted, or the peer broke the protocol. */
export function channelError(error: unknown): HandoverError {
  if (error instanceof HandoverError) return error;
  const code = (error as { code?: string }).code;
  const message = (error as Error).message;
  if (code === 'ETIMEDOUT') return new HandoverError('handover timed out', 'ERR_HANDOVER_TIMEOUT', error);
  // Our own TCP gave up (a drop on the path leaves EPERM or an unreachable as its soft error): the
  // peer may well be alive, so this is no proof that it is gone, unlike its FIN or RST.
  if (code !== undefined && LOCAL_GIVE_UP.has(code))
    return new HandoverError(
      `handover channel lost (${code}): the peer's state is unknown`,
      'ERR_HANDOVER_TIMEOUT',
      error,
    );
  if (code === 'ABORT_ERR') return new HandoverError('handover aborted', 'ERR_HANDOVER_ABORTED', error);
  if (code === 'ERR_FRAME_VERSION') return new HandoverError(message, 'ERR_HANDOVER_VERSION', error);
  if (code === 'ERR_FRAME_INVALID' || code === 'ERR_FRAME_TOO_LARGE') return protocolError(message, error);
  if (code === 'ERR_TLS_HANDSHAKE') return new HandoverError(message, 'ERR_HANDOVER_TLS', error);
  return new HandoverError(`handover channel closed: ${message}`, 'ERR_HANDOVER_CHANNEL_CLOSED', error);
}

export function abortError(signal: AbortSignal): HandoverError {
  const reason = signal.reason as { name?: string } | undefined;
  const timedOut = reason?.name === 'TimeoutError';
  return new HandoverError(
    timedOut ? 'handover timed out' : 'handover aborted',
    timedOut ? 'ERR_HANDOVER_TIMEOUT' : 'ERR_HANDOVER_ABORTED',
    reason,
  );
}

/** One end of the control channel. One reader at a time; every call honours its abort signal. */
export abstract class HandoverChannel {
  /** What this side accepts from the peer (see maxBodyBytes); the target sets its own. */
  limits: MessageLimits = DEFAULT_LIMITS;
  /** Bytes of CONNECTION messages still accepted in total (the target's maxTotalBytes). */
  connectionBudget = Number.POSITIVE_INFINITY;
  private failure: HandoverError | undefined;

  abstract readonly canPassFds: boolean;
  abstract readonly maxFramePayload: number;
  /** The next frame, its header checked. Rejects with the transport's error. */
  protected abstract nextFrame(signal?: AbortSignal): Promise<RawFrame>;
  protected abstract sendFrame(
    type: MessageType,
    id: number,
    flags: number,
    payload: Buffer,
    fds: number[],
    signal?: AbortSignal,
  ): Promise<void>;
  protected abstract closeTransport(): void;

  get failed(): HandoverError | undefined {
    return this.failure;
  }

  /** Sends one message (split into frames), resolving once the transport took it. */
  async send(
    type: MessageType,
    id: number,
    body: Uint8Array = Buffer.alloc(0),
    options: { fds?: number[]; signal?: AbortSignal } = {},
  ): Promise<void> {
    if (this.failure) throw this.failure;
    const fds = options.fds ?? [];
    if (fds.length > 0 && !this.canPassFds)
      throw new HandoverError(
        'a stream channel cannot pass fds; use a SeqpacketTransport',
        'ERR_HANDOVER_FDS_UNSUPPORTED',
      );
    const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    try {
      let offset = 0;
      do {
        const chunk = bytes.subarray(offset, offset + this.maxFramePayload);
        offset += chunk.length;
        const more = offset < bytes.length;
        await this.sendFrame(
          type,
          id,
          more ? FLAG_MORE : 0,
          chunk,
          chunk.byteOffset === bytes.byteOffset ? fds : [],
          options.signal,
        );
      } while (offset < bytes.length);
    } catch (error) {
      throw this.fail(channelError(error));
    }
  }

  /**
   * The next message, which must be one of `types`: ABORT is ERR_HANDOVER_PEER_ABORTED (with the
   * peer's reason), anything else ERR_HANDOVER_PROTOCOL before its body is read.
   */
  async expect(types: MessageType[], signal?: AbortSignal): Promise<HandoverMessage> {
    if (this.failure) throw this.failure;
    try {
      const first = await this.nextFrame(signal);
      if (first.type === MessageType.ABORT) {
        const abort = await this.assemble(first, signal);
        throw new HandoverError(
          `peer aborted the handover: ${decodeReason(MessageType.ABORT, abort.payload)}`,
          'ERR_HANDOVER_PEER_ABORTED',
        );
      }
      if (!types.includes(first.type)) {
        first.fds.forEach(closeFdQuietly);
        throw protocolError(
          `unexpected ${MessageType[first.type]} (wanted ${types.map((t) => MessageType[t]).join('/')})`,
        );
      }
      return await this.assemble(first, signal);
    } catch (error) {
      throw this.fail(channelError(error));
    }
  }

  /** Tells the peer why we stop (best effort: the channel may be broken already). */
  async abort(reason: string, signal?: AbortSignal): Promise<void> {
    if (this.failure) return;
    await this.send(MessageType.ABORT, 0, encodeReason(reason), { signal }).catch(() => undefined);
  }

  /** Idempotent; what was sent before still goes out (stream), fds of unread messages are closed. */
  close(): void {
    this.fail(new HandoverError('handover channel closed', 'ERR_HANDOVER_CHANNEL_CLOSED'));
  }

  protected fail(error: HandoverError): HandoverError {
    if (this.failure) return error;
    this.failure = error;
    this.closeTransport();
    return error;
  }

  private async assemble(first: RawFrame, signal?: AbortSignal): Promise<HandoverMessage> {
    const { type, id } = first;
    // Only a CONNECTION_FD carries fds, on its first frame (send() puts them there).
    const fds = type === MessageType.CONNECTION_FD ? first.fds : [];
    if (type !== MessageType.CONNECTION_FD) first.fds.forEach(closeFdQuietly);
    try {
      let more = (first.flags & FLAG_MORE) !== 0;
      const next = async (): Promise<Buffer> => {
        const frame = await this.nextFrame(signal);
        frame.fds.forEach(closeFdQuietly);
        if (frame.type !== type || frame.id !== id) throw protocolError('interleaved message frames');
        more = (frame.flags & FLAG_MORE) !== 0;
        return frame.payload;
      };
      if (type === MessageType.CONNECTION || type === MessageType.CONNECTION_FD) {
        const sizes = connectionPrefix(type, first.payload);
        checkConnectionSizes(type, sizes, this.limits);
        const total = 8 + sizes.first + sizes.state;
        if (total > this.connectionBudget)
          throw protocolError(`connections add up to more than the target's total limit`);
        this.connectionBudget -= total;
        // One buffer of the declared size, filled in place: each byte is copied once.
        const body = more ? Buffer.allocUnsafe(total) : first.payload;
        let fill = first.payload.length;
        if (fill > total) throw protocolError(`${MessageType[type]} longer than its prefix says`);
        if (more) first.payload.copy(body, 0);
        while (more) {
          const part = await next();
          if (fill + part.length > total) throw protocolError(`${MessageType[type]} longer than its prefix says`);
          part.copy(body, fill);
          fill += part.length;
        }
        if (fill !== total) throw protocolError(`${MessageType[type]} shorter than its prefix says`);
        return { type, id, payload: body, fds };
      }
      const max = maxBodyBytes(type, this.limits);
      const chunks = [first.payload];
      let bytes = first.payload.length;
      while (more) {
        if (bytes > max) break;
        const part = await next();
        chunks.push(part);
        bytes += part.length;
      }
      if (bytes > max) throw protocolError(`${MessageType[type]} of more than ${max} bytes`);
      return { type, id, payload: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, bytes), fds };
    } catch (error) {
      fds.forEach(closeFdQuietly);
      throw error;
    }
  }
}

/** SOCK_SEQPACKET: one frame per datagram, fds passed through. */
export class SeqpacketHandoverChannel extends HandoverChannel {
  readonly canPassFds = true;
  readonly maxFramePayload = SEQPACKET_FRAME_BYTES;
  private readonly frames = new WaitQueue<RawFrame>();

  constructor(private readonly transport: SeqpacketTransport) {
    super();
    void this.pump();
  }

  private async pump(): Promise<void> {
    for (;;) {
      let message;
      try {
        message = await this.transport.receive();
      } catch (error) {
        this.end(channelError(error));
        return;
      }
      try {
        const header = decodeHeader(message.data, SEQPACKET_FRAME_BYTES);
        if (header.length !== message.data.length - HEADER_BYTES) throw protocolError('frame length mismatch');
        const frame = { ...header, payload: message.data.subarray(HEADER_BYTES), fds: message.fds };
        if (!this.frames.push(frame)) frame.fds.forEach(closeFdQuietly);
      } catch (error) {
        message.fds.forEach(closeFdQuietly);
        this.end(channelError(error));
        this.transport.close();
        return;
      }
    }
  }

  private end(error: HandoverError): void {
    this.frames.fail(error);
  }

  protected nextFrame(signal?: AbortSignal): Promise<RawFrame> {
    return this.frames.take(signal, abortError);
  }

  protected async sendFrame(
    type: MessageType,
    id: number,
    flags: number,
    payload: Buffer,
    fds: number[],
  ): Promise<void> {
    // The native socket queues what the kernel cannot take yet and sends it in order.
    this.transport.send(Buffer.concat([encodeHeader(type, id, payload.length, flags), payload]), fds);
  }

  protected closeTransport(): void {
    this.end(new HandoverError('handover channel closed', 'ERR_HANDOVER_CHANNEL_CLOSED'));
    for (const frame of this.frames.drain()) frame.fds.forEach(closeFdQuietly);
    this.transport.close();
  }
}

/** The frame format of the handover over a stream (lib/transport/framed.ts). */
export const HANDOVER_FRAME_FORMAT = {
  magic: HANDOVER_MAGIC,
  version: HANDOVER_PROTOCOL_VERSION,
  maxPayload: STREAM_FRAME_BYTES,
  types: MESSAGE_TYPES,
  name: (type: number) => MessageType[type] ?? `type ${type}`,
};

/** A byte stream (TLS, unix stream) through FramedConnection. Cannot carry fds. */
export class StreamHandoverChannel extends HandoverChannel {
  readonly canPassFds = false;
  readonly maxFramePayload = STREAM_FRAME_BYTES;
  readonly framed: FramedConnection;

  constructor(stream: Duplex | FramedConnection) {
    super();
    this.framed = stream instanceof FramedConnection ? stream : new FramedConnection(stream, HANDOVER_FRAME_FORMAT);
    (this.framed.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
  }

  protected async nextFrame(signal?: AbortSignal): Promise<RawFrame> {
    const frame = await this.framed.receive(signal);
    return { ...frame, fds: [] };
  }

  protected sendFrame(
    type: MessageType,
    id: number,
    flags: number,
    payload: Buffer,
    _fds: number[],
    signal?: AbortSignal,
  ): Promise<void> {
    return this.framed.send(type, id, payload, signal, flags);
  }

  protected closeTransport(): void {
    this.framed.close();
  }
}
