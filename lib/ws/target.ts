/**
 * The target side: each connection taken over becomes a WebSocket of the target's WebSocketServer,
 * built as the server's own upgrade builds one (WebSocketServer#completeUpgrade: `new
 * options.WebSocket(null, undefined, options)`, the negotiated protocol and extension set,
 * `setSocket(socket, head, limits)`, added to `clients`), then the server emits 'connection' with
 * (ws, request, { handedOver: true, state }). webSocketAdopter works with any way of taking a
 * handover (acceptHandover, acceptHandoverViaAgent); acceptWebSocketHandover is acceptHandover
 * with it.
 */
import type * as net from 'node:net';

import type { WebSocket, WebSocketServer } from 'ws';

import { InvalidArgumentError } from '../errors';
import { acceptHandover } from '../migration/connections';
import type { AcceptHandoverOptions, AcceptHandoverResult } from '../migration/connections';
import { WebSocketHandoverError } from './errors';
import { serverInternals, wsInternals } from './internals';
import { perMessageDeflateClass, wsModule } from './load';
import { decodeWebSocketState } from './state';
import type { CarriedWebSocket } from './state';

/** The 'connection' event's second argument for a handed-over client (there was no HTTP request here). */
export interface HandedOverRequest {
  handedOver: true;
  method: 'GET';
  url: '';
  headers: Record<string, string>;
  socket: net.Socket;
}

/** The 'connection' event's third argument for a handed-over client. */
export interface HandoverConnectionInfo {
  handedOver: true;
  /** What the source's serializeState returned for this WebSocket. */
  state: Buffer;
}

export type WebSocketAdopter = ((socket: net.Socket, state: Buffer) => void) & {
  /** The WebSockets taken over so far. */
  readonly clients: WebSocket[];
  /** Connections dropped for a malformed state (ERR_WS_STATE), and errors thrown by 'connection' listeners. */
  readonly failures: Error[];
};

function makeWebSocket(wss: WebSocketServer, socket: net.Socket, carried: CarriedWebSocket): WebSocket {
  const server = serverInternals(wss);
  const options = server.options;
  const ws = new options.WebSocket(null, undefined, options as unknown as Record<string, unknown>);
  const w = wsInternals(ws);
  if (carried.meta.protocol !== '') w._protocol = carried.meta.protocol;
  if (carried.meta.deflate) {
    const PerMessageDeflate = perMessageDeflateClass();
    // (options, isServer, maxPayload): ws before 8.18 took three arguments, later ones the first.
    const deflate = new (PerMessageDeflate as unknown as new (...args: unknown[]) => { params: unknown })(
      { ...(options.perMessageDeflate || {}), isServer: true, maxPayload: options.maxPayload },
      true,
      options.maxPayload,
    );
    deflate.params = { ...carried.meta.deflate };
    w._extensions = { 'permessage-deflate': deflate as { params: Record<string, unknown> } };
  }
  ws.binaryType = carried.meta.binaryType as WebSocket['binaryType'];
  w.setSocket(socket, Buffer.from(carried.head), {
    allowSynchronousEvents: options.allowSynchronousEvents,
    maxBufferedChunks: options.maxBufferedChunks,
    maxFragments: options.maxFragments,
    maxPayload: options.maxPayload,
    skipUTF8Validation: options.skipUTF8Validation,
  });
  const clients = server.clients;
  if (clients) {
    clients.add(ws);
    ws.on('close', () => {
      clients.delete(ws);
      // As the server's own close listener does: a close() waiting for its clients completes.
      if (server._shouldEmitClose && clients.size === 0)
        process.nextTick(() => {
          (server as unknown as { _state: number })._state = 2;
          wss.emit('close');
        });
    });
  }
  if (carried.meta.paused) ws.pause();
  return ws;
}

/** The onConnection of a handover target that turns each connection into a client of `wss`. */
export function webSocketAdopter(wss: WebSocketServer): WebSocketAdopter {
  const { WebSocketServer } = wsModule();
  if (!(wss instanceof WebSocketServer))
    throw new InvalidArgumentError('wss must be a ws WebSocketServer', 'ERR_INVALID_ARG_TYPE');
  const clients: WebSocket[] = [];
  const failures: Error[] = [];
  const adopt = (socket: net.Socket, state: Buffer): void => {
    let carried: CarriedWebSocket;
    let ws: WebSocket;
    try {
      carried = decodeWebSocketState(state);
      ws = makeWebSocket(wss, socket, carried);
    } catch (error) {
      // Nothing here can speak for this connection: it closes (the source let it go already).
      socket.destroy();
      failures.push(
        error instanceof WebSocketHandoverError
          ? error
          : new WebSocketHandoverError((error as Error).message, 'ERR_WS_STATE', undefined, error),
      );
      return;
    }
    clients.push(ws);
    const request: HandedOverRequest = { handedOver: true, method: 'GET', url: '', headers: {}, socket };
    const info: HandoverConnectionInfo = { handedOver: true, state: Buffer.from(carried.appState) };
    try {
      // Synchronously, as ws does after setSocket: the listeners are on before the first message.
      wss.emit('connection', ws, request, info);
    } catch (error) {
      failures.push(error as Error);
    }
  };
  return Object.assign(adopt, { clients, failures });
}

export type AcceptWebSocketHandoverOptions = Omit<AcceptHandoverOptions, 'onConnection'>;

export interface AcceptWebSocketHandoverResult extends AcceptHandoverResult {
  clients: WebSocket[];
  failures: Error[];
}

/** acceptHandover whose connections become clients of `wss` (webSocketAdopter). */
export async function acceptWebSocketHandover(
  wss: WebSocketServer,
  options: AcceptWebSocketHandoverOptions,
): Promise<AcceptWebSocketHandoverResult> {
  const adopt = webSocketAdopter(wss);
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  const result = await acceptHandover({ ...options, onConnection: adopt });
  return { ...result, clients: adopt.clients, failures: adopt.failures };
}
