/**
 * TCP 4-tuples as bytes, so a socket's own view and CRIU's lock sets compare whatever their text:
 * a socket of a server on `::` names an IPv4 peer `::ffff:a.b.c.d` while CRIU locks it in its IPv4
 * set as `a.b.c.d`, and IPv6 has many spellings of one address.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** The address's bytes: 4 for IPv4 and IPv4-mapped IPv6, 16 for other IPv6; undefined if not an address. */
export function addressBytes(address: string | Uint8Array): Uint8Array | undefined {
  if (typeof address !== 'string') {
    if (address.length === 4) return Uint8Array.from(address);
    if (address.length !== 16) return undefined;
    return unmapped(Uint8Array.from(address));
  }
  if (isIPv4(address)) return Uint8Array.from(address.split('.').map(Number));
  if (!isIPv6(address)) return undefined;
  return unmapped(ipv6Bytes(address.replace(/%.*$/, '')));
}

/** ::ffff:a.b.c.d is the IPv4 address a.b.c.d. */
function unmapped(bytes: Uint8Array): Uint8Array {
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return mapped ? bytes.slice(12) : bytes;
}

/** Text already checked by isIPv6 (without a zone). */
function ipv6Bytes(text: string): Uint8Array {
  const words = (part: string): number[] => {
    if (part === '') return [];
    const out: number[] = [];
    for (const group of part.split(':')) {
      if (group.includes('.')) {
        const [a, b, c, d] = group.split('.').map(Number);
        out.push((a << 8) | b, (c << 8) | d);
      } else {
        out.push(parseInt(group, 16));
      }
    }
    return out;
  };
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const front = words(head);
  const back = tail === undefined ? [] : words(tail);
  const all = [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  const bytes = new Uint8Array(16);
  all.forEach((word, i) => {
    bytes[2 * i] = word >> 8;
    bytes[2 * i + 1] = word & 0xff;
  });
  return bytes;
}

/**
 * A key equal for equal 4-tuples (own address, own port, peer address, peer port), whatever the
 * spelling; undefined when a part is not an address or a port.
 */
export function tupleKey(
  ownAddress: string | Uint8Array,
  ownPort: string | number,
  peerAddress: string | Uint8Array,
  peerPort: string | number,
): string | undefined {
  const own = addressBytes(ownAddress);
  const peer = addressBytes(peerAddress);
  const ports = [Number(ownPort), Number(peerPort)];
  if (own === undefined || peer === undefined || !ports.every((p) => Number.isInteger(p) && p >= 0 && p < 65536))
    return undefined;
  const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
  return `${hex(own)}.${ports[0]}.${hex(peer)}.${ports[1]}`;
}

/**
 * The keys of an element of CRIU's conns4/conns6 set (addr . port . addr . port): both
 * directions, since CRIU locks each connection once per direction and either may be the socket's
 * own view. Empty when the element is not such a tuple.
 */
export function lockedTupleKeys(element: ReadonlyArray<string | number>): string[] {
  if (element.length !== 4) return [];
  const [a, ap, b, bp] = element;
  if (typeof a !== 'string' || typeof b !== 'string') return [];
  const forward = tupleKey(a, ap, b, bp);
  const backward = tupleKey(b, bp, a, ap);
  return forward === undefined || backward === undefined ? [] : [forward, backward];
}
