/** Socket addresses: the string form users see and the byte form native code and images use. */
import * as net from 'node:net';

import type { NativeSockaddr } from './binding-types';

export interface SocketAddress {
  /** 4 or 6: the socket's address family (an IPv4-mapped address belongs to family 6). */
  family: 4 | 6;
  /** '127.0.0.1', '::1', '::ffff:127.0.0.1' ... */
  address: string;
  port: number;
  /** IPv6 only; 0 unless link-local. */
  scopeId?: number;
}

/**
 * Dotted-quad IPv4 (what net.isIPv4 accepts: no leading zeros, each part 0..255) as a uint32, or
 * -1; parsed by hand without allocating: batches parse thousands.
 */
export function ipv4Word(address: string): number {
  if (typeof address !== 'string' || address.length > 15) return -1;
  let word = 0;
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= address.length; i++) {
    const c = i < address.length ? address.charCodeAt(i) : 46; // end acts as a final '.'
    if (c === 46) {
      if (digits === 0 || part > 3) return -1;
      word = word * 256 + value;
      part++;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && value === 0) return -1; // leading zero
      value = value * 10 + (c - 48);
      if (value > 255) return -1;
      digits++;
    } else {
      return -1;
    }
  }
  return part === 4 ? word : -1;
}

function ipv4Bytes(address: string): Buffer | undefined {
  const word = ipv4Word(address);
  if (word < 0) return undefined;
  const out = Buffer.allocUnsafe(4);
  out.writeUInt32BE(word, 0);
  return out;
}

/** Whether `address` is an IP address of `family` (IPv4 checked without allocating). */
export function isIpAddress(family: 4 | 6, address: string): boolean {
  return family === 4 ? ipv4Word(address) >= 0 : addressBytes(family, address) !== undefined;
}

/** Bytes of an IP address in string form, or undefined if it is not one of `family`. */
export function addressBytes(family: 4 | 6, address: string): Buffer | undefined {
  if (family === 4) return ipv4Bytes(address);
  if (!net.isIPv6(address)) return undefined;
  let text = address;
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  // A trailing dotted quad (::ffff:1.2.3.4) stands for the last two words.
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const b = tail.split('.').map(Number);
    text = `${text.slice(0, lastColon + 1)}${((b[0] << 8) | b[1]).toString(16)}:${((b[2] << 8) | b[3]).toString(16)}`;
  }
  const [head, rest] = text.includes('::') ? text.split('::') : [text, undefined];
  const parse = (part: string | undefined): number[] =>
    part
      ? part
          .split(':')
          .filter((p) => p !== '')
          .map((h) => parseInt(h, 16))
      : [];
  const headWords = parse(head);
  const restWords = parse(rest);
  const fill = 8 - headWords.length - restWords.length;
  if (rest === undefined && fill !== 0) return undefined;
  const words = [...headWords, ...new Array<number>(rest === undefined ? 0 : Math.max(fill, 0)).fill(0), ...restWords];
  if (words.length !== 8) return undefined;
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

/** The string form of 4 or 16 address bytes, as Node prints it (RFC 5952, mapped as dotted). */
export function addressString(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length !== 16) throw new RangeError('address must be 4 or 16 bytes');
  const b = Buffer.from(bytes);
  const isMapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  if (isMapped) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const words = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2));
  // Longest run (>= 2) of zero words becomes '::'.
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength && j - i >= 2) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(':');
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLength))}`;
}

export function fromNativeSockaddr(sa: NativeSockaddr): SocketAddress {
  const out: SocketAddress = { family: sa.family, address: addressString(sa.address), port: sa.port };
  if (sa.family === 6 && sa.scopeId) out.scopeId = sa.scopeId;
  return out;
}

/** Undefined when `address` is malformed (callers turn that into their own error). */
export function toNativeSockaddr(address: SocketAddress): NativeSockaddr | undefined {
  const bytes = addressBytes(address.family, address.address);
  if (!bytes || !Number.isInteger(address.port) || address.port < 0 || address.port > 65535) return undefined;
  const out: NativeSockaddr = { family: address.family, address: new Uint8Array(bytes), port: address.port };
  if (address.family === 6) out.scopeId = address.scopeId ?? 0;
  return out;
}

/**
 * The packed address form native code fills without allocating (8 uint32 words at `offset`):
 * [family, port, a0, a1, a2, a3, scopeId, flowinfo], address bytes as big-endian words.
 */
export function socketAddressFromWords(words: Uint32Array, offset: number): SocketAddress {
  const family = words[offset] as 4 | 6;
  const port = words[offset + 1];
  if (family === 4) {
    const a = words[offset + 2];
    return { family, address: `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`, port };
  }
  const bytes = Buffer.allocUnsafe(16);
  for (let i = 0; i < 4; i++) bytes.writeUInt32BE(words[offset + 2 + i], i * 4);
  const out: SocketAddress = { family, address: addressString(bytes), port };
  if (words[offset + 6]) out.scopeId = words[offset + 6];
  return out;
}

/** Writes a (valid) SocketAddress in the packed form; false if the address does not parse. */
export function socketAddressToWords(address: SocketAddress, words: Uint32Array, offset: number): boolean {
  if (address.family === 4) {
    const word = ipv4Word(address.address);
    if (word < 0) return false;
    words.fill(0, offset, offset + 8);
    words[offset] = 4;
    words[offset + 1] = address.port;
    words[offset + 2] = word;
    return true;
  }
  const bytes = addressBytes(address.family, address.address);
  if (!bytes) return false;
  words.fill(0, offset, offset + 8);
  words[offset] = address.family;
  words[offset + 1] = address.port;
  for (let i = 0; i < bytes.length / 4; i++) words[offset + 2 + i] = bytes.readUInt32BE(i * 4);
  if (address.family === 6) words[offset + 6] = address.scopeId ?? 0;
  return true;
}
