/**
 * unparsedInput (lib/ws/frames.ts): a ws Receiver stopped after any byte of a client's frame
 * stream gives bytes from which a fresh Receiver produces exactly the events the first one still
 * owed: whole messages, fragmented ones (with a control frame between fragments), every length
 * encoding (7-bit, 16-bit, 64-bit), masks, empty frames.
 */
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';

import fc from 'fast-check';

import { unparsedInput } from '../../../lib/ws/frames';
import type { ReceiverInternals } from '../../../lib/ws/internals';

type ReceiverLike = ReceiverInternals & {
  write(chunk: Buffer): boolean;
  on(event: string, listener: (...args: unknown[]) => void): void;
};
const WsReceiver = require(path.join(path.dirname(require.resolve('ws')), 'lib', 'receiver.js')) as new (
  options: Record<string, unknown>,
) => ReceiverLike;
/** As a WebSocketServer's (its default limits). */
class Receiver extends WsReceiver {
  constructor(_options: { isServer: true }) {
    super({ isServer: true, maxPayload: 100 * 1024 * 1024, maxFragments: 16 * 1024, maxBufferedChunks: 256 * 1024 });
  }
}

/** A frame as a client sends it (always masked). */
function frame(fin: boolean, opcode: number, payload: Buffer, mask = randomBytes(4)): Buffer {
  const length = payload.length;
  const head =
    length < 126
      ? Buffer.from([0, 0x80 | length])
      : length <= 0xffff
        ? Buffer.concat([Buffer.from([0, 0x80 | 126]), Buffer.from([length >> 8, length & 0xff])])
        : Buffer.concat([Buffer.from([0, 0x80 | 127]), Buffer.from([0, 0, 0, 0]), u32(length)]);
  head[0] = (fin ? 0x80 : 0) | opcode;
  const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]));
  return Buffer.concat([head, mask, masked]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function eventsOf(receiver: ReceiverLike): string[] {
  const events: string[] = [];
  receiver.on('message', (data, isBinary) => events.push(`message ${isBinary} ${(data as Buffer).toString('base64')}`));
  receiver.on('ping', (data) => events.push(`ping ${(data as Buffer).toString('hex')}`));
  receiver.on('pong', (data) => events.push(`pong ${(data as Buffer).toString('hex')}`));
  receiver.on('conclude', (code) => events.push(`close ${code}`));
  receiver.on('error', (error) => events.push(`error ${(error as Error).message}`));
  return events;
}

function stream(): Buffer {
  return Buffer.concat([
    frame(true, 1, Buffer.from('hello')),
    frame(true, 2, Buffer.alloc(0)),
    frame(true, 2, randomBytes(125)),
    frame(true, 1, Buffer.from('x'.repeat(126))),
    frame(false, 2, randomBytes(300)),
    frame(true, 9, Buffer.from('ping-between-fragments')),
    frame(false, 0, Buffer.alloc(0)),
    frame(true, 0, randomBytes(70)),
    frame(false, 1, Buffer.from('frag-')),
    frame(true, 0, Buffer.from('ment')),
    frame(true, 10, Buffer.alloc(0)),
    frame(true, 2, randomBytes(70000)),
    frame(true, 1, Buffer.from('last')),
  ]);
}

/** Feeds a copy of `bytes` (the Receiver unmasks in place) in chunks of the given sizes, the last one taking the rest. */
function feed(receiver: ReceiverLike, original: Buffer, sizes: number[]): void {
  const bytes = Buffer.from(original);
  let at = 0;
  for (const size of sizes) {
    if (at >= bytes.length) break;
    receiver.write(bytes.subarray(at, at + size));
    at += size;
  }
  if (at < bytes.length) receiver.write(bytes.subarray(at));
}

const all = stream();
const reference = (() => {
  const r = new Receiver({ isServer: true });
  const events = eventsOf(r);
  feed(r, all, []);
  return events;
})();

function splitAndCarry(cut: number, sizes: number[]): string[] {
  const first = new Receiver({ isServer: true });
  const events = eventsOf(first);
  feed(first, all.subarray(0, cut), sizes);
  const head = unparsedInput(first, 0);
  const second = new Receiver({ isServer: true });
  const later = eventsOf(second);
  feed(second, Buffer.concat([head, all.subarray(cut)]), []);
  return [...events, ...later];
}

it('the reference stream parses into every kind of event', () => {
  expect(reference).toHaveLength(10);
  expect(reference.filter((e) => e.startsWith('error'))).toEqual([]);
});

it('carries the Receiver over at every byte of the small frames', () => {
  const smallFramesEnd = all.length - 70000 - 14 - 10;
  for (let cut = 0; cut <= smallFramesEnd; cut++) expect(splitAndCarry(cut, [cut])).toEqual(reference);
});

it('carries the Receiver over at any byte, whatever the chunks it got', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: all.length }),
      fc.array(fc.integer({ min: 1, max: 4096 }), { maxLength: 30 }),
      (cut, sizes) => {
        expect(splitAndCarry(cut, sizes)).toEqual(reference);
      },
    ),
    { numRuns: 300 },
  );
});

it('refuses a compressed message that arrived in part', () => {
  const r = new Receiver({ isServer: true });
  r.write(frame(false, 1, Buffer.from('part')));
  r._compressed = true; // as after a first frame with RSV1 set (its fragment inflated already)
  expect(() => unparsedInput(r, 3)).toThrow(
    expect.objectContaining({ code: 'ERR_WS_FRAGMENTED_COMPRESSED', index: 3 }),
  );
});
