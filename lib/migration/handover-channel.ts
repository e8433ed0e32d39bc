/**
 * The control channel between the process that hands connections over (source) and the one that
 * takes them (target): whole messages with a small versioned header, over either
 *   - a unix SOCK_SEQPACKET socket (SeqpacketTransport): same host; the only channel that can carry
 *     fds (SCM_RIGHTS), so the only one for the fd-passing handover; or
 *   - a stream (net.Socket: TCP between hosts, or a unix stream socket).
 *
 * Frame: 16-byte header, then `length` payload bytes.
 *   0  u32 magic 'NCHO'   4  u8 version (1)   5  u8 type   6  u16 flags (bit 0: more fragments)
 *   8  u32 connection id  12 u32 payload length
 * A SEQPACKET message is one frame; messages bigger than FRAGMENT_BYTES are split into fragments
 * (a datagram larger than the socket buffer fails with EMSGSIZE). Over a stream, frames follow
 * each other and are never fragmented.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';

import type { SeqpacketTransport } from '../transport/seqpacket';
import { checkSocketPath } from '../security';
import { closeFdQuietly, HandoverError } from './handover-errors';

export const HANDOVER_PROTOCOL_VERSION = 1;
const MAGIC = 0x4e43484f; // 'NCHO'
const HEADER_BYTES = 16;
const FLAG_MORE = 1;
/** Fragment size on SEQPACKET: well below the default socket buffer (net.core.wmem_default 212992). */
const FRAGMENT_BYTES = 64 * 1024;
/**
 * A stream frame larger than this is a protocol error (a garbage or hostile peer); so is a
 * SEQPACKET message whose fragments add up to more.
 */
const MAX_FRAME_BYTES = 256 * 1024 * 1024;

export enum MessageType {
  HELLO = 1,
  WELCOME = 2,
  REFUSE = 3,
  CONNECTION = 4,
  CONNECTION_FD = 5,
  STAGE_END = 6,
  STAGED = 7,
  COMMIT = 8,
  RESULT = 9,
  DONE = 10,
  ABORT = 11,
}

export interface HandoverMessage {
  type: MessageType;
  id: number;
  payload: Buffer;
  /** fds that came with the message (SEQPACKET only); the receiver owns them. */
  fds: number[];
}

/** What the handover functions accept as the channel's other end. */
export type HandoverChannelSpec = SeqpacketTransport | net.Socket | { host: string; port: number } | { path: string };

export function encodeHeader(type: MessageType, id: number, length: number, flags = 0): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(MAGIC, 0);
  header.writeUInt8(HANDOVER_PROTOCOL_VERSION, 4);
  header.writeUInt8(type, 5);
  header.writeUInt16BE(flags, 6);
  header.writeUInt32BE(id >>> 0, 8);
  header.writeUInt32BE(length, 12);
  return header;
}

interface Header {
  type: MessageType;
  flags: number;
  id: number;
  length: number;
}

/** Parses and checks a header; throws HandoverError ERR_HANDOVER_PROTOCOL / ERR_HANDOVER_VERSION. */
export function decodeHeader(bytes: Buffer): Header {
  if (bytes.length < HEADER_BYTES)
    throw new HandoverError(`short frame (${bytes.length} bytes)`, 'ERR_HANDOVER_PROTOCOL');
  if (bytes.readUInt32BE(0) !== MAGIC)
    throw new HandoverError('not a handover frame (bad magic)', 'ERR_HANDOVER_PROTOCOL');
  const version = bytes.readUInt8(4);
  if (version !== HANDOVER_PROTOCOL_VERSION) {
    throw new HandoverError(
      `handover protocol version ${version} (this side speaks ${HANDOVER_PROTOCOL_VERSION})`,
      'ERR_HANDOVER_VERSION',
    );
  }
  const type = bytes.readUInt8(5);
  if (!(type in MessageType)) throw new HandoverError(`unknown message type ${type}`, 'ERR_HANDOVER_PROTOCOL');
  const length = bytes.readUInt32BE(12);
  if (length > MAX_FRAME_BYTES) throw new HandoverError(`frame of ${length} bytes`, 'ERR_HANDOVER_PROTOCOL');
  return { type, flags: bytes.readUInt16BE(6), id: bytes.readUInt32BE(8), length };
}

/** One end of the control channel. Every receive() honours the channel's abort signal. */
export abstract class HandoverChannel {
  protected readonly inbox: HandoverMessage[] = [];
  private readonly waiters: { resolve: (m: HandoverMessage) => void; reject: (e: Error) => void }[] = [];
  private failure: HandoverError | undefined;

  abstract readonly canPassFds: boolean;
  abstract send(type: MessageType, id: number, payload?: Uint8Array, fds?: number[]): void;
  protected abstract closeTransport(): void;

  sendJson(type: MessageType, body: unknown, id = 0): void {
    this.send(type, id, Buffer.from(JSON.stringify(body)));
  }

  /** The next message; rejects once the channel failed or closed, or when `signal` aborts. */
  receive(signal?: AbortSignal): Promise<HandoverMessage> {
    const next = this.inbox.shift();
    if (next) return Promise.resolve(next);
    if (this.failure) return Promise.reject(this.failure);
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (m: HandoverMessage) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(m);
        },
        reject: (e: Error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(abortError(signal as AbortSignal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Like receive(), but the message must be of one of `types` (ABORT and others are errors). */
  async expect(types: MessageType[], signal?: AbortSignal): Promise<HandoverMessage> {
    const message = await this.receive(signal);
    if (types.includes(message.type)) return message;
    message.fds.forEach(closeFdQuietly);
    if (message.type === MessageType.ABORT) {
      throw new HandoverError(
        `peer aborted the handover: ${jsonOf<{ reason?: string }>(message).reason ?? 'no reason'}`,
        'ERR_HANDOVER_PEER_ABORTED',
      );
    }
    throw new HandoverError(
      `unexpected ${MessageType[message.type]} (wanted ${types.map((t) => MessageType[t]).join('/')})`,
      'ERR_HANDOVER_PROTOCOL',
    );
  }

  get failed(): HandoverError | undefined {
    return this.failure;
  }

  /** Idempotent; fds of messages nobody received are closed. */
  close(): void {
    this.fail(new HandoverError('handover channel closed', 'ERR_HANDOVER_CHANNEL_CLOSED'));
    this.closeTransport();
  }

  protected deliver(message: HandoverMessage): void {
    if (this.failure) {
      message.fds.forEach(closeFdQuietly);
      return;
    }
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve(message);
    else this.inbox.push(message);
  }

  protected fail(error: HandoverError): void {
    if (this.failure) return;
    this.failure = error;
    for (const message of this.inbox.splice(0)) message.fds.forEach(closeFdQuietly);
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
  }
}

export function jsonOf<T>(message: HandoverMessage): T {
  try {
    return JSON.parse(message.payload.toString('utf8')) as T;
  } catch (error) {
    throw new HandoverError(`malformed ${MessageType[message.type]} body`, 'ERR_HANDOVER_PROTOCOL', error);
  }
}

function abortError(signal: AbortSignal): HandoverError {
  const reason = signal.reason as { name?: string } | undefined;
  const timedOut = reason?.name === 'TimeoutError';
  return new HandoverError(
    timedOut ? 'handover timed out' : 'handover aborted',
    timedOut ? 'ERR_HANDOVER_TIMEOUT' : 'ERR_HANDOVER_ABORTED',
    reason,
  );
}

/** SOCK_SEQPACKET: one frame per datagram, fragments reassembled, fds passed through. */
export class SeqpacketHandoverChannel extends HandoverChannel {
  readonly canPassFds = true;
  private partial: { header: Header; chunks: Buffer[]; bytes: number; fds: number[] } | undefined;

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
        const code = (error as { code?: string }).code;
        const closed = code === 'ERR_TRANSPORT_DISCONNECTED' || code === 'ERR_TRANSPORT_CLOSED';
        this.fail(
          new HandoverError(
            closed ? 'handover peer closed the channel' : 'handover channel failed',
            'ERR_HANDOVER_CHANNEL_CLOSED',
            error,
          ),
        );
        this.partial?.fds.forEach(closeFdQuietly);
        this.partial = undefined;
        return;
      }
      try {
        const header = decodeHeader(message.data);
        if (header.length !== message.data.length - HEADER_BYTES)
          throw new HandoverError('frame length mismatch', 'ERR_HANDOVER_PROTOCOL');
        const body = message.data.subarray(HEADER_BYTES);
        if (this.partial && (this.partial.header.type !== header.type || this.partial.header.id !== header.id)) {
          throw new HandoverError('interleaved fragments', 'ERR_HANDOVER_PROTOCOL');
        }
        const first = this.partial === undefined;
        this.partial ??= { header, chunks: [], bytes: 0, fds: [] };
        this.partial.bytes += body.length;
        if (this.partial.bytes > MAX_FRAME_BYTES)
          throw new HandoverError(`fragments add up to more than ${MAX_FRAME_BYTES} bytes`, 'ERR_HANDOVER_PROTOCOL');
        this.partial.chunks.push(body);
        // Only the first fragment of a CONNECTION_FD carries fds (send() puts them there); fds
        // anywhere else would be owned by nobody: closed now, the message itself still counts.
        if (first && header.type === MessageType.CONNECTION_FD) this.partial.fds.push(...message.fds);
        else message.fds.forEach(closeFdQuietly);
        message.fds = [];
        if ((header.flags & FLAG_MORE) === 0) {
          const done = this.partial;
          this.partial = undefined;
          this.deliver({ type: header.type, id: header.id, payload: Buffer.concat(done.chunks), fds: done.fds });
        }
      } catch (error) {
        message.fds.forEach(closeFdQuietly);
        this.partial?.fds.forEach(closeFdQuietly);
        this.partial = undefined;
        this.fail(
          error instanceof HandoverError ? error : new HandoverError(String(error), 'ERR_HANDOVER_PROTOCOL', error),
        );
        this.transport.close();
        return;
      }
    }
  }

  send(type: MessageType, id: number, payload: Uint8Array = Buffer.alloc(0), fds: number[] = []): void {
    if (this.failed) throw this.failed;
    const body = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
    let offset = 0;
    do {
      const chunk = body.subarray(offset, offset + FRAGMENT_BYTES);
      offset += chunk.length;
      const more = offset < body.length;
      const first = chunk.byteOffset === body.byteOffset;
      try {
        this.transport.send(
          Buffer.concat([encodeHeader(type, id, chunk.length, more ? FLAG_MORE : 0), chunk]),
          first ? fds : [],
        );
      } catch (error) {
        const failure = new HandoverError('handover channel send failed', 'ERR_HANDOVER_CHANNEL_CLOSED', error);
        this.fail(failure);
        throw failure;
      }
    } while (offset < body.length);
  }

  protected closeTransport(): void {
    this.transport.close();
  }
}

/** A byte stream (TCP or unix stream): frames back to back. Cannot carry fds. */
export class StreamHandoverChannel extends HandoverChannel {
  readonly canPassFds = false;
  private buffered: Buffer = Buffer.alloc(0);

  constructor(private readonly socket: net.Socket) {
    super();
    socket.setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error) =>
      this.fail(new HandoverError('handover channel failed', 'ERR_HANDOVER_CHANNEL_CLOSED', error)),
    );
    socket.on('close', () =>
      this.fail(new HandoverError('handover peer closed the channel', 'ERR_HANDOVER_CHANNEL_CLOSED')),
    );
  }

  private onData(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    try {
      while (this.buffered.length >= HEADER_BYTES) {
        const header = decodeHeader(this.buffered);
        if (header.flags !== 0) throw new HandoverError('fragment flag on a stream frame', 'ERR_HANDOVER_PROTOCOL');
        if (this.buffered.length < HEADER_BYTES + header.length) return;
        const payload = Buffer.from(this.buffered.subarray(HEADER_BYTES, HEADER_BYTES + header.length));
        this.buffered = this.buffered.subarray(HEADER_BYTES + header.length);
        this.deliver({ type: header.type, id: header.id, payload, fds: [] });
      }
    } catch (error) {
      this.fail(error as HandoverError);
      this.socket.destroy();
    }
  }

  send(type: MessageType, id: number, payload: Uint8Array = Buffer.alloc(0), fds: number[] = []): void {
    if (this.failed) throw this.failed;
    if (fds.length > 0)
      throw new HandoverError(
        'a stream channel cannot pass fds; use a SeqpacketTransport',
        'ERR_HANDOVER_FDS_UNSUPPORTED',
      );
    this.socket.write(Buffer.concat([encodeHeader(type, id, payload.byteLength), payload]));
  }

  protected closeTransport(): void {
    this.socket.destroy();
  }
}

function isSeqpacketTransport(value: unknown): value is SeqpacketTransport {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as SeqpacketTransport).receive === 'function' &&
    typeof (value as SeqpacketTransport).send === 'function' &&
    !(value instanceof net.Socket)
  );
}

/** Opens (connects) the channel a spec names. */
export async function openChannel(spec: HandoverChannelSpec, signal?: AbortSignal): Promise<HandoverChannel> {
  if (isSeqpacketTransport(spec)) return new SeqpacketHandoverChannel(spec);
  if (spec instanceof net.Socket) return new StreamHandoverChannel(spec);
  if (typeof spec !== 'object' || spec === null)
    throw new HandoverError(
      'channel must be a SeqpacketTransport, a net.Socket, {host, port} or {path}',
      'ERR_INVALID_ARG_TYPE',
    );
  // A path with a NUL would be an abstract socket (no file permissions): refused, as is > 107 bytes.
  if ('path' in spec) checkSocketPath(spec.path, 'channel.path');
  const options: net.NetConnectOpts =
    'path' in spec && typeof spec.path === 'string'
      ? { path: spec.path }
      : { host: (spec as { host: string }).host, port: (spec as { port: number }).port };
  const socket = net.connect(options);
  await new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      socket.destroy();
      reject(abortError(signal as AbortSignal));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    socket.once('error', (error) => {
      signal?.removeEventListener('abort', onAbort);
      reject(new HandoverError(`cannot connect the handover channel: ${error.message}`, 'ERR_HANDOVER_CONNECT', error));
    });
  });
  return new StreamHandoverChannel(socket);
}

/** Listens (TCP or unix stream) for the one source connection of a handover. */
export async function acceptChannel(
  listen: { host?: string; port: number } | { path: string },
  signal?: AbortSignal,
  onListening?: (address: net.AddressInfo | string) => void,
): Promise<HandoverChannel> {
  if (typeof listen === 'object' && listen !== null && 'path' in listen) checkSocketPath(listen.path, 'listen.path');
  const server = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) =>
        reject(new HandoverError(`cannot listen for the handover: ${error.message}`, 'ERR_HANDOVER_LISTEN', error)),
      );
      server.listen(listen, () => resolve());
    });
    // The first connection is trusted with connection images: only our uid may connect (not the umask's mode).
    if ('path' in listen) fs.chmodSync(listen.path, 0o600);
    const address = server.address();
    if (address !== null) onListening?.(address);
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const onAbort = () => reject(abortError(signal as AbortSignal));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      server.once('connection', (s) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(s);
      });
    });
    return new StreamHandoverChannel(socket);
  } finally {
    server.close();
  }
}
