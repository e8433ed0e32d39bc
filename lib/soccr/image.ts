/**
 * ConnectionImage: one checkpointed TCP connection, and its portable encoding (protobufjs
 * reflection over the descriptor generated from proto/connection-image.proto). Every image that
 * enters restore or leaves decode has passed validateConnectionImage.
 */
import * as protobuf from 'protobufjs';

import descriptor from '../generated/connection-image.json';
import type { nodecriu } from '../generated/connection-image';
import { pathProblem } from '../security';
import { addressBytes, addressString, isIpAddress } from './address';
import type { SocketAddress } from './address';
import { ConnectionImageError, describeValue } from './errors';
import { SK_DATA_FIELDS, skDataProblem, tcpStateName } from './sk-data';
import type { SkData } from './sk-data';

export const CONNECTION_IMAGE_VERSION = 1;

/** Where the nftables lock of a checkpointed connection lives (see NftablesLock). */
export interface NftablesLockRef {
  table: string;
  /** Network namespace path of the table; absent: the current one. */
  netns?: string;
}

export interface ConnectionImage {
  version: 1;
  /** The socket's family; an IPv4-mapped connection is family 6. */
  family: 4 | 6;
  local: SocketAddress;
  remote: SocketAddress;
  skData: SkData;
  /** skData.inqLen bytes the kernel had received and acknowledged. */
  recvQueue: Buffer;
  /** skData.outqLen bytes: sent-unacknowledged first, then `sendQueueUnsent` bytes never sent. */
  sendQueue: Buffer;
  /** = skData.unsqLen: how many trailing bytes of sendQueue were never sent. */
  sendQueueUnsent: number;
  /** Bytes Node had read from the kernel that the application had not consumed yet. */
  pendingRead: Buffer;
  /** Set when the checkpoint left an nftables lock for the restore to remove. */
  lock?: NftablesLockRef;
}

const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

function endpointProblem(name: string, family: number, endpoint: unknown): string | undefined {
  if (typeof endpoint !== 'object' || endpoint === null) return `${name} must be an object`;
  const e = endpoint as Partial<SocketAddress>;
  if (e.family !== family) return `${name}.family must equal the image family (${family})`;
  if (typeof e.address !== 'string' || !isIpAddress(family as 4 | 6, e.address)) {
    return `${name}.address is not an IPv${family} address: ${describeValue(e.address)}`;
  }
  if (!Number.isInteger(e.port) || (e.port as number) < 1 || (e.port as number) > 65535)
    return `${name}.port must be 1..65535`;
  if (e.scopeId !== undefined && (!Number.isInteger(e.scopeId) || e.scopeId < 0 || e.scopeId > 0xffffffff)) {
    return `${name}.scopeId must be a uint32`;
  }
  return undefined;
}

/** Describes what is wrong with `image`, or undefined if it is a valid ConnectionImage. */
export function connectionImageProblem(image: unknown): string | undefined {
  if (typeof image !== 'object' || image === null) return 'image must be an object';
  const i = image as Partial<ConnectionImage>;
  if (i.version !== CONNECTION_IMAGE_VERSION)
    return `unsupported image version ${describeValue(i.version)} (expected ${CONNECTION_IMAGE_VERSION})`;
  if (i.family !== 4 && i.family !== 6) return `family must be 4 or 6 (got ${describeValue(i.family)})`;
  const endpoint = endpointProblem('local', i.family, i.local) ?? endpointProblem('remote', i.family, i.remote);
  if (endpoint) return endpoint;
  const sk = skDataProblem(i.skData);
  if (sk) return sk;
  const skData = i.skData as SkData;
  if (tcpStateName(skData.state) !== skData.stateName)
    return `skData.stateName ${describeValue(skData.stateName)} does not match state ${skData.state}`;
  if (!Buffer.isBuffer(i.recvQueue) || i.recvQueue.length !== skData.inqLen) {
    return `recvQueue must be a Buffer of skData.inqLen (${skData.inqLen}) bytes`;
  }
  if (!Buffer.isBuffer(i.sendQueue) || i.sendQueue.length !== skData.outqLen) {
    return `sendQueue must be a Buffer of skData.outqLen (${skData.outqLen}) bytes`;
  }
  if (i.sendQueueUnsent !== skData.unsqLen) return `sendQueueUnsent must equal skData.unsqLen (${skData.unsqLen})`;
  if (!Buffer.isBuffer(i.pendingRead)) return 'pendingRead must be a Buffer';
  if (i.lock !== undefined) {
    if (
      typeof i.lock !== 'object' ||
      i.lock === null ||
      typeof i.lock.table !== 'string' ||
      !TABLE_NAME.test(i.lock.table)
    ) {
      return 'lock.table must be an nftables identifier';
    }
    // The same rule NftablesLock.fromRef applies: an image that validates never fails there.
    if (i.lock.netns !== undefined && pathProblem(i.lock.netns, 'lock.netns', { absolute: true }) !== undefined) {
      return 'lock.netns must be an absolute path';
    }
  }
  return undefined;
}

/** Throws ConnectionImageError (code ERR_CONNECTION_IMAGE_INVALID) unless `image` is valid. */
export function validateConnectionImage(image: unknown): asserts image is ConnectionImage {
  const problem = connectionImageProblem(image);
  if (problem) throw new ConnectionImageError(`invalid connection image: ${problem}`);
}

type WireImage = nodecriu.image.ConnectionImage.$Properties;
type WireEndpoint = nodecriu.image.Endpoint.$Properties;
type WireSkData = nodecriu.image.SkData.$Properties;

// SK_DATA_FIELDS must name exactly the wire's SkData fields.
type AssertNever<T extends never> = T;
type SkDataFieldName = (typeof SK_DATA_FIELDS)[number];
type _SameSkDataFields = AssertNever<
  Exclude<keyof WireSkData, SkDataFieldName | '$unknowns'> | Exclude<SkDataFieldName, keyof WireSkData>
>;

let imageType: protobuf.Type | undefined;

function messageType(): protobuf.Type {
  imageType ??= protobuf.Root.fromJSON(descriptor).lookupType('nodecriu.image.ConnectionImage');
  return imageType;
}

/** `e` has passed validation, so its address parses. */
function endpointToWire(e: SocketAddress): WireEndpoint {
  const out: WireEndpoint = { address: addressBytes(e.family, e.address)!, port: e.port };
  if (e.scopeId) out.scopeId = e.scopeId;
  return out;
}

/** Encodes a valid image (validated first) into the versioned protobuf message. */
export function encodeConnectionImage(image: ConnectionImage): Buffer {
  validateConnectionImage(image);
  const skData = {} as WireSkData;
  for (const field of SK_DATA_FIELDS) skData[field] = image.skData[field];
  const wire: WireImage = {
    version: image.version,
    family: image.family,
    local: endpointToWire(image.local),
    remote: endpointToWire(image.remote),
    skData,
    recvQueue: image.recvQueue,
    sendQueue: image.sendQueue,
  };
  if (image.pendingRead.length > 0) wire.pendingRead = image.pendingRead;
  if (image.lock)
    wire.lock = image.lock.netns ? { table: image.lock.table, netns: image.lock.netns } : { table: image.lock.table };
  const type = messageType();
  return Buffer.from(type.encode(type.fromObject(wire)).finish());
}

function endpointFromWire(family: number, e: WireEndpoint, name: string): SocketAddress {
  const expected = family === 4 ? 4 : 16;
  if (!(e.address instanceof Uint8Array) || e.address.length !== expected) {
    throw new ConnectionImageError(
      `invalid connection image: ${name}.address must be ${expected} bytes for family ${family}`,
    );
  }
  const out: SocketAddress = { family: family as 4 | 6, address: addressString(e.address), port: e.port };
  if (e.scopeId) out.scopeId = e.scopeId;
  return out;
}

/**
 * Decodes and validates an encoded image. Anything malformed (bad bytes, missing fields, another
 * version, inconsistent queue lengths, bad addresses) throws ConnectionImageError.
 */
export function decodeConnectionImage(bytes: Uint8Array): ConnectionImage {
  if (!(bytes instanceof Uint8Array))
    throw new ConnectionImageError('encoded image must be a Uint8Array', { code: 'ERR_INVALID_ARG_TYPE' });
  let wire: WireImage;
  try {
    const type = messageType();
    wire = type.toObject(type.decode(bytes), { defaults: false, bytes: Buffer }) as WireImage;
  } catch (error) {
    throw new ConnectionImageError(`invalid connection image: ${(error as Error).message}`, { cause: error });
  }
  if (wire.version !== CONNECTION_IMAGE_VERSION) {
    throw new ConnectionImageError(`invalid connection image: unsupported version ${describeValue(wire.version)}`);
  }
  const family = wire.family;
  if (family !== 4 && family !== 6) throw new ConnectionImageError(`invalid connection image: family ${family}`);
  const skData: Record<string, number | string> = {};
  for (const field of SK_DATA_FIELDS) skData[field] = wire.skData[field];
  skData.stateName = tcpStateName(skData.state as number) ?? `UNKNOWN(${skData.state})`;
  const image: ConnectionImage = {
    version: CONNECTION_IMAGE_VERSION,
    family,
    local: endpointFromWire(family, wire.local, 'local'),
    remote: endpointFromWire(family, wire.remote, 'remote'),
    skData: skData as unknown as SkData,
    recvQueue: Buffer.from(wire.recvQueue),
    sendQueue: Buffer.from(wire.sendQueue),
    sendQueueUnsent: skData.unsqLen as number,
    pendingRead: wire.pendingRead ? Buffer.from(wire.pendingRead) : Buffer.alloc(0),
  };
  const lock = wire.lock;
  if (lock) image.lock = lock.netns ? { table: lock.table, netns: lock.netns } : { table: lock.table };
  validateConnectionImage(image);
  return image;
}
