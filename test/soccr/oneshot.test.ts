/**
 * soccr.dumpFd / soccr.restoreFd: the whole dump and the whole restore of one socket in one call
 * each, with exact queues both ways, and typed errors that leave nothing behind.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';

import {
  ConnectionImageError,
  InvalidArgumentError,
  NftablesLock,
  SoccrError,
  soccr,
  validateConnectionImage,
} from '../../lib';
import type { TrafficReport } from '../helpers/traffic';
import { PatternStream, TrafficEndpoint, expectExactTwoWay, waitFor } from '../helpers/traffic';
import { continuingEndpoint, fdsInRepairMode, kernelRecvQueueBetween } from '../helpers/soccr';
import { binding } from '../../lib/native';
import { newFds, openFds } from '../helpers/fds';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(Error);
    return (error as { code?: string }).code;
  }
  return 'no error';
}

it('dumpFd + restoreFd move a raw fd with both queues exact', async () => {
  const fdsBefore = openFds();
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const lock = await NftablesLock.create();
  const ops = binding().socketOps;
  let restored: net.Socket | undefined;
  let peerSocket: net.Socket | undefined;
  try {
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const fd = soccr.createTcpSocket(4);
    ops.connect(fd, { family: 4, address: new Uint8Array([127, 0, 0, 1]), port });
    peerSocket = await accepted;
    await waitFor(
      () => ops.socketInfo(fd).tcpState === 1,
      5000,
      () => 'not connected',
    );
    const peer = new TrafficEndpoint({ seed: 11, total: 200_000 }).attach(peerSocket);
    const fdEnd = { address: '127.0.0.1', port: peerSocket.remotePort as number };
    await waitFor(
      () => kernelRecvQueueBetween(fdEnd, { address: '127.0.0.1', port }) > 0,
      5000,
      () => 'nothing queued on the fd yet',
    );
    soccr.attachDropFilter(fd); // the peer's ACKs are dropped: what fd sends stays unacknowledged
    const moverPattern = new PatternStream(12);
    const written = moverPattern.next(20_000);
    expect(fs.writeSync(fd, written)).toBe(20_000);
    await waitFor(
      () => peer.received.bytes === 20_000,
      5000,
      () => `peer got ${peer.received.bytes}`,
    );

    const local = { family: 4 as const, address: '127.0.0.1', port: peerSocket.remotePort as number };
    const remote = { family: 4 as const, address: '127.0.0.1', port };
    await lock.add([{ local, remote }]);
    const dump = soccr.dumpFd(fd);
    expect(soccr.isInRepairMode(fd)).toBe(true);
    expect(dump.local).toEqual(local);
    expect(dump.remote).toEqual(remote);
    expect(dump.skData.stateName).toBe('ESTABLISHED');
    expect(dump.recvQueue.length).toBe(dump.skData.inqLen);
    expect(dump.skData.inqLen).toBeGreaterThan(0);
    expect(dump.recvQueue.equals(new PatternStream(11).next(dump.skData.inqLen))).toBe(true);
    expect(dump.sendQueue.equals(written)).toBe(true);
    soccr.closeFd(fd); // repair on: silent

    const newFd = soccr.restoreFd(dump);
    expect(soccr.isInRepairMode(newFd)).toBe(false);
    await lock.remove([{ local, remote }]);
    restored = soccr.adoptSocket(newFd);
    const mover = continuingEndpoint(moverPattern, { send: 12, recv: 11 }, 300_000).attach(restored);
    await waitFor(
      () => mover.receivedBytes === 200_000 && peer.received.bytes === 300_000,
      30000,
      () => `${mover.receivedBytes} ${peer.received.bytes}`,
    );
    expectExactTwoWay(peer.report(), mover.report() as TrafficReport, { aToB: 200_000, bToA: 300_000 });
  } finally {
    restored?.destroy();
    peerSocket?.destroy();
    await lock.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fdsBefore)).toEqual([]);
});

it('dumpFd / restoreFd: typed errors, nothing left behind', async () => {
  const fdsBefore = openFds();
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect(port, '127.0.0.1');
  const peer = await accepted;
  const unconnected = soccr.createTcpSocket(4);
  try {
    const listenerFd = (server as unknown as { _handle: { fd: number } })._handle.fd;
    expect(codeOf(() => soccr.dumpFd(listenerFd))).toBe('ERR_SOCKET_LISTENING');
    expect(soccr.isInRepairMode(listenerFd)).toBe(false);
    expect(codeOf(() => soccr.dumpFd(unconnected))).toBe('ENOTCONN');
    expect(soccr.isInRepairMode(unconnected)).toBe(false);
    expect(codeOf(() => soccr.dumpFd(-1))).toBe('ERR_INVALID_ARG_TYPE');
    expect(codeOf(() => soccr.dumpFd(1.5))).toBe('ERR_INVALID_ARG_TYPE');

    // A dump of a live connection whose 4-tuple is still in use: restoreFd cannot connect.
    const fd = soccr.fdOfSocket(peer);
    peer.pause();
    const dump = soccr.dumpFd(fd);
    binding().socketOps.setRepair(fd, false); // let the original run on
    const before = openFds();
    let thrown: unknown;
    try {
      soccr.restoreFd(dump);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(SoccrError);
    expect((thrown as SoccrError).code).toBe('EADDRNOTAVAIL');
    expect(newFds(before)).toEqual([]);
    expect(() => soccr.restoreFd({ ...dump, skData: { ...dump.skData, state: 10 } })).toThrow(InvalidArgumentError);
    expect(() => soccr.restoreFd({ ...dump, recvQueue: Buffer.alloc(dump.skData.inqLen + 1) })).toThrow(
      InvalidArgumentError,
    );
    expect(() => soccr.restoreFd({ ...dump, local: { family: 4, address: '1.2.3', port: 1 } })).toThrow(
      InvalidArgumentError,
    );
    expect(() => soccr.restoreFd({ ...dump, remote: { ...dump.remote, family: 6 } })).toThrow(InvalidArgumentError);
    expect(newFds(before)).toEqual([]);

    // The original still carries traffic both ways.
    peer.resume();
    const echoed = new Promise<string>((resolve) => client.once('data', (d) => resolve(d.toString())));
    const got = new Promise<string>((resolve) => peer.once('data', (d) => resolve(d.toString())));
    client.write('ping');
    peer.write('pong');
    expect(await got).toBe('ping');
    expect(await echoed).toBe('pong');
  } finally {
    soccr.closeFd(unconnected);
    client.destroy();
    peer.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fdsBefore)).toEqual([]);
});

it('values String() cannot convert (no prototype) still get typed errors', () => {
  const bare = Object.create(null) as unknown;
  const skData = { state: bare } as unknown as Parameters<typeof soccr.restoreFd>[0]['skData'];
  const local = { family: 4 as const, address: '127.0.0.1', port: 1 };
  expect(() =>
    soccr.restoreFd({ skData, local, remote: local, recvQueue: Buffer.alloc(0), sendQueue: Buffer.alloc(0) }),
  ).toThrow(InvalidArgumentError);
  expect(() => validateConnectionImage({ version: bare })).toThrow(ConnectionImageError);
  expect(() => validateConnectionImage({ version: 1, family: bare })).toThrow(ConnectionImageError);
});
