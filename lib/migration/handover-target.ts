/**
 * acceptHandover: the target side of handOverConnections (protocol in handover-source.ts). This
 * file checks the options and finds the source (listening, or over a channel given); the handover
 * itself is serveHandover (handover-session.ts), which takes any authenticated channel, so the
 * migration agent can relay a handover it accepted to a local application.
 */
import type * as net from 'node:net';
import * as path from 'node:path';

import { InvalidArgumentError } from '../errors';
import type { TlsCredentials } from '../transport/tls';
import { checkChannelSpec, openChannel } from './handover-connect';
import type { HandoverChannelSpec } from './handover-connect';
import type { HandoverChannel } from './handover-channel';
import { HandoverError } from './handover-errors';
import { checkListenSpec, listenForSource } from './handover-listen';
import type { ListenSpec } from './handover-listen';
import { DEFAULT_LIMITS } from './handover-messages';
import type { HandoverMethod, HelloBody } from './handover-messages';
import { allowChecker, readHello, serveHandover } from './handover-session';
import type { AllowList, TargetLimits } from './handover-session';

export type HandoverHello = HelloBody;

export interface AcceptHandoverOptions {
  /**
   * Where the source is: `{ listen: { host?, port }, tls }` (mutual TLS 1.3; without tls:
   * ERR_HANDOVER_TLS_REQUIRED), `{ listen: { path } }` (unix stream, peers of root or our uid), or
   * an open channel (SeqpacketTransport, unix net.Socket, authorized tls.TLSSocket, FramedConnection,
   * or { path } / { host, port, tls } to connect to).
   */
  from: HandoverChannelSpec | { listen: ListenSpec; tls?: TlsCredentials };
  /** Called once per connection taken over, after it was committed: the application owns it now. */
  onConnection: (socket: net.Socket, state: Buffer) => void | Promise<void>;
  /**
   * The local addresses (IP or CIDR) and ports a restored connection may have. Required when the
   * channel crosses hosts (TLS); on a unix channel the default is anything. Omitting `ports` or
   * `addresses` allows any of that kind.
   */
  allow?: AllowList;
  /** At most this many connections per handover (default 16384). */
  maxConnections?: number;
  /** Largest connection image (default 64 MiB) and application state (default 16 MiB) per connection. */
  maxImageBytes?: number;
  maxStateBytes?: number;
  /** All connections' images and states together (default 1 GiB). */
  maxTotalBytes?: number;
  /** Restore the connections into this network namespace (path; default: ours). 'repair' only. */
  netns?: string;
  /** Drop the staged connections' packets here until each is restored, when the source says the address moves (default 'nftables'). */
  lock?: 'nftables' | 'none';
  /** Return false or a reason string to refuse the handover (nothing is touched on either side). */
  accept?: (hello: HandoverHello) => boolean | string;
  /** Called with the listening address when `from.listen` is used. */
  onListening?: (address: net.AddressInfo | string) => void;
  /** A peer dropped while listening (TLS refused, wrong uid, no valid HELLO): for logs. */
  onRejectedPeer?: (error: Error) => void;
  /** Called at each step (hello, connection, staged, commit, result, done, committed); a promise is awaited. */
  onProgress?: (event: { phase: string }) => void | Promise<void>;
  signal?: AbortSignal;
  /** Whole-handover time limit, listening included (default 60000 ms). */
  timeoutMs?: number;
}

export interface AcceptHandoverResult {
  method: HandoverMethod;
  accepted: number;
  failed: number;
  phases: { stage: number; restore: number; total: number };
}

function positiveInteger(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || (value as number) <= 0)
    throw new InvalidArgumentError(`${name} must be a positive integer`, 'ERR_OUT_OF_RANGE');
  return value as number;
}

function checkAllow(allow: unknown): AllowList | undefined {
  if (allow === undefined) return undefined;
  if (typeof allow !== 'object' || allow === null)
    throw new InvalidArgumentError('allow must be { ports?, addresses? }', 'ERR_INVALID_ARG_TYPE');
  const { ports, addresses, ...rest } = allow as Record<string, unknown>;
  if (Object.keys(rest).length > 0) throw new InvalidArgumentError(`allow: unknown option '${Object.keys(rest)[0]}'`);
  if (
    ports !== undefined &&
    (!Array.isArray(ports) || !ports.every((p) => Number.isInteger(p) && (p as number) > 0 && (p as number) < 65536))
  )
    throw new InvalidArgumentError('allow.ports must be ports (1..65535)', 'ERR_INVALID_ARG_VALUE');
  if (addresses !== undefined && (!Array.isArray(addresses) || !addresses.every((a) => typeof a === 'string')))
    throw new InvalidArgumentError('allow.addresses must be IP addresses or CIDRs', 'ERR_INVALID_ARG_TYPE');
  const list = {
    ...(ports ? { ports: ports as number[] } : {}),
    ...(addresses ? { addresses: addresses as string[] } : {}),
  };
  allowChecker(list); // throws for an entry that is no IP or CIDR
  return list;
}

export async function acceptHandover(options: AcceptHandoverOptions): Promise<AcceptHandoverResult> {
  if (typeof options !== 'object' || options === null || options.from === undefined)
    throw new InvalidArgumentError('options.from is required', 'ERR_INVALID_ARG_TYPE');
  if (typeof options.onConnection !== 'function')
    throw new InvalidArgumentError('onConnection must be a function', 'ERR_INVALID_ARG_TYPE');
  if (options.netns !== undefined && (typeof options.netns !== 'string' || !path.isAbsolute(options.netns)))
    throw new InvalidArgumentError('netns must be an absolute path');
  if (options.lock !== undefined && options.lock !== 'nftables' && options.lock !== 'none')
    throw new InvalidArgumentError(`lock must be 'nftables' or 'none'`);
  if (options.timeoutMs !== undefined && (!Number.isFinite(options.timeoutMs) || options.timeoutMs <= 0))
    throw new InvalidArgumentError('timeoutMs must be > 0', 'ERR_OUT_OF_RANGE');
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal))
    throw new InvalidArgumentError('signal must be an AbortSignal', 'ERR_INVALID_ARG_TYPE');
  for (const name of ['accept', 'onListening', 'onRejectedPeer', 'onProgress'] as const)
    if (options[name] !== undefined && typeof options[name] !== 'function')
      throw new InvalidArgumentError(`${name} must be a function`, 'ERR_INVALID_ARG_TYPE');
  const limits: TargetLimits = {
    maxConnections: positiveInteger(options.maxConnections, 'maxConnections', DEFAULT_LIMITS.maxConnections),
    maxImageBytes: positiveInteger(options.maxImageBytes, 'maxImageBytes', DEFAULT_LIMITS.maxImageBytes),
    maxStateBytes: positiveInteger(options.maxStateBytes, 'maxStateBytes', DEFAULT_LIMITS.maxStateBytes),
    maxTotalBytes: positiveInteger(options.maxTotalBytes, 'maxTotalBytes', 1024 * 1024 * 1024),
  };
  const from = options.from as Record<string, unknown>;
  const listening = typeof from === 'object' && from !== null && 'listen' in from;
  let network: boolean;
  if (listening) {
    checkListenSpec(from.listen, from.tls);
    network = !('path' in (from.listen as object));
    if (network) checkChannelSpec({ host: '', port: 0, tls: from.tls }, 'from');
  } else {
    network = checkChannelSpec(options.from, 'options.from').network;
  }
  const allow = checkAllow(options.allow);
  // Between hosts the target decides what it restores: without a list, nothing is assumed.
  if (network && allow === undefined)
    throw new InvalidArgumentError(
      'allow ({ ports?, addresses? }) is required when the channel crosses hosts',
      'ERR_INVALID_ARG_TYPE',
    );
  const session = { ...options, limits, allow: allow ?? {} };
  const signal = AbortSignal.any([
    AbortSignal.timeout(options.timeoutMs ?? 60000),
    ...(options.signal ? [options.signal] : []),
  ]);
  const started = performance.now();
  let channel: HandoverChannel;
  let hello: HelloBody;
  if (listening) {
    ({ channel, hello } = await listenForSource(from.listen as ListenSpec, from.tls as TlsCredentials | undefined, {
      signal,
      ...(options.onListening ? { onListening: options.onListening } : {}),
      ...(options.onRejectedPeer ? { onRejectedPeer: options.onRejectedPeer } : {}),
      readHello: (c, s) => readHello(c, session, s),
    }));
  } else {
    channel = await openChannel(options.from as HandoverChannelSpec, signal);
    try {
      hello = await readHello(channel, session, signal);
    } catch (error) {
      channel.close();
      throw error instanceof HandoverError ? error : new HandoverError(String(error), 'ERR_HANDOVER_FAILED', error);
    }
  }
  return serveHandover(channel, hello, session, signal, started);
}
