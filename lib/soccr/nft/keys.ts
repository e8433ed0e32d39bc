/**
 * The keys of a lock table's two sets, as csrc/nft_elements.cc sends them: remote address .
 * remote port . local address . local port, each field padded to 4 bytes.
 */
import { InvalidArgumentError } from '../../errors';
import { addressBytes, ipv4Word } from '../address';
import type { SocketAddress } from '../address';

export interface ConnectionTuple {
  local: SocketAddress;
  remote: SocketAddress;
}

/** The 4 (IPv4) or 16 (IPv6) bytes of a tuple's address; InvalidArgumentError if it has none. */
function addressKeyBytes(address: SocketAddress, name: string): Uint8Array {
  const bytes =
    typeof address === 'object' && address !== null && (address.family === 4 || address.family === 6)
      ? addressBytes(address.family, address.address)
      : undefined;
  if (!bytes) throw new InvalidArgumentError(`${name} must be {family: 4|6, address, port} with a valid IP address`);
  return bytes;
}

function isMapped(bytes: Uint8Array): boolean {
  if (bytes.length !== 16 || bytes[10] !== 0xff || bytes[11] !== 0xff) return false;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return true;
}

function portOf(address: SocketAddress, name: string): number {
  if (typeof address !== 'object' || address === null)
    throw new InvalidArgumentError(`${name} must be {family: 4|6, address, port}`, 'ERR_INVALID_ARG_TYPE');
  const port = address.port;
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new InvalidArgumentError(`${name}.port must be an integer 0..65535`);
  return port;
}

/**
 * The tuples as keys of the table's two sets (csrc/nft_elements.cc): remote address . remote port
 * . local address . local port, each field padded to 4 bytes (16 bytes for IPv4, 40 for IPv6).
 * A tuple whose both addresses are IPv4 or IPv4-mapped goes to the IPv4 set, as its packets
 * appear on the wire. Throws InvalidArgumentError for a malformed tuple.
 */
export function setKeys(tuples: readonly ConnectionTuple[]): { v4: Uint8Array; v6: Uint8Array } {
  const v4 = new Uint8Array(16 * tuples.length);
  const v6 = new Uint8Array(40 * tuples.length);
  const v4View = new DataView(v4.buffer);
  let v4Count = 0;
  let v6Count = 0;
  for (let i = 0; i < tuples.length; i++) {
    const tuple = tuples[i];
    if (typeof tuple !== 'object' || tuple === null)
      throw new InvalidArgumentError('tuples must be {local, remote} objects', 'ERR_INVALID_ARG_TYPE');
    const { local, remote } = tuple;
    const remotePort = portOf(remote, 'remote');
    const localPort = portOf(local, 'local');
    // IPv4 without allocating: the common case of a batch of thousands.
    let remoteWord = remote.family === 4 ? ipv4Word(remote.address) : -1;
    let localWord = local.family === 4 ? ipv4Word(local.address) : -1;
    let remoteBytes: Uint8Array | undefined;
    let localBytes: Uint8Array | undefined;
    if (remoteWord < 0) {
      remoteBytes = addressKeyBytes(remote, 'remote');
      if (isMapped(remoteBytes)) remoteWord = new DataView(remoteBytes.buffer, remoteBytes.byteOffset).getUint32(12);
    }
    if (localWord < 0) {
      localBytes = addressKeyBytes(local, 'local');
      if (isMapped(localBytes)) localWord = new DataView(localBytes.buffer, localBytes.byteOffset).getUint32(12);
    }
    if (remoteWord >= 0 && localWord >= 0) {
      const at = 16 * v4Count++;
      v4View.setUint32(at, remoteWord);
      v4View.setUint16(at + 4, remotePort);
      v4View.setUint32(at + 8, localWord);
      v4View.setUint16(at + 12, localPort);
      continue;
    }
    // An IPv6 pair (an IPv4 address among them stands as its mapped form).
    const at = 40 * v6Count++;
    v6.set(remoteBytes ?? mappedBytes(remoteWord), at);
    v6[at + 16] = remotePort >> 8;
    v6[at + 17] = remotePort & 0xff;
    v6.set(localBytes ?? mappedBytes(localWord), at + 20);
    v6[at + 36] = localPort >> 8;
    v6[at + 37] = localPort & 0xff;
  }
  return { v4: v4.subarray(0, 16 * v4Count), v6: v6.subarray(0, 40 * v6Count) };
}

function mappedBytes(word: number): Uint8Array {
  const bytes = new Uint8Array(16);
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  new DataView(bytes.buffer).setUint32(12, word);
  return bytes;
}
