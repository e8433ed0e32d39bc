/**
 * The handover's message schemas (lib/migration/handover-messages.ts) and the channel's message
 * assembly (lib/migration/handover-channel.ts over an in-memory duplex pair): what one side
 * encodes the other decodes, and anything else (random bytes, random JSON, valid bodies with one
 * field mutated, frames out of order or too big) is ERR_HANDOVER_PROTOCOL, never another error.
 */
import { duplexPair } from 'node:stream';

import fc from 'fast-check';

import { StreamHandoverChannel, channelError } from '../../../lib/migration/handover-channel';
import {
  FLAG_MORE,
  MessageType,
  STREAM_FRAME_BYTES,
  decodeCommitted,
  decodeConnection,
  decodeCount,
  decodeDone,
  decodeEmpty,
  decodeHello,
  decodeReason,
  decodeResult,
  decodeWelcome,
  encodeCommitted,
  encodeConnection,
  encodeCount,
  encodeDone,
  encodeHeader,
  encodeHello,
  encodeReason,
  encodeResult,
  encodeWelcome,
} from '../../../lib/migration/handover-messages';
import type { HelloBody } from '../../../lib/migration/handover-messages';

const MAX = 64;
const SENT = new Set(Array.from({ length: 32 }, (_, i) => i));

/** Every decoder, with the context a receiver gives it. */
const DECODERS: Array<[string, (payload: Buffer) => unknown]> = [
  ['HELLO', (p) => decodeHello(p, MAX)],
  ['WELCOME', (p) => decodeWelcome(p)],
  ['REFUSE', (p) => decodeReason(MessageType.REFUSE, p)],
  ['ABORT', (p) => decodeReason(MessageType.ABORT, p)],
  ['STAGE_END', (p) => decodeCount(MessageType.STAGE_END, p, MAX)],
  ['STAGED', (p) => decodeCount(MessageType.STAGED, p, MAX)],
  ['COMMIT', (p) => decodeEmpty(MessageType.COMMIT, p)],
  ['RESULT', (p) => decodeResult(p, SENT)],
  ['DONE', (p) => decodeDone(p, SENT)],
  ['COMMITTED', (p) => decodeCommitted(p, SENT)],
  ['CONNECTION', (p) => decodeConnection(MessageType.CONNECTION, p)],
];

function onlyProtocolErrors(decode: (payload: Buffer) => unknown, payload: Buffer): void {
  try {
    decode(payload);
  } catch (error) {
    expect(error).toEqual(expect.objectContaining({ name: 'HandoverError', code: 'ERR_HANDOVER_PROTOCOL' }));
  }
}

const endpoint = (family: 4 | 6) =>
  fc.record({
    family: fc.constant(family),
    address: family === 4 ? fc.ipV4() : fc.ipV6(),
    port: fc.integer({ min: 1, max: 65535 }),
  });
const tuple = fc.constantFrom<4 | 6>(4, 6).chain((f) => fc.record({ local: endpoint(f), remote: endpoint(f) }));
const hello: fc.Arbitrary<HelloBody> = fc
  .record({
    method: fc.constantFrom<'repair' | 'fd'>('repair', 'fd'),
    count: fc.integer({ min: 0, max: MAX }),
    addressMoves: fc.boolean(),
    lock: fc.constantFrom<'filter' | 'nftables'>('filter', 'nftables'),
    pid: fc.nat(),
  })
  .chain((h) =>
    fc
      .option(fc.array(tuple, { maxLength: h.count }), { nil: undefined })
      .map((tuples) => ({ ...h, ...(tuples ? { tuples } : {}) })),
  );
const ids = fc.uniqueArray(fc.integer({ min: 0, max: 31 }), { maxLength: 32 });
const failure = (id: number) => ({ id, code: 'ERR_X', message: 'm' });

describe('message bodies round-trip', () => {
  it('HELLO (with and without tuples)', () => {
    fc.assert(fc.property(hello, (h) => expect(decodeHello(encodeHello(h), MAX)).toEqual(h)));
  });

  it('WELCOME, REFUSE/ABORT, STAGE_END/STAGED', () => {
    fc.assert(
      fc.property(fc.nat(), fc.string({ maxLength: 1024 }), fc.integer({ min: 0, max: MAX }), (pid, reason, count) => {
        expect(decodeWelcome(encodeWelcome({ pid }))).toEqual({ pid });
        expect(decodeReason(MessageType.ABORT, encodeReason(reason))).toBe(reason);
        expect(decodeCount(MessageType.STAGED, encodeCount(count), MAX)).toBe(count);
      }),
    );
  });

  it('RESULT, DONE, COMMITTED over disjoint ids', () => {
    fc.assert(
      fc.property(ids, fc.nat({ max: 32 }), (all, split) => {
        const restored = all.slice(0, split);
        const failed = all.slice(split).map(failure);
        expect(decodeResult(encodeResult({ restored, failed }), SENT)).toEqual({ restored, failed });
        expect(decodeDone(encodeDone({ commit: restored }), new Set(restored))).toEqual({ commit: restored });
        expect(decodeCommitted(encodeCommitted({ committed: restored, failed }), SENT)).toEqual({
          committed: restored,
          failed,
        });
      }),
    );
  });

  it('CONNECTION parts', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 300 }), (image, state) => {
        const [a, b] = decodeConnection(MessageType.CONNECTION, encodeConnection(image, state));
        expect([...a]).toEqual([...image]);
        expect([...b]).toEqual([...state]);
      }),
    );
  });
});

describe('hostile bodies are ERR_HANDOVER_PROTOCOL, nothing else', () => {
  it.each(DECODERS)('%s: random bytes', (_name, decode) => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => onlyProtocolErrors(decode, Buffer.from(bytes))),
    );
  });

  it.each(DECODERS)('%s: random JSON', (_name, decode) => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => onlyProtocolErrors(decode, Buffer.from(JSON.stringify(value) ?? 'null'))),
    );
  });

  it('valid bodies with one field replaced by anything', () => {
    const valid: Array<[string, Record<string, unknown>]> = [
      [
        'HELLO',
        {
          method: 'repair',
          count: 2,
          addressMoves: true,
          lock: 'filter',
          pid: 1,
          tuples: [
            {
              local: { family: 4, address: '10.0.0.1', port: 80 },
              remote: { family: 4, address: '10.0.0.2', port: 5000 },
            },
          ],
        },
      ],
      ['WELCOME', { pid: 1 }],
      ['REFUSE', { reason: 'x' }],
      ['STAGED', { count: 1 }],
      ['RESULT', { restored: [1], failed: [failure(2)] }],
      ['DONE', { commit: [1] }],
      ['COMMITTED', { committed: [1], failed: [] }],
    ];
    const decoders = new Map(DECODERS);
    fc.assert(
      fc.property(fc.constantFrom(...valid), fc.nat(), fc.jsonValue(), ([name, body], pick, value) => {
        const keys = Object.keys(body);
        const mutated = { ...body, [keys[pick % keys.length]]: value };
        onlyProtocolErrors(decoders.get(name) as (p: Buffer) => unknown, Buffer.from(JSON.stringify(mutated)));
      }),
    );
  });

  it('refuses what a forged peer would try', () => {
    const refused = (decode: () => unknown, message: RegExp) =>
      expect(decode).toThrow(
        expect.objectContaining({ code: 'ERR_HANDOVER_PROTOCOL', message: expect.stringMatching(message) }),
      );
    const h = { method: 'repair', count: 1, addressMoves: true, lock: 'filter', pid: 1 };
    refused(() => decodeHello(Buffer.from(JSON.stringify({ ...h, count: MAX + 1 })), MAX), /at most 64/);
    const injected = {
      local: { family: 4, address: '10.0.0.1 }; flush ruleset; add element x { 1', port: 80 },
      remote: { family: 4, address: '10.0.0.2', port: 5000 },
    };
    refused(() => decodeHello(Buffer.from(JSON.stringify({ ...h, tuples: [injected] })), MAX), /tuples/);
    const t = {
      local: { family: 4, address: '10.0.0.1', port: 80 },
      remote: { family: 4, address: '10.0.0.2', port: 5000 },
    };
    refused(() => decodeHello(Buffer.from(JSON.stringify({ ...h, tuples: [t, t] })), MAX), /tuples/);
    refused(() => decodeHello(Buffer.from(JSON.stringify({ ...h, extra: 1 })), MAX), /unknown field/);
    // The malformed RESULT that used to be a TypeError in the source.
    refused(() => decodeResult(Buffer.from('{"restored":"all","failed":null}'), SENT), /restored/);
    refused(() => decodeResult(Buffer.from('{"restored":[99],"failed":[]}'), SENT), /not sent/);
    refused(
      () => decodeResult(Buffer.from('{"restored":[1],"failed":[{"id":1,"code":"E","message":""}]}'), SENT),
      /twice/,
    );
    refused(() => decodeDone(Buffer.from('{"commit":[5]}'), new Set([1])), /at most 1|not restored/);
    refused(() => decodeConnection(MessageType.CONNECTION, Buffer.from([0, 0, 0, 9, 0, 0, 0, 0, 1])), /prefix/);
  });
});

/** A channel whose peer writes raw bytes. */
function channelWithRawPeer(): { channel: StreamHandoverChannel; write: (b: Buffer) => void; end: () => void } {
  const [ours, theirs] = duplexPair();
  theirs.on('data', () => undefined);
  return { channel: new StreamHandoverChannel(ours), write: (b) => theirs.write(b), end: () => theirs.end() };
}

const frame = (type: MessageType, id: number, body: Buffer, flags = 0): Buffer =>
  Buffer.concat([encodeHeader(type, id, body.length, flags), body]);

describe('message assembly on a stream channel', () => {
  it('reassembles continued messages exactly, in any split', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1, maxLength: 3000 }),
        fc.integer({ min: 8, max: 700 }),
        async (image, size) => {
          const { channel, write } = channelWithRawPeer();
          const body = encodeConnection(image, Buffer.from('st'));
          for (let o = 0; o < body.length; o += size)
            write(frame(MessageType.CONNECTION, 3, body.subarray(o, o + size), o + size < body.length ? FLAG_MORE : 0));
          const message = await channel.expect([MessageType.CONNECTION]);
          expect(message.payload.equals(body)).toBe(true);
          channel.close();
        },
      ),
      { numRuns: 50 },
    );
  });

  it('refuses a CONNECTION declared over the limits from its first frame, and over the total budget', async () => {
    const { channel, write } = channelWithRawPeer();
    channel.limits = { maxConnections: 4, maxImageBytes: 1000, maxStateBytes: 10 };
    const prefix = Buffer.alloc(8);
    prefix.writeUInt32BE(0xffffffff, 0);
    write(frame(MessageType.CONNECTION, 1, prefix, FLAG_MORE));
    await expect(channel.expect([MessageType.CONNECTION])).rejects.toMatchObject({ code: 'ERR_HANDOVER_PROTOCOL' });

    const second = channelWithRawPeer();
    second.channel.limits = { maxConnections: 4, maxImageBytes: 1000, maxStateBytes: 10 };
    second.channel.connectionBudget = 1500;
    second.write(frame(MessageType.CONNECTION, 1, encodeConnection(Buffer.alloc(900), Buffer.alloc(0))));
    second.write(frame(MessageType.CONNECTION, 2, encodeConnection(Buffer.alloc(900), Buffer.alloc(0))));
    await second.channel.expect([MessageType.CONNECTION]);
    await expect(second.channel.expect([MessageType.CONNECTION])).rejects.toThrow(/total limit/);
  });

  it('random frame sequences end in messages or ERR_HANDOVER_PROTOCOL/VERSION/CHANNEL_CLOSED, never anything else', async () => {
    const anyFrame = fc.record({
      type: fc.integer({ min: 0, max: 14 }),
      id: fc.integer({ min: 0, max: 3 }),
      flags: fc.constantFrom(0, 0, FLAG_MORE, 2),
      body: fc.uint8Array({ maxLength: 64 }),
      version: fc.constantFrom(2, 2, 2, 1),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(anyFrame, { maxLength: 12 }), async (frames) => {
        const { channel, write, end } = channelWithRawPeer();
        channel.limits = { maxConnections: 4, maxImageBytes: 100, maxStateBytes: 100 };
        for (const f of frames) {
          const bytes = Buffer.concat([encodeHeader(f.type as MessageType, f.id, f.body.length, f.flags), f.body]);
          bytes[4] = f.version;
          write(bytes);
        }
        end();
        const all = [...Array(15).keys()].filter((t) => t in MessageType) as MessageType[];
        for (;;) {
          try {
            const message = await channel.expect(all);
            expect(message.payload.length).toBeLessThanOrEqual(STREAM_FRAME_BYTES * 12);
          } catch (error) {
            expect([
              'ERR_HANDOVER_PROTOCOL',
              'ERR_HANDOVER_VERSION',
              'ERR_HANDOVER_CHANNEL_CLOSED',
              'ERR_HANDOVER_PEER_ABORTED',
            ]).toContain((error as { code?: string }).code);
            break;
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('channel errors: only the peer closing is "closed"', () => {
  // After DONE a closed channel makes the source resume its originals, so only the peer's own FIN
  // or RST may count as closed; our TCP giving up says nothing about the peer.
  it.each(['ETIMEDOUT', 'EPERM', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN'])(
    '%s is ERR_HANDOVER_TIMEOUT',
    (code) => {
      const error = channelError(Object.assign(new Error(code), { code }));
      expect(error).toMatchObject({ code: 'ERR_HANDOVER_TIMEOUT' });
      expect((error as Error & { cause?: unknown }).cause).toMatchObject({ code });
    },
  );

  it.each(['ECONNRESET', 'EPIPE', 'ERR_TRANSPORT_CLOSED'])('%s is ERR_HANDOVER_CHANNEL_CLOSED', (code) => {
    expect(channelError(Object.assign(new Error(code), { code }))).toMatchObject({
      code: 'ERR_HANDOVER_CHANNEL_CLOSED',
    });
  });
});
