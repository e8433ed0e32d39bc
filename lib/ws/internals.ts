/**
 * The parts of ws's WebSocket, Receiver and Sender (ws 8) this module reads or sets. They are used
 * here only, and checked before anything is touched (ERR_WS_INTERNALS for a ws that differs).
 *   WebSocket: _socket, _receiver, _sender, _extensions, _isServer, _readyState, setSocket()
 *     (the method WebSocketServer#completeUpgrade calls), _protocol (set there too).
 *   Receiver:  the frame parser's state (_state, _buffers, header fields, _fragments).
 *   Sender:    _state and _queue (messages waiting for deflate or a Blob's bytes).
 *   Socket:    the four listeners setSocket adds (socketOnClose/Data/End/Error).
 */
import type * as net from 'node:net';

import type { WebSocket, WebSocketServer } from 'ws';

import { WebSocketHandoverError } from './errors';

export interface ReceiverInternals {
  _state: number;
  _buffers: Buffer[];
  _bufferedBytes: number;
  _fin: boolean;
  _opcode: number;
  _masked: boolean;
  _mask: Buffer | undefined;
  _payloadLength: number;
  _compressed: boolean;
  _fragmented: number;
  _fragments: Buffer[];
  _totalPayloadLength: number;
  _isServer: boolean;
  _errored: boolean;
  _allowSynchronousEvents: boolean;
  _maxBufferedChunks: number;
  _maxFragments: number;
  _maxPayload: number;
  _skipUTF8Validation: boolean;
  writableLength: number;
}

export interface SenderInternals {
  _state?: number;
  _deflating?: boolean;
  _queue: unknown[];
}

export interface WebSocketInternals {
  _socket: net.Socket | null;
  _receiver: ReceiverInternals | null;
  _sender: SenderInternals | null;
  _extensions: Record<string, { params?: Record<string, unknown> | null }>;
  _isServer: boolean;
  _readyState: number;
  _protocol: string;
  _paused: boolean;
  setSocket(socket: net.Socket, head: Buffer, options: SetSocketOptions): void;
}

export interface SetSocketOptions {
  allowSynchronousEvents: boolean;
  maxBufferedChunks?: number;
  maxFragments?: number;
  maxPayload: number;
  skipUTF8Validation: boolean;
}

export interface ServerInternals {
  clients?: Set<WebSocket>;
  options: SetSocketOptions & {
    WebSocket: new (address: null, protocols: undefined, options: Record<string, unknown>) => WebSocket;
    perMessageDeflate: false | Record<string, unknown>;
  };
  _shouldEmitClose?: boolean;
}

export const OPEN = 1;
export const CLOSED = 3;

export function wsInternals(ws: WebSocket): WebSocketInternals {
  return ws as unknown as WebSocketInternals;
}

export function serverInternals(wss: WebSocketServer): ServerInternals {
  return wss as unknown as ServerInternals;
}

/** The socket events setSocket listens to, with its listeners' names. */
export const SOCKET_EVENTS = ['close', 'data', 'end', 'error'] as const;
export type SocketEvent = (typeof SOCKET_EVENTS)[number];
export type SocketListeners = Record<SocketEvent, (...args: unknown[]) => void>;

/** ws's own listeners on its socket, found by their names (socketOnClose...). */
export function socketListeners(socket: net.Socket, index: number): SocketListeners {
  const found: Partial<SocketListeners> = {};
  for (const event of SOCKET_EVENTS) {
    const name = `socketOn${event[0].toUpperCase()}${event.slice(1)}`;
    const listener = socket.listeners(event).find((l) => (l as { name?: string }).name === name);
    if (!listener) throw internalsError(`no ws '${event}' listener (${name}) on the socket`, index);
    found[event] = listener as (...args: unknown[]) => void;
  }
  return found as SocketListeners;
}

export function internalsError(what: string, index?: number): WebSocketHandoverError {
  return new WebSocketHandoverError(`unsupported ws internals: ${what}`, 'ERR_WS_INTERNALS', index);
}

/** Checks that ws's Receiver and Sender are the ones this module reads (ws 8). */
export function checkInternals(ws: WebSocket, index: number): void {
  const w = wsInternals(ws);
  if (typeof w.setSocket !== 'function') throw internalsError('WebSocket#setSocket is missing', index);
  const r = w._receiver as unknown as Record<string, unknown> | null;
  if (!r || !Array.isArray(r._buffers) || !Array.isArray(r._fragments) || typeof r._state !== 'number')
    throw internalsError('the Receiver has no _state/_buffers/_fragments', index);
  for (const field of ['_bufferedBytes', '_opcode', '_payloadLength', '_fragmented', '_totalPayloadLength'])
    if (typeof r[field] !== 'number') throw internalsError(`Receiver.${field} is not a number`, index);
  const s = w._sender;
  if (!s || !Array.isArray(s._queue)) throw internalsError('the Sender has no _queue', index);
}

/** The Receiver has parsed everything it can and owes no event (not inflating, not deferring). */
export function receiverIdle(r: ReceiverInternals): boolean {
  return r._state <= 4 && r.writableLength === 0;
}

/** Nothing waits in the Sender: every frame is in the socket's write buffer. */
export function senderIdle(s: SenderInternals): boolean {
  const state = s._state ?? (s._deflating ? 1 : 0);
  return state === 0 && s._queue.length === 0;
}
