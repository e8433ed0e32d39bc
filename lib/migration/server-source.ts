/**
 * handOverServer: hands a listening net.Server or http.Server, with every connection it owns, to
 * a successor (acceptServerHandover), on the connections route (handOverConnections):
 *   1. new SYNs to the service are dropped from now on (clients retry; never an RST);
 *   2. the accept queue is drained: what the kernel established before is accepted here, and
 *      goes along; then the listening socket is closed (the successor listens once it is done);
 *   3. http.Server: each keep-alive connection is taken between two requests (server-quiesce.ts):
 *      requests in progress finish first, within drainTimeoutMs; pipelined requests not yet read
 *      stay in the kernel and go along;
 *   4. the connections are handed over with their state, and the SYN hold is lifted (the
 *      successor holds them itself from its HELLO on, until it listens).
 * Any failure before the successor owns the connections puts everything back: the listener
 * listens again, the connections are read again, SYNs pass.
 */
import * as net from 'node:net';

import { InvalidArgumentError } from '../errors';
import { FramedConnection } from '../transport/framed';
import { checkChannelSpec, isSeqpacketTransport, type HandoverChannelSpec } from './handover-connect';
import { HandoverError } from './handover-errors';
import { handOverConnections } from './handover-source';
import type { HandOverOptions, HandOverResult } from './handover-source';
import {
  checkChoice,
  checkFunctions,
  checkServer,
  checkTimeout,
  decodeServerState,
  encodeServerState,
} from './server-common';
import {
  closeListener,
  connectionCount,
  enterServer,
  httpSnapshot,
  isHttpServer,
  knownConnections,
  leftHttp,
  responsePending,
} from './server-http';
import { drainAcceptQueue, serviceOf, SynHold } from './server-listener';
import { quiesceHttp, type Quieted } from './server-quiesce';

export interface HandOverServerOptions extends Omit<HandOverOptions, 'onResumed'> {
  /**
   * A connection that comes back (the successor did not take it) as a new socket or as the same
   * one, with the state serializeState returned; called before the server sees a new socket
   * (which then enters it as an accepted connection). Default: nothing but that.
   */
  onResumed?: (socket: net.Socket, state: Buffer) => void;
  /** 'nftables' (default): drop new SYNs to the service during the handover. 'none': they are refused (RST) once the listener is closed. */
  holdSyns?: 'nftables' | 'none';
  /** How long the accept queue and requests in progress may take to finish (default 10000 ms). */
  drainTimeoutMs?: number;
  /**
   * http.Server connections still inside a request at drainTimeoutMs: 'fail' (default) rejects
   * with ERR_HANDOVER_SERVER_BUSY and changes nothing; 'close' destroys them (their clients see
   * the connection end mid-request) and hands over the rest.
   */
  busy?: 'fail' | 'close';
  /** Connections upgraded away from HTTP (WebSocket): 'fail' (default, ERR_HANDOVER_SERVER_UPGRADED) or 'leave' them here. */
  upgraded?: 'fail' | 'leave';
}

export interface HandOverServerResult extends HandOverResult {
  /** Connections destroyed because they were still busy at the deadline (busy: 'close'). */
  closedBusy: number;
  /** Upgraded connections left with this process (upgraded: 'leave'). */
  leftUpgraded: number;
}

function validate(server: unknown, options: HandOverServerOptions): asserts server is net.Server {
  checkServer(server, 'server');
  if (typeof options !== 'object' || options === null || options.to === undefined)
    throw new InvalidArgumentError('options.to is required', 'ERR_INVALID_ARG_TYPE');
  checkChoice(options.method, 'method', ['repair', 'fd']);
  checkChoice(options.lock, 'lock', ['filter', 'nftables']);
  checkChoice(options.holdSyns, 'holdSyns', ['nftables', 'none']);
  checkChoice(options.busy, 'busy', ['fail', 'close']);
  checkChoice(options.upgraded, 'upgraded', ['fail', 'leave']);
  checkTimeout(options.timeoutMs, 'timeoutMs');
  checkTimeout(options.drainTimeoutMs, 'drainTimeoutMs');
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal))
    throw new InvalidArgumentError('signal must be an AbortSignal', 'ERR_INVALID_ARG_TYPE');
  checkFunctions(options, ['serializeState', 'onResumed', 'moveAddress', 'moveAddressBack', 'onProgress']);
  checkChannelSpec(options.to, 'options.to');
}

/**
 * Closes a channel the caller opened and gave as `to`, as handOverConnections would have: the
 * successor learns at once that nothing comes, instead of waiting for its time limit.
 */
function closeGivenChannel(to: HandoverChannelSpec): void {
  if (isSeqpacketTransport(to)) to.close();
  else if (to instanceof net.Socket) to.destroy();
  else if (to instanceof FramedConnection) to.close();
}

function listenAgain(server: net.Server, address: net.AddressInfo): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: address.address, port: address.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export async function handOverServer(
  server: net.Server,
  options: HandOverServerOptions,
): Promise<HandOverServerResult> {
  validate(server, options);
  const address = server.address();
  if (!server.listening || address === null || typeof address === 'string')
    throw new HandoverError('server must be listening on a TCP port', 'ERR_HANDOVER_SERVER_NOT_LISTENING');
  const http = isHttpServer(server);
  const count = await connectionCount(server);
  if (count > knownConnections(server).length)
    throw new HandoverError(
      `the server has ${count} connections, of which ${knownConnections(server).length} are known: call ` +
        'trackServerConnections(server) before it listens',
      'ERR_HANDOVER_SERVER_UNTRACKED',
    );
  const { holdSyns = 'nftables', busy = 'fail', upgraded = 'fail', drainTimeoutMs = 10000 } = options;
  const timeoutMs = options.timeoutMs ?? 60000;
  const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs), ...(options.signal ? [options.signal] : [])]);
  const drainDeadline = performance.now() + drainTimeoutMs;
  const progress = async (phase: string, detail?: Record<string, unknown>): Promise<void> => {
    await options.onProgress?.({ phase, ...(detail ? { detail } : {}) });
  };

  let hold: SynHold | undefined;
  let listenerClosed = false;
  let quiet: Quieted | undefined;
  let closedBusy = 0;
  let handingOver = false;
  try {
    if (holdSyns === 'nftables') hold = await SynHold.create(serviceOf(address));
    await progress('holdSyns');
    await drainAcceptQueue(server, drainDeadline, signal);
    closeListener(server);
    listenerClosed = true;
    const sockets = knownConnections(server);
    const left = new Set(http ? sockets.filter(leftHttp) : []);
    if (left.size > 0 && upgraded === 'fail')
      throw new HandoverError(
        `${left.size} connections were upgraded away from HTTP (WebSocket): hand them over with node-criu/ws, or pass upgraded: 'leave'`,
        'ERR_HANDOVER_SERVER_UPGRADED',
      );
    let moving = sockets.filter((s) => !left.has(s));
    if (http) {
      quiet = await quiesceHttp(server, moving, drainDeadline, signal);
      await progress('quiet', { ready: quiet.ready.length, busy: quiet.busy.length });
      if (quiet.busy.length > 0 && busy === 'fail')
        throw new HandoverError(
          `${quiet.busy.length} connections were still inside a request after ${drainTimeoutMs} ms`,
          'ERR_HANDOVER_SERVER_BUSY',
        );
      quiet.busy.forEach((socket) => socket.destroy());
      closedBusy = quiet.busy.length;
      moving = quiet.ready;
    }
    const kind = http ? 'http' : 'net';
    const ours = new Set(moving);
    handingOver = true;
    const result = await handOverConnections(moving, {
      ...options,
      signal,
      serializeState: async (socket) => {
        // Nothing may have been read since it came to rest (it would be lost with node:http's parser).
        if (http && (!httpSnapshot(server).parserIdle(socket) || responsePending(socket)))
          throw new HandoverError('a connection took a request during the handover', 'ERR_HANDOVER_SERVER_BUSY');
        return encodeServerState(
          kind,
          options.serializeState ? await options.serializeState(socket) : new Uint8Array(0),
        );
      },
      onResumed: (socket, bytes) => {
        const { state } = decodeServerState(bytes);
        options.onResumed?.(socket, state);
        if (ours.has(socket)) quiet?.resume([socket]);
        else enterServer(server, socket);
      },
    });
    await hold?.destroy();
    return { ...result, closedBusy, leftUpgraded: left.size };
  } catch (error) {
    if (!handingOver) closeGivenChannel(options.to);
    quiet?.resume();
    if (listenerClosed) {
      try {
        await listenAgain(server, address);
      } catch (listenError) {
        (error as Error & { relistenError?: unknown }).relistenError = listenError;
      }
    }
    await hold?.destroy().catch(() => undefined);
    throw error instanceof HandoverError
      ? error
      : new HandoverError((error as Error).message, (error as { code?: string }).code ?? 'ERR_HANDOVER_FAILED', error);
  }
}
