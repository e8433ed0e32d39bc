/**
 * The handover channel's frame header (lib/migration/handover-messages.ts): what one side encodes
 * the other decodes, and every malformed header is refused with a typed error before a payload is read.
 */
import * as fc from 'fast-check';

import {
  FLAG_MORE,
  HANDOVER_PROTOCOL_VERSION,
  MessageType,
  STREAM_FRAME_BYTES,
  decodeHeader,
  decodeReason,
  encodeHeader,
} from '../../../lib/migration/handover-messages';

const TYPES = Object.values(MessageType).filter((v): v is MessageType => typeof v === 'number');
const MAX_FRAME_BYTES = STREAM_FRAME_BYTES;

function refused(bytes: Buffer, code: string, message: RegExp): void {
  expect(() => decodeHeader(bytes)).toThrow(expect.objectContaining({ name: 'HandoverError', code }));
  expect(() => decodeHeader(bytes)).toThrow(message);
}

describe('handover frame header', () => {
  it('round-trips type, id, length and flags for every message type', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...TYPES),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 0, max: MAX_FRAME_BYTES }),
        fc.constantFrom(0, FLAG_MORE),
        (type, id, length, flags) => {
          const header = encodeHeader(type, id, length, flags);
          expect(header).toHaveLength(16);
          expect(decodeHeader(header)).toEqual({ type, id, length, flags });
        },
      ),
    );
  });

  it('lays the header out as magic, version, type, flags, id, length (big-endian)', () => {
    const header = encodeHeader(MessageType.COMMIT, 0x01020304, 0x0a0b0c0d, 1);
    expect(header.toString('hex')).toBe(`4e43484f${'02'}${'08'}0001${'01020304'}${'0a0b0c0d'}`);
    expect(header[4]).toBe(HANDOVER_PROTOCOL_VERSION);
  });

  it('writes a negative id as its unsigned 32-bit value', () => {
    expect(decodeHeader(encodeHeader(MessageType.HELLO, -1, 0)).id).toBe(0xffffffff);
  });

  it('decodes only the first 16 bytes of a longer buffer', () => {
    const frame = Buffer.concat([encodeHeader(MessageType.DONE, 7, 3), Buffer.from('abc')]);
    expect(decodeHeader(frame)).toEqual({ type: MessageType.DONE, id: 7, length: 3, flags: 0 });
  });

  it('refuses a short frame, a bad magic, another version, an unknown type and an oversized length', () => {
    const good = encodeHeader(MessageType.HELLO, 1, 10);
    for (let n = 0; n < 16; n++) refused(good.subarray(0, n), 'ERR_HANDOVER_PROTOCOL', /short frame/);

    const magic = Buffer.from(good);
    magic.writeUInt32BE(0x4e43484e, 0);
    refused(magic, 'ERR_HANDOVER_PROTOCOL', /bad magic/);

    for (const version of [0, 1, HANDOVER_PROTOCOL_VERSION + 1, 255]) {
      const other = Buffer.from(good);
      other.writeUInt8(version, 4);
      refused(other, 'ERR_HANDOVER_VERSION', new RegExp(`version ${version} \\(this side speaks 2\\)`));
    }

    for (const type of [0, Math.max(...TYPES) + 1, 255]) {
      const unknown = Buffer.from(good);
      unknown.writeUInt8(type, 5);
      refused(unknown, 'ERR_HANDOVER_PROTOCOL', new RegExp(`unknown message type ${type}`));
    }

    expect(decodeHeader(encodeHeader(MessageType.CONNECTION, 1, MAX_FRAME_BYTES)).length).toBe(MAX_FRAME_BYTES);
    refused(
      encodeHeader(MessageType.CONNECTION, 1, MAX_FRAME_BYTES + 1),
      'ERR_HANDOVER_PROTOCOL',
      /frame of \d+ bytes/,
    );
    for (const flags of [2, 0x8000, 0xffff])
      refused(encodeHeader(MessageType.HELLO, 1, 0, flags), 'ERR_HANDOVER_PROTOCOL', /unknown frame flags/);
  });

  it('refuses random bytes with a typed error or decodes them to a valid header, never anything else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 24 }), (bytes) => {
        let header;
        try {
          header = decodeHeader(Buffer.from(bytes));
        } catch (error) {
          expect(error).toEqual(expect.objectContaining({ name: 'HandoverError' }));
          expect(['ERR_HANDOVER_PROTOCOL', 'ERR_HANDOVER_VERSION']).toContain((error as { code: string }).code);
          return;
        }
        expect(TYPES).toContain(header.type);
        expect(header.length).toBeLessThanOrEqual(MAX_FRAME_BYTES);
      }),
    );
  });
});

describe('handover message bodies', () => {
  it('parses a reason', () => {
    expect(decodeReason(MessageType.REFUSE, Buffer.from('{"reason":"draining"}'))).toBe('draining');
  });

  it('refuses a malformed body with ERR_HANDOVER_PROTOCOL naming the message type, the parse error as cause', () => {
    let error: unknown;
    try {
      decodeReason(MessageType.ABORT, Buffer.from('{"reason":'));
    } catch (e) {
      error = e;
    }
    expect(error).toEqual(
      expect.objectContaining({
        name: 'HandoverError',
        code: 'ERR_HANDOVER_PROTOCOL',
        message: 'malformed ABORT body',
      }),
    );
    expect((error as Error).cause).toBeInstanceOf(SyntaxError);
  });
});
