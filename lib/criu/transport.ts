/**
 * The message transport under the CRIU client: whole messages (one protobuf each) with the fds
 * they carry. SeqpacketTransport is the real one (AF_UNIX SOCK_SEQPACKET in the addon); tests may
 * put an in-memory transport behind the same interface for protocol edge cases.
 */
import { closeSync } from 'node:fs';

import { callNative, fromNativeError, InvalidArgumentError, type NativeErrnoError } from '../errors';
import { binding } from '../native';
import { checkFd, checkSocketPath, UNIX_SOCKET_PATH_MAX_BYTES } from '../security';
import type { NativeSeqpacketSocket } from './binding-types';
import { CriuConnectionError } from './errors';

export interface CriuMessage {
  data: Buffer;
  /** fds that arrived with the message (SCM_RIGHTS), close-on-exec; the receiver must close them. */
  fds: number[];
}

export interface CriuTransport extends AsyncIterable<CriuMessage> {
  /** Sends one message; throws CriuConnectionError if the transport is closed or broken. */
  send(data: Uint8Array, fds?: number[]): void;
  /**
   * The next message. Rejects with CriuConnectionError at EOF (code 'ERR_CRIU_DISCONNECTED') or on
   * a socket error (its errno code), and with code 'ERR_CRIU_TRANSPORT_CLOSED' after close().
   */
  receive(): Promise<CriuMessage>;
  /** Idempotent. Closes fds of messages nobody received. */
  close(): void;
  /** Resolves once the transport is closed or ended: undefined at EOF/close, the error otherwise. */
  closed(): Promise<Error | undefined>;
  readonly isClosed: boolean;
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed by someone else: nothing to release
  }
}

export class SeqpacketTransport implements CriuTransport {
  private readonly socket: NativeSeqpacketSocket;
  private readonly queue: CriuMessage[] = [];
  private readonly waiters: { resolve: (m: CriuMessage) => void; reject: (e: Error) => void }[] = [];
  private endError: CriuConnectionError | undefined;
  private closedSettled = false;
  private resolveClosed!: (value: Error | undefined) => void;
  private readonly closedPromise: Promise<Error | undefined>;

  /** Wraps a connected SOCK_SEQPACKET fd and takes ownership of it. */
  constructor(
    fd: number,
    readonly description = 'criu',
  ) {
    this.closedPromise = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    checkFd(fd, 'fd');
    const { SeqpacketSocket } = binding();
    this.socket = callNative(
      CriuConnectionError,
      `${description}: seqpacket socket`,
      () =>
        new SeqpacketSocket(
          fd,
          (data, fds) => this.onMessage(data, fds),
          (error) => this.onEnd(error),
        ),
    );
  }

  /** A socketpair: our end wrapped, the other end's fd returned for a child (the caller closes it). */
  static pair(description = 'criu swrk'): { transport: SeqpacketTransport; peerFd: number } {
    const [ours, theirs] = callNative(CriuConnectionError, 'socketpair', () => binding().seqpacketPair());
    try {
      return { transport: new SeqpacketTransport(ours, description), peerFd: theirs };
    } catch (error) {
      closeQuietly(ours);
      closeQuietly(theirs);
      throw error;
    }
  }

  /** Connects to a `criu service --address <path>` socket. */
  static connect(path: string): SeqpacketTransport {
    // The kernel's answer to a path longer than sun_path, given before any native call.
    if (typeof path === 'string' && Buffer.byteLength(path) > UNIX_SOCKET_PATH_MAX_BYTES) {
      throw new CriuConnectionError(
        `connect to criu service at ${path}: the path is longer than ${UNIX_SOCKET_PATH_MAX_BYTES} bytes`,
        { code: 'ENAMETOOLONG', syscall: 'connect' },
      );
    }
    checkSocketPath(path, 'criu service address');
    const fd = callNative(CriuConnectionError, `connect to criu service at ${path}`, () =>
      binding().seqpacketConnect(path),
    );
    try {
      return new SeqpacketTransport(fd, `criu service ${path}`);
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
  }

  get isClosed(): boolean {
    return this.socket.closed;
  }

  /** Whether the socket holds the event loop open (like net.Socket.ref/unref). */
  ref(): void {
    this.socket.ref();
  }

  unref(): void {
    this.socket.unref();
  }

  send(data: Uint8Array, fds?: number[]): void {
    if (this.socket.closed) {
      throw new CriuConnectionError(`${this.description}: transport is closed`, { code: 'ERR_CRIU_TRANSPORT_CLOSED' });
    }
    if (this.endError) throw this.endError;
    if (!(data instanceof Uint8Array))
      throw new InvalidArgumentError('data must be a Uint8Array', 'ERR_INVALID_ARG_TYPE');
    if (data.length === 0) throw new InvalidArgumentError('data must not be empty (an empty message reads as EOF)');
    if (fds !== undefined) {
      // SCM_MAX_FD: the kernel refuses more fds in one message.
      if (!Array.isArray(fds) || fds.length > 253)
        throw new InvalidArgumentError('fds must be an array of at most 253 fds', 'ERR_INVALID_ARG_TYPE');
      for (let i = 0; i < fds.length; i++) checkFd(fds[i], `fds[${i}]`); // not forEach: it skips holes
    }
    callNative(CriuConnectionError, `${this.description}: send`, () => this.socket.send(data, fds));
  }

  receive(): Promise<CriuMessage> {
    const next = this.queue.shift();
    if (next) return Promise.resolve(next);
    if (this.endError) return Promise.reject(this.endError);
    if (this.socket.closed) {
      return Promise.reject(
        new CriuConnectionError(`${this.description}: transport is closed`, { code: 'ERR_CRIU_TRANSPORT_CLOSED' }),
      );
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<CriuMessage> {
    for (;;) {
      let message: CriuMessage;
      try {
        message = await this.receive();
      } catch (error) {
        if ((error as CriuConnectionError).code === 'ERR_CRIU_DISCONNECTED') return;
        throw error;
      }
      yield message;
    }
  }

  close(): void {
    if (this.socket.closed) return;
    this.socket.close();
    for (const message of this.queue.splice(0)) message.fds.forEach(closeQuietly);
    const error = new CriuConnectionError(`${this.description}: transport is closed`, {
      code: 'ERR_CRIU_TRANSPORT_CLOSED',
    });
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    this.settleClosed(undefined);
  }

  closed(): Promise<Error | undefined> {
    return this.closedPromise;
  }

  private settleClosed(value: Error | undefined): void {
    if (this.closedSettled) return;
    this.closedSettled = true;
    this.resolveClosed(value);
  }

  private onMessage(data: Buffer, fds: number[]): void {
    const message = { data, fds };
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve(message);
    else this.queue.push(message);
  }

  private onEnd(error: NativeErrnoError | null): void {
    this.endError = error
      ? (fromNativeError(CriuConnectionError, error, `${this.description}: receive`) as CriuConnectionError)
      : new CriuConnectionError(`${this.description}: peer closed the connection`, { code: 'ERR_CRIU_DISCONNECTED' });
    for (const waiter of this.waiters.splice(0)) waiter.reject(this.endError);
    this.settleClosed(error ? this.endError : undefined);
  }
}
