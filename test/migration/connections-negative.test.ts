/**
 * The handover's failure edges, in one process on loopback: bad arguments, a channel that cannot
 * pass fds, a target that is not there, speaks garbage or another protocol version, or never
 * answers. Each fails with a typed code, leaves the connections untouched and working, and leaks
 * no fd. Also the SEQPACKET channel's fragmentation (a message far above the socket buffer, with
 * an fd).
 */
import * as net from 'node:net';

import { SeqpacketTransport } from '../../lib/transport/seqpacket';
import { acceptHandover, handOverConnections } from '../../lib/migration/connections';
import { encodeHeader, MessageType, SeqpacketHandoverChannel } from '../../lib/migration/handover-channel';
import { fdCount, fdsInRepairMode, tcpPair } from '../helpers/soccr';
import type { TcpPair } from '../helpers/soccr';
import { waitUntil } from '../helpers/wait';

let pair: TcpPair;

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

/** A TCP server that runs `onSocket` for its one connection. */
async function rawServer(
  onSocket: (socket: net.Socket) => void,
): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => undefined);
    onSocket(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      sockets.forEach((s) => s.destroy());
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

it('rejects bad arguments with typed errors before touching anything', async () => {
  const fds = fdCount();
  const s = pair.accepted;
  const to = { host: '127.0.0.1', port: 1 };
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
  await expect(acceptHandover({ from: { listen: { port: 0 } } } as never)).rejects.toMatchObject({
    code: 'ERR_INVALID_ARG_TYPE',
  });
  await expect(
    acceptHandover({ from: { listen: { port: 0 } }, onConnection: () => undefined, lock: 'x' as never }),
  ).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
  expect(fdCount()).toBe(fds);
  await expectStillWorking(pair);
});

it('refuses fd passing over a stream channel (ERR_HANDOVER_FDS_UNSUPPORTED), connection untouched', async () => {
  const fds = fdCount();
  const target = await rawServer(() => undefined);
  try {
    await expect(
      handOverConnections([pair.accepted], { to: { host: '127.0.0.1', port: target.port }, method: 'fd' }),
    ).rejects.toMatchObject({
      code: 'ERR_HANDOVER_FDS_UNSUPPORTED',
    });
  } finally {
    await target.close();
  }
  await waitUntil(() => fdCount() === fds, {
    what: 'the fds to be closed',
    detail: () => `${fdCount()} open, ${fds} before`,
  });
  expect(fdCount()).toBe(fds);
  await expectStillWorking(pair);
});

it('fails with ERR_HANDOVER_CONNECT when no target listens', async () => {
  const closed = await rawServer(() => undefined);
  const port = closed.port;
  await closed.close();
  const fds = fdCount();
  await expect(handOverConnections([pair.accepted], { to: { host: '127.0.0.1', port } })).rejects.toMatchObject({
    code: 'ERR_HANDOVER_CONNECT',
  });
  expect(fdCount()).toBe(fds);
  await expectStillWorking(pair);
});

it.each([
  ['garbage bytes', () => Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'), 'ERR_HANDOVER_PROTOCOL'],
  [
    'another protocol version',
    () => {
      const frame = Buffer.concat([encodeHeader(MessageType.WELCOME, 0, 2), Buffer.from('{}')]);
      frame.writeUInt8(2, 4);
      return frame;
    },
    'ERR_HANDOVER_VERSION',
  ],
])('fails on %s from the target, connection untouched', async (_name, reply, code) => {
  const fds = fdCount();
  const target = await rawServer((socket) => socket.once('data', () => socket.write(reply())));
  const serialized: net.Socket[] = [];
  try {
    await expect(
      handOverConnections([pair.accepted], {
        to: { host: '127.0.0.1', port: target.port },
        serializeState: (s) => (serialized.push(s), Buffer.alloc(0)),
      }),
    ).rejects.toMatchObject({ code, resumed: 0 });
  } finally {
    await target.close();
  }
  expect(serialized).toEqual([]);
  await waitUntil(() => fdCount() === fds, {
    what: 'the fds to be closed',
    detail: () => `${fdCount()} open, ${fds} before`,
  });
  expect(fdCount()).toBe(fds);
  await expectStillWorking(pair);
});

it('times out (ERR_HANDOVER_TIMEOUT) on a target that never answers, connection untouched', async () => {
  const fds = fdCount();
  const target = await rawServer(() => undefined);
  try {
    await expect(
      handOverConnections([pair.accepted], { to: { host: '127.0.0.1', port: target.port }, timeoutMs: 300 }),
    ).rejects.toMatchObject({ code: 'ERR_HANDOVER_TIMEOUT' });
  } finally {
    await target.close();
  }
  await waitUntil(() => fdCount() === fds, {
    what: 'the fds to be closed',
    detail: () => `${fdCount()} open, ${fds} before`,
  });
  expect(fdCount()).toBe(fds);
  expect(fdsInRepairMode()).toEqual([]);
  await expectStillWorking(pair);
});

it('the target rejects a source that sends garbage (ERR_HANDOVER_PROTOCOL) and leaks nothing', async () => {
  const fds = fdCount();
  let listening!: (port: number) => void;
  const listeningPort = new Promise<number>((resolve) => (listening = resolve));
  const accepting = acceptHandover({
    from: { listen: { host: '127.0.0.1', port: 0 } },
    onConnection: () => undefined,
    onListening: (address) => listening((address as net.AddressInfo).port),
    timeoutMs: 5000,
  });
  const port = await listeningPort;
  const source = net.connect(port, '127.0.0.1');
  source.on('error', () => undefined);
  source.write(Buffer.alloc(64, 0x41));
  await expect(accepting).rejects.toMatchObject({ code: 'ERR_HANDOVER_PROTOCOL' });
  source.destroy();
  await waitUntil(() => fdCount() === fds, {
    what: 'the fds to be closed',
    detail: () => `${fdCount()} open, ${fds} before`,
  });
  expect(fdCount()).toBe(fds);
});

it('SEQPACKET channel: a 1 MiB message with an fd arrives whole (fragments), fd included', async () => {
  const fds = fdCount();
  const { transport, peerFd } = SeqpacketTransport.pair('test');
  const a = new SeqpacketHandoverChannel(transport);
  const b = new SeqpacketHandoverChannel(new SeqpacketTransport(peerFd, 'test peer'));
  try {
    const payload = Buffer.alloc(1 << 20);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
    const fd = (pair.client as unknown as { _handle: { fd: number } })._handle.fd;
    a.send(MessageType.CONNECTION_FD, 42, payload, [fd]);
    const message = await b.receive();
    expect(message.type).toBe(MessageType.CONNECTION_FD);
    expect(message.id).toBe(42);
    expect(message.payload.equals(payload)).toBe(true);
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
  await waitUntil(() => fdCount() === fds, {
    what: 'the fds to be closed',
    detail: () => `${fdCount()} open, ${fds} before`,
  });
  expect(fdCount()).toBe(fds);
  await expectStillWorking(pair);
});

it('the target rejects HELLO tuples that are not addresses (they would reach an nft batch)', async () => {
  const fds = fdCount();
  let listening!: (port: number) => void;
  const listeningPort = new Promise<number>((resolve) => (listening = resolve));
  const accepting = acceptHandover({
    from: { listen: { host: '127.0.0.1', port: 0 } },
    onConnection: () => undefined,
    onListening: (address) => listening((address as net.AddressInfo).port),
    timeoutMs: 5000,
  });
  const port = await listeningPort;
  const source = net.connect(port, '127.0.0.1');
  source.on('error', () => undefined);
  const hello = Buffer.from(
    JSON.stringify({
      method: 'repair',
      count: 1,
      addressMoves: true,
      lock: 'filter',
      pid: 1,
      tuples: [
        {
          local: { family: 4, address: '10.0.0.1 }; flush ruleset; add element x { 1', port: 80 },
          remote: { family: 4, address: '10.0.0.2', port: 5000 },
        },
      ],
    }),
  );
  source.write(Buffer.concat([encodeHeader(MessageType.HELLO, 0, hello.length), hello]));
  await expect(accepting).rejects.toMatchObject({ code: 'ERR_HANDOVER_PROTOCOL' });
  source.destroy();
  await waitUntil(() => fdCount() === fds, {
    what: 'the fds to be closed',
    detail: () => `${fdCount()} open, ${fds} before`,
  });
  expect(fdCount()).toBe(fds);
});
