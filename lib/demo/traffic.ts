/**
 * The demo's traffic: every connection carries a deterministic byte pattern each way, so both
 * ends can be checked without shipping the data around. A client sends the pattern of
 * clientSeed(port) and hashes what it receives (a real SHA-256 over the bytes that arrived); the
 * server sends serverSeed(port) and checks each received byte against clientSeed(port)'s pattern,
 * keeping only plain numbers (so its per-connection state can move to another process or host).
 * The tests' traffic fixtures (test/fixtures/traffic.js, transferable-endpoint.js) use this
 * PatternStream and patternHash too, from dist/.
 */
import { createHash } from 'node:crypto';

export const clientSeed = (clientPort: number): number => 0x10000 + clientPort;
export const serverSeed = (clientPort: number): number => 0x20000 + clientPort;

/** xorshift32 bytes: the same seed gives the same stream in any chunking. */
export class PatternStream {
  state: number;
  offset = 0;

  constructor(seed: number, saved?: { state: number; offset: number }) {
    this.state = saved ? saved.state : seed >>> 0 || 0x9e3779b9;
    if (saved) this.offset = saved.offset;
  }

  next(length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    let x = this.state;
    for (let i = 0; i < length; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      out[i] = x & 0xff;
    }
    this.state = x;
    this.offset += length;
    return out;
  }

  saved(): { state: number; offset: number } {
    return { state: this.state, offset: this.offset };
  }
}

/** SHA-256 of the first `bytes` bytes of seed's pattern. */
export function patternHash(seed: number, bytes: number): string {
  const pattern = new PatternStream(seed);
  const hash = createHash('sha256');
  for (let done = 0; done < bytes;) {
    const n = Math.min(1 << 20, bytes - done);
    hash.update(pattern.next(n));
    done += n;
  }
  return hash.digest('hex');
}

export const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ETIMEDOUT']);

/** What a server keeps per connection: plain data (JSON), so it can be handed over. */
export interface ServerConnectionState {
  port: number;
  send: { state: number; offset: number };
  recv: { state: number; offset: number };
  /** First received offset that did not match the client's pattern, -1 while all matched. */
  mismatchAt: number;
  ended: boolean;
  resets: number;
  errors: string[];
}

export interface ServerConnectionReport {
  port: number;
  sentBytes: number;
  receivedBytes: number;
  mismatchAt: number;
  ended: boolean;
  resets: number;
  errors: string[];
}

export interface ClientConnectionReport {
  port: number;
  sent: { bytes: number; sha256: string };
  received: { bytes: number; sha256: string };
  /** Longest time between two arrivals of data since the last resetGaps. */
  maxGapMs: number;
  resets: number;
  errors: string[];
  ended: boolean;
}

/** The verdict on one connection, from both ends' reports. */
export interface ConnectionVerdict {
  port: number;
  exactClientToServer: boolean;
  exactServerToClient: boolean;
  clientToServerBytes: number;
  serverToClientBytes: number;
}

/**
 * Exactly once, both ways: the byte counts match and the SHA-256 of what the client received is
 * the hash of the pattern the server sent; the server checked every byte it received against the
 * client's pattern, so its side's hash is that pattern's, which must equal the client's own hash
 * of what it sent.
 */
export function verdict(client: ClientConnectionReport, server: ServerConnectionReport | undefined): ConnectionVerdict {
  if (!server) {
    return {
      port: client.port,
      exactClientToServer: false,
      exactServerToClient: false,
      clientToServerBytes: client.sent.bytes,
      serverToClientBytes: 0,
    };
  }
  const c2s =
    server.mismatchAt < 0 &&
    server.receivedBytes === client.sent.bytes &&
    patternHash(clientSeed(client.port), server.receivedBytes) === client.sent.sha256;
  const s2c =
    server.sentBytes === client.received.bytes &&
    patternHash(serverSeed(client.port), server.sentBytes) === client.received.sha256;
  return {
    port: client.port,
    exactClientToServer: c2s,
    exactServerToClient: s2c,
    clientToServerBytes: client.sent.bytes,
    serverToClientBytes: client.received.bytes,
  };
}
