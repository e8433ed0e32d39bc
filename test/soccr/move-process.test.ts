/**
 * (b) Connections move to another Node process: this process checkpoints them (closing the
 * originals silently, nftables lock on), sends the encoded images over IPC, and the child
 * restores them (removing the lock) and continues the traffic where this process stopped.
 */
import { execFileSync } from 'node:child_process';
import * as net from 'node:net';

import { NftablesLock, checkpointConnections, encodeConnectionImage } from '../../lib';
import type { TrafficReport } from '../helpers/traffic';
import { TrafficEndpoint, expectExactTwoWay } from '../helpers/traffic';
import { TransferableEndpoint } from '../fixtures/transferable-endpoint';
import { Child, fdsInRepairMode, tcpPair } from '../helpers/soccr';
import type { PairKind, TcpPair } from '../helpers/soccr';
import { newFds, openFds } from '../helpers/fds';

afterAll(async () => {
  // These tests use checkpointConnections' default lock: the process's own table.
  await NftablesLock.destroyProcessLocks();
  expect(execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' })).not.toContain(`node_criu_${process.pid}_`);
});

it('moves IPv4, IPv6 and IPv4-mapped connections into a child process mid-stream', async () => {
  const kinds: PairKind[] = [4, 6, 'mapped'];
  const total = 3_000_000;
  const fdsBefore = openFds();
  const child = Child.fork('soccr-restorer.js');
  const pairs: TcpPair[] = [];
  try {
    for (const kind of kinds) pairs.push(await tcpPair(kind));
    const peers = pairs.map((p, i) => new TrafficEndpoint({ seed: 1000 + 2 * i, total }).attach(p.client));
    const seeds = pairs.map((_p, i) => ({ sendSeed: 1001 + 2 * i, recvSeed: 1000 + 2 * i }));
    const movers = pairs.map((p, i) => new TransferableEndpoint({ ...seeds[i], total }).attach(p.accepted));
    await Promise.all(peers.map((peer) => peer.waitForReceived(300_000)));

    const originals = movers.map((m) => m.detach() as net.Socket);
    const images = await checkpointConnections(originals);
    expect(originals.every((s) => s.destroyed)).toBe(true);
    expect(images.map((i) => i.family)).toEqual([4, 6, 6]);
    const reply = await child.request<{ restored: number }>({
      cmd: 'restore',
      images: images.map((image) => encodeConnectionImage(image).toString('base64')),
      states: movers.map((m) => m.state()),
      seeds,
    });
    expect(reply.restored).toBe(3);

    await Promise.all(peers.map((peer) => peer.waitForReceived(total)));
    const { reports } = await child.request<{ reports: TrafficReport[] }>({ cmd: 'wait', receivedEach: total });
    peers.forEach((peer, i) => expectExactTwoWay(peer.report(), reports[i], { aToB: total, bToA: total }));
  } finally {
    await child.request({ cmd: 'exit' }).catch(() => undefined);
    await child.stop();
    for (const p of pairs) await p.close();
  }
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fdsBefore)).toEqual([]);
});

it('moves 1,000 connections at once (peer ends in a child process), all exact', async () => {
  const count = 1000;
  const each = 40_000;
  const peer = Child.fork('soccr-peer.js');
  const server = net.createServer();
  const accepted = new Map<number, net.Socket>();
  server.on('connection', (s) => accepted.set(s.remotePort as number, s));
  const restored: net.Socket[] = [];
  try {
    await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, resolve));
    const port = (server.address() as net.AddressInfo).port;
    const { ports } = await peer.request<{ ports: number[] }>({
      cmd: 'connect',
      host: '127.0.0.1',
      port,
      count,
      seedBase: 5000,
      total: each,
      chunk: 4096,
    });
    while (accepted.size < count) await new Promise((resolve) => setTimeout(resolve, 10));
    const sockets = ports.map((p) => accepted.get(p) as net.Socket);
    const ours = sockets.map((s, i) => new TrafficEndpoint({ seed: 9000 + i, total: each, chunk: 4096 }).attach(s));
    await Promise.all(ours.map((e) => e.waitForReceived(each / 4)));

    sockets.forEach((_s, i) => ours[i].detach());
    const images = await checkpointConnections(sockets);
    const { restoreConnections } = await import('../../lib');
    restored.push(...(await restoreConnections(images)));
    restored.forEach((s, i) => ours[i].attach(s));

    await Promise.all(ours.map((e) => e.waitForReceived(each)));
    const { reports } = await peer.request<{ reports: TrafficReport[] }>({
      cmd: 'wait',
      receivedEach: each,
      flushed: true,
    });
    let exact = 0;
    ours.forEach((e, i) => {
      expectExactTwoWay(e.report(), reports[i], { aToB: each, bToA: each });
      exact++;
    });
    expect(exact).toBe(count);
  } finally {
    restored.forEach((s) => s.destroy());
    accepted.forEach((s) => s.destroy());
    await peer.request({ cmd: 'exit' }).catch(() => undefined);
    await peer.stop();
    await new Promise((resolve) => server.close(resolve));
  }
  expect(fdsInRepairMode()).toEqual([]);
});
