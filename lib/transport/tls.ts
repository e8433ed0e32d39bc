/**
 * Mutual TLS 1.3 for every channel that crosses hosts (the migration agent, the connections
 * handover over TCP). Both sides present a certificate and accept only a peer whose chain ends at
 * the configured CA; nothing the peer sends is read before that (Node's TLS server destroys an
 * unauthorized socket before 'secureConnection'). A plain TCP channel between hosts is refused:
 * connection images carry sequence numbers and queued payload, and the agent runs CRIU as root.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';

import { InvalidArgumentError } from '../errors';
import { TransportError } from './errors';

/** PEM contents (not paths): the CLI reads the files, the library takes what it is given. */
export interface TlsCredentials {
  /** This side's certificate chain (PEM). */
  cert: string | Buffer;
  /** Its private key (PEM). */
  key: string | Buffer;
  /** The CA (PEM, one or more certificates) the peer's certificate must chain to. */
  ca: string | Buffer;
  /**
   * Client side: the name the server's certificate must carry (DNS name or IP SAN); default the
   * host connected to. Server side: unused.
   */
  servername?: string;
}

/** A TLS handshake may take this long before the connection is dropped (a stranger holding a socket open). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10000;

function checkPem(value: unknown, name: string): void {
  if (typeof value === 'string' ? value.length === 0 : !Buffer.isBuffer(value) || value.length === 0)
    throw new InvalidArgumentError(`${name} must be a non-empty PEM string or Buffer`, 'ERR_INVALID_ARG_TYPE');
  const pem = value as string | Buffer;
  if (pem.length > 1024 * 1024) throw new InvalidArgumentError(`${name} is larger than 1 MiB`, 'ERR_OUT_OF_RANGE');
  if (!pem.toString('latin1').includes('-----BEGIN '))
    throw new InvalidArgumentError(`${name} is not PEM (no -----BEGIN line)`, 'ERR_INVALID_ARG_VALUE');
}

/** Validates `{ cert, key, ca, servername? }`; throws InvalidArgumentError. */
export function checkTlsCredentials(value: unknown, name = 'tls'): asserts value is TlsCredentials {
  if (typeof value !== 'object' || value === null)
    throw new InvalidArgumentError(`${name} must be an object { cert, key, ca }`, 'ERR_INVALID_ARG_TYPE');
  const t = value as Record<string, unknown>;
  for (const key of Object.keys(t))
    if (!['cert', 'key', 'ca', 'servername'].includes(key))
      throw new InvalidArgumentError(`${name}: unknown option '${key}'`);
  checkPem(t.cert, `${name}.cert`);
  checkPem(t.key, `${name}.key`);
  checkPem(t.ca, `${name}.ca`);
  if (t.servername !== undefined && (typeof t.servername !== 'string' || t.servername === ''))
    throw new InvalidArgumentError(`${name}.servername must be a non-empty string`, 'ERR_INVALID_ARG_TYPE');
}

function secureContextOptions(credentials: TlsCredentials): tls.SecureContextOptions {
  return {
    cert: credentials.cert,
    key: credentials.key,
    ca: credentials.ca,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
  };
}

/** A TLS failure as a TransportError: ERR_TLS_HANDSHAKE with OpenSSL's reason (`cause.code`, e.g. CERT_HAS_EXPIRED). */
export function tlsError(message: string, cause: unknown): TransportError {
  const reason = (cause as { code?: string; message?: string } | undefined) ?? {};
  return new TransportError(`${message}: ${reason.code ?? reason.message ?? 'unknown TLS error'}`, {
    code: 'ERR_TLS_HANDSHAKE',
    cause,
  });
}

export interface TlsConnectOptions {
  host: string;
  port: number;
  tls: TlsCredentials;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/**
 * Connects and completes the handshake with the server's certificate verified (chain to `ca`,
 * name = servername or host). In TLS 1.3 the server checks our certificate after the client's
 * handshake ends, so a refusal of ours arrives as an 'error' on the first read
 * (ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED, ...UNKNOWN_CA): callers map it with tlsError.
 */
export function connectTls(options: TlsConnectOptions): Promise<tls.TLSSocket> {
  checkTlsCredentials(options.tls);
  const timeoutMs = options.timeoutMs ?? TLS_HANDSHAKE_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const signal = options.signal;
    if (signal?.aborted) {
      reject(new TransportError('TLS connect aborted', { code: 'ABORT_ERR', cause: signal.reason }));
      return;
    }
    const servername = options.tls.servername ?? options.host;
    const socket = tls.connect({
      host: options.host,
      port: options.port,
      ...secureContextOptions(options.tls),
      // An IP address is not a valid SNI name; the certificate is still checked against it.
      ...(net.isIP(servername) === 0 ? { servername } : {}),
      checkServerIdentity: (_host, cert) => tls.checkServerIdentity(servername, cert),
      rejectUnauthorized: true,
    });
    const timer = setTimeout(
      () => fail(new TransportError('TLS handshake timed out', { code: 'ETIMEDOUT' })),
      timeoutMs,
    );
    const onAbort = (): void =>
      fail(new TransportError('TLS connect aborted', { code: 'ABORT_ERR', cause: signal?.reason }));
    signal?.addEventListener('abort', onAbort, { once: true });
    const cleanup = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.removeListener('error', onError);
    };
    function fail(error: Error): void {
      cleanup();
      socket.destroy();
      reject(error);
    }
    function onError(error: NodeJS.ErrnoException): void {
      if (error.code === 'ECONNREFUSED' || error.code === 'EHOSTUNREACH' || error.code === 'ENETUNREACH')
        fail(
          new TransportError(`cannot connect to ${options.host}:${options.port}: ${error.code}`, {
            code: error.code,
            cause: error,
          }),
        );
      else fail(tlsError(`TLS handshake with ${options.host}:${options.port} failed`, error));
    }
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      cleanup();
      if (!socket.authorized) {
        socket.destroy();
        reject(tlsError('server certificate not authorized', socket.authorizationError));
        return;
      }
      resolve(socket);
    });
  });
}

export interface TlsServerOptions {
  tls: TlsCredentials;
  /** Called only for peers whose certificate chains to the CA. */
  onSecureConnection: (socket: tls.TLSSocket) => void;
  /** Handshake failures (strangers, wrong CA, expired certificates): for logs; nothing else happens. */
  onClientError?: (error: Error, remote: { address?: string; port?: number }) => void;
}

/** A TLS 1.3 server that requires a client certificate chaining to `tls.ca`. Not listening yet. */
export function createTlsServer(options: TlsServerOptions): tls.Server {
  checkTlsCredentials(options.tls);
  const server = tls.createServer(
    {
      ...secureContextOptions(options.tls),
      requestCert: true,
      rejectUnauthorized: true,
      handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS,
    },
    (socket) => {
      // rejectUnauthorized already refused the rest; this is the belt to its braces.
      if (!socket.authorized) {
        socket.destroy();
        return;
      }
      options.onSecureConnection(socket);
    },
  );
  server.on('tlsClientError', (error, socket) => {
    options.onClientError?.(error, { address: socket.remoteAddress, port: socket.remotePort });
    socket.destroy();
  });
  return server;
}

/** The subject CN of the peer's certificate (for logs and results); undefined if none. */
export function peerName(socket: tls.TLSSocket): string | undefined {
  const cert = socket.getPeerCertificate();
  const cn = cert?.subject?.CN;
  return typeof cn === 'string' ? cn : Array.isArray(cn) ? cn[0] : undefined;
}
