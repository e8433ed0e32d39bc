/**
 * The target's listener: waits for the one real source of a handover, whatever else connects.
 * Over TCP only mutual TLS peers get through (the TLS server drops the rest before a byte of
 * theirs is read); on a unix path only root or our uid (SO_PEERCRED). Then a peer must send a
 * valid HELLO within HELLO_TIMEOUT_MS. Anyone who fails any of this is dropped and the listener
 * goes on listening until the handover's own timeout or signal: a stranger can neither end the
 * handover for the real source nor make the target restore, lock or keep anything.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import type * as tls from 'node:tls';

import { checkSocketPath } from '../security';
import { createTlsServer } from '../transport/tls';
import type { TlsCredentials } from '../transport/tls';
import { abortError, StreamHandoverChannel } from './handover-channel';
import type { HandoverChannel } from './handover-channel';
import { checkUnixPeer, unixSocketPeer } from './handover-connect';
import { HandoverError } from './handover-errors';
import type { HelloBody } from './handover-messages';

export type ListenSpec = { host?: string; port: number } | { path: string };

/** A peer that is through TLS (or the uid check) has this long to send its HELLO. */
export const HELLO_TIMEOUT_MS = 10000;
/** Peers waiting for their HELLO at once; more are dropped on arrival. */
const MAX_CANDIDATES = 8;

export function checkListenSpec(listen: unknown, tlsCredentials: unknown): void {
  if (typeof listen !== 'object' || listen === null)
    throw new HandoverError('from.listen must be { host?, port } or { path }', 'ERR_INVALID_ARG_TYPE');
  const l = listen as Record<string, unknown>;
  if ('path' in l) {
    checkSocketPath(l.path, 'from.listen.path');
    return;
  }
  if (!Number.isInteger(l.port) || (l.port as number) < 0 || (l.port as number) > 65535)
    throw new HandoverError('from.listen.port must be an integer in 0..65535', 'ERR_OUT_OF_RANGE');
  if (l.host !== undefined && typeof l.host !== 'string')
    throw new HandoverError('from.listen.host must be a string', 'ERR_INVALID_ARG_TYPE');
  if (tlsCredentials === undefined)
    throw new HandoverError(
      'from.listen: a TCP handover channel needs mutual TLS (from.tls: { cert, key, ca }); plain TCP is refused',
      'ERR_HANDOVER_TLS_REQUIRED',
    );
}

export interface ListenOptions {
  signal: AbortSignal;
  onListening?: (address: net.AddressInfo | string) => void;
  /** A peer dropped before its HELLO was valid (for logs). */
  onRejectedPeer?: (error: Error) => void;
  /** Reads and checks the HELLO on a new channel (it sets the channel's limits first). */
  readHello: (channel: HandoverChannel, signal: AbortSignal) => Promise<HelloBody>;
}

export async function listenForSource(
  listen: ListenSpec,
  credentials: TlsCredentials | undefined,
  options: ListenOptions,
): Promise<{ channel: HandoverChannel; hello: HelloBody }> {
  const { signal } = options;
  const candidates = new Set<HandoverChannel>();
  let settle!: { resolve: (v: { channel: HandoverChannel; hello: HelloBody }) => void; reject: (e: Error) => void };
  const outcome = new Promise<{ channel: HandoverChannel; hello: HelloBody }>((resolve, reject) => {
    settle = { resolve, reject };
  });
  let decided = false;
  const reject = (error: Error): void => {
    options.onRejectedPeer?.(error);
  };

  const candidate = (socket: net.Socket | tls.TLSSocket): void => {
    socket.on('error', () => undefined);
    if (decided || candidates.size >= MAX_CANDIDATES) {
      socket.destroy();
      return;
    }
    if (credentials === undefined) {
      try {
        checkUnixPeer(unixSocketPeer(socket), 'handover listener');
      } catch (error) {
        socket.destroy();
        reject(error as Error);
        return;
      }
    }
    const channel = new StreamHandoverChannel(socket);
    candidates.add(channel);
    const helloSignal = AbortSignal.any([signal, AbortSignal.timeout(HELLO_TIMEOUT_MS)]);
    options.readHello(channel, helloSignal).then(
      (hello) => {
        candidates.delete(channel);
        if (decided) return channel.close();
        decided = true;
        settle.resolve({ channel, hello });
      },
      (error: Error) => {
        candidates.delete(channel);
        channel.close();
        reject(error);
      },
    );
  };

  const server: net.Server = credentials
    ? createTlsServer({
        tls: credentials,
        onSecureConnection: candidate,
        onClientError: (error) =>
          reject(new HandoverError(`TLS handshake refused: ${error.message}`, 'ERR_HANDOVER_TLS', error)),
      })
    : net.createServer(candidate);
  // Every accepted socket, so none outlives the listener (a TLS handshake in progress would
  // otherwise hold its fd until the handshake timeout).
  const raw = new Set<net.Socket>();
  server.on('connection', (socket: net.Socket) => {
    raw.add(socket);
    socket.once('close', () => raw.delete(socket));
  });
  let winner: { address?: string; port?: number } | undefined;
  const onAbort = (): void => settle.reject(abortError(signal));
  try {
    await new Promise<void>((resolve, rejectListen) => {
      server.once('error', (error) =>
        rejectListen(
          new HandoverError(`cannot listen for the handover: ${error.message}`, 'ERR_HANDOVER_LISTEN', error),
        ),
      );
      server.listen(listen, () => resolve());
    });
    // Only our uid may connect to a unix path (not the umask's mode).
    if ('path' in listen) fs.chmodSync(listen.path, 0o600);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    const address = server.address();
    if (address !== null) options.onListening?.(address);
    const won = await outcome;
    const stream = (won.channel as StreamHandoverChannel).framed.stream as net.Socket;
    winner = { address: stream.remoteAddress, port: stream.remotePort };
    return won;
  } finally {
    signal.removeEventListener('abort', onAbort);
    decided = true;
    server.close();
    for (const channel of candidates) channel.close();
    for (const socket of raw)
      if (winner === undefined || socket.remoteAddress !== winner.address || socket.remotePort !== winner.port)
        socket.destroy();
  }
}
