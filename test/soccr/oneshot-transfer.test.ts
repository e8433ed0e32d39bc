/**
 * The `transfer` option of soccr.restoreFd and SoccrHandle.restore (the restore takes over the
 * queue buffers and frees them at once), dumpFd's pool for small queues, and
 * SoccrHandle.getQueueBytes handing each caller its own copy: buffers are detached only after a successful restore and only when a Buffer spans
 * its whole ArrayBuffer; the queue arrives exact; nothing is left behind.
 */
import * as net from 'node:net';

import { InvalidArgumentError, NftablesLock, soccr } from '../../lib';
import { binding } from '../../lib/native';
import type { SocketDump } from '../../lib/soccr/oneshot';
import { PatternStream, waitFor } from '../helpers/traffic';
import { fdsInRepairMode } from '../helpers/soccr';
import { newFds, openFds } from '../helpers/fds';

const QUEUE_BYTES = 30_000;

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(Error);
    return (error as { code?: string }).code;
  }
  return 'no error';
}

interface RawPair {
  server: net.Server;
  peer: net.Socket;
  /** The raw side nobody reads: the peer's bytes stay in its receive queue. */
  fd: number;
  payload: Buffer;
}

/** A raw fd connected to a net.Socket peer that has sent `bytes` into the fd's receive queue. */
async function rawPairWithQueue(seed: number, bytes = QUEUE_BYTES): Promise<RawPair> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const ops = binding().socketOps;
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const fd = soccr.createTcpSocket(4);
  ops.connect(fd, { family: 4, address: new Uint8Array([127, 0, 0, 1]), port });
  const peer = await accepted;
  await waitFor(
    () => ops.socketInfo(fd).tcpState === 1,
    5000,
    () => 'not connected',
  );
  const payload = new PatternStream(seed).next(bytes);
  peer.write(payload);
  return { server, peer, fd, payload };
}

/** Dumps fd once its receive queue holds `bytes` (resuming it between tries). */
async function dumpWhenQueued(fd: number, bytes: number): Promise<SocketDump> {
  for (let i = 0; i < 500; i++) {
    const dump = soccr.dumpFd(fd);
    if (dump.skData.inqLen === bytes) return dump;
    binding().socketOps.setRepair(fd, false);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`receive queue never reached ${bytes} bytes`);
}

/** Reads `bytes` + 'ping' on the restored socket and answers 'pong': the queue came over exact. */
async function expectQueueThenTraffic(restored: net.Socket, peer: net.Socket, payload: Buffer): Promise<void> {
  const expected = Buffer.concat([payload, Buffer.from('ping')]);
  const chunks: Buffer[] = [];
  let have = 0;
  const all = new Promise<void>((resolve, reject) => {
    restored.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      have += chunk.length;
      if (have >= expected.length) resolve();
    });
    restored.once('error', reject);
  });
  peer.write('ping');
  await all;
  expect(Buffer.concat(chunks).equals(expected)).toBe(true);
  const pong = new Promise<string>((resolve) => peer.once('data', (d: Buffer) => resolve(d.toString())));
  restored.write('pong');
  expect(await pong).toBe('pong');
}

it('restoreFd transfer: detaches only after a success and only whole buffers; the queue arrives exact', async () => {
  const fdsBefore = openFds();
  const lock = await NftablesLock.create();
  const { server, peer, fd, payload } = await rawPairWithQueue(21);
  let restored: net.Socket | undefined;
  try {
    const dump = await dumpWhenQueued(fd, QUEUE_BYTES);
    expect(dump.recvQueue.equals(payload)).toBe(true);
    expect(dump.recvQueue.byteLength).toBe(dump.recvQueue.buffer.byteLength); // its own ArrayBuffer
    expect(codeOf(() => soccr.restoreFd(dump, { transfer: 1 as unknown as boolean }))).toBe('ERR_INVALID_ARG_TYPE');
    expect(() => soccr.restoreFd(dump, { transfer: 'yes' as unknown as boolean })).toThrow(InvalidArgumentError);

    // The original (paused, still open) holds the 4-tuple: the restore fails and keeps the buffers.
    const before = openFds();
    expect(codeOf(() => soccr.restoreFd(dump, { transfer: true }))).toBe('EADDRNOTAVAIL');
    expect(dump.recvQueue.length).toBe(QUEUE_BYTES);
    expect(dump.recvQueue.equals(payload)).toBe(true);
    expect(newFds(before)).toEqual([]);

    await lock.add([{ local: dump.local, remote: dump.remote }]);
    soccr.closeFd(fd); // repair on: silent

    // A view of part of an ArrayBuffer (offset 1) is never detached.
    const sliced = Buffer.concat([Buffer.alloc(1), dump.recvQueue]).subarray(1);
    const movedFd = soccr.restoreFd({ ...dump, recvQueue: sliced }, { transfer: true });
    expect(sliced.length).toBe(QUEUE_BYTES);
    expect(dump.recvQueue.length).toBe(QUEUE_BYTES);

    // dumpFd's own buffers are handed over: detached after the restore.
    const again = soccr.dumpFd(movedFd);
    expect(again.recvQueue.equals(payload)).toBe(true);
    soccr.closeFd(movedFd);
    const recvBuffer = again.recvQueue.buffer;
    const finalFd = soccr.restoreFd(again, { transfer: true });
    expect(again.recvQueue.length).toBe(0);
    expect(recvBuffer.byteLength).toBe(0);
    expect(again.sendQueue.length).toBe(0); // the shared empty Buffer: nothing to hand over
    expect(soccr.isInRepairMode(finalFd)).toBe(false);
    await lock.remove([{ local: dump.local, remote: dump.remote }]);

    restored = soccr.adoptSocket(finalFd);
    await expectQueueThenTraffic(restored, peer, payload);
  } finally {
    restored?.destroy();
    peer.destroy();
    await lock.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fdsBefore)).toEqual([]);
});

it('SoccrHandle: getQueueBytes gives every call its own copy; restore transfer hands the buffers over', async () => {
  const fdsBefore = openFds();
  const lock = await NftablesLock.create();
  const { server, peer, fd, payload } = await rawPairWithQueue(22);
  let restored: net.Socket | undefined;
  try {
    await dumpWhenQueued(fd, QUEUE_BYTES);
    binding().socketOps.setRepair(fd, false);
    const handle = soccr.pause(fd);
    const first = handle.getQueueBytes('recv');
    expect(first.equals(payload)).toBe(true);
    first.fill(0); // the caller's own copy
    const second = handle.getQueueBytes('recv');
    expect(second.equals(payload)).toBe(true);
    expect(handle.getQueueBytes('send').length).toBe(0);
    const data = handle.getSkData();
    const local = handle.getLocalAddress();
    const remote = handle.getRemoteAddress();
    handle.release();
    await lock.add([{ local, remote }]);
    soccr.closeFd(fd);

    const { fd: newFd, handle: target } = soccr.pauseNewSocket(4);
    try {
      expect(
        codeOf(() =>
          target.restore(data, local, remote, second, Buffer.alloc(0), { transfer: 'yes' as unknown as boolean }),
        ),
      ).toBe('ERR_INVALID_ARG_TYPE');
      expect(
        codeOf(() =>
          target.restore(data, local, remote, second, Buffer.alloc(0), null as unknown as { transfer?: boolean }),
        ),
      ).toBe('ERR_INVALID_ARG_TYPE');
      expect(second.length).toBe(QUEUE_BYTES);
      target.restore(data, local, remote, second, Buffer.alloc(0), { transfer: true });
      expect(second.length).toBe(0);
      target.resume();
    } catch (error) {
      target.release();
      soccr.closeFd(newFd);
      throw error;
    }
    await lock.remove([{ local, remote }]);
    restored = soccr.adoptSocket(newFd);
    await expectQueueThenTraffic(restored, peer, payload);
  } finally {
    restored?.destroy();
    peer.destroy();
    await lock.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fdsBefore)).toEqual([]);
});

it('dumpFd: small queues are slices of a shared pool, never overlapping, never handed over', async () => {
  const fdsBefore = openFds();
  const lock = await NftablesLock.create();
  const small = 1000;
  const { server, peer, fd, payload } = await rawPairWithQueue(23, small);
  let restored: net.Socket | undefined;
  try {
    const first = await dumpWhenQueued(fd, small);
    binding().socketOps.setRepair(fd, false);
    const second = soccr.dumpFd(fd);
    for (const dump of [first, second]) {
      expect(dump.recvQueue.length).toBe(small);
      expect(dump.recvQueue.buffer.byteLength).toBeGreaterThan(small); // a slice of the pool
      expect(dump.recvQueue.equals(payload)).toBe(true);
    }
    const a = first.recvQueue;
    const b = second.recvQueue;
    const disjoint =
      a.buffer !== b.buffer || a.byteOffset + a.length <= b.byteOffset || b.byteOffset + b.length <= a.byteOffset;
    expect(disjoint).toBe(true);
    second.recvQueue.fill(0); // the caller's slice: the other dump's bytes stay
    expect(first.recvQueue.equals(payload)).toBe(true);

    await lock.add([{ local: first.local, remote: first.remote }]);
    soccr.closeFd(fd);
    const newFd = soccr.restoreFd(first, { transfer: true });
    expect(first.recvQueue.length).toBe(small); // a pool slice is never detached
    expect(soccr.isInRepairMode(newFd)).toBe(false);
    await lock.remove([{ local: first.local, remote: first.remote }]);
    restored = soccr.adoptSocket(newFd);
    await expectQueueThenTraffic(restored, peer, payload);
  } finally {
    restored?.destroy();
    peer.destroy();
    await lock.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fdsBefore)).toEqual([]);
});
