/**
 * The locks, proven on a connection whose peer streams through the gap between closing the
 * original socket (in repair mode: it vanishes silently) and restoring it. Both ends live in a
 * namespace of the test's own, so its TCP counters (OutRsts) belong to this test alone.
 *   - 'nftables': the peer's packets for the 4-tuple are dropped during the gap: no RST, no loss.
 *   - negative control, 'filter': the filter dies with the original socket, the peer's next
 *     packet meets no socket and the kernel answers with a RST: the peer sees ECONNRESET.
 */
import type * as net from 'node:net';
import * as path from 'node:path';

import { NftablesLock, checkpointConnection, restoreConnection } from '../../lib';
import type { TrafficReport } from '../helpers/traffic';
import { TrafficEndpoint, expectExactTwoWay, waitFor } from '../helpers/traffic';
import { waitUntil } from '../helpers/wait';
import { NetnsLab } from '../helpers/netns';
import { Child, connectFromNetns } from '../helpers/soccr';

const lab = new NetnsLab();
let ns: string;
let peer: Child;
let port: number;

beforeAll(async () => {
  ns = lab.add('lock');
  peer = new Child(lab.spawnNode(ns, path.join(__dirname, '..', 'fixtures', 'soccr-peer.js')));
  ({ port } = await peer.request<{ port: number }>({
    cmd: 'listen',
    host: '127.0.0.1',
    seedBase: 700,
    total: 40_000_000,
    chunk: 16384,
  }));
});

afterAll(async () => {
  await peer?.stop();
  lab.destroy();
});

async function peerReport(index: number): Promise<TrafficReport> {
  const { reports } = await peer.request<{ reports: TrafficReport[] }>({ cmd: 'reports' });
  return reports[index];
}

it("'nftables' lock: the peer streams through a 1 s gap, no RST, every byte exactly once", async () => {
  const lock = await NftablesLock.create({ netns: lab.path(ns) });
  let restored: net.Socket | undefined;
  try {
    const original = await connectFromNetns(lab.path(ns), 4, '127.0.0.1', port);
    const ours = new TrafficEndpoint({ seed: 800, total: 20_000_000 }).attach(original);
    await ours.waitForReceived(2_000_000);
    const rstsBefore = lab.tcpCounters(ns).OutRsts;
    ours.detach();
    const image = await checkpointConnection(original, { lock, netns: lab.path(ns) });
    expect(image.lock).toEqual({ table: lock.table, netns: lab.path(ns) });
    // Under test: the lock holds a whole second while the peer keeps sending and retransmitting.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    restored = await restoreConnection(image, { netns: lab.path(ns) });
    ours.attach(restored);
    await ours.waitForReceived(40_000_000);
    const { reports } = await peer.request<{ reports: TrafficReport[] }>({
      cmd: 'wait',
      receivedEach: 20_000_000,
      flushed: true,
    });
    expectExactTwoWay(ours.report(), reports[0], { aToB: 20_000_000, bToA: 40_000_000 });
    expect(lab.tcpCounters(ns).OutRsts - rstsBefore).toBe(0);
  } finally {
    restored?.destroy();
    await lock.destroy();
  }
});

it("negative control, 'filter' lock only: the gap produces a RST the peer sees", async () => {
  const original = await connectFromNetns(lab.path(ns), 4, '127.0.0.1', port);
  const ours = new TrafficEndpoint({ seed: 801, total: 20_000_000 }).attach(original);
  await ours.waitForReceived(2_000_000);
  const rstsBefore = lab.tcpCounters(ns).OutRsts;
  ours.detach();
  const image = await checkpointConnection(original, { lock: 'filter' });
  expect(image.lock).toBeUndefined();
  await waitFor(
    () => lab.tcpCounters(ns).OutRsts > rstsBefore,
    20000,
    () => 'no RST yet',
  );
  let report = await peerReport(1);
  await waitUntil(async () => report.resets > 0 || (report = await peerReport(1)).resets > 0, {
    timeoutMs: 5000,
    what: 'the peer to see the reset',
  });
  expect(report.resets).toBeGreaterThan(0);
  expect(report.errors).toContain('ECONNRESET');
});
