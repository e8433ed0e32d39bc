/**
 * A service address moving between hosts: `ip addr del` on the old owner, `ip addr add` on the
 * new one, then an announcement so neighbours whose cache still holds the old owner's MAC switch
 * at once (otherwise they stall for seconds until their entry fails and they ask again).
 *
 * The announcement is our own raw-socket code (csrc/announce.cc), not arping: no extra package on
 * every host, it runs in any network namespace through the addon's setns helper, and failures
 * are typed errno errors. IPv4: a gratuitous ARP request and reply; IPv6: an unsolicited
 * Neighbour Advertisement with the Override flag, sent from the address itself (so an IPv6
 * address is added with `nodad`: a tentative one cannot be the source).
 */
import * as net from 'node:net';

import { callNative, describeValue, InvalidArgumentError } from '../errors';
import { binding } from '../native';
import { checkNetnsPath } from '../security';
import { addressBytes } from '../soccr/address';
import { AddressError } from './errors';
import { run } from './exec';
import { assertNamespaceFile } from './netns';

export interface AnnounceAddressOptions {
  /** The IPv4 or IPv6 address now on `device` (no prefix length, no zone). */
  address: string;
  /** The interface it is on (e.g. eth0). */
  device: string;
  /** The network namespace the interface is in (a path such as /run/netns/NAME); default ours. */
  netns?: string;
  /** How many announcements (default 3): one lost frame must not leave a neighbour stale. */
  count?: number;
  /** Milliseconds between them (default 100). */
  intervalMs?: number;
  signal?: AbortSignal;
  /** Give up (ERR_ANNOUNCE_TIMEOUT) after this long. */
  timeoutMs?: number;
}

export interface AddressChangeOptions {
  /** ADDRESS or ADDRESS/PREFIX, as `ip addr` takes it (e.g. 10.0.0.100/24, fd00::100/64). */
  cidr: string;
  device: string;
  /** The network namespace the interface is in; default ours. */
  netns?: string;
  signal?: AbortSignal;
  /** Covers the whole call (the `ip` command and, for addAddress, the announcement). */
  timeoutMs?: number;
}

export interface AddAddressOptions extends AddressChangeOptions {
  /** Announce the address once added (default true); an object sets count and interval. */
  announce?: boolean | { count?: number; intervalMs?: number };
}

const DEFAULT_COUNT = 3;
const DEFAULT_INTERVAL_MS = 100;
const MAX_COUNT = 100;
const MAX_INTERVAL_MS = 60_000;
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The `ip` commands' own limit when the caller gives none: they never take long. */
const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
/** What Linux accepts as an interface name (IFNAMSIZ - 1 bytes), kept to a safe set. */
const DEVICE_NAME = /^[a-zA-Z0-9_.:@-]{1,15}$/;

function fail(message: string, code: 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE'): never {
  throw new InvalidArgumentError(message, code);
}

function checkObject(value: unknown, name: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null)
    fail(`${name} must be an object, got ${describeValue(value)}`, 'ERR_INVALID_ARG_TYPE');
  return value as Record<string, unknown>;
}

function checkKeys(o: Record<string, unknown>, name: string, allowed: readonly string[]): void {
  for (const key of Object.keys(o))
    if (!allowed.includes(key)) fail(`${name}: unknown option '${key}'`, 'ERR_INVALID_ARG_VALUE');
}

export function checkDevice(value: unknown): string {
  if (typeof value !== 'string') fail(`device must be a string, got ${describeValue(value)}`, 'ERR_INVALID_ARG_TYPE');
  if (!DEVICE_NAME.test(value) || value === '.' || value === '..')
    fail(
      `device must be an interface name of 1 to 15 characters [a-zA-Z0-9_.:@-], got '${value}'`,
      'ERR_INVALID_ARG_VALUE',
    );
  return value;
}

/**
 * The family and bytes of an address that may be announced: IPv4 or IPv6 text without a zone,
 * neither unspecified nor multicast (nor IPv4 broadcast): no neighbour caches those.
 */
export function checkAnnouncedAddress(value: unknown, name = 'address'): { family: 4 | 6; bytes: Uint8Array } {
  if (typeof value !== 'string') fail(`${name} must be a string, got ${describeValue(value)}`, 'ERR_INVALID_ARG_TYPE');
  const family = net.isIP(value);
  if (family === 0 || value.includes('%'))
    fail(`${name} must be an IPv4 or IPv6 address without a zone, got '${value}'`, 'ERR_INVALID_ARG_VALUE');
  const bytes = addressBytes(family as 4 | 6, value);
  if (bytes === undefined) fail(`${name} is not an IP address: '${value}'`, 'ERR_INVALID_ARG_VALUE');
  const unspecified = bytes.every((b) => b === 0);
  const multicast = family === 4 ? (bytes[0] & 0xf0) === 0xe0 : bytes[0] === 0xff;
  const broadcast = family === 4 && bytes.every((b) => b === 0xff);
  if (unspecified || multicast || broadcast)
    fail(`${name} must be a unicast address, got '${value}'`, 'ERR_INVALID_ARG_VALUE');
  return { family: family as 4 | 6, bytes };
}

/** ADDRESS[/PREFIX] with a unicast address and a prefix length within the family's range. */
export function checkCidr(value: unknown): { cidr: string; address: string; family: 4 | 6 } {
  if (typeof value !== 'string') fail(`cidr must be a string, got ${describeValue(value)}`, 'ERR_INVALID_ARG_TYPE');
  const match = /^([^/]+)(?:\/([0-9]{1,3}))?$/.exec(value);
  if (match === null) fail(`cidr must be ADDRESS or ADDRESS/PREFIX, got '${value}'`, 'ERR_INVALID_ARG_VALUE');
  const { family } = checkAnnouncedAddress(match[1], 'cidr');
  if (match[2] !== undefined && Number(match[2]) > (family === 4 ? 32 : 128))
    fail(`cidr prefix length must be at most ${family === 4 ? 32 : 128}, got '${value}'`, 'ERR_OUT_OF_RANGE');
  return { cidr: value, address: match[1], family };
}

function checkInteger(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
    fail(`${name} must be an integer from ${min} to ${max}, got ${describeValue(value)}`, 'ERR_OUT_OF_RANGE');
  return value;
}

function checkCallOptions(o: Record<string, unknown>): { signal?: AbortSignal; timeoutMs?: number } {
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
    fail('signal must be an AbortSignal', 'ERR_INVALID_ARG_TYPE');
  if (
    o.timeoutMs !== undefined &&
    (typeof o.timeoutMs !== 'number' || !Number.isFinite(o.timeoutMs) || o.timeoutMs <= 0 || o.timeoutMs > MAX_TIMER_MS)
  )
    fail(`timeoutMs must be a positive number of milliseconds, got ${describeValue(o.timeoutMs)}`, 'ERR_OUT_OF_RANGE');
  return {
    ...(o.signal !== undefined ? { signal: o.signal as AbortSignal } : {}),
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs as number } : {}),
  };
}

function checkRepeat(o: Record<string, unknown>): { count: number; intervalMs: number } {
  const count = o.count === undefined ? DEFAULT_COUNT : checkInteger(o.count, 'count', 1, MAX_COUNT);
  const intervalMs =
    o.intervalMs === undefined ? DEFAULT_INTERVAL_MS : checkInteger(o.intervalMs, 'intervalMs', 0, MAX_INTERVAL_MS);
  return { count, intervalMs };
}

/** Every option of announceAddress, checked (InvalidArgumentError), defaults filled in. */
export function checkAnnounceOptions(options: unknown) {
  const o = checkObject(options, 'options');
  checkKeys(o, 'announceAddress', ['address', 'device', 'netns', 'count', 'intervalMs', 'signal', 'timeoutMs']);
  const { family, bytes } = checkAnnouncedAddress(o.address);
  return {
    address: o.address as string,
    family,
    bytes,
    device: checkDevice(o.device),
    ...(o.netns !== undefined ? { netns: checkNetnsPath(o.netns) } : {}),
    ...checkRepeat(o),
    ...checkCallOptions(o),
  };
}

/** Every option of addAddress (announce: false) or removeAddress, checked. */
export function checkAddressChangeOptions(options: unknown, name: 'addAddress' | 'removeAddress') {
  const o = checkObject(options, 'options');
  const keys = ['cidr', 'device', 'netns', 'signal', 'timeoutMs'];
  checkKeys(o, name, name === 'addAddress' ? [...keys, 'announce'] : keys);
  let announce: { count: number; intervalMs: number } | undefined;
  if (o.announce === undefined || o.announce === true) announce = checkRepeat({});
  else if (typeof o.announce === 'object' && o.announce !== null) {
    const a = o.announce as Record<string, unknown>;
    checkKeys(a, 'announce', ['count', 'intervalMs']);
    announce = checkRepeat(a);
  } else if (o.announce !== false)
    fail(
      `announce must be a boolean or { count, intervalMs }, got ${describeValue(o.announce)}`,
      'ERR_INVALID_ARG_TYPE',
    );
  return {
    ...checkCidr(o.cidr),
    device: checkDevice(o.device),
    ...(o.netns !== undefined ? { netns: checkNetnsPath(o.netns) } : {}),
    announce,
    ...checkCallOptions(o),
  };
}

/** Resolves after `ms`, or rejects with AddressError once `signal` fires or `deadline` passes. */
function pause(ms: number, what: string, signal?: AbortSignal, deadline?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted)
      return reject(new AddressError(`${what}: aborted`, { code: 'ABORT_ERR', cause: signal.reason }));
    const untilDeadline = deadline === undefined ? Infinity : Math.max(0, deadline - Date.now());
    const timedOut = untilDeadline < ms;
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new AddressError(`${what}: aborted`, { code: 'ABORT_ERR', cause: signal?.reason }));
    };
    const timer = setTimeout(
      () => {
        signal?.removeEventListener('abort', onAbort);
        if (timedOut) reject(new AddressError(`${what}: timed out`, { code: 'ERR_ANNOUNCE_TIMEOUT' }));
        else resolve();
      },
      Math.min(ms, untilDeadline),
    );
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function checkStop(what: string, signal?: AbortSignal, deadline?: number): void {
  if (signal?.aborted) throw new AddressError(`${what}: aborted`, { code: 'ABORT_ERR', cause: signal.reason });
  if (deadline !== undefined && Date.now() >= deadline)
    throw new AddressError(`${what}: timed out`, { code: 'ERR_ANNOUNCE_TIMEOUT' });
}

interface Announcement {
  family: 4 | 6;
  bytes: Uint8Array;
  address: string;
  device: string;
  netns?: string;
  count: number;
  intervalMs: number;
  signal?: AbortSignal;
}

async function announceChecked(a: Announcement, deadline?: number): Promise<void> {
  const what = `announce ${a.address} on ${a.device}${a.netns !== undefined ? ` in ${a.netns}` : ''}`;
  const native = binding();
  for (let i = 0; i < a.count; i++) {
    if (i > 0) await pause(a.intervalMs, what, a.signal, deadline);
    checkStop(what, a.signal, deadline);
    callNative(AddressError, what, () =>
      a.family === 4
        ? native.announceIPv4(a.device, a.bytes, a.netns)
        : native.announceIPv6(a.device, a.bytes, a.netns),
    );
  }
}

/**
 * Tells the neighbours on `device`'s segment that `address` is now at this interface's MAC:
 * `count` gratuitous ARPs (IPv4: a request and a reply each) or unsolicited Neighbour
 * Advertisements (IPv6), `intervalMs` apart. The address should be on the device (for IPv6 it
 * must be, and not tentative). Rejects with InvalidArgumentError before anything is sent, or
 * AddressError (errno code, ERR_INVALID_NETNS, ERR_ANNOUNCE_TIMEOUT, ABORT_ERR).
 */
export async function announceAddress(options: AnnounceAddressOptions): Promise<void> {
  const o = checkAnnounceOptions(options);
  await announceChecked(o, o.timeoutMs !== undefined ? Date.now() + o.timeoutMs : undefined);
}

/** Throws AddressError unless `netns` is a network namespace file (before nsenter hides why). */
function checkNamespaceExists(netns: string | undefined): void {
  if (netns === undefined) return;
  try {
    assertNamespaceFile(netns);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'ERR_INVALID_NETNS';
    throw new AddressError(`${netns} is not a network namespace: ${(error as Error).message}`, { code, cause: error });
  }
}

async function ip(args: string[], o: { netns?: string; signal?: AbortSignal; timeoutMs?: number }): Promise<void> {
  await run('ip', args, {
    timeoutMs: o.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
    ...(o.netns !== undefined ? { netns: o.netns } : {}),
    ...(o.signal !== undefined ? { signal: o.signal } : {}),
  });
}

/**
 * `ip addr add CIDR dev DEVICE` (with `nodad` for IPv6: usable at once, and announceable), in
 * `netns` when given, then announceAddress unless `announce` is false: resolves once the first
 * announcement is out, the rest of `count` follow `intervalMs` apart in the background. Rejects with
 * InvalidArgumentError, CommandError (the ip command: ERR_COMMAND_FAILED when the address is
 * already there or the device missing, ERR_COMMAND_TIMEOUT, ABORT_ERR) or AddressError (the
 * announcement failed: the address stays added, so a caller rolling back removes it).
 */
export async function addAddress(options: AddAddressOptions): Promise<void> {
  const o = checkAddressChangeOptions(options, 'addAddress');
  const deadline = o.timeoutMs !== undefined ? Date.now() + o.timeoutMs : undefined;
  checkNamespaceExists(o.netns);
  await ip(['addr', 'add', o.cidr, 'dev', o.device, ...(o.family === 6 ? ['nodad'] : [])], o);
  if (o.announce === undefined) return;
  const { family, bytes } = checkAnnouncedAddress(o.address);
  const announcement = { ...o, ...o.announce, family, bytes };
  // The first round is sent before we return (its errors are the caller's); the repeats, there in
  // case a frame is lost, follow in the background so a migration's downtime does not wait for them.
  await announceChecked({ ...announcement, count: 1 }, deadline);
  if (announcement.count > 1) {
    void pause(announcement.intervalMs, 'announce', announcement.signal)
      .then(() => announceChecked({ ...announcement, count: announcement.count - 1 }))
      .catch(() => undefined);
  }
}

/** `ip addr del CIDR dev DEVICE` in `netns` when given. Rejects like addAddress. */
export async function removeAddress(options: AddressChangeOptions): Promise<void> {
  const o = checkAddressChangeOptions(options, 'removeAddress');
  checkNamespaceExists(o.netns);
  await ip(['addr', 'del', o.cidr, 'dev', o.device], o);
}
