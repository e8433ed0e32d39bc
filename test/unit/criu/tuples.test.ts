/**
 * TCP 4-tuples compared as bytes (lib/criu/tuples.ts): a socket's own view (address bytes from
 * getsockname/getpeername, IPv4-mapped on a server listening on `::`) against the text of CRIU's
 * conns4/conns6 lock sets.
 */
import { addressBytes, lockedTupleKeys, tupleKey } from '../../../lib/criu/tuples';

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);
const mapped = (a: number, b: number, c: number, d: number): Uint8Array =>
  bytes(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d);
const loopback6 = bytes(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);

describe('addressBytes', () => {
  it('IPv4 text and bytes', () => {
    expect(addressBytes('127.0.0.1')).toEqual(bytes(127, 0, 0, 1));
    expect(addressBytes(bytes(10, 1, 2, 3))).toEqual(bytes(10, 1, 2, 3));
  });

  it('IPv4-mapped IPv6, as text or bytes, is the IPv4 address', () => {
    expect(addressBytes('::ffff:127.0.0.1')).toEqual(bytes(127, 0, 0, 1));
    expect(addressBytes('::ffff:7f00:1')).toEqual(bytes(127, 0, 0, 1));
    expect(addressBytes(mapped(192, 168, 1, 9))).toEqual(bytes(192, 168, 1, 9));
  });

  it('IPv6 in any spelling', () => {
    for (const text of ['::1', '0:0:0:0:0:0:0:1', '0000::0001']) expect(addressBytes(text)).toEqual(loopback6);
    expect(addressBytes('fd00::a:1')).toEqual(bytes(0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0, 1));
    expect(addressBytes('1:2:3:4:5:6:7:8')).toEqual(bytes(0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8));
    expect(addressBytes('fe80::1%eth0')).toEqual(bytes(0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1));
    expect(addressBytes('::')).toEqual(new Uint8Array(16));
  });

  it('not an address', () => {
    for (const text of ['', 'localhost', '1.2.3', '::g', '1.2.3.256']) expect(addressBytes(text)).toBeUndefined();
    expect(addressBytes(bytes(1, 2, 3))).toBeUndefined();
  });
});

describe('tupleKey / lockedTupleKeys', () => {
  it("a mapped socket (server on '::') matches CRIU's conns4 element", () => {
    const socket = tupleKey(mapped(127, 0, 0, 1), 5000, mapped(127, 0, 0, 1), 40000);
    expect(socket).toBeDefined();
    expect(lockedTupleKeys(['127.0.0.1', 5000, '127.0.0.1', 40000])).toContain(socket);
    // The text comparison this replaces: '::ffff:127.0.0.1' is not '127.0.0.1'.
    expect(tupleKey('::ffff:127.0.0.1', 5000, '127.0.0.1', 40000)).toBe(socket);
  });

  it("CRIU's element in either direction matches the socket's own view", () => {
    const socket = tupleKey(loopback6, 40000, loopback6, 5000);
    expect(lockedTupleKeys(['::1', 5000, '::1', 40000])).toContain(socket);
    expect(lockedTupleKeys(['0:0::1', 40000, '::0:1', 5000])).toContain(socket);
  });

  it('different ports or addresses differ; IPv4 and a non-mapped IPv6 never match', () => {
    const key = tupleKey('127.0.0.1', 5000, '127.0.0.1', 40000);
    expect(tupleKey('127.0.0.1', 5001, '127.0.0.1', 40000)).not.toBe(key);
    expect(tupleKey('127.0.0.2', 5000, '127.0.0.1', 40000)).not.toBe(key);
    expect(tupleKey('::7f00:1', 5000, '::7f00:1', 40000)).not.toBe(key);
  });

  it('malformed elements give no keys', () => {
    expect(lockedTupleKeys(['127.0.0.1', 5000, '127.0.0.1'])).toEqual([]);
    expect(lockedTupleKeys(['127.0.0.1', 5000, 'x', 1])).toEqual([]);
    expect(lockedTupleKeys(['127.0.0.1', 70000, '127.0.0.1', 1])).toEqual([]);
    expect(lockedTupleKeys([1, 5000, '127.0.0.1', 1])).toEqual([]);
  });
});
