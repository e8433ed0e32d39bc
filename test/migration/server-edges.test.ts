/**
 * handOverServer/acceptServerHandover at their edges, both servers in this process (jest's own
 * network namespace, scripts/jest-isolated.sh), handing over by fd over a SEQPACKET pair:
 *   - a request whose first half node:http had already read when the handover began is finished
 *     by the source, and the connection's next request is served by the successor;
 *   - a client that connects while the handover runs is held (its SYN dropped, never refused)
 *     and served by the successor;
 *   - a request still in progress at drainTimeoutMs fails the handover and changes nothing;
 *   - a raw net.Server's streams move byte-exact;
 *   - bad input: typed errors, nothing left behind (fds, nftables tables, listener).
 */
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as tls from 'node:tls';

import { acceptServerHandover, handOverServer, trackServerConnections } from '../../lib/migration';
import { listTables } from '../../lib/sys/nft';
import { SeqpacketTransport } from '../../lib/transport';
import { newFds, openFds } from '../criu/helpers';
import { makeTestPki } from '../helpers/pki';
import { waitUntil } from '../helpers/wait';

function channelPair(): [SeqpacketTransport, SeqpacketTransport] {
  const { transport, peerFd } = SeqpacketTransport.pair('test');
  return [transport, new SeqpacketTransport(peerFd, 'peer')];
}

/** An http.Server answering `<name> <n> <path>`, n counting requests per connection (its handed-over state). */
function countingServer(name: string, slow = new Set<string>()): http.Server & { counts: WeakMap<net.Socket, number> } {
  const counts = new WeakMap<net.Socket, number>();
  const server = http.createServer((req, res) => {
    const n = (counts.get(req.socket) ?? 0) + 1;
    counts.set(req.socket, n);
    if (slow.has(req.url ?? '')) return; // answered by the test
    res.end(`${name} ${n} ${req.url}`);
  });
  return Object.assign(server, { counts });
}

const stateOf = (server: { counts: WeakMap<net.Socket, number> }) => (socket: net.Socket) =>
  Buffer.from(String(server.counts.get(socket) ?? 0));
const restoreInto =
  (server: { counts: WeakMap<net.Socket, number> }) =>
  (socket: net.Socket, state: Buffer): void => {
    server.counts.set(socket, Number(state.toString()));
  };

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)),
  );
}

/** A raw keep-alive HTTP client: sends what it is given, splits what comes back into responses. */
class RawClient {
  readonly socket: net.Socket;
  private buffered = '';
  readonly errors: Error[] = [];

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.setEncoding('latin1');
    this.socket.on('data', (chunk: string) => (this.buffered += chunk));
    this.socket.on('error', (error) => this.errors.push(error));
  }

  async response(): Promise<{ status: number; body: string }> {
    let head = '';
    let length = 0;
    await waitUntil(
      () => {
        const end = this.buffered.indexOf('\r\n\r\n');
        if (end < 0) return false;
        head = this.buffered.slice(0, end + 4);
        length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        return this.buffered.length >= head.length + length;
      },
      { what: 'a response', timeoutMs: 20000 },
    );
    const body = this.buffered.slice(head.length, head.length + length);
    this.buffered = this.buffered.slice(head.length + length);
    return { status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1]), body };
  }
}

const request = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: test\r\n\r\n`;

let fdsBefore: Map<number, string>;
beforeEach(() => {
  fdsBefore = openFds();
});

afterEach(async () => {
  expect(await listTables({ family: 'inet' })).toEqual([]);
});

it('a request half read when the handover starts is answered by the source; the next one by the successor', async () => {
  const source = countingServer('source');
  const target = countingServer('target');
  const port = await listen(source);
  const client = new RawClient(port);
  client.socket.write(request('/a'));
  expect(await client.response()).toEqual({ status: 200, body: 'source 1 /a' });
  // Half of the next request: node:http has parsed part of it when the handover begins.
  const second = request('/b');
  client.socket.write(second.slice(0, 20));
  const [a, b] = channelPair();
  const accepted = acceptServerHandover(target, {
    from: b,
    listen: { port, host: '127.0.0.1' },
    onConnection: restoreInto(target),
  });
  const handover = handOverServer(source, { to: a, method: 'fd', serializeState: stateOf(source) });
  // The listener closes right before the connections are brought to rest: the half request is
  // in the parser by then. Its second half arrives now.
  await waitUntil(() => !source.listening, { what: 'the source to stop listening' });
  client.socket.write(second.slice(20));
  expect(await client.response()).toEqual({ status: 200, body: 'source 2 /b' });
  expect((await handover).handedOver).toBe(1);
  expect((await accepted).entered).toBe(1);
  client.socket.write(request('/c'));
  expect(await client.response()).toEqual({ status: 200, body: 'target 3 /c' });
  expect(client.errors).toEqual([]);
  client.socket.destroy();
  await new Promise((resolve) => target.close(resolve));
  expect(newFds(fdsBefore)).toEqual([]);
});

it('a client connecting during the handover is held (its SYN dropped, not refused) and served by the successor', async () => {
  const source = countingServer('source');
  const target = countingServer('target');
  const port = await listen(source);
  const [a, b] = channelPair();
  const accepted = acceptServerHandover(target, { from: b, listen: { port, host: '127.0.0.1' } });
  let late: RawClient | undefined;
  let connectedAt = '';
  const handover = handOverServer(source, {
    to: a,
    method: 'fd',
    // Once the listener is closed and the connections are at rest: a new client arrives.
    onProgress: async ({ phase }) => {
      if (phase !== 'quiet') return;
      late = new RawClient(port);
      late.socket.once('connect', () => (connectedAt = target.listening ? 'target listening' : 'nobody listening'));
      late.socket.write(request('/late'));
      await new Promise((resolve) => setTimeout(resolve, 50));
    },
  });
  expect((await handover).handedOver).toBe(0);
  await accepted;
  const client = late as unknown as RawClient;
  expect(await client.response()).toEqual({ status: 200, body: 'target 1 /late' });
  expect(connectedAt).toBe('target listening');
  expect(client.errors).toEqual([]);
  client.socket.destroy();
  await new Promise((resolve) => target.close(resolve));
  expect(newFds(fdsBefore)).toEqual([]);
}, 30000);

it('a request still in progress at drainTimeoutMs fails the handover (ERR_HANDOVER_SERVER_BUSY) and changes nothing', async () => {
  const stuck: http.ServerResponse[] = [];
  const source = countingServer('source', new Set(['/stuck']));
  source.on('request', (req, res) => req.url === '/stuck' && stuck.push(res));
  const target = countingServer('target');
  const port = await listen(source);
  const busy = new RawClient(port);
  const idle = new RawClient(port);
  busy.socket.write(request('/stuck'));
  idle.socket.write(request('/a'));
  expect(await idle.response()).toEqual({ status: 200, body: 'source 1 /a' });
  await waitUntil(() => stuck.length === 1, { what: 'the stuck request' });
  const [a, b] = channelPair();
  const accepted = acceptServerHandover(target, { from: b, listen: port });
  accepted.catch(() => undefined);
  await expect(handOverServer(source, { to: a, method: 'fd', drainTimeoutMs: 200 })).rejects.toMatchObject({
    code: 'ERR_HANDOVER_SERVER_BUSY',
  });
  // The channel given as `to` is closed: the successor learns at once that nothing comes.
  await expect(accepted).rejects.toMatchObject({ code: 'ERR_HANDOVER_CHANNEL_CLOSED' });
  // Everything as before: the source listens, reads and answers both connections and new ones.
  expect(source.listening).toBe(true);
  expect(target.listening).toBe(false);
  stuck[0].end('late');
  expect(await busy.response()).toEqual({ status: 200, body: 'late' });
  idle.socket.write(request('/b'));
  expect(await idle.response()).toEqual({ status: 200, body: 'source 2 /b' });
  const fresh = new RawClient(port);
  fresh.socket.write(request('/c'));
  expect(await fresh.response()).toEqual({ status: 200, body: 'source 1 /c' });
  for (const c of [busy, idle, fresh]) {
    expect(c.errors).toEqual([]);
    c.socket.destroy();
  }
  await new Promise((resolve) => source.close(resolve));
  expect(newFds(fdsBefore)).toEqual([]);
}, 30000);

it('a raw net.Server: every stream moves byte-exact both ways, the successor continues each', async () => {
  const COUNT = 4;
  const CHUNK = 4096;
  const ROUNDS = 64;
  // Echo servers: each connection's state is the bytes it echoed so far.
  const echoed = new WeakMap<net.Socket, number>();
  const echo = (socket: net.Socket): void => {
    socket.on('data', (data: Buffer) => {
      echoed.set(socket, (echoed.get(socket) ?? 0) + data.length);
      socket.write(data);
    });
  };
  const source = net.createServer(echo);
  trackServerConnections(source);
  const target = net.createServer(echo);
  const port = await listen(source);
  const streams = await Promise.all(
    Array.from({ length: COUNT }, async (_, i) => {
      const socket = net.connect(port, '127.0.0.1');
      await new Promise((resolve) => socket.once('connect', resolve));
      const sent = createHash('sha256');
      const received = createHash('sha256');
      let receivedBytes = 0;
      socket.on('data', (data: Buffer) => {
        received.update(data);
        receivedBytes += data.length;
      });
      return { socket, sent, received, i, receivedBytes: () => receivedBytes, errors: [] as Error[] };
    }),
  );
  streams.forEach((s) => s.socket.on('error', (e) => s.errors.push(e)));
  const pump = async (from: number, to: number): Promise<void> => {
    for (let round = from; round < to; round++) {
      for (const s of streams) {
        const data = Buffer.alloc(CHUNK, (s.i * 31 + round) & 0xff);
        s.sent.update(data);
        s.socket.write(data);
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  };
  await pump(0, ROUNDS / 2);
  const [a, b] = channelPair();
  const accepted = acceptServerHandover(target, {
    from: b,
    listen: { port, host: '127.0.0.1' },
    onConnection: (socket, state) => void echoed.set(socket, Number(state.toString())),
  });
  const handover = handOverServer(source, {
    to: a,
    method: 'fd',
    serializeState: (socket) => {
      socket.removeAllListeners('data'); // the application lets go of it
      return Buffer.from(String(echoed.get(socket) ?? 0));
    },
  });
  const [result] = await Promise.all([handover, pump(ROUNDS / 2, ROUNDS)]);
  expect(result.handedOver).toBe(COUNT);
  expect((await accepted).entered).toBe(COUNT);
  const total = ROUNDS * CHUNK;
  await waitUntil(() => streams.every((s) => s.receivedBytes() === total), { what: 'every echo' });
  for (const s of streams) {
    expect(s.received.digest('hex')).toBe(s.sent.digest('hex'));
    expect(s.errors).toEqual([]);
    s.socket.destroy();
  }
  await new Promise((resolve) => target.close(resolve));
  expect(newFds(fdsBefore)).toEqual([]);
}, 30000);

describe('bad input: typed errors, nothing touched', () => {
  const pki = makeTestPki();
  afterAll(() => pki.remove());
  const [a, b] = channelPair();
  afterAll(() => {
    a.close();
    b.close();
  });

  it('TLS servers are refused, pointing to the process route', async () => {
    const secure = https.createServer({ key: pki.server.key, cert: pki.server.cert });
    await listen(secure);
    await expect(handOverServer(secure, { to: a })).rejects.toMatchObject({
      code: 'ERR_HANDOVER_TLS_SERVER',
      message: expect.stringMatching(/migrateProcess/),
    });
    await expect(acceptServerHandover(tls.createServer({}), { from: b, listen: 1 })).rejects.toMatchObject({
      code: 'ERR_HANDOVER_TLS_SERVER',
    });
    expect(secure.listening).toBe(true);
    await new Promise((resolve) => secure.close(resolve));
  });

  it('the source must listen, know its connections and get valid options', async () => {
    await expect(handOverServer(http.createServer(), { to: a })).rejects.toMatchObject({
      code: 'ERR_HANDOVER_SERVER_NOT_LISTENING',
    });
    const raw = net.createServer();
    const port = await listen(raw);
    const client = net.connect(port, '127.0.0.1');
    await waitUntil(async () => (await new Promise<number>((r) => raw.getConnections((_, n) => r(n)))) === 1, {
      what: 'the connection',
    });
    await expect(handOverServer(raw, { to: a })).rejects.toMatchObject({ code: 'ERR_HANDOVER_SERVER_UNTRACKED' });
    await expect(handOverServer({} as net.Server, { to: a })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(handOverServer(raw, {} as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    for (const bad of [{ method: 'x' }, { busy: 'x' }, { holdSyns: 'x' }, { upgraded: 'x' }, { drainTimeoutMs: -1 }])
      await expect(handOverServer(raw, { to: a, ...(bad as object) })).rejects.toMatchObject({
        code: expect.stringMatching(/^ERR_(INVALID_ARG_VALUE|OUT_OF_RANGE)$/),
      });
    await expect(handOverServer(raw, { to: { host: '127.0.0.1', port: 1 } as never })).rejects.toMatchObject({
      code: 'ERR_HANDOVER_TLS_REQUIRED',
    });
    expect(raw.listening).toBe(true);
    client.destroy();
    await new Promise((resolve) => raw.close(resolve));
  });

  it('the successor must not listen yet and needs a TCP port to listen on', async () => {
    const listening = http.createServer();
    await listen(listening);
    await expect(acceptServerHandover(listening, { from: b, listen: 1 })).rejects.toMatchObject({
      code: 'ERR_HANDOVER_SERVER_LISTENING',
    });
    await new Promise((resolve) => listening.close(resolve));
    const server = http.createServer();
    for (const listen of [0, 70000, '8080', { port: 80, host: 'localhost' }, { port: 80, path: '/x' }])
      await expect(acceptServerHandover(server, { from: b, listen: listen as never })).rejects.toMatchObject({
        code: expect.stringMatching(/^ERR_(INVALID_ARG_TYPE|INVALID_ARG_VALUE|OUT_OF_RANGE)$/),
      });
    await expect(acceptServerHandover(server, { listen: 1 } as never)).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_TYPE',
    });
    expect(server.listening).toBe(false);
  });
});
