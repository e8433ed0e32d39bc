/** The raw addon surface of the message transport (csrc/seqpacket*.cc). Internal: wrapped by seqpacket.ts. */
import type { NativeErrnoError } from '../errors';

/** One connected AF_UNIX SOCK_SEQPACKET socket on the environment's libuv loop. */
export interface NativeSeqpacketSocket {
  /**
   * Sends one message (never empty), with `fds` as SCM_RIGHTS (the caller keeps its fds). true: sent
   * now; false: queued until the socket is writable. Throws a NativeErrnoError (EPIPE, EMSGSIZE...).
   */
  send(data: Uint8Array, fds?: number[]): boolean;
  /** Idempotent: stops polling, closes the fd, drops queued sends. No callback runs afterwards. */
  close(): void;
  /** Whether the open socket keeps the event loop alive (default true) and pins the object. */
  ref(): void;
  unref(): void;
  /** The socket's fd, -1 once closed. */
  readonly fd: number;
  readonly closed: boolean;
}

export interface NativeSeqpacketSocketConstructor {
  /**
   * Takes ownership of `fd` (a SOCK_SEQPACKET socket; made non-blocking) once it returns.
   * onMessage: each whole message and the fds it carried (close-on-exec, now owned by the receiver).
   * onEnd: once, with null at EOF or the error that stopped reading.
   */
  new (
    fd: number,
    onMessage: (data: Buffer, fds: number[]) => void,
    onEnd: (error: NativeErrnoError | null) => void,
  ): NativeSeqpacketSocket;
}

export interface TransportBinding {
  SeqpacketSocket: NativeSeqpacketSocketConstructor;
  /** A connected SOCK_SEQPACKET pair, both ends close-on-exec and blocking. */
  seqpacketPair(): [number, number];
  /** connect(2) to a SOCK_SEQPACKET listener at `path`; a non-blocking close-on-exec fd. */
  seqpacketConnect(path: string): number;
  /** A bound, listening, non-blocking SOCK_SEQPACKET socket at `path`, its file chmod'ed to `mode` before listen. */
  seqpacketListen(path: string, mode: number): number;
  /** SO_PEERCRED of a connected AF_UNIX socket: who made the other end (the kernel's record). */
  peerCredentials(fd: number): { pid: number; uid: number; gid: number };
}
