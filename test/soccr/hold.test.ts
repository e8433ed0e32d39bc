/**
 * holdConnections (originals kept paused and filtered until resume or release) and
 * stageRestoreConnections (restored copies kept in repair mode until commit or abort): the two
 * public halves of a handover, on loopback with traffic both ways.
 */
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  NftablesLock,
  checkpointConnection,
  holdConnections,
  restoreConnection,
  soccr,
  stageRestoreConnections,
} from '../../lib';
import { TrafficEndpoint, expectExactTwoWay } from '../helpers/traffic';
import { fdsInRepairMode, kernelRecvQueue, tcpPair } from '../helpers/soccr';
import { type FdSnapshot, newFds, openFds } from '../helpers/fds';

let lock: NftablesLock;

beforeAll(async () => {
  lock = await NftablesLock.create();
});

afterAll(async () => {
  await lock.destroy();
});

async function expectNoLeaks(fdsBefore: FdSnapshot): Promise<void> {
  expect(fdsInRepairMode()).toEqual([]);
  await new Promise((resolve) => setImmediate(resolve));
  expect(newFds(fdsBefore)).toEqual([]);
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return (error as { code?: string }).code;
  }
  return undefined;
}

describe('holdConnections', () => {
  it('keeps the original paused and filtered; resume() gives it back live, both ways exact', async () => {
    const before = openFds();
    const pair = await tcpPair(4);
    const a = new TrafficEndpoint({ seed: 71, total: 2_000_000 }).attach(pair.client);
    const b = new TrafficEndpoint({ seed: 72, total: 2_000_000 }).attach(pair.accepted);
    try {
      await Promise.all([a.waitForReceived(300_000), b.waitForReceived(300_000)]);
      const original = b.detach() as net.Socket;
      const hold = await holdConnections([original]);
      const [held] = hold.connections;
      expect(held.socket).toBe(original);
      expect(held.state).toBe('held');
      expect(hold.images).toEqual([held.image]);
      expect(held.image.lock).toBeUndefined();
      expect(held.image.local).toEqual(soccr.connectionTuple(pair.client).remote);
      expect(held.image.remote).toEqual(soccr.connectionTuple(pair.client).local);
      expect(original.destroyed).toBe(false);
      expect(soccr.isInRepairMode(original)).toBe(true);

      // Filtered: what the client sends now reaches the kernel's send queue on its side but is
      // never queued (nor acknowledged) on the held side.
      const queued = kernelRecvQueue(original);
      expect(queued).toBe(held.image.recvQueue.length);
      a.sendMore(200_000);
      await a.waitForSent();
      expect(kernelRecvQueue(original)).toBe(queued);

      hold.resume();
      expect(held.state).toBe('resumed');
      expect(soccr.isInRepairMode(original)).toBe(false);
      hold.resume(); // idempotent
      held.resume();
      expect(codeOf(() => held.release())).toBe('ERR_CONNECTION_SETTLED');
      b.attach(original);
      await Promise.all([a.waitForReceived(2_000_000), b.waitForReceived(2_200_000)]);
      expectExactTwoWay(a.report(), b.report(), { aToB: 2_200_000, bToA: 2_000_000 });
    } finally {
      await pair.close();
    }
    await expectNoLeaks(before);
  });

  it('release() closes the originals silently; the staged restore commits them live', async () => {
    const before = openFds();
    const pairs = await Promise.all([tcpPair(4), tcpPair(6), tcpPair('mapped')]);
    const clients = pairs.map((p, i) => new TrafficEndpoint({ seed: 80 + i, total: 1_000_000 }).attach(p.client));
    const servers = pairs.map((p, i) => new TrafficEndpoint({ seed: 90 + i, total: 1_000_000 }).attach(p.accepted));
    const restored: net.Socket[] = [];
    try {
      await Promise.all(servers.map((s) => s.waitForReceived(100_000)));
      const originals = servers.map((s) => s.detach() as net.Socket);
      const hold = await holdConnections(originals);
      // One namespace: the 4-tuples must be free for the restore, so nftables covers the gap.
      const tuples = hold.images.map((image) => ({ local: image.local, remote: image.remote }));
      await lock.add(tuples);
      hold.connections[0].release();
      expect(hold.connections[0].state).toBe('released');
      hold.release();
      hold.release(); // idempotent
      expect(hold.connections.map((c) => c.state)).toEqual(['released', 'released', 'released']);
      expect(originals.every((socket) => socket.destroyed)).toBe(true);
      expect(codeOf(() => hold.connections[1].resume())).toBe('ERR_CONNECTION_SETTLED');

      const staged = await stageRestoreConnections(hold.images, { locks: [lock] });
      expect(fdsInRepairMode()).toHaveLength(3); // live only after commit
      restored.push(...(await staged.commit()));
      staged.abort(); // no-op once committed
      await expect(staged.commit()).rejects.toMatchObject({ code: 'ERR_RESTORE_SETTLED' });
      restored.forEach((socket, i) => servers[i].attach(socket));
      await Promise.all(clients.map((c) => c.waitForReceived(1_000_000)));
      await Promise.all(servers.map((s) => s.waitForReceived(1_000_000)));
      clients.forEach((c, i) =>
        expectExactTwoWay(c.report(), servers[i].report(), { aToB: 1_000_000, bToA: 1_000_000 }),
      );
    } finally {
      restored.forEach((socket) => socket.destroy());
      await Promise.all(pairs.map((p) => p.close()));
    }
    await expectNoLeaks(before);
  });

  it('rejects bad arguments before touching a socket', async () => {
    const pair = await tcpPair(4);
    try {
      const cases: Array<[unknown, unknown, string]> = [
        ['x', {}, 'ERR_INVALID_ARG_TYPE'],
        [[pair.accepted], null, 'ERR_INVALID_ARG_TYPE'],
        [[pair.accepted], { lock: 'nftables' }, 'ERR_INVALID_ARG_VALUE'],
        [[pair.accepted], { flushTimeoutMs: -1 }, 'ERR_OUT_OF_RANGE'],
        [[pair.accepted, pair.accepted], {}, 'ERR_INVALID_ARG_VALUE'],
        [[{}], {}, 'ERR_INVALID_ARG_TYPE'],
      ];
      for (const [sockets, options, code] of cases) {
        await expect(holdConnections(sockets as net.Socket[], options as object)).rejects.toMatchObject({ code });
      }
      expect(soccr.isInRepairMode(pair.accepted)).toBe(false);
    } finally {
      await pair.close();
    }
  });

  it('fails as a whole and leaves every socket running when one cannot be held', async () => {
    const before = openFds();
    const pair = await tcpPair(4);
    const other = await tcpPair(4);
    const unixPath = path.join(os.tmpdir(), `node-criu-hold-${process.pid}.sock`);
    const unixServer = net.createServer();
    await new Promise<void>((resolve) => unixServer.listen(unixPath, resolve));
    const unixAccepted = new Promise<net.Socket>((resolve) => unixServer.once('connection', resolve));
    const unixClient = net.connect(unixPath);
    const a = new TrafficEndpoint({ seed: 101, total: 1_000_000 }).attach(pair.client);
    const b = new TrafficEndpoint({ seed: 102, total: 1_000_000 }).attach(pair.accepted);
    try {
      await new Promise((resolve) => unixClient.once('connect', resolve));
      await Promise.all([a.waitForReceived(100_000), b.waitForReceived(100_000)]);
      const original = b.detach() as net.Socket;
      await expect(holdConnections([original, unixClient])).rejects.toMatchObject({ code: 'ERR_SOCKET_NOT_TCP' });
      other.accepted.destroy();
      await expect(holdConnections([original, other.accepted])).rejects.toMatchObject({
        code: 'ERR_SOCKET_DESTROYED',
      });
      expect(fdsInRepairMode()).toEqual([]);
      b.attach(original);
      await Promise.all([a.waitForReceived(1_000_000), b.waitForReceived(1_000_000)]);
      expectExactTwoWay(a.report(), b.report(), { aToB: 1_000_000, bToA: 1_000_000 });
    } finally {
      unixClient.destroy();
      (await unixAccepted).destroy();
      await new Promise((resolve) => unixServer.close(resolve));
      await Promise.all([pair.close(), other.close()]);
    }
    await expectNoLeaks(before);
  });

  it('a socket destroyed while held: release() is quiet, resume() says ERR_SOCKET_DESTROYED', async () => {
    const before = openFds();
    const pairs = await Promise.all([tcpPair(4), tcpPair(4)]);
    try {
      const hold = await holdConnections(pairs.map((p) => p.accepted));
      pairs[0].accepted.destroy(); // closed in repair mode: silently
      pairs[1].accepted.destroy();
      expect(codeOf(() => hold.connections[0].resume())).toBe('ERR_SOCKET_DESTROYED');
      expect(hold.connections[0].state).toBe('released');
      hold.release();
      hold.resume(); // nothing left to resume
      expect(hold.connections[1].state).toBe('released');
    } finally {
      await Promise.all(pairs.map((p) => p.close()));
    }
    await expectNoLeaks(before);
  });
});

describe('stageRestoreConnections', () => {
  it('abort() closes the staged copies silently: the image still restores, both ways exact', async () => {
    const before = openFds();
    const pair = await tcpPair(4);
    const a = new TrafficEndpoint({ seed: 111, total: 1_000_000 }).attach(pair.client);
    const b = new TrafficEndpoint({ seed: 112, total: 1_000_000 }).attach(pair.accepted);
    let restored: net.Socket | undefined;
    try {
      await a.waitForReceived(100_000);
      const image = await checkpointConnection(b.detach() as net.Socket, { lock });
      const staged = await stageRestoreConnections([image]);
      expect(fdsInRepairMode()).toHaveLength(1);
      staged.abort();
      staged.abort(); // idempotent
      await expect(staged.commit()).rejects.toMatchObject({ code: 'ERR_RESTORE_SETTLED' });
      expect(fdsInRepairMode()).toEqual([]);
      restored = await restoreConnection(image);
      b.attach(restored);
      await Promise.all([a.waitForReceived(1_000_000), b.waitForReceived(1_000_000)]);
      expectExactTwoWay(a.report(), b.report(), { aToB: 1_000_000, bToA: 1_000_000 });
    } finally {
      restored?.destroy();
      await pair.close();
    }
    await expectNoLeaks(before);
  });

  it('a failing staged restore leaves nothing open or in repair mode', async () => {
    const before = openFds();
    const pair = await tcpPair(4);
    try {
      const hold = await holdConnections([pair.accepted]);
      // The original still owns the 4-tuple: the restore must fail (EADDRINUSE or EADDRNOTAVAIL).
      await expect(stageRestoreConnections(hold.images)).rejects.toMatchObject({
        code: expect.stringMatching(/^EADDR/),
      });
      expect(fdsInRepairMode()).toEqual([soccr.fdOfSocket(pair.accepted)]);
      hold.resume();
      await expect(stageRestoreConnections(hold.images, { netns: 'relative' })).rejects.toMatchObject({
        code: 'ERR_INVALID_ARG_VALUE',
      });
    } finally {
      await pair.close();
    }
    await expectNoLeaks(before);
  });
});
