/**
 * Socket addresses between their string form and the byte and packed-word forms native code,
 * images and nftables keys use: IPv4 parsed exactly as net.isIPv4 accepts, IPv6 text from bytes
 * in Node's canonical form, and every round trip exact.
 */
import * as net from 'node:net';

import * as fc from 'fast-check';

import {
  addressBytes,
  addressString,
  ipv4Word,
  isIpAddress,
  socketAddressFromWords,
  socketAddressToWords,
  toNativeSockaddr,
  type SocketAddress,
} from '../../../lib/soccr/address';

/** Node's own canonical text of an IPv6 address (what socket.remoteAddress reports). */
function canonical6(address: string): string {
  return new net.SocketAddress({ address, family: 'ipv6' }).address;
}

describe('IPv4', () => {
  it('accepts exactly what net.isIPv4 accepts', () => {
    const candidates = fc.oneof(
      fc.ipV4(),
      fc.string({ maxLength: 16 }),
      fc
        .array(fc.oneof(fc.nat(300).map(String), fc.constantFrom('', '00', '01', '-1', ' 1')), {
          minLength: 1,
          maxLength: 5,
        })
        .map((p) => p.join('.')),
    );
    fc.assert(
      fc.property(candidates, (text) => {
        expect(ipv4Word(text) >= 0).toBe(net.isIPv4(text));
        expect(isIpAddress(4, text)).toBe(net.isIPv4(text));
      }),
      { numRuns: 500 },
    );
  });

  it('is the big-endian word of the four parts', () => {
    expect(ipv4Word('0.0.0.0')).toBe(0);
    expect(ipv4Word('127.0.0.1')).toBe(0x7f000001);
    expect(ipv4Word('255.255.255.255')).toBe(0xffffffff);
    expect(addressBytes(4, '10.1.2.3')).toEqual(Buffer.from([10, 1, 2, 3]));
    expect(addressString(new Uint8Array([10, 1, 2, 3]))).toBe('10.1.2.3');
    for (const bad of ['1.2.3', '1.2.3.4.5', '01.2.3.4', '256.0.0.1', '1..2.3', '1.2.3.4 ', 'a.b.c.d'])
      expect(ipv4Word(bad)).toBe(-1);
  });
});

describe('IPv6', () => {
  it('bytes → text → bytes is exact, and the text is what Node prints', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
        const text = addressString(bytes);
        expect(net.isIPv6(text)).toBe(true);
        expect(addressBytes(6, text)).toEqual(Buffer.from(bytes));
        expect(text).toBe(canonical6(text));
      }),
      { numRuns: 500 },
    );
  });

  it('parses every written form of an address to the same bytes', () => {
    fc.assert(
      fc.property(fc.ipV6(), (text) => {
        expect(addressBytes(6, text)).toEqual(addressBytes(6, canonical6(text)));
      }),
      { numRuns: 300 },
    );
    expect(addressBytes(6, 'fe80::1%eth0')).toEqual(addressBytes(6, 'fe80::1'));
    expect(addressString(addressBytes(6, '::ffff:10.0.0.1')!)).toBe('::ffff:10.0.0.1');
    expect(addressBytes(6, '1.2.3.4')).toBeUndefined();
    expect(addressBytes(6, '::g')).toBeUndefined();
    expect(() => addressString(new Uint8Array(5))).toThrow(RangeError);
  });
});

describe('packed words and native sockaddrs', () => {
  const addressArb: fc.Arbitrary<SocketAddress> = fc.oneof(
    fc.record({ family: fc.constant(4 as const), address: fc.ipV4(), port: fc.integer({ min: 0, max: 65535 }) }),
    fc.record({
      family: fc.constant(6 as const),
      address: fc.uint8Array({ minLength: 16, maxLength: 16 }).map(addressString),
      port: fc.integer({ min: 0, max: 65535 }),
      scopeId: fc.integer({ min: 1, max: 0xffffffff }),
    }),
  );

  it('round-trips through the 8-word form at any offset, leaving other words alone', () => {
    fc.assert(
      fc.property(addressArb, fc.nat(3), (address, slot) => {
        const words = new Uint32Array(32).fill(0xdeadbeef);
        expect(socketAddressToWords(address, words, slot * 8)).toBe(true);
        expect(socketAddressFromWords(words, slot * 8)).toEqual(address);
        words.forEach((w, i) => {
          if (i < slot * 8 || i >= slot * 8 + 8) expect(w).toBe(0xdeadbeef);
        });
      }),
    );
  });

  it('refuses an address that does not parse, and a port out of range for a native sockaddr', () => {
    const words = new Uint32Array(8);
    expect(socketAddressToWords({ family: 4, address: '::1', port: 1 }, words, 0)).toBe(false);
    expect(socketAddressToWords({ family: 6, address: '1.2.3.4', port: 1 }, words, 0)).toBe(false);
    expect(toNativeSockaddr({ family: 4, address: '1.2.3.4', port: 65536 })).toBeUndefined();
    expect(toNativeSockaddr({ family: 4, address: '1.2.3.4', port: 1.5 })).toBeUndefined();
    expect(toNativeSockaddr({ family: 6, address: '::1', port: 80 })).toEqual({
      family: 6,
      address: new Uint8Array(addressBytes(6, '::1')!),
      port: 80,
      scopeId: 0,
    });
  });
});
