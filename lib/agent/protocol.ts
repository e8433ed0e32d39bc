/**
 * The migration agent's protocol ('NCAG' frames over mutual TLS, lib/transport/framed.ts). Every
 * JSON body is decoded by an explicit schema function here, used by both the agent and the
 * source: unknown keys, wrong types and out-of-range values are refused (ERR_AGENT_PROTOCOL)
 * before anything acts on them. FILE_DATA and PAGE_DATA are the binary frames.
 *
 *   source                         agent
 *   HELLO ───────────────────────▶ WELCOME | REFUSE
 *   (FILE, FILE_DATA*, FILE_END)* ▶
 *   IMAGES_END ──────────────────▶ IMAGES_OK | ERROR
 *   RESTORE ─────────────────────▶ RESTORED | RESTORE_FAILED
 *
 * A lazy session (HELLO.lazyPages) carries CRIU's page stream on the same channel from the
 * attach point on (RESTORE sent / received) until each side's PAGE_END: PAGE_DATA (binary,
 * id 0, 1..AGENT_MAX_PAYLOAD bytes) both ways, PAGE_END (empty) ending one direction
 * (lib/agent/page-stream.ts). Anywhere else they break the protocol.
 */
import * as net from 'node:net';

import { addressBytes } from '../criu/tuples';
import { NodeCriuError } from '../errors';
import type { FrameFormat } from '../transport/framed';

export const AGENT_PROTOCOL_VERSION = 1;
/** Largest frame payload either side sends or accepts. */
export const AGENT_MAX_PAYLOAD = 256 * 1024;
/** Tuples in HELLO (one per dumped connection). */
export const MAX_TUPLES = 2048;
export const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const MIGRATION_ID = /^[0-9a-f]{16,64}$/;
const DEVICE = /^[A-Za-z0-9_.:@-]{1,15}$/;
const SHA256 = /^[0-9a-f]{64}$/;
const MAX_TEXT = 4096;

export const MSG = {
  HELLO: 1,
  WELCOME: 2,
  REFUSE: 3,
  FILE: 4,
  FILE_DATA: 5,
  FILE_END: 6,
  IMAGES_END: 7,
  IMAGES_OK: 8,
  ERROR: 9,
  RESTORE: 10,
  RESTORED: 11,
  RESTORE_FAILED: 12,
  PAGE_DATA: 13,
  PAGE_END: 14,
} as const;

const NAMES = Object.fromEntries(Object.entries(MSG).map(([k, v]) => [v, k])) as Record<number, string>;

export const AGENT_FRAME_FORMAT: FrameFormat = {
  magic: 0x4e434147, // 'NCAG'
  version: AGENT_PROTOCOL_VERSION,
  maxPayload: AGENT_MAX_PAYLOAD,
  types: new Set(Object.values(MSG)),
  name: (type) => NAMES[type] ?? `type ${type}`,
};

export function messageName(type: number): string {
  return NAMES[type] ?? `type ${type}`;
}

/** A message that breaks the protocol (bad JSON, unknown key, out of range, out of order). */
export class AgentProtocolError extends NodeCriuError {
  constructor(message: string) {
    super(message, { code: 'ERR_AGENT_PROTOCOL' });
  }
}

export interface WireAddress {
  address: string;
  port: number;
}
/** A dumped connection's 4-tuple, seen from the server (local = the service address). */
export interface WireTuple {
  local: WireAddress;
  remote: WireAddress;
}
export interface MoveAddress {
  /** address/prefix, e.g. 10.0.0.100/24 */
  cidr: string;
  device: string;
}
/** A file the tree holds from outside its mount namespace (its stdio): the agent opens `path` for `key`. */
export interface ExternalRef {
  key: string;
  path: string;
}
export const MAX_EXTERNAL = 64;
const EXTERNAL_KEY = /^file\[[0-9a-f]{1,16}:[0-9a-f]{1,16}\]$/;
export interface Hello {
  version: number;
  route: string;
  migrationId: string;
  criuVersion: string;
  kernel: string;
  tuples: WireTuple[];
  moveAddress?: MoveAddress;
  lazyPages: boolean;
  /** Omitted when empty. */
  external?: ExternalRef[];
}
export interface Welcome {
  criuVersion: string;
  kernel: string;
}
export interface Refuse {
  code: string;
  reason: string;
}
export interface FileStart {
  index: number;
  name: string;
  size: number;
}
export interface FileEnd {
  sha256: string;
}
export interface ImagesEnd {
  files: number;
  bytes: number;
}
export interface Restored {
  pid: number;
}
/** ERROR and RESTORE_FAILED. */
export interface Failure {
  code: string;
  message: string;
}

type Obj = Record<string, unknown>;

function fail(what: string): never {
  throw new AgentProtocolError(what);
}

/** Parses a JSON object body (bounded by the frame size) with exactly the allowed keys. */
export function parseBody(payload: Uint8Array, what: string, required: string[], optional: string[] = []): Obj {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch {
    fail(`${what}: not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`${what}: not an object`);
  const obj = value as Obj;
  for (const key of Object.keys(obj))
    if (!required.includes(key) && !optional.includes(key)) fail(`${what}: unknown key '${key.slice(0, 32)}'`);
  for (const key of required) if (!(key in obj)) fail(`${what}: '${key}' missing`);
  return obj;
}

function text(value: unknown, what: string, pattern?: RegExp, max = MAX_TEXT): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max) fail(`${what} must be a string`);
  if (pattern !== undefined && !pattern.test(value)) fail(`${what} is not valid`);
  return value;
}

function integer(value: unknown, what: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max)
    fail(`${what} must be an integer from ${min} to ${max}`);
  return value;
}

function wireAddress(value: unknown, what: string): WireAddress {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`${what} must be an object`);
  const o = value as Obj;
  if (Object.keys(o).length !== 2) fail(`${what} must be { address, port }`);
  const address = text(o.address, `${what}.address`, undefined, 45);
  if (net.isIP(address) === 0) fail(`${what}.address is not an IP address`);
  return { address, port: integer(o.port, `${what}.port`, 1, 65535) };
}

/** Validates address/prefix: an IPv4 or IPv6 address and a prefix length that fits it. */
export function parseCidr(value: unknown, what: string): { address: string; prefix: number; family: 4 | 6 } {
  const cidr = text(value, what, undefined, 64);
  const slash = cidr.indexOf('/');
  if (slash < 0) fail(`${what} must be address/prefix`);
  const address = cidr.slice(0, slash);
  const family = net.isIP(address);
  if (family === 0) fail(`${what}: not an IP address`);
  const prefixText = cidr.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText)) fail(`${what}: bad prefix length`);
  const prefix = Number(prefixText);
  if (prefix > (family === 4 ? 32 : 128)) fail(`${what}: bad prefix length`);
  return { address, prefix, family: family as 4 | 6 };
}

export function moveAddressOf(value: unknown, what = 'moveAddress'): MoveAddress {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`${what} must be an object`);
  const o = value as Obj;
  for (const key of Object.keys(o)) if (key !== 'cidr' && key !== 'device') fail(`${what}: unknown key`);
  parseCidr(o.cidr, `${what}.cidr`);
  return { cidr: o.cidr as string, device: text(o.device, `${what}.device`, DEVICE) };
}

export function decodeHello(payload: Uint8Array): Hello {
  const o = parseBody(
    payload,
    'HELLO',
    ['version', 'route', 'migrationId', 'criuVersion', 'kernel', 'tuples', 'lazyPages'],
    ['moveAddress', 'external'],
  );
  if (!Array.isArray(o.tuples) || o.tuples.length > MAX_TUPLES) fail(`HELLO.tuples: at most ${MAX_TUPLES}`);
  const tuples: WireTuple[] = [];
  for (let i = 0; i < o.tuples.length; i++) {
    const t = o.tuples[i] as unknown;
    if (typeof t !== 'object' || t === null || Array.isArray(t) || Object.keys(t).length !== 2)
      fail(`HELLO.tuples[${i}] must be { local, remote }`);
    const local = wireAddress((t as Obj).local, `HELLO.tuples[${i}].local`);
    const remote = wireAddress((t as Obj).remote, `HELLO.tuples[${i}].remote`);
    tuples.push({ local, remote });
  }
  if (typeof o.lazyPages !== 'boolean') fail('HELLO.lazyPages must be a boolean');
  return {
    version: integer(o.version, 'HELLO.version', 0, 255),
    route: text(o.route, 'HELLO.route', /^[a-z-]{1,32}$/),
    migrationId: text(o.migrationId, 'HELLO.migrationId', MIGRATION_ID),
    criuVersion: text(o.criuVersion, 'HELLO.criuVersion', undefined, 64),
    kernel: text(o.kernel, 'HELLO.kernel', undefined, 256),
    tuples,
    ...(o.moveAddress !== undefined ? { moveAddress: moveAddressOf(o.moveAddress, 'HELLO.moveAddress') } : {}),
    lazyPages: o.lazyPages,
    ...(o.external !== undefined ? { external: externalRefs(o.external) } : {}),
  };
}

function externalRefs(value: unknown): ExternalRef[] {
  if (!Array.isArray(value) || value.length > MAX_EXTERNAL) fail(`HELLO.external: at most ${MAX_EXTERNAL}`);
  const refs: ExternalRef[] = [];
  for (let i = 0; i < value.length; i++) {
    const e = value[i] as unknown;
    if (typeof e !== 'object' || e === null || Array.isArray(e) || Object.keys(e).length !== 2)
      fail(`HELLO.external[${i}] must be { key, path }`);
    const key = text((e as Obj).key, `HELLO.external[${i}].key`, EXTERNAL_KEY, 40);
    const path = text((e as Obj).path, `HELLO.external[${i}].path`, /^\/[^\0]*$/, 4096);
    if (refs.some((r) => r.key === key)) fail(`HELLO.external[${i}].key repeated`);
    refs.push({ key, path });
  }
  return refs;
}

export function decodeWelcome(payload: Uint8Array): Welcome {
  const o = parseBody(payload, 'WELCOME', ['criuVersion', 'kernel']);
  return {
    criuVersion: text(o.criuVersion, 'WELCOME.criuVersion', undefined, 64),
    kernel: text(o.kernel, 'WELCOME.kernel', undefined, 256),
  };
}

const CODE = /^[A-Z][A-Z0-9_]{0,63}$/;

function decodeFailure(payload: Uint8Array, what: string, reasonKey: 'reason' | 'message'): Obj {
  const o = parseBody(payload, what, ['code', reasonKey]);
  return { code: text(o.code, `${what}.code`, CODE), [reasonKey]: text(o[reasonKey], `${what}.${reasonKey}`) };
}

export function decodeRefuse(payload: Uint8Array): Refuse {
  return decodeFailure(payload, 'REFUSE', 'reason') as unknown as Refuse;
}

/** ERROR and RESTORE_FAILED bodies. */
export function decodeFailureBody(payload: Uint8Array, what: 'ERROR' | 'RESTORE_FAILED'): Failure {
  return decodeFailure(payload, what, 'message') as unknown as Failure;
}

export function decodeFileStart(payload: Uint8Array, maxFiles: number, maxFileBytes: number): FileStart {
  const o = parseBody(payload, 'FILE', ['index', 'name', 'size']);
  return {
    index: integer(o.index, 'FILE.index', 0, maxFiles - 1),
    name: text(o.name, 'FILE.name', FILE_NAME, 128),
    size: integer(o.size, 'FILE.size', 0, maxFileBytes),
  };
}

export function decodeFileEnd(payload: Uint8Array): FileEnd {
  const o = parseBody(payload, 'FILE_END', ['sha256']);
  return { sha256: text(o.sha256, 'FILE_END.sha256', SHA256, 64) };
}

export function decodeImagesEnd(payload: Uint8Array): ImagesEnd {
  const o = parseBody(payload, 'IMAGES_END', ['files', 'bytes']);
  return {
    files: integer(o.files, 'IMAGES_END.files', 0, 2 ** 31 - 1),
    bytes: integer(o.bytes, 'IMAGES_END.bytes', 0, Number.MAX_SAFE_INTEGER),
  };
}

/** IMAGES_OK and RESTORE: an empty object. */
export function decodeEmpty(payload: Uint8Array, what: string): void {
  parseBody(payload, what, []);
}

export function decodeRestored(payload: Uint8Array): Restored {
  const o = parseBody(payload, 'RESTORED', ['pid']);
  return { pid: integer(o.pid, 'RESTORED.pid', 1, 2 ** 22) };
}

/** PAGE_DATA (id 0, 1..AGENT_MAX_PAYLOAD bytes) and PAGE_END (id 0, empty): refused otherwise. */
export function checkPageFrame(frame: { type: number; id: number; payload: Uint8Array }): void {
  if (frame.type !== MSG.PAGE_DATA && frame.type !== MSG.PAGE_END)
    fail(`${messageName(frame.type)} is not a page frame`);
  const what = messageName(frame.type);
  if (frame.id !== 0) fail(`${what}: id must be 0`);
  if (frame.type === MSG.PAGE_END && frame.payload.byteLength !== 0) fail('PAGE_END: must be empty');
  if (frame.type === MSG.PAGE_DATA && (frame.payload.byteLength === 0 || frame.payload.byteLength > AGENT_MAX_PAYLOAD))
    fail(`PAGE_DATA: 1 to ${AGENT_MAX_PAYLOAD} bytes`);
}

export function encodeBody(body: object): Buffer {
  const buf = Buffer.from(JSON.stringify(body), 'utf8');
  if (buf.length > AGENT_MAX_PAYLOAD) throw new AgentProtocolError('message body too large');
  return buf;
}

/** Whether `address` lies in `cidr` (same family; IPv4-mapped IPv6 counts as IPv4). */
export function cidrContains(cidr: string, address: string): boolean {
  const range = parseCidr(cidr, 'cidr');
  const a = addressBits(address);
  const r = addressBits(range.address);
  if (a === undefined || r === undefined || a.length !== r.length) return false;
  for (let i = 0; i < range.prefix; i++) if (a[i] !== r[i]) return false;
  return true;
}

function addressBits(address: string): number[] | undefined {
  const bytes = addressBytes(address);
  if (bytes === undefined) return undefined;
  const bits: number[] = [];
  for (const byte of bytes) for (let b = 7; b >= 0; b--) bits.push((byte >> b) & 1);
  return bits;
}
