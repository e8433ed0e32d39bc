/**
 * holdPackets: a peer's packets held in a netfilter queue (nftables + our NFQUEUE reader) instead
 * of dropped, and re-injected on release. On real loopback connections, in our namespace and in
 * one of its own: held packets reach the socket on release (every byte once, both ways, no
 * reset); past maxPackets or maxBytes packets are dropped (the peer retransmits); with the reader
 * gone (its process SIGKILLed) the table's packets are dropped, never answered with RST; release
 * and drop leave no table and no fd; bad arguments are typed errors that leave nothing behind.
 */
import { spawn } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';

import { holdPackets, soccr } from '../../lib';
import type { PacketHold } from '../../lib';
import { readNetCounters } from '../../lib/sys/netstat';
import { listTables } from '../../lib/sys/nft';
import { newFds, openFds } from '../criu/helpers';
import { NetnsLab } from '../helpers/netns';
import { connectFromNetns } from '../helpers/soccr';
import { TrafficEndpoint, expectExactTwoWay } from '../helpers/traffic';
import { waitUntil } from '../helpers/wait';

const lab = new NetnsLab();
let other = '';

beforeAll(() => {
  other = lab.path(lab.add('hold'));
});

afterAll(() => lab.destroy());

async function holdTables(netns?: string): Promise<string[]> {
  const tables = await listTables(netns === undefined ? {} : { netns });
  return tables.filter((t) => t.name.startsWith('node_criu_hold_')).map((t) => `${t.family} ${t.name}`);
}

/** A listening socket on `host` in `netns` (ours when undefined; another: IPv4 only) and a connection to it. */
async function pairIn(
  netns?: string,
  host = '127.0.0.1',
): Promise<{ server: net.Server; client: net.Socket; accepted: net.Socket; port: number }> {
  const server = net.createServer();
  if (netns === undefined) {
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
  } else {
    const fd = soccr.createTcpSocket(4, { netns });
    const { binding } = await import('../../lib/native');
    binding().socketOps.bind(fd, { family: 4, address: new Uint8Array([127, 0, 0, 1]), port: 0 });
    await new Promise<void>((resolve) => server.listen({ fd }, resolve));
  }
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client =
    netns === undefined
      ? await new Promise<net.Socket>((resolve, reject) => {
          const c = net.connect(port, host, () => resolve(c)).once('error', reject);
        })
      : await connectFromNetns(netns, 4, '127.0.0.1', port);
  return { server, client, accepted: await accepted, port };
}

async function closePair(pair: { server: net.Server; client: net.Socket; accepted: net.Socket }): Promise<void> {
  pair.client.destroy();
  pair.accepted.destroy();
  await new Promise((resolve) => pair.server.close(resolve));
}

/** Resolves once the namespace has retransmitted a segment (or SYN) since `before` was read. */
async function retransmitted(before: Record<string, number>, netns?: string): Promise<void> {
  const options = netns === undefined ? {} : { netns };
  await waitUntil(async () => ((await readNetCounters(options)).TcpRetransSegs ?? 0) > (before.TcpRetransSegs ?? 0), {
    what: 'a retransmission',
  });
}

describe.each([
  { where: 'our namespace, by endpoint', netns: (): string | undefined => undefined, host: '127.0.0.1' },
  { where: 'another namespace, by endpoint', netns: (): string | undefined => other, host: '127.0.0.1' },
  { where: 'our namespace, IPv6, by 4-tuple', netns: (): string | undefined => undefined, host: '::1' },
])('holdPackets in $where', ({ netns, host }) => {
  it('holds a streaming peer, delivers every held packet on release: exact both ways, no reset, nothing left', async () => {
    const fds = openFds();
    const { server, client, accepted, port } = await pairIn(netns(), host);
    const total = 64 * 1024;
    const peer = new TrafficEndpoint({ seed: 11, total: 0, chunk: 1024 }).attach(client);
    const ours = new TrafficEndpoint({ seed: 12, total: 0, chunk: 1024 }).attach(accepted);
    client.setNoDelay(true);
    let hold: PacketHold | undefined;
    try {
      peer.sendMore(1024);
      ours.sendMore(1024);
      await ours.waitForReceived(1024);
      hold = await holdPackets(
        host === '::1'
          ? { tuples: [soccr.connectionTuple(accepted)] }
          : { netns: netns(), endpoints: [{ address: host, port }] },
      );
      expect(await holdTables(netns())).toEqual([`${host === '::1' ? 'ip6' : 'ip'} ${hold.table}`]);
      const before = ours.received.bytes;
      peer.sendMore(total - 1024);
      ours.sendMore(total - 1024);
      await waitUntil(() => hold!.held() > 0, { what: 'the peer packets held' });
      // Held, not delivered: nothing of the peer's new data reached our socket.
      expect(ours.received.bytes).toBe(before);
      const result = await hold.release();
      expect(result.accepted).toBeGreaterThan(0);
      expect(result.dropped).toBe(0);
      expect(await hold.release()).toEqual(result);
      peer.sendMore(total);
      ours.sendMore(total);
      await ours.waitForReceived(2 * total);
      await peer.waitForReceived(2 * total);
      expectExactTwoWay(peer.report(), ours.report(), { aToB: 2 * total, bToA: 2 * total });
      expect(await holdTables(netns())).toEqual([]);
    } finally {
      await hold?.drop();
      await closePair({ server, client, accepted });
    }
    await waitUntil(() => newFds(fds).length === 0, { what: `no new fds (${newFds(fds).join(', ')})` });
  });
});

it('holds at most maxPackets; later packets are dropped and the peer retransmits them: exact, no reset', async () => {
  const { server, client, accepted, port } = await pairIn();
  const peer = new TrafficEndpoint({ seed: 21, total: 0, chunk: 1000 }).attach(client);
  const ours = new TrafficEndpoint({ seed: 22, total: 0 }).attach(accepted);
  client.setNoDelay(true);
  const hold = await holdPackets({ endpoints: [{ address: '127.0.0.1', port }], maxPackets: 2 });
  try {
    for (let i = 0; i < 16; i++) peer.sendMore(1000);
    await waitUntil(() => hold.held() >= 2, { what: 'two packets held' });
    const before = await readNetCounters();
    // The queue is full: what the peer sends or resends now is dropped, so it retransmits again.
    await retransmitted(before);
    expect((await hold.release()).accepted).toBe(2);
    await ours.waitForReceived(16 * 1000);
    expectExactTwoWay(peer.report(), ours.report(), { aToB: 16 * 1000, bToA: 0 });
  } finally {
    await hold.drop();
    await closePair({ server, client, accepted });
  }
});

it('drops everything past maxBytes: nothing held, the peer retransmits after the hold, exact', async () => {
  const { server, client, accepted, port } = await pairIn();
  const peer = new TrafficEndpoint({ seed: 31, total: 0, chunk: 1000 }).attach(client);
  const ours = new TrafficEndpoint({ seed: 32, total: 0 }).attach(accepted);
  const hold = await holdPackets({ endpoints: [{ address: '127.0.0.1', port }], maxBytes: 1 });
  try {
    const before = await readNetCounters();
    peer.sendMore(4000);
    await retransmitted(before);
    expect(hold.held()).toBe(0);
    expect(await hold.release()).toEqual({ accepted: 0, dropped: 0 });
    await ours.waitForReceived(4000);
    expectExactTwoWay(peer.report(), ours.report(), { aToB: 4000, bToA: 0 });
  } finally {
    await hold.drop();
    await closePair({ server, client, accepted });
  }
});

it('drop() discards what it held and removes its tables: a SYN to a closed port is never answered', async () => {
  const port = await new Promise<number>((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (probe.address() as net.AddressInfo).port;
      probe.close(() => resolve(p));
    });
  });
  const rstsBefore = (await readNetCounters()).TcpOutRsts ?? 0;
  const hold = await holdPackets({ endpoints: [{ address: '127.0.0.1', port }] });
  const client = net.connect(port, '127.0.0.1');
  let failure: string | undefined;
  client.on('error', (error: NodeJS.ErrnoException) => (failure = error.code));
  await waitUntil(() => hold.held() > 0, { what: 'the SYN held' });
  const result = await hold.drop();
  expect(result).toEqual({ accepted: 0, dropped: 1 });
  expect(await holdTables()).toEqual([]);
  client.destroy();
  expect(failure).toBeUndefined();
  expect((await readNetCounters()).TcpOutRsts ?? 0).toBe(rstsBefore);
});

it('with its reader gone (process SIGKILLed), the hold drops (no RST); the next hold sweeps its table', async () => {
  const netns = other;
  const script = `
    const { holdPackets } = require(${JSON.stringify(path.join(__dirname, '..', '..', 'dist'))});
    holdPackets({ netns: ${JSON.stringify(netns)}, endpoints: [{ address: '127.0.0.1', port: 9 }] })
      .then((h) => { process.send(h.table); setInterval(() => {}, 1000); });`;
  const child = spawn(process.execPath, ['-e', script], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const table = await new Promise<string>((resolve, reject) => {
    child.once('message', (m) => resolve(String(m)));
    child.once('exit', (code) => reject(new Error(`child exited ${code}`)));
  });
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  try {
    expect(await holdTables(netns)).toEqual([`ip ${table}`]);
    const before = await readNetCounters({ netns });
    const { binding } = await import('../../lib/native');
    const ops = binding().socketOps;
    const fd = soccr.createTcpSocket(4, { netns });
    try {
      ops.connect(fd, { family: 4, address: new Uint8Array([127, 0, 0, 1]), port: 9 });
      // Nothing listens on port 9: a SYN that got through would be refused at once. Once the SYN
      // was sent again (its timer: the first went unanswered), it is still pending, unrefused.
      await retransmitted(before, netns);
      const info = ops.socketInfo(fd);
      expect({ state: info.tcpState, error: info.pendingError }).toEqual({ state: 2, error: 0 }); // SYN_SENT
      const after = await readNetCounters({ netns });
      expect(after.TcpOutRsts ?? 0).toBe(before.TcpOutRsts ?? 0);
    } finally {
      soccr.closeFd(fd);
    }
  } finally {
    const next = await holdPackets({ netns, endpoints: [{ address: '127.0.0.1', port: 10 }] });
    expect(await holdTables(netns)).toEqual([`ip ${next.table}`]);
    await next.drop();
  }
  expect(await holdTables(netns)).toEqual([]);
});

it('rejects bad arguments with typed errors and leaves nothing behind', async () => {
  const fds = openFds();
  const cases: Array<[unknown, string]> = [
    [undefined, 'ERR_INVALID_ARG_TYPE'],
    [{}, 'ERR_INVALID_ARG_VALUE'],
    [{ endpoints: 'x' }, 'ERR_INVALID_ARG_TYPE'],
    [{ endpoints: [{ address: '127.0.0.1', port: 70000 }] }, 'ERR_OUT_OF_RANGE'],
    [{ endpoints: [{ address: 'not-an-ip', port: 80 }] }, 'ERR_INVALID_ARG_VALUE'],
    [{ endpoints: [null] }, 'ERR_INVALID_ARG_TYPE'],
    [{ endpoints: [{ address: '127.0.0.1', port: 80 }], maxPackets: 0 }, 'ERR_OUT_OF_RANGE'],
    [{ endpoints: [{ address: '127.0.0.1', port: 80 }], maxBytes: 1.5 }, 'ERR_OUT_OF_RANGE'],
    [
      {
        tuples: [
          { local: { family: 4, address: '127.0.0.1', port: 1 }, remote: { family: 6, address: '::1', port: 2 } },
        ],
      },
      'ERR_INVALID_ARG_VALUE',
    ],
    [{ netns: '/nonexistent/netns', endpoints: [{ address: '127.0.0.1', port: 80 }] }, 'ENOENT'],
  ];
  for (const [options, code] of cases) {
    await expect(holdPackets(options as never)).rejects.toMatchObject({ code });
  }
  expect(await holdTables()).toEqual([]);
  expect(newFds(fds)).toEqual([]);
});
