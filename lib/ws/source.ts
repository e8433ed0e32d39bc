/**
 * handOverWebSockets: a WebSocketServer's clients (or a list of server-side WebSockets) go to
 * another process between frames, each with its subprotocol, compression parameters, the
 * Receiver's unparsed input and the application's state, over the connections route
 * (handOverConnections: same options, 'fd' or 'repair'). The target takes them with
 * acceptWebSocketHandover / webSocketAdopter (target.ts).
 */
import type * as net from 'node:net';
import type * as tls from 'node:tls';

import type { WebSocket, WebSocketServer } from 'ws';

import { InvalidArgumentError } from '../errors';
import { handOverConnections } from '../migration/connections';
import type { HandOverOptions, HandOverResult } from '../migration/connections';
import { WebSocketHandoverError } from './errors';
import { OPEN, checkInternals, socketListeners, wsInternals } from './internals';
import { wsModule } from './load';
import { MovingWebSocket } from './quiesce';
import { decodeWebSocketState } from './state';

export interface HandOverWebSocketsOptions extends Omit<HandOverOptions, 'serializeState' | 'onResumed'> {
  /**
   * Called once per WebSocket when it is at rest between frames (every message received so far
   * was delivered): returns the application's state for it, which the target's 'connection' event
   * carries. From this call on the application does not use the WebSocket (send, close... throw
   * ERR_WS_HANDOVER_IN_PROGRESS) until onResumed gives it back.
   */
  serializeState?: (ws: WebSocket) => Uint8Array | Promise<Uint8Array>;
  /** A WebSocket the target did not take is live here again (the same object). */
  onResumed?: (ws: WebSocket) => void;
  /** How long a WebSocket may take to come to rest between frames (default 5000 ms). */
  settleTimeoutMs?: number;
}

export interface HandOverWebSocketsResult extends HandOverResult {
  /** Now the target's: CLOSED here without a close event, and out of the server's `clients`. */
  handedOverClients: WebSocket[];
  /** Live here again (onResumed was called for each). */
  resumedClients: WebSocket[];
  /** Not OPEN when the handover reached them (closing): left alone, they finish closing here. */
  skippedClients: WebSocket[];
}

/** Refuses what cannot move, before anything is touched. */
function checkMovable(ws: WebSocket, index: number): void {
  const w = wsInternals(ws);
  if (!w._isServer)
    throw new WebSocketHandoverError('a client-side WebSocket (only a server side moves)', 'ERR_WS_CLIENT_SIDE', index);
  if ((w._socket as tls.TLSSocket | null)?.encrypted)
    throw new WebSocketHandoverError(
      'a wss:// (TLS) WebSocket cannot move by the connections route (its TLS state is inside OpenSSL): ' +
        'move the whole process (migrateProcess)',
      'ERR_WS_TLS',
      index,
    );
  for (const [name, extension] of Object.entries(w._extensions)) {
    if (name !== 'permessage-deflate')
      throw new WebSocketHandoverError(`extension ${name} cannot move`, 'ERR_WS_EXTENSION', index);
    const params = extension.params ?? {};
    if (params.server_no_context_takeover !== true || params.client_no_context_takeover !== true)
      throw new WebSocketHandoverError(
        'permessage-deflate with context takeover cannot move (the zlib window is process memory): ' +
          'negotiate server_no_context_takeover and client_no_context_takeover, or no compression',
        'ERR_WS_DEFLATE_CONTEXT_TAKEOVER',
        index,
      );
  }
  checkInternals(ws, index);
}

function listOf(clients: unknown): { list: WebSocket[]; server?: WebSocketServer } {
  const { WebSocketServer } = wsModule();
  if (clients instanceof WebSocketServer) {
    if (!clients.clients)
      throw new InvalidArgumentError('the WebSocketServer tracks no clients (clientTracking: false): pass a list');
    return { list: [...clients.clients], server: clients };
  }
  if (typeof clients !== 'object' || clients === null || !(Symbol.iterator in clients))
    throw new InvalidArgumentError('clients must be a WebSocketServer or WebSockets', 'ERR_INVALID_ARG_TYPE');
  const list = [...(clients as Iterable<unknown>)];
  if (!list.every((ws) => typeof ws === 'object' && ws !== null && '_receiver' in ws && 'readyState' in ws))
    throw new InvalidArgumentError('clients must be ws WebSockets', 'ERR_INVALID_ARG_TYPE');
  if (new Set(list).size !== list.length) throw new InvalidArgumentError('clients must not repeat');
  return { list: list as unknown as WebSocket[] };
}

/** Waits (a macrotask at a time: zlib and deferred events run meanwhile) until `ready` or the limit. */
async function settle(entries: MovingWebSocket[], ready: (e: MovingWebSocket) => boolean, limitMs: number) {
  const started = performance.now();
  for (;;) {
    const busy = entries.find((e) => e.open && !ready(e));
    if (!busy) return;
    if (performance.now() - started > limitMs)
      throw new WebSocketHandoverError(
        `the WebSocket did not come to rest between frames within ${limitMs} ms`,
        'ERR_WS_BUSY',
        busy.index,
      );
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

export async function handOverWebSockets(
  clients: WebSocketServer | Iterable<WebSocket>,
  options: HandOverWebSocketsOptions,
): Promise<HandOverWebSocketsResult> {
  const { list, server } = listOf(clients);
  if (typeof options !== 'object' || options === null || options.to === undefined)
    throw new InvalidArgumentError('options.to is required', 'ERR_INVALID_ARG_TYPE');
  for (const name of ['serializeState', 'onResumed'] as const)
    if (options[name] !== undefined && typeof options[name] !== 'function')
      throw new InvalidArgumentError(`${name} must be a function`, 'ERR_INVALID_ARG_TYPE');
  const limitMs = options.settleTimeoutMs ?? 5000;
  if (!Number.isFinite(limitMs) || limitMs <= 0)
    throw new InvalidArgumentError('settleTimeoutMs must be > 0', 'ERR_OUT_OF_RANGE');
  // index: the position in `list` (errors name it).
  const open = list.map((ws, index) => ({ ws, index })).filter(({ ws }) => ws.readyState === OPEN);
  open.forEach(({ ws, index }) => checkMovable(ws, index));
  const entries = open.map(
    ({ ws, index }) => new MovingWebSocket(index, ws, socketListeners(wsInternals(ws)._socket as net.Socket, index)),
  );
  const skipped = list.filter((ws) => ws.readyState !== OPEN);
  const resumed: WebSocket[] = [];
  const resume = (entry: MovingWebSocket, socket = entry.socket, head?: Buffer): void => {
    if (entry.done) return;
    if (socket === entry.socket) entry.resumeOnSameSocket();
    else entry.resumeOnNewSocket(socket, head ?? Buffer.alloc(0));
    if (entry.stateTaken) {
      resumed.push(entry.ws);
      options.onResumed?.(entry.ws);
    }
  };

  let moving: MovingWebSocket[] = [];
  try {
    entries.forEach((e) => e.stopInput());
    await settle(entries, (e) => e.receiverIdle, limitMs);
    // A message delivered meanwhile may have closed it: it stays here and finishes closing.
    for (const entry of entries) {
      if (entry.open) continue;
      entry.resumeOnSameSocket();
      skipped.push(entry.ws);
    }
    moving = entries.filter((e) => !e.done);
    for (const entry of moving) await entry.takeAppState(options.serializeState);
    await settle(moving, (e) => e.senderIdle, limitMs);
  } catch (error) {
    entries.forEach((e) => resume(e));
    throw error;
  }

  const bySocket = new Map(moving.map((e) => [e.socket, e]));
  /** Connections handOverConnections took (asked for their state): from then on it decides. */
  const taken = new Set<MovingWebSocket>();
  try {
    const { serializeState: _serialize, onResumed: _onResumed, settleTimeoutMs: _settle, ...rest } = options;
    const result = await handOverConnections(
      moving.map((e) => e.socket),
      {
        ...rest,
        serializeState: (socket) => {
          const entry = bySocket.get(socket) as MovingWebSocket;
          taken.add(entry);
          return entry.state as Buffer;
        },
        onResumed: (socket, state) => {
          const same = bySocket.get(socket);
          if (same) return resume(same);
          // Restored here (nftables lock): found by the index its state carries.
          const carried = decodeWebSocketState(state);
          const entry = moving.find((e) => e.index === carried.meta.index);
          if (entry) resume(entry, socket, carried.head);
        },
      },
    );
    const handedOverClients = moving.filter((e) => !e.done).map((e) => e.ws);
    moving.forEach((e) => e.letGo(server));
    return { ...result, handedOverClients, resumedClients: resumed, skippedClients: skipped };
  } catch (error) {
    // Not taken (refused, bad options, channel down before the checkpoint): still ours, as they
    // were. Taken ones it could keep came back through onResumed; the others are gone.
    moving.filter((e) => !taken.has(e)).forEach((e) => resume(e));
    moving.forEach((e) => e.letGo(server));
    throw error;
  }
}
