/**
 * Connection images written onto a full filesystem (a small tmpfs in a private mount namespace,
 * filled up): the write fails with ENOSPC, and the connections are not lost: a checkpoint that
 * closed the originals is restored from the images still in memory, one that kept them running
 * leaves them running. Both ends stream the whole time; both directions exact (counts and
 * SHA-256), no RST sent by either side, nothing in repair mode or in the lock, no fd leaked.
 */
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';

import {
  NftablesLock,
  checkpointConnection,
  checkpointConnections,
  encodeConnectionImage,
  restoreConnections,
} from '../../lib';
import type { ConnectionImage } from '../../lib';
import { PrivateMounts, RstCounter, fillFilesystem, lockElements } from '../fixtures/fault-helpers';
import { fdsInRepairMode, tcpPair } from '../helpers/soccr';
import type { TcpPair } from '../helpers/soccr';
import { TrafficEndpoint, expectExactTwoWay } from '../helpers/traffic';
import { newFds, openFds } from '../helpers/fds';

const TOTAL = 2_000_000;

let mounts: PrivateMounts;
let full: string;
let lock: NftablesLock;

beforeAll(async () => {
  mounts = await PrivateMounts.start();
  full = mounts.mountTmpfs(mounts.freshDir('images'), 256 * 1024);
  fillFilesystem(full);
  lock = await NftablesLock.create();
});

afterAll(async () => {
  await lock?.destroy();
  await NftablesLock.destroyProcessLocks();
  await mounts?.close();
});

interface Streaming {
  pair: TcpPair;
  peer: TrafficEndpoint;
  ours: TrafficEndpoint;
  rsts: RstCounter;
}

/** A loopback connection streaming TOTAL bytes each way, a quarter of them through already. */
async function streaming(seed: number): Promise<Streaming> {
  const pair = await tcpPair(4);
  const peer = new TrafficEndpoint({ seed, total: TOTAL }).attach(pair.client);
  const ours = new TrafficEndpoint({ seed: seed + 1, total: TOTAL }).attach(pair.accepted);
  await Promise.all([peer.waitForReceived(TOTAL / 4), ours.waitForReceived(TOTAL / 4)]);
  const rsts = RstCounter.create({ ours: pair.accepted.localPort as number, peer: pair.client.localPort as number });
  return { pair, peer, ours, rsts };
}

async function expectFinishedExact(s: Streaming): Promise<void> {
  await Promise.all([s.peer.waitForReceived(TOTAL), s.ours.waitForReceived(TOTAL)]);
  expectExactTwoWay(s.peer.report(), s.ours.report(), { aToB: TOTAL, bToA: TOTAL });
  expect(s.rsts.counts()).toEqual({ ours: 0, peer: 0 });
}

/** Writes each image to its own file in `dir`, as an application saving them would. */
async function writeImages(dir: string, images: ConnectionImage[]): Promise<void> {
  for (const [i, image] of images.entries())
    await fs.promises.writeFile(path.join(dir, `connection-${i}.img`), encodeConnectionImage(image), { mode: 0o600 });
}

it('the filesystem is really full: even one byte fails with ENOSPC', () => {
  expect(() => fs.writeFileSync(path.join(full, 'one-byte'), 'x')).toThrow(expect.objectContaining({ code: 'ENOSPC' }));
});

it('checkpoint (original closed, nftables lock), the image write fails with ENOSPC: restored from memory, nothing lost', async () => {
  const fds = openFds();
  const s = await streaming(0x6f1);
  const restored: net.Socket[] = [];
  try {
    const original = s.ours.detach() as net.Socket;
    const image = await checkpointConnection(original, { lock });
    expect(original.destroyed).toBe(true);
    await expect(writeImages(full, [image])).rejects.toMatchObject({ code: 'ENOSPC', syscall: 'write' });
    restored.push(...(await restoreConnections([image])));
    s.ours.attach(restored[0]);
    await expectFinishedExact(s);
    expect(
      fs
        .readdirSync(full)
        .filter((name) => name.startsWith('connection-'))
        .map((name) => fs.statSync(path.join(full, name)).size),
    ).toEqual([0]);
  } finally {
    restored.forEach((socket) => socket.destroy());
    await s.pair.close();
    s.rsts.destroy();
    fs.rmSync(path.join(full, 'connection-0.img'), { force: true });
  }
  expect(lockElements(lock)).toEqual([]);
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fds)).toEqual([]);
});

it('checkpoint with keepRunning, the image write fails with ENOSPC: the original never stopped serving', async () => {
  const fds = openFds();
  const s = await streaming(0x6f3);
  try {
    const image = await checkpointConnection(s.pair.accepted, { keepRunning: true });
    expect(s.pair.accepted.destroyed).toBe(false);
    await expect(writeImages(full, [image])).rejects.toMatchObject({ code: 'ENOSPC' });
    await expectFinishedExact(s);
  } finally {
    await s.pair.close();
    s.rsts.destroy();
    fs.rmSync(path.join(full, 'connection-0.img'), { force: true });
  }
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fds)).toEqual([]);
});

it('a batch of 4: the first image write fails with ENOSPC, all 4 restored from memory in one call, nothing lost', async () => {
  const fds = openFds();
  const batch = [await streaming(0x700), await streaming(0x710), await streaming(0x720), await streaming(0x730)];
  let restored: net.Socket[] = [];
  try {
    const originals = batch.map((s) => s.ours.detach() as net.Socket);
    const images = await checkpointConnections(originals, { lock });
    await expect(writeImages(full, images)).rejects.toMatchObject({ code: 'ENOSPC' });
    restored = await restoreConnections(images);
    batch.forEach((s, i) => s.ours.attach(restored[i]));
    for (const s of batch) await expectFinishedExact(s);
  } finally {
    restored.forEach((socket) => socket.destroy());
    for (const s of batch) {
      await s.pair.close();
      s.rsts.destroy();
    }
    fs.rmSync(path.join(full, 'connection-0.img'), { force: true });
  }
  expect(lockElements(lock)).toEqual([]);
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fds)).toEqual([]);
});
