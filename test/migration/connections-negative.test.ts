/**
 * The handover's failure edges on the source side, in one process: bad arguments, a TCP channel
 * without TLS, a channel that cannot pass fds, a target that is not there, speaks garbage or
 * another protocol version, presents a certificate of another CA, or never answers. Each fails
 * with a typed code, leaves the connection untouched and working, and leaks no fd. Also the
 * SEQPACKET channel's fragmentation (a message far above the socket buffer, with an fd).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { SeqpacketTransport } from '../../lib/transport/seqpacket';
import { createTlsServer } from '../../lib/transport/tls';
import { acceptHandover, handOverConnections } from '../../lib/migration/connections';
import { SeqpacketHandoverChannel } from '../../lib/migration/handover-channel';
import { MessageType, encodeConnection, encodeHeader } from '../../lib/migration/handover-messages';
import { makeTestPki } from '../helpers/pki';
import type { TestPki } from '../helpers/pki';
import { fdsInRepairMode, tcpPair } from '../helpers/soccr';
import type { TcpPair } from '../helpers/soccr';
import { waitUntil } from '../helpers/wait';
import { type FdSnapshot, newFds, openFds } from '../helpers/fds';

let pair: TcpPair;
let pki: TestPki;
let dir: string;

beforeAll(() => {
  pki = makeTestPki();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-neg-'));
});

afterAll(() => {
  pki.remove();
  fs.rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  pair = await tcpPair(4);
});

afterEach(async () => {
  await pair.close();
});

/** The pair still carries bytes both ways after a failed handover. */
async function expectStillWorking(p: TcpPair): Promise<void> {
  const echo = new Promise<Buffer>((resolve) => p.accepted.once('data', resolve));
  p.client.write('ping');
  expect((await echo).toString()).toBe('ping');
  const back = new Promise<Buffer>((resolve) => p.client.once('data', resolve));
  p.accepted.write('pong');
  expect((await back).toString()).toBe('pong');
}

async function expectFdsBack(fds: FdSnapshot): Promise<void> {
  await waitUntil(() => newFds(fds).length === 0, {
    what: 'the fds to be closed',
    detail: () => `new fds: ${newFds(fds).join(', ')}`,
  });
}

let serial = 0;
/** A unix stream server at a fresh path that runs `onSocket` for each connection. */
async function rawServer(
  onSocket: (socket: net.Socket) => void,
): Promise<{ path: string; close: () => Promise<void> }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    onSocket(socket);
  });
  const at = path.join(dir, `raw-${serial++}.sock`);
  await new Promise<void>((resolve) => server.listen(at, resolve));
  return {
    path: at,
    close: async () => {
      sockets.forEach((s) => s.destroy());
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

it('rejects bad arguments with typed errors before touching anything', async () => {
  const fds = openFds();
  const s = pair.accepted;
  const to = { path: path.join(dir, 'nothing.sock') };
  await expect(handOverConnections('x' as never, { to })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  await expect(handOverConnections([s, s], { to })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
  await expect(handOverConnections([s], {} as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  await expect(handOverConnections([s], { to, method: 'teleport' as never })).rejects.toMatchObject({
    code: 'ERR_INVALID_ARG_VALUE',
  });
  await expect(handOverConnections([s], { to, lock: 'iptables' as never })).rejects.toMatchObject({
    code: 'ERR_INVALID_ARG_VALUE',
  });
  await expect(handOverConnections([s], { to, netns: 'run/netns/x' })).rejects.toMatchObject({
    code: 'ERR_INVALID_ARG_VALUE',
  });
  await expect(handOverConnections([s], { to, timeoutMs: 0 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
  await expect(handOverConnections([s], { to, serializeState: 'no' as never })).rejects.toMatchObject({
    code: 'ERR_INVALID_ARG_TYPE',
  });
  await expect(
    handOverConnections([s], { to: { host: '127.0.0.1', port: 1, tls: { cert: 'x', key: 'y', ca: 'z' } } }),
  ).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
  await expect(acceptHandover({ from: { listen: { port: 0 } } } as never)).rejects.toMatchObject({
    code: 'ERR_INVALID_ARG_TYPE',
  });
  const onConnection = (): void => undefined;
  await expect(
    acceptHandover({ from: { listen: { path: to.path } }, onConnection, lock: 'x' as never }),
  ).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
  // Between hosts the target must say what it restores.
  await expect(acceptHandover({ from: { listen: { port: 0 }, tls: pki.server }, onConnection })).rejects.toMatchObject({
    code: 'ERR_INVALID_ARG_TYPE',
    message: expect.stringMatching(/allow/),
  });
  await expect(
    acceptHandover({ from: { listen: { port: 0 }, tls: pki.server }, onConnection, allow: { addresses: ['x'] } }),
  ).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
  await expect(
    acceptHandover({ from: { listen: { path: to.path } }, onConnection, maxConnections: -1 }),
  ).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
  expect(newFds(fds)).toEqual([]);
  await expectStillWorking(pair);
});

it('refuses a TCP channel without TLS on both sides (ERR_HANDOVER_TLS_REQUIRED) before connecting or listening', async () => {
  const fds = openFds();
  let connected = false;
  const server = net.createServer(() => (connected = true));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  try {
    await expect(
      handOverConnections([pair.accepted], { to: { host: '127.0.0.1', port } as never }),
    ).rejects.toMatchObject({ code: 'ERR_HANDOVER_TLS_REQUIRED' });
    // A connected plain TCP socket given as the channel is refused too.
    const plain = net.connect(port, '127.0.0.1');
    await new Promise((resolve) => plain.once('connect', resolve));
    await expect(handOverConnections([pair.accepted], { to: plain })).rejects.toMatchObject({
      code: 'ERR_HANDOVER_TLS_REQUIRED',
    });
    plain.destroy();
    let listened = false;
    await expect(
      acceptHandover({
        from: { listen: { host: '127.0.0.1', port: 0 } },
        onConnection: () => undefined,
        onListening: () => (listened = true),
      }),
    ).rejects.toMatchObject({ code: 'ERR_HANDOVER_TLS_REQUIRED' });
    expect(listened).toBe(false);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
  expect(connected).toBe(true); // only the socket we connected ourselves
  await expectFdsBack(fds);
  await expectStillWorking(pair);
});

it('refuses a target whose certificate chains to another CA (ERR_HANDOVER_TLS), connection untouched', async () => {
  const fds = openFds();
  const server = createTlsServer({ tls: pki.strangerServer, onSecureConnection: (s) => s.destroy() });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const serialized: net.Socket[] = [];
  try {
    await expect(
      handOverConnections([pair.accepted], {
        to: { host: '127.0.0.1', port, tls: pki.client },
        serializeState: (s) => (serialized.push(s), Buffer.alloc(0)),
      }),
    ).rejects.toMatchObject({ code: 'ERR_HANDOVER_TLS' });
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
  expect(serialized).toEqual([]);
  await expectFdsBack(fds);
  await expectStillWorking(pair);
});

it('refuses fd passing over a stream channel (ERR_HANDOVER_FDS_UNSUPPORTED), connection untouched', async () => {
  const fds = openFds();
  const target = await rawServer(() => undefined);
  try {
    await expect(
      handOverConnections([pair.accepted], { to: { path: target.path }, method: 'fd' }),
    ).rejects.toMatchObject({ code: 'ERR_HANDOVER_FDS_UNSUPPORTED' });
  } finally {
    await target.close();
  }
  await expectFdsBack(fds);
  await expectStillWorking(pair);
});

it('fails with ERR_HANDOVER_CONNECT when no target listens (unix path, TLS port)', async () => {
  const closed = net.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  const fds = openFds();
  await expect(
    handOverConnections([pair.accepted], { to: { path: path.join(dir, 'absent.sock') } }),
  ).rejects.toMatchObject({ code: 'ERR_HANDOVER_CONNECT' });
  await expect(
    handOverConnections([pair.accepted], { to: { host: '127.0.0.1', port, tls: pki.client } }),
  ).rejects.toMatchObject({ code: 'ERR_HANDOVER_CONNECT' });
  await expectFdsBack(fds);
  await expectStillWorking(pair);
});

it.each([
  ['garbage bytes', () => Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'), 'ERR_HANDOVER_PROTOCOL'],
  [
    'protocol version 1',
    () => {
      const frame = Buffer.concat([encodeHeader(MessageType.WELCOME, 0, 2), Buffer.from('{}')]);
      frame.writeUInt8(1, 4);
      return frame;
    },
    'ERR_HANDOVER_VERSION',
  ],
  [
    'a WELCOME whose body is not the schema',
    () => Buffer.concat([encodeHeader(MessageType.WELCOME, 0, 13), Buffer.from('{"pid":"one"}')]),
    'ERR_HANDOVER_PROTOCOL',
  ],
])('fails on %s from the target, connection untouched', async (_name, reply, code) => {
  const fds = openFds();
  const target = await rawServer((socket) => socket.once('data', () => socket.write(reply())));
  const serialized: net.Socket[] = [];
  try {
    await expect(
      handOverConnections([pair.accepted], {
        to: { path: target.path },
        serializeState: (s) => (serialized.push(s), Buffer.alloc(0)),
      }),
    ).rejects.toMatchObject({ code, resumed: 0 });
  } finally {
    await target.close();
  }
  expect(serialized).toEqual([]);
  await expectFdsBack(fds);
  await expectStillWorking(pair);
});

it('times out (ERR_HANDOVER_TIMEOUT) on a target that never answers, connection untouched', async () => {
  const fds = openFds();
  const target = await rawServer(() => undefined);
  try {
    await expect(
      handOverConnections([pair.accepted], { to: { path: target.path }, timeoutMs: 300 }),
    ).rejects.toMatchObject({ code: 'ERR_HANDOVER_TIMEOUT' });
  } finally {
    await target.close();
  }
  await expectFdsBack(fds);
  expect(fdsInRepairMode()).toEqual([]);
  await expectStillWorking(pair);
});

it('SEQPACKET channel: a 1 MiB message with an fd arrives whole (fragments), fd included', async () => {
  const fds = openFds();
  const { transport, peerFd } = SeqpacketTransport.pair('test');
  const a = new SeqpacketHandoverChannel(transport);
  const b = new SeqpacketHandoverChannel(new SeqpacketTransport(peerFd, 'test peer'));
  try {
    const pending = Buffer.alloc(1 << 20);
    for (let i = 0; i < pending.length; i++) pending[i] = (i * 7) & 0xff;
    const body = encodeConnection(pending, Buffer.from('state'));
    const fd = (pair.client as unknown as { _handle: { fd: number } })._handle.fd;
    await a.send(MessageType.CONNECTION_FD, 42, body, { fds: [fd] });
    const message = await b.expect([MessageType.CONNECTION_FD]);
    expect(message.id).toBe(42);
    expect(message.payload.equals(body)).toBe(true);
    expect(message.fds).toHaveLength(1);
    // The received fd is the same connection: bytes written through it reach the other end.
    const copy = new net.Socket({ fd: message.fds[0], readable: false, writable: true });
    const arrived = new Promise<Buffer>((resolve) => pair.accepted.once('data', resolve));
    copy.write('via passed fd');
    expect((await arrived).toString()).toBe('via passed fd');
    copy.destroy();
  } finally {
    a.close();
    b.close();
  }
  await expectFdsBack(fds);
  await expectStillWorking(pair);
});
