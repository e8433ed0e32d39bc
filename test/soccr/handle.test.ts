/**
 * The low-level API: soccr.pause on a raw fd, every sk_data field, both queues' exact bytes, the
 * addresses, and the staged restore (unbound -> bind -> connect -> noq -> queues -> sk_data ->
 * resume) onto a new socket; libsoccr's log reaching a JS logger.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';

import { NftablesLock, SoccrError, restoreConnection, checkpointConnection, soccr } from '../../lib';
import type { TrafficReport } from '../helpers/traffic';
import { PatternStream, TrafficEndpoint, expectExactTwoWay, waitFor } from '../helpers/traffic';
import { continuingEndpoint, fdsInRepairMode, kernelRecvQueueBetween, tcpPair } from '../helpers/soccr';
import { binding } from '../../lib/native';
import { newFds, openFds } from '../helpers/fds';

it('pauses a raw fd, saves exact queues, and restores it with the staged calls', async () => {
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

    // The peer streams into the raw fd, which nobody reads: its kernel receive queue fills.
    const peer = new TrafficEndpoint({ seed: 1, total: 300_000 }).attach(peerSocket);
    const fdEnd = { address: '127.0.0.1', port: peerSocket.remotePort as number };
    await waitFor(
      () => kernelRecvQueueBetween(fdEnd, { address: '127.0.0.1', port }) > 0,
      5000,
      () => 'nothing queued on the fd yet',
    );
    // Bytes written on the raw fd with the peer's ACKs dropped stay sent-but-unacknowledged.
    soccr.attachDropFilter(fd);
    const moverPattern = new PatternStream(2);
    const written = moverPattern.next(30_000);
    expect(fs.writeSync(fd, written)).toBe(30_000);
    await waitFor(
      () => peer.received.bytes === 30_000,
      5000,
      () => `peer got ${peer.received.bytes}`,
    );

    const handle = soccr.pause(fd);
    expect(soccr.isInRepairMode(fd)).toBe(true);
    const data = handle.getSkData();
    expect(data.stateName).toBe('ESTABLISHED');
    expect(data.outqLen).toBe(30_000);
    expect(data.unsqLen).toBe(0);
    expect(data.inqLen).toBeGreaterThan(0);
    expect(data.optMask & 1).toBe(1); // timestamps on loopback
    expect(data.flags & 1).toBe(1); // window fields valid
    expect(data.mssClamp).toBeGreaterThan(0);
    const recv = handle.getQueueBytes('recv');
    expect(recv.equals(new PatternStream(1).next(data.inqLen))).toBe(true);
    expect(handle.getQueueBytes('send').equals(written)).toBe(true);
    const local = handle.getLocalAddress();
    const remote = handle.getRemoteAddress();
    expect(remote).toEqual({ family: 4, address: '127.0.0.1', port });
    expect(local.port).toBe(peerSocket.remotePort);

    // Close the original in repair mode (silently), the lock covering the gap.
    await lock.add([{ local, remote }]);
    handle.release();
    soccr.closeFd(fd);

    const { fd: newFd, handle: target } = soccr.pauseNewSocket(4);
    target.setSkDataUnbound(data);
    target.bind(local);
    target.connect(remote);
    target.setSkDataNoq(data);
    target.setQueueBytes(data, 'recv', recv);
    target.setQueueBytes(data, 'send', written);
    target.setSkData(data);
    await lock.remove([{ local, remote }]);
    target.resume();
    expect(soccr.isInRepairMode(newFd)).toBe(false);
    restored = soccr.adoptSocket(newFd);

    const mover = continuingEndpoint(moverPattern, { send: 2, recv: 1 }, 500_000).attach(restored);
    await waitFor(
      () => mover.receivedBytes === 300_000 && peer.received.bytes === 500_000,
      30000,
      () => `${mover.receivedBytes} ${peer.received.bytes}`,
    );
    expectExactTwoWay(peer.report(), mover.report() as TrafficReport, { aToB: 300_000, bToA: 500_000 });
  } finally {
    restored?.destroy();
    peerSocket?.destroy();
    await lock.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fdsBefore)).toEqual([]);
});

it("routes libsoccr's log to a JS logger and into error messages", async () => {
  const lines: [string, string][] = [];
  soccr.setLogger((level, line) => lines.push([level, line]), 'debug');
  const pair = await tcpPair(4);
  try {
    const image = await checkpointConnection(pair.accepted, { lock: 'filter', keepRunning: true });
    let error: SoccrError | undefined;
    try {
      await restoreConnection(image); // the original still exists: EADDRNOTAVAIL
    } catch (e) {
      error = e as SoccrError;
    }
    expect(error?.code).toBe('EADDRNOTAVAIL');
    const errorLines = lines.filter(([level]) => level === 'error').map(([, line]) => line);
    expect(errorLines.length).toBeGreaterThan(0);
    expect(error?.message).toContain(errorLines[errorLines.length - 1]);
    expect(lines.some(([level]) => level === 'debug')).toBe(true);

    soccr.setLogger(undefined);
    const count = lines.length;
    await expect(restoreConnection(image)).rejects.toMatchObject({ code: 'EADDRNOTAVAIL' });
    expect(lines.length).toBe(count);
  } finally {
    soccr.setLogger(undefined);
    await pair.close();
  }
});

it("NODE_DEBUG=node-criu shows libsoccr's log on stderr", () => {
  const script = `
    const net = require('node:net');
    const nodeCriu = require(${JSON.stringify(require('node:path').resolve(__dirname, '..', '..', 'dist'))});
    (async () => {
      const server = net.createServer();
      await new Promise((r) => server.listen(0, '127.0.0.1', r));
      const accepted = new Promise((r) => server.once('connection', r));
      const client = net.connect(server.address().port, '127.0.0.1');
      const socket = await accepted;
      const image = await nodeCriu.checkpointConnection(socket, { keepRunning: true, lock: 'filter' });
      await nodeCriu.restoreConnection(image).catch((e) => process.stdout.write(e.code));
      client.destroy(); socket.destroy(); server.close();
    })();`;
  const result = spawnSync(process.execPath, ['-e', script], {
    env: { ...process.env, NODE_DEBUG: 'node-criu' },
    encoding: 'utf8',
    timeout: 30000,
  });
  expect(result.stdout).toBe('EADDRNOTAVAIL');
  expect(result.stderr).toMatch(/NODE-CRIU \d+: libsoccr error: Error \(/);
  expect(result.stderr).toMatch(/NODE-CRIU \d+: libsoccr debug: /);
});

it('low-level restore of MBs of never-sent data (peer not reading) delivers every byte (libsoccr_resume)', async () => {
  const pair = await tcpPair(4);
  const a = new TrafficEndpoint({ seed: 31, total: 2_000_000, chunk: 65536 }).attach(pair.client);
  const b = new TrafficEndpoint({ seed: 32, total: 0, chunk: 1 << 20 }).attach(pair.accepted);
  const lock = await NftablesLock.create();
  let restored: net.Socket | undefined;
  try {
    await b.waitForReceived(2_000_000);
    pair.accepted.pause();
    pair.client.pause(); // a stops reading: b's data fills a's window, then b's buffers
    b.sendMore(6_000_000);
    await waitFor(
      () => pair.accepted.writableLength > 0,
      10000,
      () => 'Node write buffer still empty',
    );
    const original = b.detach() as net.Socket;
    const image = await checkpointConnection(original, { lock });
    expect(image.sendQueueUnsent).toBeGreaterThan(1_000_000);
    // Restored step by step: libsoccr itself writes the unsent part at resume (restoreConnection
    // writes it through Node instead).
    const { fd, handle } = soccr.pauseNewSocket(4);
    handle.restore(image.skData, image.local, image.remote, image.recvQueue, image.sendQueue);
    await lock.remove([{ local: image.local, remote: image.remote }]);
    handle.resume();
    restored = soccr.adoptSocket(fd);
    restored.unshift(image.pendingRead);
    b.attach(restored);
    pair.client.resume();
    await Promise.all([a.waitForReceived(6_000_000), b.waitForReceived(2_000_000)]);
    expectExactTwoWay(a.report(), b.report(), { aToB: 2_000_000, bToA: 6_000_000 });
  } finally {
    restored?.destroy();
    await lock.destroy();
    await pair.close();
  }
});
