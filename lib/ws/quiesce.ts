/**
 * One WebSocket on the source while it is handed over: brought to rest between frames (no input,
 * every event delivered, nothing queued to send), then either given back to the application live
 * (resume) or let go (the target has it now).
 */
import type * as net from 'node:net';

import type { WebSocket, WebSocketServer } from 'ws';

import { soccr } from '../soccr';
import { WebSocketHandoverError } from './errors';
import { unparsedInput } from './frames';
import { CLOSED, OPEN, SOCKET_EVENTS, receiverIdle, senderIdle, wsInternals } from './internals';
import type { ReceiverInternals, SocketListeners, WebSocketInternals } from './internals';
import { encodeWebSocketState } from './state';
import type { WebSocketMeta } from './state';

/** What the application may not call while its WebSocket is handed over. */
const GUARDED = ['send', 'ping', 'pong', 'close', 'terminate', 'pause', 'resume'] as const;

export class MovingWebSocket {
  readonly w: WebSocketInternals;
  readonly socket: net.Socket;
  private readonly appPaused: boolean;
  private wasReading = false;
  private stopped = false;
  private guarded = false;
  private socketError: Error | undefined;
  private readonly onSocketError = (error: Error): void => {
    this.socketError = error;
  };
  /** The application gave its state (onResumed is owed if the WebSocket comes back). */
  stateTaken = false;
  /** done: given back (resumed) or let go; every entry ends as one of them, once. */
  done = false;
  state: Buffer | undefined;

  constructor(
    readonly index: number,
    readonly ws: WebSocket,
    private readonly listeners: SocketListeners,
  ) {
    this.w = wsInternals(ws);
    this.socket = this.w._socket as net.Socket;
    this.appPaused = this.w._paused;
  }

  /** No more input: libuv stops reading, Node stops emitting, ws's socket listeners come off. */
  stopInput(): void {
    this.wasReading = soccr.stopReading(this.socket); // first: it throws for a socket that is no TCP net.Socket
    this.w._paused = true; // receiverOnDrain resumes the socket unless the WebSocket is paused
    this.socket.pause();
    for (const event of SOCKET_EVENTS) this.socket.off(event, this.listeners[event]);
    this.socket.on('error', this.onSocketError);
    this.guard(['pause', 'resume']);
    this.stopped = true;
  }

  get open(): boolean {
    return this.w._readyState === OPEN;
  }

  get receiverIdle(): boolean {
    return receiverIdle(this.w._receiver as ReceiverInternals);
  }

  get senderIdle(): boolean {
    return senderIdle(this.w._sender as NonNullable<WebSocketInternals['_sender']>);
  }

  /** The application's state, taken once the Receiver is idle; from here on it may not send. */
  async takeAppState(serialize: ((ws: WebSocket) => Uint8Array | Promise<Uint8Array>) | undefined): Promise<void> {
    const appState = serialize ? await serialize(this.ws) : new Uint8Array(0);
    this.stateTaken = true;
    if (!(appState instanceof Uint8Array))
      throw new WebSocketHandoverError('serializeState must return a Uint8Array', 'ERR_WS_STATE', this.index);
    this.guard(GUARDED);
    const r = this.w._receiver as ReceiverInternals;
    const deflate = this.w._extensions['permessage-deflate']?.params;
    const meta: WebSocketMeta = {
      index: this.index,
      protocol: this.w._protocol,
      binaryType: this.ws.binaryType as WebSocketMeta['binaryType'],
      paused: this.appPaused,
      ...(deflate ? { deflate: deflate as Record<string, boolean | number> } : {}),
    };
    this.state = encodeWebSocketState(meta, appState, unparsedInput(r, this.index));
  }

  /** Back to the application on its own socket, as it was (a closed socket closes the WebSocket). */
  resumeOnSameSocket(): void {
    if (this.done) return;
    this.done = true;
    if (!this.stopped) return; // never touched
    this.unguard();
    this.socket.off('error', this.onSocketError);
    for (const event of SOCKET_EVENTS) this.socket.on(event, this.listeners[event]);
    if (this.socket.destroyed || this.socketError) {
      // It closed meanwhile: ws closes the WebSocket as it would have (its close listener was off).
      if (!this.socket.destroyed) this.socket.destroy();
      if (this.socket.closed) this.listeners.close.call(this.socket);
      return;
    }
    soccr.restartReading(this.socket, this.wasReading);
    this.w._paused = this.appPaused;
    if (!this.appPaused) this.ws.resume();
  }

  /**
   * Back to the application on a socket restored here (the original was closed at checkpoint): the
   * WebSocket takes it as the target would, its unparsed input first.
   */
  resumeOnNewSocket(socket: net.Socket, head: Buffer): void {
    if (this.done) return;
    this.done = true;
    this.unguard();
    this.socket.off('error', this.onSocketError);
    const r = this.w._receiver as ReceiverInternals;
    this.w.setSocket(socket, head, {
      allowSynchronousEvents: r._allowSynchronousEvents,
      maxBufferedChunks: r._maxBufferedChunks,
      maxFragments: r._maxFragments,
      maxPayload: r._maxPayload,
      skipUTF8Validation: r._skipUTF8Validation,
    });
    if (this.appPaused) this.ws.pause();
  }

  /** The target has it: the WebSocket here is CLOSED without a close event, out of `server.clients`. */
  letGo(server: WebSocketServer | undefined): void {
    if (this.done) return;
    this.done = true;
    this.unguard();
    this.w._readyState = CLOSED;
    server?.clients?.delete(this.ws);
  }

  private guard(methods: readonly (typeof GUARDED)[number][]): void {
    this.guarded = true;
    const index = this.index;
    for (const name of methods)
      Object.defineProperty(this.ws, name, {
        configurable: true,
        writable: true,
        value: () => {
          throw new WebSocketHandoverError(
            `WebSocket.${name}() during its handover (after serializeState)`,
            'ERR_WS_HANDOVER_IN_PROGRESS',
            index,
          );
        },
      });
  }

  private unguard(): void {
    if (!this.guarded) return;
    this.guarded = false;
    for (const name of GUARDED) delete (this.ws as unknown as Record<string, unknown>)[name];
  }
}
