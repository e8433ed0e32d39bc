/**
 * The tables of a packet hold (lib/soccr/packet-hold.ts): per IP family one table whose input
 * chain sends the matched packets (connection 4-tuples, or local address . port endpoints) to a
 * `hold` chain: a byte quota (over it: drop) and then the netfilter queue rule, which the addon
 * appends over netlink (nft_compat NFQUEUE: nft cannot write it). Priority -320, before the
 * lock tables (-310) and CRIU's, so a held packet re-injected after they are gone meets none.
 * Pure builders, unit-tested.
 */
import { InvalidArgumentError } from '../../errors';
import type { NftCommand } from '../../sys/nft';
import { addressBytes, addressString, type SocketAddress } from '../address';
import type { ConnectionTuple } from './keys';

const SOCCR_MARK = 0xc114;
export const HOLD_PRIORITY = -320;

/** A local address and port whose incoming TCP packets are held (a service's listening address). */
export interface HoldEndpoint {
  address: string;
  port: number;
}

type Family = 'ip' | 'ip6';

/** What one family's table matches: tuples as remote . port . local . port, endpoints as local . port. */
export interface FamilyMatches {
  tuples: Array<[string, number, string, number]>;
  endpoints: Array<[string, number]>;
}

function checkPort(port: unknown, name: string): number {
  if (!Number.isInteger(port) || (port as number) < 0 || (port as number) > 65535)
    throw new InvalidArgumentError(`${name} must be an integer 0..65535`, 'ERR_OUT_OF_RANGE');
  return port as number;
}

/** The family an address travels as (IPv4-mapped IPv6 goes as IPv4) and its wire text. */
function wireAddress(family: unknown, address: unknown, name: string): [Family, string] {
  if ((family !== 4 && family !== 6) || typeof address !== 'string')
    throw new InvalidArgumentError(`${name} must be {family: 4|6, address, port}`, 'ERR_INVALID_ARG_TYPE');
  const bytes = addressBytes(family, address);
  if (!bytes) throw new InvalidArgumentError(`${name}.address is not an IPv${family} address`, 'ERR_INVALID_ARG_VALUE');
  if (bytes.length === 4) return ['ip', address];
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return mapped ? ['ip', addressString(bytes.subarray(12))] : ['ip6', addressString(bytes)];
}

function familyOf(address: string, name: string): [Family, string] {
  if (typeof address !== 'string')
    throw new InvalidArgumentError(`${name}.address must be a string`, 'ERR_INVALID_ARG_TYPE');
  return wireAddress(address.includes(':') ? 6 : 4, address, name);
}

/** Sorts tuples and endpoints by the family their packets travel as; throws InvalidArgumentError. */
export function holdMatches(
  tuples: readonly ConnectionTuple[],
  endpoints: readonly HoldEndpoint[],
): Record<Family, FamilyMatches> {
  const out: Record<Family, FamilyMatches> = { ip: { tuples: [], endpoints: [] }, ip6: { tuples: [], endpoints: [] } };
  for (let i = 0; i < tuples.length; i++) {
    const t = tuples[i] as ConnectionTuple | undefined;
    if (typeof t !== 'object' || t === null)
      throw new InvalidArgumentError(`tuples[${i}] must be { local, remote }`, 'ERR_INVALID_ARG_TYPE');
    const local = (t.local ?? {}) as Partial<SocketAddress>;
    const remote = (t.remote ?? {}) as Partial<SocketAddress>;
    const [lf, la] = wireAddress(local.family, local.address, `tuples[${i}].local`);
    const [rf, ra] = wireAddress(remote.family, remote.address, `tuples[${i}].remote`);
    if (lf !== rf)
      throw new InvalidArgumentError(`tuples[${i}] mixes IPv4 and IPv6 addresses`, 'ERR_INVALID_ARG_VALUE');
    out[lf].tuples.push([
      ra,
      checkPort(remote.port, `tuples[${i}].remote.port`),
      la,
      checkPort(local.port, `tuples[${i}].local.port`),
    ]);
  }
  for (let i = 0; i < endpoints.length; i++) {
    const e = endpoints[i] as HoldEndpoint | undefined;
    if (typeof e !== 'object' || e === null)
      throw new InvalidArgumentError(`endpoints[${i}] must be { address, port }`, 'ERR_INVALID_ARG_TYPE');
    const [family, address] = familyOf(e.address, `endpoints[${i}]`);
    out[family].endpoints.push([address, checkPort(e.port, `endpoints[${i}].port`)]);
  }
  return out;
}

function payload(protocol: string, field: string): unknown {
  return { payload: { protocol, field } };
}

/**
 * The nft batch that makes one family's hold table (without the queue rule, which the addon adds
 * to chain `hold`): sets `tuples` and `endpoints`, the input chain, and the byte bound.
 */
export function holdTableCommands(
  family: Family,
  name: string,
  matches: FamilyMatches,
  maxBytes: number,
): NftCommand[] {
  const table = { family, table: name };
  const addr = family === 'ip' ? 'ipv4_addr' : 'ipv6_addr';
  const jump = (left: unknown[], set: string): NftCommand => ({
    add: {
      rule: {
        ...table,
        chain: 'input',
        expr: [{ match: { op: '==', left: { concat: left }, right: `@${set}` } }, { jump: { target: 'hold' } }],
      },
    },
  });
  const set = (setName: string, type: string[], elem: unknown[]): NftCommand => ({
    add: { set: { ...table, name: setName, type, ...(elem.length > 0 ? { elem } : {}) } },
  });
  return [
    { add: { table: { family, name } } },
    set(
      'tuples',
      [addr, 'inet_service', addr, 'inet_service'],
      matches.tuples.map((t) => ({ concat: t })),
    ),
    set(
      'endpoints',
      [addr, 'inet_service'],
      matches.endpoints.map((e) => ({ concat: e })),
    ),
    {
      add: { chain: { ...table, name: 'input', type: 'filter', hook: 'input', prio: HOLD_PRIORITY, policy: 'accept' } },
    },
    { add: { chain: { ...table, name: 'hold' } } },
    {
      add: {
        rule: {
          ...table,
          chain: 'input',
          expr: [{ match: { op: '==', left: { meta: { key: 'mark' } }, right: SOCCR_MARK } }, { accept: null }],
        },
      },
    },
    jump(
      [payload(family, 'saddr'), payload('tcp', 'sport'), payload(family, 'daddr'), payload('tcp', 'dport')],
      'tuples',
    ),
    jump([payload(family, 'daddr'), payload('tcp', 'dport')], 'endpoints'),
    {
      add: {
        rule: {
          ...table,
          chain: 'hold',
          expr: [{ quota: { val: maxBytes, val_unit: 'bytes', inv: true } }, { counter: null }, { drop: null }],
        },
      },
    },
  ];
}
