/** The message transport: AF_UNIX SOCK_SEQPACKET, whole messages with SCM_RIGHTS fds. */
export { SeqpacketTransport } from './seqpacket';
export { SeqpacketServer } from './seqpacket-server';
export type { PeerCredentials, SeqpacketServerOptions } from './seqpacket-server';
export type { MessageTransport, TransportMessage } from './seqpacket';
export { TransportError } from './errors';
export { checkTlsCredentials, connectTls, createTlsServer, peerName, tlsError, TLS_HANDSHAKE_TIMEOUT_MS } from './tls';
export type { TlsCredentials, TlsConnectOptions, TlsServerOptions } from './tls';
export { FrameDecoder, FramedConnection, encodeFrameHeader, FRAME_HEADER_BYTES } from './framed';
export type { Frame, FrameFormat, FramedConnectionOptions } from './framed';
