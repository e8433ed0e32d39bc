/**
 * A listening AF_UNIX SOCK_SEQPACKET socket: one host's local channel that can pass fds (the
 * agent hands restored connections to a local application through it). The addon's poller
 * accepts each connection; who connected is the kernel's record (SO_PEERCRED), and only root, our
 * own uid or a uid the caller allows gets a transport: anyone else is closed unread.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { callNative, fromNativeError, InvalidArgumentError } from '../errors';
import { binding } from '../native';
import { checkSocketPath } from '../security';
import type { NativeSeqpacketSocket } from './binding-types';
import { TransportError } from './errors';
import { closeFdQuietly, SeqpacketTransport } from './seqpacket';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

export interface SeqpacketServerOptions {
  /** Absolute filesystem path of the socket (no abstract names, ≤ 107 bytes); must not exist yet. */
  path: string;
  /** The socket file's mode (default 0o600: only our uid, and root, can connect). */
  mode?: number;
  /** uids besides root and ours whose connections are accepted. */
  allowUids?: number[];
  onConnection: (transport: SeqpacketTransport, peer: PeerCredentials) => void;
  /** A connection refused by uid (for logs). */
  onRefused?: (peer: PeerCredentials) => void;
  /** The listener failed and closed (e.g. accept4 EMFILE); the transports it made stay open. */
  onError?: (error: TransportError) => void;
}

export class SeqpacketServer {
  private readonly socket: NativeSeqpacketSocket;
  private closed = false;

  private constructor(
    readonly path: string,
    fd: number,
    private readonly options: SeqpacketServerOptions,
  ) {
    const { SeqpacketSocket } = binding();
    this.socket = callNative(
      TransportError,
      `listen on ${path}`,
      () =>
        new SeqpacketSocket(
          fd,
          (_data, fds) => fds.forEach((accepted) => this.onAccepted(accepted)),
          (error) => {
            // The listener failed (accept4: out of fds, ...): stop listening, then report it.
            const report = error !== null && !this.closed;
            this.close();
            if (report) this.options.onError?.(fromNativeError(TransportError, error, `accept on ${path}`));
          },
        ),
    );
  }

  /** Binds and listens at options.path (mode applied before anyone can connect). */
  static listen(options: SeqpacketServerOptions): SeqpacketServer {
    if (typeof options !== 'object' || options === null)
      throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
    checkSocketPath(options.path, 'path');
    if (!path.isAbsolute(options.path))
      throw new InvalidArgumentError('path must be absolute', 'ERR_INVALID_ARG_VALUE');
    if (typeof options.onConnection !== 'function')
      throw new InvalidArgumentError('onConnection must be a function', 'ERR_INVALID_ARG_TYPE');
    const mode = options.mode ?? 0o600;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o777)
      throw new InvalidArgumentError('mode must be an integer 0..0o777', 'ERR_OUT_OF_RANGE');
    for (const uid of options.allowUids ?? [])
      if (!Number.isInteger(uid) || uid < 0)
        throw new InvalidArgumentError('allowUids must be uids', 'ERR_OUT_OF_RANGE');
    const fd = callNative(TransportError, `listen on ${options.path}`, () =>
      binding().seqpacketListen(options.path, mode),
    );
    try {
      return new SeqpacketServer(options.path, fd, options);
    } catch (error) {
      closeFdQuietly(fd);
      fs.rmSync(options.path, { force: true });
      throw error;
    }
  }

  private onAccepted(fd: number): void {
    let peer: PeerCredentials;
    try {
      peer = binding().peerCredentials(fd);
    } catch {
      closeFdQuietly(fd);
      return;
    }
    const ours = process.geteuid?.() ?? 0;
    if (this.closed || !(peer.uid === 0 || peer.uid === ours || (this.options.allowUids ?? []).includes(peer.uid))) {
      closeFdQuietly(fd);
      if (!this.closed) this.options.onRefused?.(peer);
      return;
    }
    let transport: SeqpacketTransport;
    try {
      transport = new SeqpacketTransport(fd, `seqpacket ${this.path} from pid ${peer.pid}`);
    } catch {
      closeFdQuietly(fd);
      return;
    }
    this.options.onConnection(transport, peer);
  }

  /** Stops listening and removes the socket file. Idempotent; accepted transports stay open. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.close();
    fs.rmSync(this.path, { force: true });
  }
}
