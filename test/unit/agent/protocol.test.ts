/**
 * The agent protocol's schema functions (lib/agent/protocol.ts): valid bodies decode to exactly
 * what was sent; anything else (bytes, JSON of any shape, extra keys, out-of-range values) is an
 * AgentProtocolError, never another exception. And the tuple forms (lib/agent/tuples.ts).
 */
import fc from 'fast-check';

import {
  AGENT_FRAME_FORMAT,
  cidrContains,
  decodeEmpty,
  decodeFailureBody,
  decodeFileEnd,
  decodeFileStart,
  decodeHello,
  decodeImagesEnd,
  decodeRefuse,
  decodeRestored,
  decodeWelcome,
  encodeBody,
  MAX_TUPLES,
} from '../../../lib/agent/protocol';
import { lockTuples, procKeys, wireTuplesFromProc } from '../../../lib/agent/tuples';
import { FrameDecoder, encodeFrameHeader } from '../../../lib/transport/framed';

const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

const HELLO = {
  version: 1,
  route: 'process',
  migrationId: '0123456789abcdef0123456789abcdef',
  criuVersion: '4.2.1',
  kernel: '6.18.0',
  tuples: [{ local: { address: '10.0.0.100', port: 7000 }, remote: { address: '10.0.0.9', port: 40000 } }],
  moveAddress: { cidr: '10.0.0.100/24', device: 'eth0' },
  lazyPages: false,
};

const DECODERS: Array<[string, (p: Buffer) => unknown]> = [
  ['HELLO', decodeHello],
  ['WELCOME', decodeWelcome],
  ['REFUSE', decodeRefuse],
  ['ERROR', (p) => decodeFailureBody(p, 'ERROR')],
  ['FILE', (p) => decodeFileStart(p, 1000, 1 << 20)],
  ['FILE_END', decodeFileEnd],
  ['IMAGES_END', decodeImagesEnd],
  ['IMAGES_OK', (p) => decodeEmpty(p, 'IMAGES_OK')],
  ['RESTORED', decodeRestored],
];

/** Only AgentProtocolError may come out of a decoder. */
function decodesOrRefuses(decode: (p: Buffer) => unknown, payload: Buffer): void {
  try {
    decode(payload);
  } catch (error) {
    expect((error as { code?: string }).code).toBe('ERR_AGENT_PROTOCOL');
  }
}

describe('agent protocol decoders', () => {
  it('decode valid bodies to what was sent', () => {
    expect(decodeHello(json(HELLO))).toEqual(HELLO);
    const { moveAddress: _m, ...noMove } = HELLO;
    expect(decodeHello(json(noMove))).toEqual(noMove);
    expect(decodeWelcome(json({ criuVersion: '4.2.1', kernel: 'k' }))).toEqual({ criuVersion: '4.2.1', kernel: 'k' });
    expect(decodeRefuse(json({ code: 'ERR_AGENT_BUSY', reason: 'busy' }))).toEqual({
      code: 'ERR_AGENT_BUSY',
      reason: 'busy',
    });
    expect(decodeFileStart(json({ index: 3, name: 'pages-1.img', size: 10 }), 10, 100)).toEqual({
      index: 3,
      name: 'pages-1.img',
      size: 10,
    });
    expect(decodeFileEnd(json({ sha256: 'a'.repeat(64) }))).toEqual({ sha256: 'a'.repeat(64) });
    expect(decodeImagesEnd(json({ files: 2, bytes: 5 }))).toEqual({ files: 2, bytes: 5 });
    expect(decodeRestored(json({ pid: 42 }))).toEqual({ pid: 42 });
  });

  it.each([
    ['an extra key', { ...HELLO, admin: true }],
    ['a missing key', { ...HELLO, tuples: undefined }],
    ['a bad migration id', { ...HELLO, migrationId: '../../etc' }],
    [
      'a non-IP tuple address',
      { ...HELLO, tuples: [{ local: { address: 'x', port: 1 }, remote: { address: '1.2.3.4', port: 2 } }] },
    ],
    [
      'port 0',
      { ...HELLO, tuples: [{ local: { address: '1.1.1.1', port: 0 }, remote: { address: '1.2.3.4', port: 2 } }] },
    ],
    ['too many tuples', { ...HELLO, tuples: new Array(MAX_TUPLES + 1).fill(HELLO.tuples[0]) }],
    ['a device with a slash', { ...HELLO, moveAddress: { cidr: '10.0.0.100/24', device: 'eth0/../x' } }],
    ['a prefix too long', { ...HELLO, moveAddress: { cidr: '10.0.0.100/33', device: 'eth0' } }],
    ['lazyPages not boolean', { ...HELLO, lazyPages: 'yes' }],
  ])('HELLO with %s is refused', (_name, body) => {
    expect(() => decodeHello(json(body))).toThrow(expect.objectContaining({ code: 'ERR_AGENT_PROTOCOL' }));
  });

  it.each(['../x', '.hidden', 'a/b', '', 'x'.repeat(129), 'a\0b', 'a b'])('FILE name %j is refused', (name) => {
    expect(() => decodeFileStart(json({ index: 0, name, size: 1 }), 10, 100)).toThrow(
      expect.objectContaining({ code: 'ERR_AGENT_PROTOCOL' }),
    );
  });

  it('FILE index and size are bounded by the limits', () => {
    expect(() => decodeFileStart(json({ index: 10, name: 'a', size: 1 }), 10, 100)).toThrow(/FILE.index/);
    expect(() => decodeFileStart(json({ index: 0, name: 'a', size: 101 }), 10, 100)).toThrow(/FILE.size/);
    expect(() => decodeFileStart(json({ index: 0, name: 'a', size: 1.5 }), 10, 100)).toThrow(/FILE.size/);
  });

  it.each(DECODERS)('%s: arbitrary bytes never throw anything but ERR_AGENT_PROTOCOL', (_name, decode) => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => decodesOrRefuses(decode, Buffer.from(bytes))),
      {
        numRuns: 300,
      },
    );
  });

  it.each(DECODERS)('%s: arbitrary JSON never throws anything but ERR_AGENT_PROTOCOL', (_name, decode) => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => decodesOrRefuses(decode, json(value))),
      {
        numRuns: 300,
      },
    );
  });

  it('HELLO: mutated valid bodies decode or are refused, and what decodes round-trips', () => {
    const field = fc.constantFrom(...Object.keys(HELLO));
    fc.assert(
      fc.property(field, fc.jsonValue({ maxDepth: 3 }), (key, value) => {
        const body = { ...HELLO, [key]: value };
        let decoded: unknown;
        try {
          decoded = decodeHello(json(body));
        } catch (error) {
          expect((error as { code?: string }).code).toBe('ERR_AGENT_PROTOCOL');
          return;
        }
        expect(decodeHello(encodeBody(decoded as object))).toEqual(decoded);
      }),
      { numRuns: 500 },
    );
  });

  it('frames of an unknown type or larger than 256 KiB are refused before their payload', () => {
    const decoder = new FrameDecoder(AGENT_FRAME_FORMAT);
    const header = encodeFrameHeader({ ...AGENT_FRAME_FORMAT, maxPayload: 2 ** 31 }, 5, 0, 256 * 1024 + 1);
    expect(() => decoder.push(header)).toThrow(expect.objectContaining({ code: 'ERR_FRAME_TOO_LARGE' }));
    const unknown = encodeFrameHeader(AGENT_FRAME_FORMAT, 99, 0, 0);
    expect(() => new FrameDecoder(AGENT_FRAME_FORMAT).push(unknown)).toThrow(/unknown frame type/);
  });
});

describe('addresses and tuples', () => {
  it('cidrContains', () => {
    expect(cidrContains('10.77.0.0/24', '10.77.0.100')).toBe(true);
    expect(cidrContains('10.77.0.100/32', '10.77.0.100')).toBe(true);
    expect(cidrContains('10.77.0.100/32', '10.77.0.101')).toBe(false);
    expect(cidrContains('10.77.0.0/24', '10.78.0.1')).toBe(false);
    expect(cidrContains('fd00::/64', 'fd00::1')).toBe(true);
    expect(cidrContains('fd00::/64', '10.0.0.1')).toBe(false);
    expect(cidrContains('10.0.0.0/8', '::ffff:10.1.2.3')).toBe(true);
  });

  it('/proc/net/tcp keys, wire tuples and lock tuples convert both ways', () => {
    // 10.77.0.100:7000 <-> 10.77.0.10:50000 as /proc/net/tcp prints it (little-endian words).
    const v4 = '64004D0A:1B58-0A004D0A:C350';
    // The same connection on a server bound to :: (tcp6, IPv4-mapped).
    const v6 = '0000000000000000FFFF000064004D0A:1B58-0000000000000000FFFF00000A004D0A:C350';
    const wire = wireTuplesFromProc([v4, v6, 'garbage']);
    expect(wire).toEqual([
      { local: { address: '10.77.0.100', port: 7000 }, remote: { address: '10.77.0.10', port: 50000 } },
      { local: { address: '::ffff:10.77.0.100', port: 7000 }, remote: { address: '::ffff:10.77.0.10', port: 50000 } },
    ]);
    expect(procKeys(wire)).toEqual(new Set([v4, v6]));
    expect(lockTuples(wire)[0]).toEqual({
      local: { family: 4, address: '10.77.0.100', port: 7000 },
      remote: { family: 4, address: '10.77.0.10', port: 50000 },
    });
  });

  it('IPv6 keys round-trip', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.integer({ min: 1, max: 65535 }),
        (bytes, port) => {
          const hex = Buffer.from(bytes).toString('hex').toUpperCase();
          const key = `${hex}:${port.toString(16).padStart(4, '0').toUpperCase()}-${hex}:${port.toString(16).padStart(4, '0').toUpperCase()}`;
          const wire = wireTuplesFromProc([key]);
          expect(procKeys(wire)).toEqual(new Set([key]));
        },
      ),
      { numRuns: 300 },
    );
  });
});
