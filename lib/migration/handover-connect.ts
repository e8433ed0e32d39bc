/**
 * Who may be at the other end of a handover channel, and how each kind is opened:
 *   - between hosts only mutual TLS 1.3 ({ host, port, tls }, or an authorized tls.TLSSocket): a
 *     plain TCP channel is refused (ERR_HANDOVER_TLS_REQUIRED) before anything connects or listens,
 *     since images carry sequence numbers and queued payload and the target restores them as root;
 *   - on one host a unix socket (SEQPACKET transport, or a stream { path }): the peer's uid, as the
 *     kernel recorded it (SO_PEERCRED), must be root or ours (ERR_HANDOVER_UNTRUSTED_PEER).
 */
import * as net from 'node:net';
import * as tls from 'node:tls';

import { binding } from '../native';
import { checkSocketPath } from '../security';
import { soccr } from '../soccr';
import { FramedConnection } from '../transport/framed';
import { checkTlsCredentials, connectTls } from '../transport/tls';
import type { TlsCredentials } from '../transport/tls';
import type { SeqpacketTransport } from '../transport/seqpacket';
import { abortError, SeqpacketHandoverChannel, StreamHandoverChannel } from './handover-channel';
import type { HandoverChannel } from './handover-channel';
import { HandoverError } from './handover-errors';

/** What handOverConnections accepts as `to` (and acceptHandover as an already open `from`). */
export type HandoverChannelSpec =
  | SeqpacketTransport
  /** A connected unix stream socket, or an authorized tls.TLSSocket. */
  | net.Socket
  /** A FramedConnection over an authenticated stream (the migration agent relays through one). */
  | FramedConnection
  | { path: string }
  | { host: string; port: number; tls: TlsCredentials };

export function isSeqpacketTransport(value: unknown): value is SeqpacketTransport {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as SeqpacketTransport).receive === 'function' &&
    typeof (value as SeqpacketTransport).peerCredentials === 'function' &&
    !(value instanceof net.Socket)
  );
}

function tlsRequired(what: string): HandoverError {
  return new HandoverError(
    `${what}: a TCP handover channel needs mutual TLS (tls: { cert, key, ca }); plain TCP is refused`,
    'ERR_HANDOVER_TLS_REQUIRED',
  );
}

/**
 * Checks a channel spec without touching anything: its shape, TLS for TCP (throws
 * ERR_HANDOVER_TLS_REQUIRED), credentials and socket paths. Returns whether it crosses hosts.
 */
export function checkChannelSpec(spec: unknown, name: string): { network: boolean } {
  if (isSeqpacketTransport(spec)) return { network: false };
  if (spec instanceof FramedConnection) return { network: spec.stream instanceof tls.TLSSocket };
  if (spec instanceof tls.TLSSocket) {
    if (!spec.authorized) throw tlsRequired(`${name} is a TLS socket whose peer is not authorized`);
    return { network: true };
  }
  if (spec instanceof net.Socket) {
    if (spec.remoteFamily === 'IPv4' || spec.remoteFamily === 'IPv6' || spec.remotePort !== undefined)
      throw tlsRequired(`${name} is a plain TCP socket`);
    return { network: false };
  }
  if (typeof spec !== 'object' || spec === null)
    throw new HandoverError(
      `${name} must be a SeqpacketTransport, a net.Socket, { path } or { host, port, tls }`,
      'ERR_INVALID_ARG_TYPE',
    );
  const o = spec as Record<string, unknown>;
  if ('path' in o) {
    checkSocketPath(o.path, `${name}.path`);
    return { network: false };
  }
  if (o.tls === undefined) throw tlsRequired(name);
  checkTlsCredentials(o.tls, `${name}.tls`);
  return { network: true };
}

/** SO_PEERCRED of a unix socket's other end must be root or our own uid. */
export function checkUnixPeer(credentials: { uid: number; pid: number }, what: string): void {
  const ours = process.geteuid?.() ?? 0;
  if (credentials.uid === 0 || credentials.uid === ours) return;
  throw new HandoverError(
    `${what}: the peer runs as uid ${credentials.uid} (pid ${credentials.pid}), neither root nor uid ${ours}`,
    'ERR_HANDOVER_UNTRUSTED_PEER',
  );
}

export function unixSocketPeer(socket: net.Socket): { uid: number; pid: number } {
  return binding().peerCredentials(soccr.fdOfSocket(socket));
}

/** Wraps an already connected (and, over TCP, authenticated) end in a channel. */
export function channelOver(spec: SeqpacketTransport | net.Socket | FramedConnection, name: string): HandoverChannel {
  if (isSeqpacketTransport(spec)) {
    checkUnixPeer(spec.peerCredentials(), name);
    return new SeqpacketHandoverChannel(spec);
  }
  if (spec instanceof net.Socket && !(spec instanceof tls.TLSSocket)) checkUnixPeer(unixSocketPeer(spec), name);
  return new StreamHandoverChannel(spec);
}

/** Opens (connects) the channel `spec` names; checkChannelSpec(spec) must have passed. */
export async function openChannel(spec: HandoverChannelSpec, signal: AbortSignal): Promise<HandoverChannel> {
  if (isSeqpacketTransport(spec) || spec instanceof net.Socket || spec instanceof FramedConnection)
    return channelOver(spec, 'handover channel');
  if ('host' in spec) {
    let socket: tls.TLSSocket;
    try {
      socket = await connectTls({ host: spec.host, port: spec.port, tls: spec.tls, signal });
    } catch (error) {
      if (signal.aborted) throw abortError(signal);
      const code =
        (error as { code?: string }).code === 'ERR_TLS_HANDSHAKE' ? 'ERR_HANDOVER_TLS' : 'ERR_HANDOVER_CONNECT';
      throw new HandoverError(`cannot open the handover channel: ${(error as Error).message}`, code, error);
    }
    return new StreamHandoverChannel(socket);
  }
  const socket = net.connect({ path: spec.path });
  await new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      socket.destroy();
      reject(abortError(signal));
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
    socket.once('error', (error) => {
      signal.removeEventListener('abort', onAbort);
      reject(new HandoverError(`cannot connect the handover channel: ${error.message}`, 'ERR_HANDOVER_CONNECT', error));
    });
  });
  try {
    return channelOver(socket, spec.path);
  } catch (error) {
    socket.destroy();
    throw error;
  }
}
