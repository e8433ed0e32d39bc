/** An in-memory MessageTransport for the CRIU client's unit tests: scripted replies, no socket. */
import { decodeRequest, encodeResponse } from '../../../lib/criu/codec';
import type { CriuRequestMessage, CriuResponseMessage } from '../../../lib/criu/messages';
import { TransportError } from '../../../lib/transport/errors';
import type { MessageTransport, TransportMessage } from '../../../lib/transport/seqpacket';

/** Called with each request the client sends; answers through `fake`. */
export type Responder = (request: CriuRequestMessage, fake: FakeTransport) => void;

export class FakeTransport implements MessageTransport {
  readonly sent: { request: CriuRequestMessage; fds: number[] }[] = [];
  private readonly inbox: TransportMessage[] = [];
  private readonly waiters: { resolve: (m: TransportMessage) => void; reject: (e: Error) => void }[] = [];
  private ended: TransportError | undefined;
  private isClosedNow = false;
  private resolveClosed!: (value: Error | undefined) => void;
  private readonly closedPromise = new Promise<Error | undefined>((resolve) => (this.resolveClosed = resolve));
  /** Thrown by the next send(), once. */
  failNextSend: TransportError | undefined;

  constructor(private readonly responder: Responder) {}

  get isClosed(): boolean {
    return this.isClosedNow;
  }

  send(data: Uint8Array, fds: number[] = []): void {
    if (this.isClosedNow) throw new TransportError('fake: transport is closed', { code: 'ERR_TRANSPORT_CLOSED' });
    if (this.failNextSend) {
      const error = this.failNextSend;
      this.failNextSend = undefined;
      throw error;
    }
    const request = decodeRequest(Buffer.from(data));
    this.sent.push({ request, fds });
    queueMicrotask(() => this.responder(request, this));
  }

  /** Delivers a reply (a message to encode, or raw bytes). */
  reply(message: CriuResponseMessage | Buffer, fds: number[] = []): void {
    const data = Buffer.isBuffer(message) ? message : Buffer.from(encodeResponse(message));
    const delivered = { data, fds };
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve(delivered);
    else this.inbox.push(delivered);
  }

  /** The peer ends: EOF (no error) or a socket error. */
  end(error?: TransportError): void {
    this.ended =
      error ?? new TransportError('fake: peer closed the connection', { code: 'ERR_TRANSPORT_DISCONNECTED' });
    for (const waiter of this.waiters.splice(0)) waiter.reject(this.ended);
    this.resolveClosed(error);
  }

  receive(): Promise<TransportMessage> {
    const next = this.inbox.shift();
    if (next) return Promise.resolve(next);
    if (this.ended) return Promise.reject(this.ended);
    if (this.isClosedNow)
      return Promise.reject(new TransportError('fake: transport is closed', { code: 'ERR_TRANSPORT_CLOSED' }));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  close(): void {
    if (this.isClosedNow) return;
    this.isClosedNow = true;
    const error = new TransportError('fake: transport is closed', { code: 'ERR_TRANSPORT_CLOSED' });
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    this.resolveClosed(undefined);
  }

  closed(): Promise<Error | undefined> {
    return this.closedPromise;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TransportMessage> {
    for (;;) {
      try {
        yield await this.receive();
      } catch {
        return;
      }
    }
  }
}
