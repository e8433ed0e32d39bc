/** startMigrationAgent's options and their validation (before anything listens). */
import * as net from 'node:net';

import { InvalidArgumentError } from '../errors';
import { checkPath } from '../security';
import type { TlsCredentials } from '../transport/tls';
import { parseCidr } from './protocol';
import { DEFAULT_LIMITS, type AgentLimits } from './receive';

/** What the agent reports: { event: 'listening' | 'hello' | 'refused' | 'images' | 'restore' | 'error' | ..., ... }. */
export type AgentEvent = { event: string } & Record<string, unknown>;

export interface MigrationAgentOptions {
  listen: { host: string; port: number };
  tls: TlsCredentials;
  /** Existing directory (made 0700); each migration gets a fresh subdirectory, deleted afterwards. */
  workDir: string;
  criuPath?: string;
  /** What a source may ask of this host. Nothing by default: no service address is taken over. */
  allow?: { addresses?: string[]; devices?: string[] };
  /** Bounds of one migration's images (defaults: 16 GiB total, 100,000 files, 8 GiB per file). */
  limits?: Partial<AgentLimits>;
  /**
   * The connections route: local applications register here (acceptHandoverViaAgent) for the
   * ports they serve, and connections a source hands over are restored by the agent and passed
   * to them live. An absolute socket path; without it the agent serves the process route only.
   */
  appSocket?: string;
  /** uids besides root and the agent's that may register on appSocket (default none). */
  appUids?: number[];
  onEvent?: (event: AgentEvent) => void;
  /** Aborting it closes the agent. */
  signal?: AbortSignal;
}

const KEYS = new Set([
  'listen',
  'tls',
  'workDir',
  'criuPath',
  'allow',
  'limits',
  'appSocket',
  'appUids',
  'onEvent',
  'signal',
]);
const DEVICE = /^[A-Za-z0-9_.:@-]{1,15}$/;

function stringList(value: unknown, name: string, check: (s: string, i: number) => void): void {
  if (value === undefined) return;
  if (!Array.isArray(value) || value.length > 256)
    throw new InvalidArgumentError(`${name} must be an array (at most 256)`, 'ERR_INVALID_ARG_TYPE');
  for (let i = 0; i < value.length; i++) {
    if (typeof value[i] !== 'string')
      throw new InvalidArgumentError(`${name}[${i}] must be a string`, 'ERR_INVALID_ARG_TYPE');
    check(value[i] as string, i);
  }
}

/** Validates the options (limits: see resolveLimits). */
export function validateAgentOptions(options: unknown): asserts options is MigrationAgentOptions {
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o))
    if (!KEYS.has(key)) throw new InvalidArgumentError(`options: unknown option '${key}'`);
  const listen = o.listen as Record<string, unknown> | undefined;
  if (typeof listen !== 'object' || listen === null)
    throw new InvalidArgumentError('options.listen must be { host, port }', 'ERR_INVALID_ARG_TYPE');
  for (const key of Object.keys(listen))
    if (key !== 'host' && key !== 'port') throw new InvalidArgumentError(`options.listen: unknown option '${key}'`);
  if (typeof listen.host !== 'string' || net.isIP(listen.host) === 0)
    throw new InvalidArgumentError('options.listen.host must be an IP address', 'ERR_INVALID_ARG_VALUE');
  if (!Number.isInteger(listen.port) || (listen.port as number) < 0 || (listen.port as number) > 65535)
    throw new InvalidArgumentError('options.listen.port must be an integer 0..65535', 'ERR_OUT_OF_RANGE');
  checkPath(o.workDir, 'options.workDir');
  if (o.criuPath !== undefined) checkPath(o.criuPath, 'options.criuPath');
  if (o.allow !== undefined) {
    if (typeof o.allow !== 'object' || o.allow === null)
      throw new InvalidArgumentError('options.allow must be an object', 'ERR_INVALID_ARG_TYPE');
    const allow = o.allow as Record<string, unknown>;
    for (const key of Object.keys(allow))
      if (key !== 'addresses' && key !== 'devices')
        throw new InvalidArgumentError(`options.allow: unknown option '${key}'`);
    stringList(allow.addresses, 'options.allow.addresses', (s, i) => {
      try {
        parseCidr(s, `options.allow.addresses[${i}]`);
      } catch {
        throw new InvalidArgumentError(`options.allow.addresses[${i}] must be a CIDR (10.0.0.0/24), got '${s}'`);
      }
    });
    stringList(allow.devices, 'options.allow.devices', (s, i) => {
      if (!DEVICE.test(s)) throw new InvalidArgumentError(`options.allow.devices[${i}] is not an interface name`);
    });
  }
  resolveLimits(o.limits);
  if (o.appSocket !== undefined) {
    checkPath(o.appSocket, 'options.appSocket');
    if (!(o.appSocket as string).startsWith('/'))
      throw new InvalidArgumentError('options.appSocket must be an absolute path', 'ERR_INVALID_ARG_VALUE');
  }
  if (o.appUids !== undefined) {
    if (!Array.isArray(o.appUids) || o.appUids.length > 256)
      throw new InvalidArgumentError('options.appUids must be an array of uids', 'ERR_INVALID_ARG_TYPE');
    for (let i = 0; i < o.appUids.length; i++)
      if (!Number.isInteger(o.appUids[i]) || (o.appUids[i] as number) < 0 || (o.appUids[i] as number) > 0xfffffffe)
        throw new InvalidArgumentError(`options.appUids[${i}] is not a uid`, 'ERR_OUT_OF_RANGE');
  }
  if (o.onEvent !== undefined && typeof o.onEvent !== 'function')
    throw new InvalidArgumentError('options.onEvent must be a function', 'ERR_INVALID_ARG_TYPE');
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
    throw new InvalidArgumentError('options.signal must be an AbortSignal', 'ERR_INVALID_ARG_TYPE');
}

/** The limits with defaults filled in; throws InvalidArgumentError for a bad one. */
export function resolveLimits(value: unknown): AgentLimits {
  const limits: AgentLimits = { ...DEFAULT_LIMITS };
  if (value === undefined) return limits;
  if (typeof value !== 'object' || value === null)
    throw new InvalidArgumentError('options.limits must be an object', 'ERR_INVALID_ARG_TYPE');
  for (const [key, n] of Object.entries(value)) {
    if (!(key in DEFAULT_LIMITS)) throw new InvalidArgumentError(`options.limits: unknown option '${key}'`);
    if (n === undefined) continue;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1)
      throw new InvalidArgumentError(`options.limits.${key} must be a positive integer`, 'ERR_OUT_OF_RANGE');
    limits[key as keyof AgentLimits] = n;
  }
  return limits;
}
