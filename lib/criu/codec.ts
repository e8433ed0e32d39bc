/**
 * Encodes and decodes CRIU's RPC messages (criu_req, criu_resp); one message is one SEQPACKET
 * datagram, so there is no framing here. protobufjs reflection over the descriptor generated from
 * proto/criu-rpc.proto, with checks protobufjs leaves out:
 * - Encoding validates strictly first: unknown keys, wrong types, integers outside int32/uint32,
 *   undefined enum numbers and missing required fields throw InvalidArgumentError (nothing is
 *   silently truncated or dropped). `undefined` means absent.
 * - Decoding throws CriuProtocolError (ERR_CRIU_PROTOCOL) on truncated or garbage bytes, a wire
 *   type that does not match the field, field number 0, groups, missing required fields (nested
 *   too) and undefined enum numbers. Unknown field numbers are skipped, as protobuf requires.
 * - Absent optional fields stay absent: proto2 defaults are never filled in. Strings are decoded
 *   leniently as UTF-8.
 */
import * as path from 'node:path';

import * as protobuf from 'protobufjs';

import { describeValue, InvalidArgumentError } from '../errors';
import descriptor from '../generated/criu-rpc.json';
import { CriuProtocolError } from './errors';
import type { CriuRequestMessage, CriuResponseMessage } from './messages';

/** The schema's source (the package root is two levels above lib/criu and dist/criu). */
export const CRIU_RPC_PROTO_PATH = path.join(__dirname, '..', '..', 'proto', 'criu-rpc.proto');

interface Schema {
  root: protobuf.Root;
  request: protobuf.Type;
  response: protobuf.Type;
}

let schema: Schema | undefined;

function loadSchema(): Schema {
  if (schema === undefined) {
    const root = protobuf.Root.fromJSON(descriptor);
    root.resolveAll();
    schema = { root, request: root.lookupType('criu_req'), response: root.lookupType('criu_resp') };
  }
  return schema;
}

/** The reflected schema (built once), for tests and tools. */
export function criuRpcRoot(): protobuf.Root {
  return loadSchema().root;
}

// ---------------------------------------------------------------------------------------------
// Encoding

const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;
const UINT32_MAX = 0xffffffff;

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'string'
    ? `string ${JSON.stringify(value.slice(0, 40))}`
    : `${typeof value} ${describeValue(value)}`;
}

function checkScalar(field: protobuf.Field, value: unknown, where: string): void {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) {
    checkMessage(resolved, value, where);
    return;
  }
  if (resolved instanceof protobuf.Enum) {
    if (typeof value !== 'number' || !Number.isInteger(value)) {
      throw new InvalidArgumentError(
        `${where} must be a ${resolved.name} number, got ${describe(value)}`,
        'ERR_INVALID_ARG_TYPE',
      );
    }
    if (!Object.values(resolved.values).includes(value)) {
      throw new InvalidArgumentError(`${where}: ${value} is not a ${resolved.name} value`, 'ERR_INVALID_ARG_VALUE');
    }
    return;
  }
  switch (field.type) {
    case 'bool':
      if (typeof value !== 'boolean')
        throw new InvalidArgumentError(`${where} must be a boolean, got ${describe(value)}`, 'ERR_INVALID_ARG_TYPE');
      return;
    case 'string':
      if (typeof value !== 'string')
        throw new InvalidArgumentError(`${where} must be a string, got ${describe(value)}`, 'ERR_INVALID_ARG_TYPE');
      return;
    case 'int32':
    case 'uint32': {
      if (typeof value !== 'number' || !Number.isInteger(value)) {
        throw new InvalidArgumentError(`${where} must be an integer, got ${describe(value)}`, 'ERR_INVALID_ARG_TYPE');
      }
      const [min, max] = field.type === 'int32' ? [INT32_MIN, INT32_MAX] : [0, UINT32_MAX];
      if (value < min || value > max) {
        throw new InvalidArgumentError(
          `${where} must be an ${field.type} (${min}..${max}), got ${value}`,
          'ERR_OUT_OF_RANGE',
        );
      }
      return;
    }
    default:
      // The schema uses no other scalar types; a new one needs a rule here first.
      throw new InvalidArgumentError(`${where}: unsupported field type ${field.type}`, 'ERR_INVALID_ARG_VALUE');
  }
}

function checkMessage(type: protobuf.Type, value: unknown, where: string): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(
      `${where} must be a ${type.name} object, got ${describe(value)}`,
      'ERR_INVALID_ARG_TYPE',
    );
  }
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (record[key] !== undefined && !Object.prototype.hasOwnProperty.call(type.fields, key)) {
      throw new InvalidArgumentError(`${where}.${key} is not a field of ${type.name}`, 'ERR_INVALID_ARG_VALUE');
    }
  }
  for (const field of type.fieldsArray) {
    const fieldValue = record[field.name];
    const fieldWhere = `${where}.${field.name}`;
    if (fieldValue === undefined) {
      if (field.required) throw new InvalidArgumentError(`${fieldWhere} is required`, 'ERR_INVALID_ARG_VALUE');
      continue;
    }
    if (field.repeated) {
      if (!Array.isArray(fieldValue)) {
        throw new InvalidArgumentError(
          `${fieldWhere} must be an array, got ${describe(fieldValue)}`,
          'ERR_INVALID_ARG_TYPE',
        );
      }
      for (let index = 0; index < fieldValue.length; index++)
        checkScalar(field, fieldValue[index], `${fieldWhere}[${index}]`); // holes too
    } else {
      checkScalar(field, fieldValue, fieldWhere);
    }
  }
}

function encodeChecked(type: protobuf.Type, message: unknown, name: string): Buffer {
  checkMessage(type, message, name);
  const bytes = type.encode(message as Record<string, unknown>).finish();
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Validates then encodes a criu_req. Throws InvalidArgumentError when `req` is not a valid one. */
export function encodeRequest(req: CriuRequestMessage): Buffer {
  return encodeChecked(loadSchema().request, req, 'criu_req');
}

/** Validates then encodes a criu_resp (for tests and fake servers). */
export function encodeResponse(resp: CriuResponseMessage): Buffer {
  return encodeChecked(loadSchema().response, resp, 'criu_resp');
}

// ---------------------------------------------------------------------------------------------
// Decoding

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH_DELIMITED = 2;
const WIRE_FIXED32 = 5;

/** Reads a varint at `pos`; returns [value (low 32 bits, unsigned), next position]. */
function readVarint(bytes: Uint8Array, pos: number, end: number, where: string): [number, number] {
  let value = 0;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new CriuProtocolError(`${where}: truncated varint`);
    const byte = bytes[pos++];
    if (i < 5) value = (value | ((byte & 0x7f) << (7 * i))) >>> 0;
    if ((byte & 0x80) === 0) return [value, pos];
  }
  throw new CriuProtocolError(`${where}: varint longer than 10 bytes`);
}

function expectedWireType(field: protobuf.Field): number {
  if (field.resolvedType instanceof protobuf.Type || field.type === 'string' || field.type === 'bytes')
    return WIRE_LENGTH_DELIMITED;
  return WIRE_VARINT; // every other type in the schema is int32, uint32, bool or an enum
}

/**
 * Walks the wire format of one message before protobufjs sees it: protobufjs trusts a known
 * field's wire type and would read garbage where this reports the error.
 */
function scanWire(type: protobuf.Type, bytes: Uint8Array, start: number, end: number, where: string): void {
  let pos = start;
  while (pos < end) {
    const [tag, afterTag] = readVarint(bytes, pos, end, where);
    pos = afterTag;
    const fieldNumber = tag >>> 3;
    const wireType = tag & 7;
    if (fieldNumber === 0) throw new CriuProtocolError(`${where}: field number 0`);
    const field = type.fieldsById[fieldNumber];
    if (field !== undefined) {
      const expected = expectedWireType(field);
      const packed = field.repeated && expected === WIRE_VARINT && wireType === WIRE_LENGTH_DELIMITED;
      if (wireType !== expected && !packed) {
        throw new CriuProtocolError(
          `${where}.${field.name} (field ${fieldNumber}): wire type ${wireType}, expected ${expected}`,
        );
      }
    }
    switch (wireType) {
      case WIRE_VARINT: {
        const [value, afterValue] = readVarint(bytes, pos, end, where);
        pos = afterValue;
        // Checked here because protobufjs silently drops an undefined enum number (proto2 closed
        // enums), which would surface as a misleading "missing required" error.
        const resolved = field?.resolvedType;
        if (resolved instanceof protobuf.Enum && !Object.values(resolved.values).includes(value | 0)) {
          throw new CriuProtocolError(`${where}.${field!.name}: ${value | 0} is not a ${resolved.name} value`);
        }
        break;
      }
      case WIRE_FIXED64:
      case WIRE_FIXED32: {
        const size = wireType === WIRE_FIXED64 ? 8 : 4;
        if (end - pos < size) throw new CriuProtocolError(`${where}: truncated field ${fieldNumber}`);
        pos += size;
        break;
      }
      case WIRE_LENGTH_DELIMITED: {
        const [length, afterLength] = readVarint(bytes, pos, end, where);
        pos = afterLength;
        if (length > end - pos)
          throw new CriuProtocolError(
            `${where}: field ${fieldNumber} length ${length} exceeds the ${end - pos} bytes left`,
          );
        if (field?.resolvedType instanceof protobuf.Type)
          scanWire(field.resolvedType, bytes, pos, pos + length, `${where}.${field.name}`);
        pos += length;
        break;
      }
      default:
        // 3/4 are proto groups (never used by CRIU), 6/7 do not exist.
        throw new CriuProtocolError(`${where}: field ${fieldNumber} has unsupported wire type ${wireType}`);
    }
  }
}

/** Rejects enum numbers the schema does not define, anywhere in a decoded plain object. */
function checkDecodedEnums(type: protobuf.Type, value: Record<string, unknown>, where: string): void {
  for (const field of type.fieldsArray) {
    const fieldValue = value[field.name];
    if (fieldValue === undefined) continue;
    const items = field.repeated ? (fieldValue as unknown[]) : [fieldValue];
    const resolved = field.resolvedType;
    for (const item of items) {
      if (resolved instanceof protobuf.Enum) {
        if (!Object.values(resolved.values).includes(item as number)) {
          throw new CriuProtocolError(`${where}.${field.name}: ${String(item)} is not a ${resolved.name} value`);
        }
      } else if (resolved instanceof protobuf.Type) {
        checkDecodedEnums(resolved, item as Record<string, unknown>, `${where}.${field.name}`);
      }
    }
  }
}

function decodeChecked<T>(type: protobuf.Type, bytes: Uint8Array, name: string): T {
  if (!(bytes instanceof Uint8Array)) {
    throw new InvalidArgumentError(
      `${name} bytes must be a Uint8Array, got ${describe(bytes)}`,
      'ERR_INVALID_ARG_TYPE',
    );
  }
  scanWire(type, bytes, 0, bytes.length, name);
  let decoded: protobuf.Message;
  try {
    decoded = type.decode(bytes);
  } catch (error) {
    const message = error instanceof Error ? error.message : describeValue(error);
    throw new CriuProtocolError(`${name}: ${message}`, { cause: error });
  }
  const plain = type.toObject(decoded, {
    defaults: false,
    arrays: false,
    objects: false,
    enums: Number,
    longs: Number,
  });
  checkDecodedEnums(type, plain, name);
  return plain as T;
}

/** Decodes one criu_resp datagram. Throws CriuProtocolError (ERR_CRIU_PROTOCOL) on anything malformed. */
export function decodeResponse(bytes: Uint8Array): CriuResponseMessage {
  return decodeChecked<CriuResponseMessage>(loadSchema().response, bytes, 'criu_resp');
}

/** Decodes one criu_req datagram (for tests and fake servers); same rules as decodeResponse. */
export function decodeRequest(bytes: Uint8Array): CriuRequestMessage {
  return decodeChecked<CriuRequestMessage>(loadSchema().request, bytes, 'criu_req');
}
