/**
 * What a WebSocket's Receiver holds between frames, as bytes a fresh Receiver parses into the same
 * events: the fragments of a message that arrived in part, the header of the frame in progress,
 * and the bytes not parsed yet. The target hands them to setSocket as `head` (before anything the
 * socket itself brings).
 */
import { WebSocketHandoverError } from './errors';
import type { ReceiverInternals } from './internals';

/** The Receiver's states (ws lib/receiver.js). */
const GET_INFO = 0;
const GET_PAYLOAD_LENGTH_16 = 1;
const GET_PAYLOAD_LENGTH_64 = 2;
const GET_MASK = 3;
const GET_DATA = 4;

const ZERO_MASK = Buffer.alloc(4);

/** A frame header; `length` 126 or 127 alone: only that marker, its extended length still unread. */
function header(first: number, masked: boolean, length: number | { marker: 126 | 127 }, mask?: Buffer): Buffer {
  const maskBit = masked ? 0x80 : 0;
  let head: Buffer;
  if (typeof length === 'object') {
    head = Buffer.from([first, maskBit | length.marker]);
  } else if (length < 126) {
    head = Buffer.from([first, maskBit | length]);
  } else if (length <= 0xffff) {
    head = Buffer.alloc(4);
    head[0] = first;
    head[1] = maskBit | 126;
    head.writeUInt16BE(length, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = first;
    head[1] = maskBit | 127;
    head.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    head.writeUInt32BE(length >>> 0, 6);
  }
  return mask ? Buffer.concat([head, mask]) : head;
}

/**
 * The Receiver's input that has not become an event yet. Only when receiverIdle(). Throws
 * ERR_WS_FRAGMENTED_COMPRESSED for a compressed message of which a fragment was inflated already.
 */
export function unparsedInput(r: ReceiverInternals, index: number): Buffer {
  const parts: Buffer[] = [];
  // A data frame whose header is parsed: with _fragmented set it is the first frame of a
  // fragmented message or a continuation. Fragments before it make it a continuation; without
  // any, sending it as the first frame gives the same message.
  const dataHeader = r._state !== GET_INFO && r._opcode < 0x08;
  const prior = Buffer.concat(r._fragments);
  const inProgress = r._fragmented !== 0 && (!dataHeader || prior.length > 0);
  if (r._compressed && r._fragmented !== 0) {
    // The first compressed frame is still unparsed only when no earlier fragment carried a byte.
    const firstFrame = dataHeader && r._state >= GET_MASK && r._totalPayloadLength === r._payloadLength;
    if (inProgress || !firstFrame)
      throw new WebSocketHandoverError(
        'a compressed message arrived in part: its inflate state cannot move',
        'ERR_WS_FRAGMENTED_COMPRESSED',
        index,
      );
  }
  if (inProgress) {
    // The fragments so far as one non-final frame, masked with a zero key where the peer must
    // mask (a client's frames to a server).
    parts.push(header(r._fragmented, r._isServer, prior.length, r._isServer ? ZERO_MASK : undefined), prior);
  }
  if (r._state !== GET_INFO) {
    // The frame in progress: its first two bytes (and, past them, its length and mask) are parsed.
    const control = r._opcode > 0x07;
    const firstOfMessage = control || !inProgress;
    const opcode = firstOfMessage ? r._opcode : 0;
    const rsv1 = !control && firstOfMessage && r._compressed ? 0x40 : 0;
    const first = (r._fin ? 0x80 : 0) | rsv1 | opcode;
    if (r._state === GET_PAYLOAD_LENGTH_16) parts.push(header(first, r._masked, { marker: 126 }));
    else if (r._state === GET_PAYLOAD_LENGTH_64) parts.push(header(first, r._masked, { marker: 127 }));
    else if (r._state === GET_MASK) parts.push(header(first, r._masked, r._payloadLength));
    else if (r._state === GET_DATA)
      parts.push(header(first, r._masked, r._payloadLength, r._masked ? (r._mask as Buffer) : undefined));
    else throw new WebSocketHandoverError(`the Receiver is busy (state ${r._state})`, 'ERR_WS_BUSY', index);
  }
  parts.push(...r._buffers);
  return Buffer.concat(parts);
}
