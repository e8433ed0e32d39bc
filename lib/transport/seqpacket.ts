/**
 * Whole messages with the fds they carry, over an AF_UNIX SOCK_SEQPACKET socket (the addon's
 * SeqpacketSocket). Used by the CRIU client (swrk, `criu service`) and the handover channel;
 * MessageTransport is the interface they depend on, so tests can put an in-memory one behind it.
 */
import { closeSync } from 'node:fs';

import { callNative, fromNativeError, InvalidArgumentError, type NativeErrnoError } from '../errors';
import { binding } from '../native';
import { checkFd, checkSocketPath, UNIX_SOCKET_PATH_MAX_BYTES } from '../security';
import type { NativeSeqpacketSocket } from './binding-types';
import { TransportError } from './errors';

export interface TransportMessage {
  data: Buffer;
  /** fds that arrived with the message (SCM_RIGHTS), close-on-exec; the receiver must close them. */
  fds: number[];
}

export interface MessageTransport extends AsyncIterable<TransportMessage> {
  /** Sends one message; throws TransportError if the transport is closed or broken. */
  send(data: Uint8Array, fds?: number[]): void;
  /**
   * The next message. Rejects with TransportError at EOF (code 'ERR_TRANSPORT_DISCONNECTED') or on
   * a socket error (its errno code), and with code 'ERR_TRANSPORT_CLOSED' after close().
   */
  receive(): Promise<TransportMessage>;
  /** Idempotent. Closes fds of messages nobody received. */
  close(): void;
  /** Resolves once the transport is closed or ended: undefined at EOF/close, the error otherwise. */
  closed(): Promise<Error | undefined>;
  readonly isClosed: boolean;
}

/** SCM_MAX_FD: the kernel refuses more fds in one message. */
const MAX_FDS_PER_MESSAGE = 253;

/** Closes `fd`, ignoring an fd someone else closed already. */
export function closeFdQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed: nothing to release
  }
}

/**
 * Whoever serves the socket we connected to must be root or ourselves: what we send there (CRIU
 * requests naming pids and directories, handover state) and the fds we pass would otherwise go to
 * another user who managed to put a socket at that path. The uid is the kernel's record of the
 * listener (SO_PEERCRED), not something the server claims.
 */
function checkServer(fd: number, path: string): void {
  const { uid, pid } = callNative(TransportError, `${path}: SO_PEERCRED`, () => binding().peerCredentials(fd));
  const ours = process.geteuid?.() ?? 0;
  if (uid === 0 || uid === ours) return;
  throw new TransportError(
    `connect to ${path}: the socket is served by uid ${uid} (pid ${pid}), neither root nor uid ${ours}: refusing to talk to it`,
    { code: 'ERR_TRANSPORT_UNTRUSTED_PEER' },
  );
}

export class SeqpacketTransport implements MessageTransport {
  private readonly socket: NativeSeqpacketSocket;
  private readonly queue: TransportMessage[] = [];
  private readonly waiters: { resolve: (m: TransportMessage) => void; reject: (e: Error) => void }[] = [];
  private endError: TransportError | undefined;
  private closedSettled = false;
  private resolveClosed!: (value: Error | undefined) => void;
  private readonly closedPromise: Promise<Error | undefined>;

  /** Wraps a connected SOCK_SEQPACKET fd and takes ownership of it. */
  constructor(
    fd: number,
    readonly description = 'seqpacket',
  ) {
    this.closedPromise = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    checkFd(fd, 'fd');
    const { SeqpacketSocket } = binding();
    this.socket = callNative(
      TransportError,
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
  static pair(description = 'seqpacket pair'): { transport: SeqpacketTransport; peerFd: number } {
    const [ours, theirs] = callNative(TransportError, 'socketpair', () => binding().seqpacketPair());
    try {
      return { transport: new SeqpacketTransport(ours, description), peerFd: theirs };
    } catch (error) {
      closeFdQuietly(ours);
      closeFdQuietly(theirs);
      throw error;
    }
  }

  /**
   * Connects to a SOCK_SEQPACKET listener at `path`, served by root or by our own uid (anything
   * else: ERR_TRANSPORT_UNTRUSTED_PEER, see checkServer).
   */
  static connect(path: string, description = `seqpacket ${path}`): SeqpacketTransport {
    // The kernel's answer to a path longer than sun_path, given before any native call.
    if (typeof path === 'string' && Buffer.byteLength(path) > UNIX_SOCKET_PATH_MAX_BYTES) {
      throw new TransportError(`connect to ${path}: the path is longer than ${UNIX_SOCKET_PATH_MAX_BYTES} bytes`, {
        code: 'ENAMETOOLONG',
        syscall: 'connect',
      });
    }
    checkSocketPath(path, 'socket path');
    const fd = callNative(TransportError, `connect to ${path}`, () => binding().seqpacketConnect(path));
    try {
      checkServer(fd, path);
      return new SeqpacketTransport(fd, description);
    } catch (error) {
      closeFdQuietly(fd);
      throw error;
    }
  }

  /** SO_PEERCRED of the other end (for a socketpair: whoever made the pair). */
  peerCredentials(): { pid: number; uid: number; gid: number } {
    if (this.socket.closed) throw this.closedError();
    const fd = this.socket.fd;
    return callNative(TransportError, `${this.description}: SO_PEERCRED`, () => binding().peerCredentials(fd));
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
    if (this.socket.closed) throw this.closedError();
    if (this.endError) throw this.endError;
    if (!(data instanceof Uint8Array))
      throw new InvalidArgumentError('data must be a Uint8Array', 'ERR_INVALID_ARG_TYPE');
    if (data.length === 0) throw new InvalidArgumentError('data must not be empty (an empty message reads as EOF)');
    if (fds !== undefined) {
      if (!Array.isArray(fds) || fds.length > MAX_FDS_PER_MESSAGE)
        throw new InvalidArgumentError(
          `fds must be an array of at most ${MAX_FDS_PER_MESSAGE} fds`,
          'ERR_INVALID_ARG_TYPE',
        );
      for (let i = 0; i < fds.length; i++) checkFd(fds[i], `fds[${i}]`); // not forEach: it skips holes
    }
    callNative(TransportError, `${this.description}: send`, () => this.socket.send(data, fds));
  }

  receive(): Promise<TransportMessage> {
    const next = this.queue.shift();
    if (next) return Promise.resolve(next);
    if (this.endError) return Promise.reject(this.endError);
    if (this.socket.closed) return Promise.reject(this.closedError());
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TransportMessage> {
    for (;;) {
      let message: TransportMessage;
      try {
        message = await this.receive();
      } catch (error) {
        if ((error as TransportError).code === 'ERR_TRANSPORT_DISCONNECTED') return;
        throw error;
      }
      yield message;
    }
  }

  close(): void {
    if (this.socket.closed) return;
    this.socket.close();
    for (const message of this.queue.splice(0)) message.fds.forEach(closeFdQuietly);
    const error = this.closedError();
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    this.settleClosed(undefined);
  }

  closed(): Promise<Error | undefined> {
    return this.closedPromise;
  }

  private closedError(): TransportError {
    return new TransportError(`${this.description}: transport is closed`, { code: 'ERR_TRANSPORT_CLOSED' });
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
      ? (fromNativeError(TransportError, error, `${this.description}: receive`) as TransportError)
      : new TransportError(`${this.description}: peer closed the connection`, { code: 'ERR_TRANSPORT_DISCONNECTED' });
    for (const waiter of this.waiters.splice(0)) waiter.reject(this.endError);
    this.settleClosed(error ? this.endError : undefined);
  }
}
