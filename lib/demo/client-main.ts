/**
 * The demo's clients (run as `node dist/demo/client-main.js '<json config>'` in the client
 * namespace): N connections to the service address, each streaming its pattern at a steady pace,
 * hashing what it sends and receives (SHA-256 of the real bytes) and timing the longest pause
 * between two arrivals of data. Driven over the control socket:
 *   connect {count, host, port} -> {ports};  resetGaps;  stop (stop sending; closes the gap
 *   window);  report -> {reports};  exit
 */
import { createHash, type Hash } from 'node:crypto';
import * as net from 'node:net';

import { ControlLink } from './control';
import { DemoError } from './errors';
import { clientSeed, PatternStream, RESET_CODES } from './traffic';
import type { ClientConnectionReport } from './traffic';

interface ClientConfig {
  control: string;
  paceBytes: number;
  paceMs: number;
}

interface Client {
  socket: net.Socket;
  port: number;
  pattern: PatternStream;
  sentHash: Hash;
  receivedHash: Hash;
  receivedBytes: number;
  lastDataAt: number;
  maxGapMs: number;
  resets: number;
  errors: string[];
  ended: boolean;
}

const config = JSON.parse(process.argv[2] ?? '{}') as ClientConfig;
const clients: Client[] = [];
let sending = true;
let timingGaps = true;

function open(host: string, port: number): Promise<Client> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      const client: Client = {
        socket,
        port: socket.localPort as number,
        pattern: new PatternStream(clientSeed(socket.localPort as number)),
        sentHash: createHash('sha256'),
        receivedHash: createHash('sha256'),
        receivedBytes: 0,
        lastDataAt: performance.now(),
        maxGapMs: 0,
        resets: 0,
        errors: [],
        ended: false,
      };
      socket.on('data', (data: Buffer) => {
        const now = performance.now();
        if (timingGaps) client.maxGapMs = Math.max(client.maxGapMs, now - client.lastDataAt);
        client.lastDataAt = now;
        client.receivedBytes += data.length;
        client.receivedHash.update(data);
      });
      socket.on('error', (error: NodeJS.ErrnoException) => {
        client.errors.push(error.code ?? error.message);
        if (RESET_CODES.has(error.code ?? '')) client.resets++;
      });
      socket.on('end', () => (client.ended = true));
      resolve(client);
    });
  });
}

setInterval(() => {
  if (!sending) return;
  for (const client of clients) {
    if (client.socket.destroyed || client.ended || client.socket.writableLength > 65536) continue;
    const chunk = client.pattern.next(config.paceBytes);
    client.sentHash.update(chunk);
    client.socket.write(chunk);
  }
}, config.paceMs);

function report(client: Client): ClientConnectionReport {
  return {
    port: client.port,
    sent: { bytes: client.pattern.offset, sha256: client.sentHash.copy().digest('hex') },
    received: { bytes: client.receivedBytes, sha256: client.receivedHash.copy().digest('hex') },
    maxGapMs: client.maxGapMs,
    resets: client.resets,
    errors: client.errors,
    ended: client.ended,
  };
}

async function handle(body: Record<string, unknown>): Promise<unknown> {
  switch (body.cmd) {
    case 'connect': {
      const count = body.count as number;
      for (let start = 0; start < count; start += 64) {
        const batch = await Promise.all(
          Array.from({ length: Math.min(64, count - start) }, () => open(body.host as string, body.port as number)),
        );
        clients.push(...batch);
      }
      return { ports: clients.map((c) => c.port) };
    }
    case 'resetGaps': {
      const now = performance.now();
      const steadyMaxGapMs = Math.max(0, ...clients.map((c) => c.maxGapMs));
      timingGaps = true;
      for (const client of clients) {
        client.maxGapMs = 0;
        client.lastDataAt = now;
      }
      return { steadyMaxGapMs };
    }
    case 'stop': {
      // A connection still silent at this moment has been paused at least this long.
      const now = performance.now();
      for (const client of clients) client.maxGapMs = Math.max(client.maxGapMs, now - client.lastDataAt);
      timingGaps = false;
      sending = false;
      return {};
    }
    case 'report':
      return { reports: clients.map(report), buffered: clients.reduce((n, c) => n + c.socket.writableLength, 0) };
    case 'exit':
      setTimeout(() => process.exit(0), 50);
      return {};
    default:
      throw new DemoError(`unknown command ${String(body.cmd)}`, 'ERR_DEMO_UNKNOWN_COMMAND');
  }
}

ControlLink.connect(config.control, handle).then(
  async (link) => {
    link.socket.on('close', () => process.exit(0));
    await link.request({ cmd: 'hello', role: 'clients', pid: process.pid });
  },
  () => process.exit(1),
);
