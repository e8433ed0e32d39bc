/**
 * What node-criu/ws refuses, and that a refusal leaves every WebSocket working where it was:
 * permessage-deflate with context takeover, wss:// (TLS), a client-side WebSocket; and on the
 * target, a connection whose carried WebSocket state is malformed is dropped and reported
 * (ERR_WS_STATE) while the others arrive. `ws` clients stream both ways throughout (in-process,
 * on loopback).
 */
import { closeSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type * as net from 'node:net';

import { WebSocket, WebSocketServer } from 'ws';

import { SeqpacketTransport } from '../../lib';
import { handOverConnections } from '../../lib/migration/connections';
import { acceptWebSocketHandover, handOverWebSockets } from '../../lib/ws';
import { newFds, openFds } from '../criu/helpers';
import { StreamChecker, StreamSender } from '../fixtures/ws-stream';
import { makeTestPki } from '../helpers/pki';
import type { TestPki } from '../helpers/pki';
import { waitUntil } from '../helpers/wait';
import { seqpacketPair } from '../migration/connections-helpers';

const COUNT = 3;
const TOTAL = 200;
let pki: TestPki;

beforeAll(() => {
  pki = makeTestPki();
});

afterAll(() => {
  pki.remove();
});

interface Streams {
  server: WebSocketServer;
  clients: WebSocket[];
  /** Every client's and server side's checker and sender, and close/error events seen. */
  done(): boolean;
  check(): void;
  close(): Promise<void>;
}

/** A WebSocketServer with COUNT clients streaming TOTAL messages each way, one every 3 ms. */
async function streams(options: { deflate?: boolean | Record<string, unknown>; tls?: boolean } = {}): Promise<Streams> {
  const httpServer = options.tls
    ? https.createServer({ key: pki.server.key, cert: pki.server.cert })
    : http.createServer();
  const server = new WebSocketServer({ server: httpServer, perMessageDeflate: options.deflate ?? false });
  const ends: Array<{ sender: StreamSender; checker: StreamChecker; timer?: NodeJS.Timeout; events: string[] }> = [];
  const pump = (ws: WebSocket, id: number, dir: 'c2s' | 's2c', other: 'c2s' | 's2c'): void => {
    const end = { sender: new StreamSender(id, dir), checker: new StreamChecker(id, other), events: [] as string[] };
    ends.push(end);
    ws.on('message', (data, isBinary) => end.checker.receive(data, isBinary));
    ws.on('close', (code) => end.events.push(`close ${code}`));
    ws.on('error', (error) => end.events.push(`error ${error.message}`));
    (end as { timer?: NodeJS.Timeout }).timer = setInterval(() => {
      if (end.sender.state.seq >= TOTAL) return clearInterval((end as { timer?: NodeJS.Timeout }).timer);
      const m = end.sender.next();
      ws.send(m.data, { binary: m.binary });
    }, 3);
  };
  server.on('connection', (ws, req) =>
    pump(ws, Number(new URL(req.url ?? '', 'http://x').searchParams.get('id')), 's2c', 'c2s'),
  );
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const port = (httpServer.address() as net.AddressInfo).port;
  const clients = await Promise.all(
    Array.from({ length: COUNT }, async (_, id) => {
      const ws = new WebSocket(`${options.tls ? 'wss' : 'ws'}://127.0.0.1:${port}/?id=${id}`, {
        perMessageDeflate: options.deflate !== undefined && options.deflate !== false,
        ...(options.tls ? { ca: pki.ca } : {}),
      });
      await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
      pump(ws, id, 'c2s', 's2c');
      return ws;
    }),
  );
  return {
    server,
    clients,
    done: () => ends.length === 2 * COUNT && ends.every((e) => e.checker.state.seq >= TOTAL),
    check: () => {
      for (const e of ends) {
        expect(e.checker.state).toMatchObject({ seq: TOTAL, bad: [] });
        expect(e.events).toEqual([]);
      }
    },
    close: async () => {
      ends.forEach((e) => clearInterval(e.timer));
      clients.forEach((ws) => ws.terminate());
      await new Promise((resolve) => server.close(resolve));
      await new Promise((resolve) => httpServer.close(resolve));
    },
  };
}

async function refusedThenComplete(s: Streams, code: string, index = 0): Promise<void> {
  await waitUntil(() => s.server.clients.size === COUNT, { timeoutMs: 10_000, what: 'clients connected' });
  const serializeState = jest.fn(() => new Uint8Array(0));
  const fds = openFds();
  await expect(
    handOverWebSockets(s.server, { to: { path: '/nonexistent/handover.sock' }, serializeState }),
  ).rejects.toMatchObject({ name: 'WebSocketHandoverError', code, index });
  expect(newFds(fds)).toEqual([]);
  expect(serializeState).not.toHaveBeenCalled();
  // Every message of every stream, both ways, once and in order, and no close or error.
  await waitUntil(() => s.done(), { timeoutMs: 60_000, what: 'the streams to finish where they were' });
  s.check();
}

it('refuses permessage-deflate with context takeover, and the WebSockets go on where they were', async () => {
  const s = await streams({ deflate: true });
  try {
    expect(s.clients[0].extensions).toBe('permessage-deflate');
    await refusedThenComplete(s, 'ERR_WS_DEFLATE_CONTEXT_TAKEOVER');
  } finally {
    await s.close();
  }
});

it('refuses context takeover on one side only (client_no_context_takeover alone)', async () => {
  const s = await streams({ deflate: { clientNoContextTakeover: true } });
  try {
    await refusedThenComplete(s, 'ERR_WS_DEFLATE_CONTEXT_TAKEOVER');
  } finally {
    await s.close();
  }
});

it('refuses wss:// (TLS) WebSockets, pointing to the process route', async () => {
  const s = await streams({ tls: true });
  try {
    await refusedThenComplete(s, 'ERR_WS_TLS');
    await expect(handOverWebSockets(s.server, { to: { path: '/nonexistent' } })).rejects.toThrow(/migrateProcess/);
  } finally {
    await s.close();
  }
});

it('refuses a client-side WebSocket', async () => {
  const s = await streams();
  try {
    await expect(handOverWebSockets([s.clients[1]], { to: { path: '/nonexistent' } })).rejects.toMatchObject({
      code: 'ERR_WS_CLIENT_SIDE',
      index: 0,
    });
    await waitUntil(() => s.done(), { timeoutMs: 60_000, what: 'the streams to finish' });
    s.check();
  } finally {
    await s.close();
  }
});

it('drops, and reports, a connection whose carried WebSocket state is malformed', async () => {
  const s = await streams();
  const target = new WebSocketServer({ noServer: true });
  const [a, b] = seqpacketPair();
  try {
    await waitUntil(() => s.server.clients.size === COUNT, { timeoutMs: 10_000, what: 'clients connected' });
    const [first] = [...s.server.clients].map((ws) => (ws as unknown as { _socket: net.Socket })._socket);
    const accepted = acceptWebSocketHandover(target, { from: new SeqpacketTransport(b, 'handover') });
    // The raw connections route with a state that is no WebSocket state.
    const result = await handOverConnections([first], {
      to: new SeqpacketTransport(a, 'handover'),
      method: 'fd',
      serializeState: () => Buffer.from('not a websocket state'),
    });
    expect(result.handedOver).toBe(1);
    const taken = await accepted;
    expect(taken).toMatchObject({ accepted: 1, clients: [] });
    expect(taken.failures.map((f) => (f as { code?: string }).code)).toEqual(['ERR_WS_STATE']);
    expect(target.clients.size).toBe(0);
  } finally {
    closeFd(a);
    closeFd(b);
    target.close();
    await s.close();
  }
});

function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // taken by the transport
  }
}
