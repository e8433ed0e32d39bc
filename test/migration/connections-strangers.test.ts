/**
 * The target against everyone who is not its source, in one process (jest's private netns):
 * TLS clients without a certificate, of another CA or expired, a plain TCP client speaking the
 * frame format, authenticated peers sending garbage or an oversized HELLO. None of them makes
 * acceptHandover restore, lock (nftables) or keep anything, and none ends it: the real source
 * that comes afterwards hands its connection over. Then what an authenticated source may not do
 * (a connection outside `allow`), a SIGKILLed target's lock table swept by the next one, and a
 * fuzzer throwing mutated protocol runs at acceptHandover over an open channel.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';

import fc from 'fast-check';

import { acceptHandover, handOverConnections } from '../../lib/migration/connections';
import {
  HANDOVER_PROTOCOL_VERSION,
  MessageType,
  encodeConnection,
  encodeHeader,
} from '../../lib/migration/handover-messages';
import { Child, fdsInRepairMode, tcpPair } from '../helpers/soccr';
import { makeTestPki } from '../helpers/pki';
import type { TestPki } from '../helpers/pki';
import { waitUntil } from '../helpers/wait';
import { type FdSnapshot, newFds, openFds } from '../helpers/fds';

let pki: TestPki;
let dir: string;
beforeAll(() => {
  pki = makeTestPki();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-str-'));
});
afterAll(() => {
  pki.remove();
  fs.rmSync(dir, { recursive: true, force: true });
});

const tables = (): string => execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' }).trim();
const frame = (type: MessageType, body: Buffer | string, id = 0): Buffer => {
  const b = Buffer.from(body);
  return Buffer.concat([encodeHeader(type, id, b.length), b]);
};
const hello = (over: Record<string, unknown> = {}): Buffer =>
  frame(
    MessageType.HELLO,
    JSON.stringify({ method: 'repair', count: 1, addressMoves: false, lock: 'nftables', pid: 1, ...over }),
  );
const tuple = (localPort: number) => ({
  local: { family: 4, address: '127.0.0.1', port: localPort },
  remote: { family: 4, address: '127.0.0.1', port: 40000 },
});

async function fdsBack(fds: FdSnapshot): Promise<void> {
  await waitUntil(() => newFds(fds).length === 0 && fdsInRepairMode().length === 0, {
    what: 'the fds to be closed',
    detail: () => `new fds: ${newFds(fds).join(', ')}; repair: ${fdsInRepairMode().join(',')}`,
  });
}

/** A TLS client that does the handshake with `credentials` (or none), writes `bytes`, and waits for the end. */
function tlsStranger(port: number, credentials: Partial<tls.ConnectionOptions>, bytes: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ca: pki.ca,
      servername: 'localhost',
      minVersion: 'TLSv1.3',
      ...credentials,
    });
    socket.on('secureConnect', () => socket.write(bytes));
    socket.on('data', () => undefined);
    socket.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    socket.on('close', () => resolve('closed'));
  });
}

function plainStranger(port: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(bytes));
    socket.on('data', () => undefined);
    socket.on('error', () => resolve());
    socket.on('close', () => resolve());
  });
}

it('strangers get nothing and do not end the handover; the real source then hands its connection over', async () => {
  const fds = openFds();
  const pair = await tcpPair(4);
  const restored: net.Socket[] = [];
  const rejected: string[] = [];
  let listening!: (port: number) => void;
  const port = new Promise<number>((resolve) => (listening = resolve));
  const accepting = acceptHandover({
    from: { listen: { host: '127.0.0.1', port: 0 }, tls: pki.server },
    allow: { addresses: ['127.0.0.1'], ports: [pair.accepted.localPort as number] },
    maxConnections: 4,
    onConnection: (socket) => void restored.push(socket),
    onListening: (a) => listening((a as net.AddressInfo).port),
    onRejectedPeer: (e) => rejected.push((e as { code?: string }).code ?? e.message),
    timeoutMs: 30000,
  });
  const p = await port;
  // The attack of issue 12: HELLO and a CONNECTION for 127.0.0.1:22, over plain TCP.
  const forged = Buffer.concat([
    hello({ addressMoves: true, lock: 'filter', tuples: [tuple(22)] }),
    frame(MessageType.CONNECTION, encodeConnection(Buffer.alloc(64, 1), Buffer.from('{"user":"admin"}'))),
  ]);
  await plainStranger(p, forged);
  const { key: _k, cert: _c, ...caOnly } = pki.client;
  await tlsStranger(p, caOnly, forged); // no certificate
  await tlsStranger(p, { cert: pki.strangerClient.cert, key: pki.strangerClient.key }, forged);
  await tlsStranger(p, { cert: pki.expiredClient.cert, key: pki.expiredClient.key }, forged);
  // Authenticated, but no valid HELLO: garbage, too many connections, a tuple meant for nft.
  const good = { cert: pki.client.cert, key: pki.client.key };
  await tlsStranger(p, good, Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  await tlsStranger(p, good, hello({ count: 5 }));
  await tlsStranger(
    p,
    good,
    hello({
      addressMoves: true,
      tuples: [{ ...tuple(80), local: { family: 4, address: '1; flush ruleset', port: 80 } }],
    }),
  );
  await waitUntil(() => rejected.length >= 7, { what: 'seven peers rejected', detail: () => rejected.join(',') });
  expect(restored).toEqual([]);
  expect(tables()).toBe('');

  const result = await handOverConnections([pair.accepted], { to: { host: '127.0.0.1', port: p, tls: pki.client } });
  expect(result).toMatchObject({ handedOver: 1, resumed: 0, lost: 0 });
  expect(await accepting).toMatchObject({ accepted: 1, failed: 0 });
  expect(restored).toHaveLength(1);
  const echo = new Promise<Buffer>((resolve) => restored[0].once('data', resolve));
  pair.client.write('to the new owner');
  expect((await echo).toString()).toBe('to the new owner');
  expect(tables()).toBe('');
  restored[0].destroy();
  await pair.close();
  await fdsBack(fds);
}, 60000);

it('an authenticated source may not hand over a connection outside allow: refused or aborted, the connection stays', async () => {
  const fds = openFds();
  const pair = await tcpPair(4);
  // Without a moving address the source's lock is nftables: what comes back is a local restore.
  let current = pair.accepted;
  for (const moveAddress of [undefined, async () => undefined]) {
    const restored: net.Socket[] = [];
    let listening!: (port: number) => void;
    const port = new Promise<number>((resolve) => (listening = resolve));
    const accepting = acceptHandover({
      from: { listen: { host: '127.0.0.1', port: 0 }, tls: pki.server },
      allow: { addresses: ['10.0.0.0/8'] },
      onConnection: (socket) => void restored.push(socket),
      onListening: (a) => listening((a as net.AddressInfo).port),
    });
    accepting.catch(() => undefined);
    const to = { host: '127.0.0.1', port: await port, tls: pki.client };
    // With the address moving, HELLO carries the tuples: refused before any lock or pause.
    await expect(
      handOverConnections([current], {
        to,
        onResumed: (socket) => (current = socket),
        ...(moveAddress ? { moveAddress } : {}),
      }),
    ).rejects.toMatchObject(
      moveAddress ? { code: 'ERR_HANDOVER_REFUSED', resumed: 0 } : { code: 'ERR_HANDOVER_PEER_ABORTED', resumed: 1 },
    );
    await expect(accepting).rejects.toMatchObject({
      code: moveAddress ? 'ERR_HANDOVER_REFUSED' : 'ERR_HANDOVER_NOT_ALLOWED',
    });
    expect(restored).toEqual([]);
  }
  expect(tables()).toBe('');
  const echo = new Promise<Buffer>((resolve) => current.once('data', resolve));
  pair.client.write('still here');
  expect((await echo).toString()).toBe('still here');
  current.destroy();
  await pair.close();
  await fdsBack(fds);
});

/** A raw source on a unix path: connects and writes frames. */
function rawSource(at: string, bytes: Buffer): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(at, () => (socket.write(bytes), resolve(socket)));
    socket.on('error', reject);
    socket.on('data', () => undefined);
  });
}

it("a SIGKILLed target's gap-lock table is swept by the next target's lock", async () => {
  const at = path.join(dir, 'killed.sock');
  const target = Child.fork('migration-server.js');
  try {
    await target.request({ cmd: 'accept', listen: { path: at } });
    const moving = hello({ addressMoves: true, lock: 'filter', tuples: [tuple(8080)] });
    const socket = await rawSource(at, moving);
    await waitUntil(() => tables().includes(`node_criu_${target.process.pid}_`), { what: "the target's gap lock" });
    await target.stop();
    socket.destroy();
  } finally {
    await target.stop();
  }
  const stale = tables();
  expect(stale).toMatch(new RegExp(`^table inet node_criu_${target.process.pid}_\\d+_[0-9a-f]{16}_[0-9a-f]{8}$`));
  // The next target makes its own lock: the dead one's goes in the same nft run.
  const next = path.join(dir, 'next.sock');
  const accepting = acceptHandover({
    from: { listen: { path: next } },
    onConnection: () => undefined,
    timeoutMs: 5000,
  });
  accepting.catch(() => undefined);
  await waitUntil(() => fs.existsSync(next), { what: 'the next listener' });
  const socket = await rawSource(next, hello({ addressMoves: true, lock: 'filter', tuples: [tuple(8080)] }));
  await waitUntil(() => !tables().includes(`node_criu_${target.process.pid}_`), {
    what: 'the stale table to be swept',
  });
  socket.destroy();
  await expect(accepting).rejects.toMatchObject({ code: 'ERR_HANDOVER_CHANNEL_CLOSED' });
  expect(tables()).toBe('');
});

it('fuzz: mutated protocol runs over an open channel restore, lock and keep nothing', async () => {
  const fds = openFds();
  const body = fc.oneof(
    fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b)),
    fc.uint8Array({ maxLength: 80 }).map((b) => encodeConnection(b, Buffer.from('s'))),
    fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? 'null')),
  );
  const anyFrame = fc.record({ type: fc.integer({ min: 1, max: 12 }), id: fc.integer({ min: 0, max: 2 }), body });
  const run = fc.record({
    hello: fc.record({
      count: fc.integer({ min: 0, max: 3 }),
      addressMoves: fc.boolean(),
      tuples: fc.array(fc.constantFrom(tuple(1), tuple(2)), { maxLength: 2 }),
    }),
    frames: fc.array(anyFrame, { maxLength: 8 }),
    version: fc.constantFrom(HANDOVER_PROTOCOL_VERSION, HANDOVER_PROTOCOL_VERSION, 1),
  });
  let restored = 0;
  await fc.assert(
    fc.asyncProperty(run, async ({ hello: h, frames, version }) => {
      const [ours, theirs] = await unixPair();
      const accepting = acceptHandover({
        from: ours,
        allow: { addresses: ['127.0.0.1'], ports: [1] },
        onConnection: () => void restored++,
        timeoutMs: 2000,
      });
      const first = hello({
        count: h.count,
        addressMoves: h.addressMoves,
        lock: 'filter',
        tuples: h.tuples.slice(0, h.count),
      });
      first[4] = version;
      theirs.write(Buffer.concat([first, ...frames.map((f) => frame(f.type as MessageType, f.body, f.id))]));
      theirs.end();
      await accepting.then(
        (r) => expect(r.accepted).toBe(0),
        (e: { code?: string }) => expect(e.code).toMatch(/^ERR_HANDOVER_/),
      );
      theirs.destroy();
      expect(tables()).toBe('');
    }),
    { numRuns: 60 },
  );
  expect(restored).toBe(0);
  await fdsBack(fds);
}, 120000);

let pairs = 0;
async function unixPair(): Promise<[net.Socket, net.Socket]> {
  const at = path.join(dir, `pair-${pairs++}.sock`);
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(at, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect(at);
  client.on('error', () => undefined);
  await new Promise((resolve) => client.once('connect', resolve));
  const ours = await accepted;
  server.close();
  return [ours, client];
}
