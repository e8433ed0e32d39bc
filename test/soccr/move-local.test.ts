/**
 * (a) A connection moves from one socket to a restored socket in the same process while both
 * sides keep streaming: every byte arrives exactly once, nobody sees a reset.
 */
import type * as net from 'node:net';

import {
  NftablesLock,
  checkpointConnection,
  decodeConnectionImage,
  encodeConnectionImage,
  restoreConnection,
  soccr,
} from '../../lib';
import type { ConnectionImage } from '../../lib';
import { TrafficEndpoint, expectExactTwoWay, waitFor } from '../helpers/traffic';
import { fdsInRepairMode, kernelRecvQueue, tcpPair } from '../helpers/soccr';
import type { PairKind } from '../helpers/soccr';
import { newFds, openFds } from '../helpers/fds';

let lock: NftablesLock;

beforeAll(async () => {
  lock = await NftablesLock.create();
});

afterAll(async () => {
  await lock.destroy();
});

/** Checkpoints `endpoint`'s socket (through the encoded form), restores it, re-attaches. */
async function move(
  endpoint: TrafficEndpoint,
  options: { keepRunning?: boolean } = {},
): Promise<{ image: ConnectionImage; socket: net.Socket }> {
  const original = endpoint.detach() as net.Socket;
  const image = await checkpointConnection(original, { lock, ...options });
  if (options.keepRunning) {
    endpoint.attach(original);
    return { image, socket: original };
  }
  expect(original.destroyed).toBe(true);
  const socket = await restoreConnection(decodeConnectionImage(encodeConnectionImage(image)));
  endpoint.attach(socket);
  return { image, socket };
}

describe.each<[string, PairKind, string]>([
  ['IPv4', 4, '127.0.0.1'],
  ['IPv6', 6, '::1'],
  ['IPv4-mapped IPv6', 'mapped', '::ffff:127.0.0.1'],
])('%s', (_name, kind, localAddress) => {
  it('moves the accepted side mid-stream, both ways exact', async () => {
    const before = openFds();
    const pair = await tcpPair(kind);
    const a = new TrafficEndpoint({ seed: 11, total: 3_000_000 }).attach(pair.client);
    const b = new TrafficEndpoint({ seed: 12, total: 3_000_000 }).attach(pair.accepted);
    let restored: net.Socket | undefined;
    try {
      await Promise.all([a.waitForReceived(500_000), b.waitForReceived(500_000)]);
      const { image, socket } = await move(b);
      restored = socket;
      expect(image.family).toBe(kind === 4 ? 4 : 6);
      expect(image.local.address).toBe(localAddress);
      expect(image.skData.stateName).toBe('ESTABLISHED');
      expect(socket.remotePort).toBe(pair.client.localPort);
      await Promise.all([a.waitForReceived(3_000_000), b.waitForReceived(3_000_000)]);
      expectExactTwoWay(a.report(), b.report(), { aToB: 3_000_000, bToA: 3_000_000 });
    } finally {
      restored?.destroy();
      await pair.close();
    }
    expect(fdsInRepairMode()).toEqual([]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(newFds(before)).toEqual([]);
  });
});

describe('queues', () => {
  it('moves a quiet connection with both queues empty', async () => {
    const pair = await tcpPair(4);
    const a = new TrafficEndpoint({ seed: 21, total: 0 }).attach(pair.client);
    const b = new TrafficEndpoint({ seed: 22, total: 0 }).attach(pair.accepted);
    let restored: net.Socket | undefined;
    try {
      const { image, socket } = await move(b);
      restored = socket;
      expect(image.skData.inqLen).toBe(0);
      expect(image.skData.outqLen).toBe(0);
      expect(image.pendingRead.length).toBe(0);
      a.sendMore(100_000);
      b.sendMore(200_000);
      await Promise.all([a.waitForReceived(200_000), b.waitForReceived(100_000)]);
      expectExactTwoWay(a.report(), b.report(), { aToB: 100_000, bToA: 200_000 });
    } finally {
      restored?.destroy();
      await pair.close();
    }
  });

  it('moves several MB in the receive queue, Node read buffer and Node write buffer', async () => {
    const pair = await tcpPair(4);
    const a = new TrafficEndpoint({ seed: 31, total: 4_000_000, chunk: 65536 }).attach(pair.client);
    const b = new TrafficEndpoint({ seed: 32, total: 0, chunk: 1 << 20 }).attach(pair.accepted);
    let restored: net.Socket | undefined;
    try {
      // While b reads, the kernel grows its receive buffer; then b stops reading and a sends 6 MB
      // more, which piles up in b's receive queue and Node read buffer. a stops reading too and b
      // writes 8 MB: a's receive queue, b's send queue, then Node's write buffer fill up.
      await b.waitForReceived(4_000_000);
      const original = b.detach() as net.Socket;
      b.attach(original);
      original.pause();
      pair.client.pause();
      a.sendMore(6_000_000);
      b.sendMore(8_000_000);
      // Wait for the state this test is about (a fixed sleep is too short on a loaded machine).
      await waitFor(
        // Autotuning does not always grow the receive buffer past 1 MB on a loaded machine.
        () => kernelRecvQueue(original) > 256_000 && original.writableLength > 0,
        20_000,
        () => `recv queue ${kernelRecvQueue(original)} bytes, Node write buffer ${original.writableLength} bytes`,
      );
      const nodeWriteBuffered = original.writableLength;
      expect(nodeWriteBuffered).toBeGreaterThan(0);
      b.detach();
      const image = await checkpointConnection(original, { lock });
      // Node's write buffer went into the kernel first: it is in the image's send queue, unsent.
      expect(image.sendQueueUnsent).toBeGreaterThanOrEqual(nodeWriteBuffered);
      expect(image.skData.outqLen).toBeGreaterThan(2_000_000);
      expect(image.pendingRead.length).toBeGreaterThan(0);
      expect(image.skData.inqLen).toBeGreaterThan(256_000);
      restored = await restoreConnection(decodeConnectionImage(encodeConnectionImage(image)));
      b.attach(restored);
      pair.client.resume();
      await Promise.all([a.waitForReceived(8_000_000), b.waitForReceived(10_000_000)]);
      expectExactTwoWay(a.report(), b.report(), { aToB: 10_000_000, bToA: 8_000_000 });
    } finally {
      restored?.destroy();
      await pair.close();
    }
  });

  it('carries sent-but-unacknowledged data (peer ACKs dropped by the filter)', async () => {
    const pair = await tcpPair(4);
    const a = new TrafficEndpoint({ seed: 41, total: 0 }).attach(pair.client);
    const b = new TrafficEndpoint({ seed: 42, total: 0 }).attach(pair.accepted);
    let restored: net.Socket | undefined;
    try {
      soccr.attachDropFilter(pair.accepted); // a's ACKs no longer reach b's TCP
      b.sendMore(50_000);
      await a.waitForReceived(50_000);
      const original = b.detach() as net.Socket;
      const image = await checkpointConnection(original, { lock });
      expect(image.skData.outqLen - image.skData.unsqLen).toBeGreaterThan(0);
      restored = await restoreConnection(image);
      b.attach(restored);
      a.sendMore(100_000);
      b.sendMore(100_000);
      await Promise.all([a.waitForReceived(150_000), b.waitForReceived(100_000)]);
      expectExactTwoWay(a.report(), b.report(), { aToB: 100_000, bToA: 150_000 });
    } finally {
      restored?.destroy();
      await pair.close();
    }
  });
});

describe('cycles and modes', () => {
  it('survives 10 consecutive moves of both sides while streaming', async () => {
    const pair = await tcpPair(4);
    const total = 4_000_000;
    const a = new TrafficEndpoint({ seed: 51, total }).attach(pair.client);
    const b = new TrafficEndpoint({ seed: 52, total }).attach(pair.accepted);
    const live = new Set<net.Socket>([pair.client, pair.accepted]);
    try {
      for (let cycle = 0; cycle < 10; cycle++) {
        const endpoint = cycle % 2 === 0 ? b : a;
        // Each move happens once both directions have moved on since the last one (or finished).
        const since = { a: a.received.bytes, b: b.received.bytes };
        await waitFor(
          () =>
            (a.received.bytes > since.a || a.received.bytes >= total) &&
            (b.received.bytes > since.b || b.received.bytes >= total),
          10000,
          () => `received a ${a.received.bytes}, b ${b.received.bytes} since ${JSON.stringify(since)}`,
        );
        const old = endpoint.socket as net.Socket;
        const { socket } = await move(endpoint);
        live.delete(old);
        live.add(socket);
      }
      await Promise.all([a.waitForReceived(total), b.waitForReceived(total)]);
      expectExactTwoWay(a.report(), b.report(), { aToB: total, bToA: total });
    } finally {
      live.forEach((s) => s.destroy());
      await pair.close();
    }
  });

  it('keepRunning takes an image and leaves the original connection working', async () => {
    const pair = await tcpPair(4);
    const a = new TrafficEndpoint({ seed: 61, total: 1_000_000 }).attach(pair.client);
    const b = new TrafficEndpoint({ seed: 62, total: 1_000_000 }).attach(pair.accepted);
    try {
      await a.waitForReceived(100_000);
      const { image } = await move(b, { keepRunning: true });
      expect(image.lock).toBeUndefined();
      expect(soccr.isInRepairMode(pair.accepted)).toBe(false);
      await Promise.all([a.waitForReceived(1_000_000), b.waitForReceived(1_000_000)]);
      expectExactTwoWay(a.report(), b.report(), { aToB: 1_000_000, bToA: 1_000_000 });
    } finally {
      await pair.close();
    }
  });
});
