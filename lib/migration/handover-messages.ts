/**
 * The handover protocol's messages, pure (no I/O): types, the frame format, and for every message
 * an encoder and a decoder that validates the body against its schema. Both sides decode through
 * here, so nothing from the peer is used before it passed its check: a body that does not fit is
 * ERR_HANDOVER_PROTOCOL, never a TypeError further on.
 *
 * Control bodies are JSON objects with exactly the listed keys. CONNECTION and CONNECTION_FD are
 * binary: u32 first-part length, u32 state length, then both parts; a message larger than one
 * frame continues in frames of the same type and id with FLAG_MORE set on all but the last (the
 * receiver checks the declared lengths against its limits before it keeps a byte).
 */
import * as net from 'node:net';

import type { ConnectionTuple } from '../soccr';
import { HandoverError } from './handover-errors';

/** Version 2: TLS for TCP, bounded frames and continuations, validated bodies, DONE -> COMMITTED. */
export const HANDOVER_PROTOCOL_VERSION = 2;
export const HANDOVER_MAGIC = 0x4e43484f; // 'NCHO'
/** Set on every frame of a message but its last. */
export const FLAG_MORE = 1;
/** Largest frame payload on a stream channel (TCP/TLS, unix stream). */
export const STREAM_FRAME_BYTES = 256 * 1024;
/** Largest frame payload on SEQPACKET (one datagram, well below net.core.wmem_default 212992). */
export const SEQPACKET_FRAME_BYTES = 64 * 1024;
/** Control messages other than HELLO/RESULT/DONE/COMMITTED are small. */
export const SMALL_BODY_BYTES = 4096;
const REASON_CHARS = 1024;
/** JSON bytes per announced tuple or per id in a list, generously (an IPv6 tuple is ~130). */
const TUPLE_BYTES = 256;
const FAILURE_BYTES = 1400;

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
  COMMITTED = 12,
}

export const MESSAGE_TYPES: ReadonlySet<number> = new Set(
  Object.values(MessageType).filter((v): v is number => typeof v === 'number'),
);

export type HandoverMethod = 'repair' | 'fd';

export interface HelloBody {
  method: HandoverMethod;
  count: number;
  addressMoves: boolean;
  lock: 'filter' | 'nftables';
  pid: number;
  /** With addressMoves: the connections' 4-tuples, for the target's gap lock. */
  tuples?: ConnectionTuple[];
}
export interface Failure {
  id: number;
  code: string;
  message: string;
}
export interface ResultBody {
  restored: number[];
  failed: Failure[];
}
export interface DoneBody {
  /** The ids the source lets go of: the target commits these and aborts the rest. */
  commit: number[];
}
export interface CommittedBody {
  committed: number[];
  failed: Failure[];
}

/** Bounds a receiver puts on message sizes (see maxBodyBytes). */
export interface MessageLimits {
  maxConnections: number;
  maxImageBytes: number;
  maxStateBytes: number;
}

export const DEFAULT_LIMITS: MessageLimits = {
  maxConnections: 16384,
  maxImageBytes: 64 * 1024 * 1024,
  maxStateBytes: 16 * 1024 * 1024,
};

/** Largest body of `type` a receiver with `limits` accepts (CONNECTION*: first part + state + prefix). */
export function maxBodyBytes(type: MessageType, limits: MessageLimits): number {
  switch (type) {
    case MessageType.HELLO:
      return SMALL_BODY_BYTES + TUPLE_BYTES * limits.maxConnections;
    case MessageType.RESULT:
    case MessageType.COMMITTED:
      return SMALL_BODY_BYTES + FAILURE_BYTES * limits.maxConnections;
    case MessageType.DONE:
      return SMALL_BODY_BYTES + 16 * limits.maxConnections;
    case MessageType.CONNECTION:
    case MessageType.CONNECTION_FD:
      return 8 + limits.maxImageBytes + limits.maxStateBytes;
    default:
      return SMALL_BODY_BYTES;
  }
}

export function protocolError(message: string, cause?: unknown): HandoverError {
  return new HandoverError(message, 'ERR_HANDOVER_PROTOCOL', cause);
}

// ---- JSON bodies -------------------------------------------------------------------------------

function parseObject(type: MessageType, payload: Buffer, keys: readonly string[]): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch (error) {
    throw protocolError(`malformed ${MessageType[type]} body`, error);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw protocolError(`${MessageType[type]} body is not an object`);
  for (const key of Object.keys(value))
    if (!keys.includes(key)) throw protocolError(`${MessageType[type]}: unknown field '${key}'`);
  return value as Record<string, unknown>;
}

const json = (body: unknown): Buffer => Buffer.from(JSON.stringify(body));
const isId = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;

function idList(type: MessageType, value: unknown, field: string, max: number): number[] {
  if (!Array.isArray(value) || value.length > max || !value.every(isId) || new Set(value).size !== value.length)
    throw protocolError(`${MessageType[type]}.${field} must be at most ${max} distinct connection ids`);
  return value;
}

function failures(type: MessageType, value: unknown, max: number): Failure[] {
  if (!Array.isArray(value) || value.length > max) throw protocolError(`${MessageType[type]}.failed must be a list`);
  return value.map((f: unknown) => {
    const o = f as Record<string, unknown>;
    if (
      typeof o !== 'object' ||
      o === null ||
      !isId(o.id) ||
      typeof o.code !== 'string' ||
      o.code.length > 64 ||
      typeof o.message !== 'string' ||
      o.message.length > REASON_CHARS ||
      Object.keys(o).length !== 3
    )
      throw protocolError(`${MessageType[type]}.failed has a malformed entry`);
    return { id: o.id, code: o.code, message: o.message };
  });
}

function validEndpoint(e: unknown): boolean {
  if (typeof e !== 'object' || e === null) return false;
  const { family, address, port } = e as Record<string, unknown>;
  return (
    Object.keys(e).length === 3 &&
    (family === 4 || family === 6) &&
    typeof address === 'string' &&
    net.isIP(address) === family &&
    Number.isInteger(port) &&
    (port as number) > 0 &&
    (port as number) < 65536
  );
}

export function encodeHello(body: HelloBody): Buffer {
  return json(body);
}

/** HELLO, checked; `maxConnections` bounds count (and tuples, which may not exceed count). */
export function decodeHello(payload: Buffer, maxConnections: number): HelloBody {
  const t = MessageType.HELLO;
  const o = parseObject(t, payload, ['method', 'count', 'addressMoves', 'lock', 'pid', 'tuples']);
  if (o.method !== 'repair' && o.method !== 'fd') throw protocolError(`HELLO.method must be 'repair' or 'fd'`);
  if (!Number.isInteger(o.count) || (o.count as number) < 0) throw protocolError('HELLO.count must be an integer ≥ 0');
  if ((o.count as number) > maxConnections)
    throw protocolError(`HELLO announces ${o.count as number} connections (at most ${maxConnections})`);
  if (typeof o.addressMoves !== 'boolean') throw protocolError('HELLO.addressMoves must be a boolean');
  if (o.lock !== 'filter' && o.lock !== 'nftables') throw protocolError(`HELLO.lock must be 'filter' or 'nftables'`);
  if (!Number.isInteger(o.pid) || (o.pid as number) < 0) throw protocolError('HELLO.pid must be an integer');
  const hello: HelloBody = {
    method: o.method,
    count: o.count as number,
    addressMoves: o.addressMoves,
    lock: o.lock,
    pid: o.pid as number,
  };
  if (o.tuples !== undefined) {
    // The tuples end up in an nft transaction: only well-formed addresses and ports get that far.
    if (
      !Array.isArray(o.tuples) ||
      o.tuples.length > hello.count ||
      !o.tuples.every(
        (x: unknown) =>
          typeof x === 'object' &&
          x !== null &&
          Object.keys(x).length === 2 &&
          validEndpoint((x as ConnectionTuple).local) &&
          validEndpoint((x as ConnectionTuple).remote),
      )
    )
      throw protocolError('HELLO.tuples must be at most count well-formed 4-tuples');
    hello.tuples = (o.tuples as ConnectionTuple[]).map((x) => ({
      local: { family: x.local.family, address: x.local.address, port: x.local.port },
      remote: { family: x.remote.family, address: x.remote.address, port: x.remote.port },
    }));
  }
  return hello;
}

export const encodeWelcome = (body: { pid: number }): Buffer => json(body);
export function decodeWelcome(payload: Buffer): { pid: number } {
  const o = parseObject(MessageType.WELCOME, payload, ['pid']);
  if (!Number.isInteger(o.pid) || (o.pid as number) < 0) throw protocolError('WELCOME.pid must be an integer');
  return { pid: o.pid as number };
}

/** REFUSE and ABORT: a reason, cut to 1024 characters when sent. */
export const encodeReason = (reason: string): Buffer => json({ reason: reason.slice(0, REASON_CHARS) });
export function decodeReason(type: MessageType, payload: Buffer): string {
  const o = parseObject(type, payload, ['reason']);
  if (typeof o.reason !== 'string' || o.reason.length > REASON_CHARS)
    throw protocolError(`${MessageType[type]}.reason must be a string of at most ${REASON_CHARS} characters`);
  return o.reason;
}

export const encodeCount = (count: number): Buffer => json({ count });
/** STAGE_END and STAGED: how many connections the message closes. */
export function decodeCount(type: MessageType, payload: Buffer, max: number): number {
  const o = parseObject(type, payload, ['count']);
  if (!Number.isInteger(o.count) || (o.count as number) < 0 || (o.count as number) > max)
    throw protocolError(`${MessageType[type]}.count must be an integer in 0..${max}`);
  return o.count as number;
}

/** COMMIT: an empty body. */
export function decodeEmpty(type: MessageType, payload: Buffer): void {
  if (payload.length !== 0) throw protocolError(`${MessageType[type]} carries no body`);
}

export const encodeResult = (body: ResultBody): Buffer => json(body);
/** RESULT: every id one the source sent (`sent`), each at most once, restored or failed. */
export function decodeResult(payload: Buffer, sent: ReadonlySet<number>): ResultBody {
  const t = MessageType.RESULT;
  const o = parseObject(t, payload, ['restored', 'failed']);
  const restored = idList(t, o.restored, 'restored', sent.size);
  const failed = failures(t, o.failed, sent.size);
  const all = [...restored, ...failed.map((f) => f.id)];
  if (new Set(all).size !== all.length || !all.every((id) => sent.has(id)))
    throw protocolError('RESULT names a connection that was not sent, or one twice');
  return { restored, failed };
}

export const encodeDone = (body: DoneBody): Buffer => json(body);
/** DONE: ids among those the target restored. */
export function decodeDone(payload: Buffer, restored: ReadonlySet<number>): DoneBody {
  const t = MessageType.DONE;
  const o = parseObject(t, payload, ['commit']);
  const commit = idList(t, o.commit, 'commit', restored.size);
  if (!commit.every((id) => restored.has(id))) throw protocolError('DONE names a connection that was not restored');
  return { commit };
}

export const encodeCommitted = (body: CommittedBody): Buffer => json(body);
/** COMMITTED: the DONE ids, each committed or failed. */
export function decodeCommitted(payload: Buffer, done: ReadonlySet<number>): CommittedBody {
  const t = MessageType.COMMITTED;
  const o = parseObject(t, payload, ['committed', 'failed']);
  const committed = idList(t, o.committed, 'committed', done.size);
  const failed = failures(t, o.failed, done.size);
  const all = [...committed, ...failed.map((f) => f.id)];
  if (new Set(all).size !== all.length || !all.every((id) => done.has(id)))
    throw protocolError('COMMITTED names a connection DONE did not, or one twice');
  return { committed, failed };
}

// ---- CONNECTION / CONNECTION_FD ----------------------------------------------------------------

/** The 8-byte prefix and both parts (image or unread bytes, then the application's state). */
export function encodeConnection(first: Uint8Array, state: Uint8Array): Buffer {
  const prefix = Buffer.allocUnsafe(8);
  prefix.writeUInt32BE(first.byteLength, 0);
  prefix.writeUInt32BE(state.byteLength, 4);
  return Buffer.concat([prefix, first, state]);
}

/** The declared lengths of a CONNECTION* message from its first frame (≥ 8 bytes). */
export function connectionPrefix(type: MessageType, firstFrame: Buffer): { first: number; state: number } {
  if (firstFrame.length < 8) throw protocolError(`${MessageType[type]} shorter than its 8-byte prefix`);
  return { first: firstFrame.readUInt32BE(0), state: firstFrame.readUInt32BE(4) };
}

/** Checks the declared lengths against the receiver's limits (before anything is kept). */
export function checkConnectionSizes(
  type: MessageType,
  sizes: { first: number; state: number },
  limits: MessageLimits,
): void {
  const firstMax = limits.maxImageBytes;
  if (sizes.first > firstMax)
    throw protocolError(`${MessageType[type]} of ${sizes.first} image bytes (at most ${firstMax})`);
  if (sizes.state > limits.maxStateBytes)
    throw protocolError(`${MessageType[type]} of ${sizes.state} state bytes (at most ${limits.maxStateBytes})`);
}

export function decodeConnection(type: MessageType, body: Buffer): [Buffer, Buffer] {
  const { first, state } = connectionPrefix(type, body);
  if (body.length !== 8 + first + state) throw protocolError(`${MessageType[type]} length does not match its prefix`);
  return [body.subarray(8, 8 + first), body.subarray(8 + first)];
}

// ---- frame headers (SEQPACKET: one frame per datagram) ----------------------------------------

export const HEADER_BYTES = 16;

export interface Header {
  type: MessageType;
  flags: number;
  id: number;
  length: number;
}

export function encodeHeader(type: MessageType, id: number, length: number, flags = 0): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(HANDOVER_MAGIC, 0);
  header.writeUInt8(HANDOVER_PROTOCOL_VERSION, 4);
  header.writeUInt8(type, 5);
  header.writeUInt16BE(flags, 6);
  header.writeUInt32BE(id >>> 0, 8);
  header.writeUInt32BE(length, 12);
  return header;
}

/** Parses and checks a header (ERR_HANDOVER_PROTOCOL / ERR_HANDOVER_VERSION); `max` bounds its length. */
export function decodeHeader(bytes: Buffer, max = STREAM_FRAME_BYTES): Header {
  if (bytes.length < HEADER_BYTES) throw protocolError(`short frame (${bytes.length} bytes)`);
  if (bytes.readUInt32BE(0) !== HANDOVER_MAGIC) throw protocolError('not a handover frame (bad magic)');
  const version = bytes.readUInt8(4);
  if (version !== HANDOVER_PROTOCOL_VERSION) {
    throw new HandoverError(
      `handover protocol version ${version} (this side speaks ${HANDOVER_PROTOCOL_VERSION})`,
      'ERR_HANDOVER_VERSION',
    );
  }
  const type = bytes.readUInt8(5);
  if (!MESSAGE_TYPES.has(type)) throw protocolError(`unknown message type ${type}`);
  const flags = bytes.readUInt16BE(6);
  if ((flags & ~FLAG_MORE) !== 0) throw protocolError(`unknown frame flags 0x${flags.toString(16)}`);
  const length = bytes.readUInt32BE(12);
  if (length > max) throw protocolError(`frame of ${length} bytes (at most ${max})`);
  return { type, flags, id: bytes.readUInt32BE(8), length };
}
