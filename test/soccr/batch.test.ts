/**
 * The batch paths of checkpointConnections / restoreConnections (csrc/soccr_batch.cc: one native
 * call per phase, split over threads from 512 connections on): a failure in the middle of a
 * threaded batch undoes exactly what was done (no fd leaked, no socket left in repair mode, the
 * originals still carry traffic both ways), and the failing connection is named.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';

import {
  NftablesLock,
  SoccrError,
  checkpointConnection,
  checkpointConnections,
  restoreConnection,
  restoreConnections,
  soccr,
} from '../../lib';
import { soccrBinding } from '../../lib/soccr/native';
import { fdsInRepairMode } from '../helpers/soccr';
import { socketFd } from '../../lib/soccr/node-socket';
import { waitFor } from '../helpers/traffic';
import { newFds, openFds, stillOpen } from '../helpers/fds';

const COUNT = 600; // > 2 x 256: the batch runs on two threads on this 2-core machine

interface Pairs {
  clients: net.Socket[];
  accepted: net.Socket[];
  close(): Promise<void>;
}

async function manyPairs(count: number): Promise<Pairs> {
  const server = net.createServer();
  const byPort = new Map<number, net.Socket>();
  server.on('connection', (s) => byPort.set(s.remotePort as number, s));
  await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: 1024 }, resolve));
  const port = (server.address() as net.AddressInfo).port;
  const clients: net.Socket[] = [];
  for (let i = 0; i < count; i++) {
    const client = net.connect({ port, host: '127.0.0.1' });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', resolve);
      client.once('error', reject);
    });
    clients.push(client);
  }
  for (let i = 0; i < 1000 && byPort.size < count; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  const accepted = clients.map((c) => byPort.get(c.localPort as number) as net.Socket);
  return {
    clients,
    accepted,
    async close() {
      clients.forEach((s) => s.destroy());
      accepted.forEach((s) => s?.destroy());
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Every pair exchanges a distinct message both ways, byte-exact, with no error on either end. */
async function expectTraffic(a: net.Socket[], b: net.Socket[], tag: string): Promise<void> {
  const errors: string[] = [];
  const exchange = (from: net.Socket, to: net.Socket, message: string) =>
    new Promise<string>((resolve) => {
      let got = '';
      const onData = (d: Buffer) => {
        got += d.toString();
        if (got.length >= message.length) {
          to.off('data', onData);
          resolve(got);
        }
      };
      to.on('data', onData);
      to.once('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? 'error'));
      from.write(message);
    });
  const sent = a.map((_s, i) => [`${tag}-a${i}.`, `${tag}-b${i}!`]);
  const got = await Promise.all(
    a.map((s, i) => Promise.all([exchange(s, b[i], sent[i][0]), exchange(b[i], s, sent[i][1])])),
  );
  expect(got).toEqual(sent);
  expect(errors).toEqual([]);
}

it('restoreConnections: a threaded batch whose 4-tuples are still in use fails typed and leaves nothing behind', async () => {
  const pairs = await manyPairs(COUNT);
  try {
    // keepRunning: the originals stay, so every restore's connect() finds its 4-tuple taken.
    const images = await checkpointConnections(pairs.accepted, { keepRunning: true });
    expect(images).toHaveLength(COUNT);
    const fdsBefore = openFds();
    let thrown: unknown;
    try {
      await restoreConnections(images);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(SoccrError);
    expect((thrown as SoccrError).code).toBe('EADDRNOTAVAIL');
    expect(newFds(fdsBefore)).toEqual([]);
    expect(fdsInRepairMode()).toEqual([]);
    await expectTraffic(pairs.clients, pairs.accepted, 'after-failed-restore');
  } finally {
    await pairs.close();
  }
});

/** How many of this process's fds are open on /dev/null (soccrDropBatch's placeholders). */
function devNullFds(): number {
  let count = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === '/dev/null') count++;
    } catch {
      // closed meanwhile (readdir's own fd)
    }
  }
  return count;
}

it('checkpointConnections closes every original on the batch threads: fds exact, no placeholder left, each closed once, no RST', async () => {
  const pairs = await manyPairs(COUNT);
  const restored: net.Socket[] = [];
  try {
    const lock = await NftablesLock.create();
    try {
      const fdsBefore = openFds();
      const nullsBefore = devNullFds();
      const closes = pairs.accepted.map((s) => new Promise<boolean>((resolve) => s.once('close', resolve)));
      const clientErrors: string[] = [];
      pairs.clients.forEach((c) => c.on('error', (e: NodeJS.ErrnoException) => clientErrors.push(e.code ?? 'error')));
      const acceptedFds = pairs.accepted.map(socketFd);
      const images = await checkpointConnections(pairs.accepted, { lock });
      expect(pairs.accepted.every((s) => s.destroyed)).toBe(true);
      expect(await Promise.all(closes)).toEqual(new Array(COUNT).fill(false)); // 'close' once each, no error
      expect(stillOpen(fdsBefore, acceptedFds)).toEqual([]);
      expect(newFds(fdsBefore)).toEqual([]);
      expect(devNullFds()).toBe(nullsBefore);
      restored.push(...(await restoreConnections(images)));
      // The only new sockets are the restored ones (Node itself may open an fd of another kind meanwhile).
      const restoredFds = new Set(restored.map(socketFd));
      const newSockets = newFds(fdsBefore).filter((entry) => entry.includes('socket:'));
      expect(newSockets.filter((entry) => !restoredFds.has(Number(entry.split(' ')[0])))).toEqual([]);
      expect(newSockets).toHaveLength(COUNT);
      await expectTraffic(pairs.clients, restored, 'after-batch-move');
      expect(clientErrors).toEqual([]); // a RST would have surfaced as ECONNRESET on a client
    } finally {
      await lock.destroy();
    }
  } finally {
    restored.forEach((s) => s.destroy());
    await pairs.close();
  }
});

it('soccrDumpBatch: a bad fd in the middle names its index, the rest is marked for undo', async () => {
  const pairs = await manyPairs(COUNT);
  const unconnected = soccr.createTcpSocket(4); // an unconnected TCP socket: libsoccr_save fails (ENOTCONN)
  try {
    const bad = COUNT / 2;
    const fds = Int32Array.from(pairs.accepted.map((s) => soccr.fdOfSocket(s)));
    fds[bad] = unconnected;
    pairs.accepted.forEach((s) => s.pause());
    const packed = new Uint32Array(17 * COUNT);
    const dumped = new Uint8Array(COUNT);
    const ops = soccrBinding().socketOps;
    let thrown: { code?: string; index?: number } | undefined;
    try {
      soccrBinding().soccrDumpBatch(fds, packed, dumped);
    } catch (error) {
      thrown = error as { code?: string; index?: number };
    }
    expect(thrown?.index).toBe(bad);
    expect(thrown?.code).toBe('ENOTCONN');
    expect(dumped[bad]).toBe(0);
    expect(soccr.isInRepairMode(unconnected)).toBe(false); // the failing socket was resumed
    const inRepair = Array.from(fds).filter((fd) => soccr.isInRepairMode(fd));
    expect(inRepair.sort()).toEqual(
      Array.from(fds)
        .filter((_fd, i) => dumped[i] === 1)
        .sort(),
    );
    // Undo what the batch did, as checkpointConnections does.
    fds.forEach((fd, i) => dumped[i] === 1 && ops.setRepair(fd, false));
    expect(fdsInRepairMode()).toEqual([]);
    pairs.accepted.forEach((s) => s.resume());
    await expectTraffic(pairs.clients, pairs.accepted, 'after-failed-dump');
  } finally {
    soccr.closeFd(unconnected);
    await pairs.close();
  }
});

it('checkpointConnections without an fd for the placeholder (EMFILE): destroy() closes each original itself, silently', async () => {
  const pairs = await manyPairs(COUNT);
  const restored: net.Socket[] = [];
  const binding = soccrBinding();
  const drop = binding.soccrDropBatch;
  try {
    const lock = await NftablesLock.create();
    try {
      const fdsBefore = openFds();
      const clientErrors: string[] = [];
      pairs.clients.forEach((c) => c.on('error', (e: NodeJS.ErrnoException) => clientErrors.push(e.code ?? 'error')));
      let calls = 0;
      binding.soccrDropBatch = () => {
        calls++;
        throw Object.assign(new Error('open EMFILE: /dev/null'), { code: 'EMFILE', syscall: 'open' });
      };
      const acceptedFds = pairs.accepted.map(socketFd);
      const images = await checkpointConnections(pairs.accepted, { lock });
      binding.soccrDropBatch = drop;
      expect(calls).toBe(1);
      expect(stillOpen(fdsBefore, acceptedFds)).toEqual([]);
      expect(newFds(fdsBefore)).toEqual([]);
      restored.push(...(await restoreConnections(images)));
      await expectTraffic(pairs.clients, restored, 'after-emfile-move');
      expect(clientErrors).toEqual([]);
    } finally {
      binding.soccrDropBatch = drop;
      await lock.destroy();
    }
  } finally {
    restored.forEach((s) => s.destroy());
    await pairs.close();
  }
});

it("soccrDumpBatch with the 'filter' lock: bits mark repair and filter per socket; undone, every original carries traffic", async () => {
  const pairs = await manyPairs(COUNT);
  const unconnected = soccr.createTcpSocket(4); // libsoccr_save fails (ENOTCONN) after its filter went on
  try {
    // The last socket of the last thread's range: that thread pauses every socket before it, so
    // some are dumped whichever thread starts first (a failure stops the other threads at once).
    const bad = COUNT - 1;
    const fds = Int32Array.from(pairs.accepted.map((s) => soccr.fdOfSocket(s)));
    fds[bad] = unconnected;
    pairs.accepted.forEach((s) => s.pause());
    const dumped = new Uint8Array(COUNT);
    const ops = soccrBinding().socketOps;
    let thrown: { code?: string; index?: number } | undefined;
    try {
      soccrBinding().soccrDumpBatch(fds, new Uint32Array(17 * COUNT), dumped, true);
    } catch (error) {
      thrown = error as { code?: string; index?: number };
    }
    expect(thrown).toMatchObject({ index: bad, code: 'ENOTCONN' });
    expect(dumped[bad]).toBe(2); // filtered, not left in repair mode
    expect(soccr.isInRepairMode(unconnected)).toBe(false);
    // Every other socket is untouched (0) or filtered and in repair mode (3): never one without the other.
    for (let i = 0; i < COUNT; i++) if (i !== bad) expect([0, 3]).toContain(dumped[i]);
    expect(dumped.filter((d) => d === 3).length).toBeGreaterThan(0);
    const inRepair = Array.from(fds).filter((fd) => soccr.isInRepairMode(fd));
    expect(inRepair.sort()).toEqual(
      Array.from(fds)
        .filter((_fd, i) => (dumped[i] & 1) !== 0)
        .sort(),
    );
    // Undo as checkpointConnections does: repair off, filter off. A filter left behind would drop
    // the peer's messages below and the exchange would never complete.
    fds.forEach((fd, i) => {
      if ((dumped[i] & 1) !== 0) ops.setRepair(fd, false);
      if ((dumped[i] & 2) !== 0) ops.detachFilter(fd);
    });
    expect(fdsInRepairMode()).toEqual([]);
    pairs.accepted.forEach((s) => s.resume());
    await expectTraffic(pairs.clients, pairs.accepted, 'after-failed-filtered-dump');
  } finally {
    soccr.closeFd(unconnected);
    await pairs.close();
  }
});

it('pause(fd): the addresses saved with getSkData stay readable after release', async () => {
  const pairs = await manyPairs(1);
  try {
    const socket = pairs.accepted[0];
    socket.pause();
    const handle = soccr.pause(soccr.fdOfSocket(socket));
    handle.getSkData();
    handle.resume();
    expect(handle.getLocalAddress()).toEqual({ family: 4, address: '127.0.0.1', port: socket.localPort });
    expect(handle.getRemoteAddress()).toEqual({ family: 4, address: '127.0.0.1', port: socket.remotePort });
    socket.resume();
    await expectTraffic(pairs.clients, pairs.accepted, 'after-pause');
  } finally {
    await pairs.close();
  }
});

it('restoreConnection: a small pendingRead comes first, and nothing reads the fd before the resume', async () => {
  // unshift(pendingRead) on the adopted socket restarts reading on the next tick: done before the
  // restore finished (it runs off the JS thread) or before repair mode is off, that read fails
  // (ENOTCONN / EPERM), the socket emits 'error' and closes its fd under the restore.
  const pairs = await manyPairs(1);
  const errors: string[] = [];
  const onUncaught = (error: Error) =>
    errors.push(`uncaught ${(error as NodeJS.ErrnoException).code ?? error.message}`);
  process.on('uncaughtException', onUncaught);
  let restored: net.Socket | undefined;
  try {
    const original = pairs.accepted[0];
    original.pause();
    pairs.clients[0].write('pending-bytes-in-node');
    await waitFor(
      () => original.readableLength === 21,
      5000,
      () => `read ${original.readableLength}`,
    );
    const image = await checkpointConnection(original);
    expect(image.pendingRead.toString()).toBe('pending-bytes-in-node');
    restored = await restoreConnection(image);
    restored.on('error', (error: NodeJS.ErrnoException) => errors.push(error.code ?? 'error'));
    let got = '';
    restored.on('data', (d: Buffer) => (got += d.toString()));
    await waitFor(
      () => got.length >= 21,
      5000,
      () => `got ${JSON.stringify(got)}`,
    );
    pairs.clients[0].write('|after');
    await waitFor(
      () => got.length >= 27,
      5000,
      () => `got ${JSON.stringify(got)}`,
    );
    expect(got).toBe('pending-bytes-in-node|after');
    expect(errors).toEqual([]);
    expect(restored.destroyed).toBe(false);
    expect(fdsInRepairMode()).toEqual([]);
  } finally {
    process.off('uncaughtException', onUncaught);
    restored?.destroy();
    await pairs.close();
    await NftablesLock.destroyProcessLocks();
  }
});
