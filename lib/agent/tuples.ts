/**
 * 4-tuples between their three forms: /proc/net/tcp's hex keys ("0100007F:1F90-0900000A:C350",
 * what process-criu.ts reads and process-waits.ts compares), the protocol's { local, remote }
 * with text addresses, and the nftables lock's ConnectionTuple.
 */
import * as net from 'node:net';

import { addressBytes as criuAddressBytes } from '../criu/tuples';
import type { ConnectionTuple } from '../soccr/nft-lock';
import type { WireAddress, WireTuple } from './protocol';

/** The 4 (IPv4) or 16 (IPv6) bytes of a /proc/net/tcp address field (u32 words in host order). */
function procHexBytes(hex: string): number[] | undefined {
  if (!/^[0-9A-Fa-f]{8}$|^[0-9A-Fa-f]{32}$/.test(hex)) return undefined;
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8);
    // little-endian hosts print each word's bytes reversed
    for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(word.slice(b, b + 2), 16));
  }
  return bytes;
}

function bytesToAddress(bytes: number[]): string {
  if (bytes.length === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

function procEndpoint(field: string): WireAddress | undefined {
  const [hex, port] = field.split(':');
  const bytes = hex === undefined ? undefined : procHexBytes(hex);
  if (bytes === undefined || port === undefined || !/^[0-9A-Fa-f]{4}$/.test(port)) return undefined;
  return { address: bytesToAddress(bytes), port: parseInt(port, 16) };
}

/** "local-remote" hex keys (processTcpTuples) → wire tuples; malformed keys are skipped. */
export function wireTuplesFromProc(keys: Iterable<string>): WireTuple[] {
  const tuples: WireTuple[] = [];
  for (const key of keys) {
    const [l, r] = key.split('-');
    const local = l === undefined ? undefined : procEndpoint(l);
    const remote = r === undefined ? undefined : procEndpoint(r);
    if (local !== undefined && remote !== undefined) tuples.push({ local, remote });
  }
  return tuples;
}

function procField(endpoint: WireAddress): string {
  const family = net.isIP(endpoint.address);
  let bytes: number[];
  if (family === 4) bytes = endpoint.address.split('.').map(Number);
  else {
    const sa = new net.SocketAddress({ address: endpoint.address, family: 'ipv6' });
    const full = criuAddressBytes(sa.address);
    // keep a mapped address's 16 bytes: tcp6 lists it that way
    bytes =
      full !== undefined && full.length === 16 ? [...full] : [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, ...(full ?? [])];
  }
  let hex = '';
  for (let w = 0; w < bytes.length; w += 4)
    for (let b = 3; b >= 0; b--) hex += bytes[w + b].toString(16).padStart(2, '0').toUpperCase();
  return `${hex}:${endpoint.port.toString(16).padStart(4, '0').toUpperCase()}`;
}

/** Wire tuples → the hex keys conflictingSockets compares with /proc/net/tcp rows. */
export function procKeys(tuples: readonly WireTuple[]): Set<string> {
  return new Set(tuples.map((t) => `${procField(t.local)}-${procField(t.remote)}`));
}

/** Wire tuples → the nftables lock's tuples. */
export function lockTuples(tuples: readonly WireTuple[]): ConnectionTuple[] {
  const side = (a: WireAddress): ConnectionTuple['local'] => ({
    family: net.isIP(a.address) === 6 ? 6 : 4,
    address: a.address,
    port: a.port,
  });
  return tuples.map((t) => ({ local: side(t.local), remote: side(t.remote) }));
}
