/**
 * The peer closes (FIN) or resets (RST, SO_LINGER 0) while its connection is being checkpointed,
 * at each point of checkpointConnection and of the low-level calls, timed by the real lock rather
 * than test seams:
 *   'lock-wait'  the packet arrives while checkpointConnection creates its nftables lock table
 *                (the default lock's first use in a process spawns nft; Node still reads the
 *                socket then; adding the tuples is one synchronous netlink call, without a window);
 *   'locked'     it is sent after the 4-tuple is locked, before the pause (the lock drops it, the
 *                peer retransmits a FIN, a RST is never repeated);
 *   'paused'     it arrives after soccr.pause() (repair mode, no lock), before the save;
 *   'gap'        it is sent after the checkpoint closed the original, before the restore.
 * Each ends in a typed error or a valid image whose restored socket sees the FIN (EOF) or the
 * reset (ECONNRESET) the normal way; every byte sent before it is accounted for both ways (counts
 * and SHA-256), our side never sends a RST, nothing stays in repair mode or in the lock, no fd
 * leaks.
 */
import type * as net from 'node:net';

import {
  CONNECTION_IMAGE_VERSION,
  NftablesLock,
  SoccrError,
  checkpointConnection,
  checkpointConnections,
  restoreConnection,
  soccr,
  tcpStateName,
} from '../../lib';
import type { ConnectionImage } from '../../lib';
import { binding } from '../../lib/native';
import { processLock } from '../../lib/soccr/nft-lock';
import { RstCounter, lockElements } from '../fixtures/fault-helpers';
import { fdsInRepairMode, tcpPair } from '../helpers/soccr';
import type { TcpPair } from '../helpers/soccr';
import { TrafficEndpoint, waitFor } from '../helpers/traffic';
import type { TrafficReport } from '../helpers/traffic';
import { type FdSnapshot, newFds, openFds } from '../helpers/fds';

const BEFORE = { peerToUs: 200_000, usToPeer: 300_000 };
/** What we still send after a FIN (the peer's direction is closed, ours is not). */
const AFTER_FIN = 100_000;

let lock: NftablesLock;
beforeAll(async () => {
  lock = await NftablesLock.create();
});
afterAll(async () => {
  await lock.destroy();
  await NftablesLock.destroyProcessLocks();
});

interface Setup {
  pair: TcpPair;
  /** The peer (pair.client). */
  peer: TrafficEndpoint;
  /** Our side, checkpointed (pair.accepted, then its restored socket). */
  ours: TrafficEndpoint;
  rsts: RstCounter;
  fds: FdSnapshot;
}

async function connected(): Promise<Setup> {
  const fds = openFds();
  const pair = await tcpPair(4, { allowHalfOpen: true });
  const peer = new TrafficEndpoint({ seed: 0x5a1, total: 0 }).attach(pair.client);
  const ours = new TrafficEndpoint({ seed: 0x5a2, total: 0 }).attach(pair.accepted);
  peer.sendMore(BEFORE.peerToUs);
  ours.sendMore(BEFORE.usToPeer);
  await Promise.all([ours.waitForReceived(BEFORE.peerToUs), peer.waitForReceived(BEFORE.usToPeer)]);
  const rsts = RstCounter.create({ ours: pair.accepted.localPort as number, peer: pair.client.localPort as number });
  return { pair, peer, ours, rsts, fds };
}

function tcpState(socket: net.Socket): string {
  return tcpStateName(binding().socketOps.socketInfo(soccr.fdOfSocket(socket)).tcpState) ?? '?';
}

/** The peer closes or resets now; resolves once its FIN or RST has left. */
async function peerActs(s: Setup, kind: 'FIN' | 'RST'): Promise<void> {
  const socket = s.pair.client;
  if (kind === 'RST') {
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.resetAndDestroy();
    await closed;
  } else {
    socket.end();
    await waitFor(
      () => ['FIN_WAIT1', 'FIN_WAIT2'].includes(tcpState(socket)),
      5000,
      () => tcpState(socket),
    );
  }
}

/** Both directions carried exactly what was sent (counts and SHA-256). */
function expectExactBothWays(
  peer: TrafficReport,
  ours: TrafficReport,
  expected: { peerToUs: number; usToPeer: number },
): void {
  expect(peer.sent.bytes).toBe(expected.peerToUs);
  expect(ours.sent.bytes).toBe(expected.usToPeer);
  expect(ours.received).toEqual(peer.sent);
  expect(peer.received).toEqual(ours.sent);
}

/** After a FIN reached our (restored or resumed) side: we send more, then close; all exact. */
async function finishAfterFin(s: Setup, socket: net.Socket): Promise<void> {
  await waitFor(
    () => s.ours.peerEnded,
    20000,
    () => 'our side has not seen the FIN',
  );
  s.ours.sendMore(AFTER_FIN);
  await s.peer.waitForReceived(BEFORE.usToPeer + AFTER_FIN);
  socket.end();
  await waitFor(
    () => s.peer.peerEnded,
    20000,
    () => 'the peer has not seen our FIN',
  );
  const peer = s.peer.report();
  const ours = s.ours.report();
  expectExactBothWays(peer, ours, { peerToUs: BEFORE.peerToUs, usToPeer: BEFORE.usToPeer + AFTER_FIN });
  expect(peer.errors).toEqual([]);
  expect(ours.errors).toEqual([]);
  expect(s.rsts.counts()).toEqual({ ours: 0, peer: 0 });
}

/** After the peer's RST: our side saw ECONNRESET once, nothing else; all bytes before it exact. */
async function finishAfterRst(s: Setup): Promise<void> {
  await waitFor(
    () => s.ours.resets > 0,
    20000,
    () => 'our side has not seen the reset',
  );
  const peer = s.peer.report();
  const ours = s.ours.report();
  expectExactBothWays(peer, ours, BEFORE);
  expect(ours.errors).toEqual(['ECONNRESET']);
  expect(peer.errors).toEqual([]);
  const rsts = s.rsts.counts();
  expect(rsts.ours).toBe(0);
  expect(rsts.peer).toBeGreaterThanOrEqual(1);
}

async function cleanup(s: Setup, restored?: net.Socket, checkFds = true, processLocked = false): Promise<void> {
  restored?.destroy();
  await s.pair.close();
  s.rsts.destroy();
  await new Promise((resolve) => setImmediate(resolve));
  expect(lockElements(lock)).toEqual([]);
  if (processLocked) expect(lockElements(await processLock())).toEqual([]);
  expect(fdsInRepairMode()).toEqual([]);
  if (checkFds) expect(newFds(s.fds)).toEqual([]);
}

const tupleOf = (socket: net.Socket) => ({
  local: { family: 4 as const, address: socket.localAddress as string, port: socket.localPort as number },
  remote: { family: 4 as const, address: socket.remoteAddress as string, port: socket.remotePort as number },
});

/**
 * The next default-lock checkpoint creates a new process lock table: nft runs (~10 ms) while Node
 * still reads the socket, the window 'lock-wait' aims at.
 */
async function freshProcessLock(): Promise<void> {
  await NftablesLock.destroyProcessLocks();
}

describe("'lock-wait': the peer's packet arrives while checkpointConnection creates its lock table", () => {
  it('FIN: a valid CLOSE_WAIT image; the restored socket sees EOF, we send on and close, all exact', async () => {
    const s = await connected();
    let restored: net.Socket | undefined;
    try {
      const original = s.ours.detach() as net.Socket;
      await freshProcessLock();
      const checkpoint = checkpointConnection(original, { lock: 'nftables' });
      await peerActs(s, 'FIN');
      const image = await checkpoint;
      expect(image.skData.stateName).toBe('CLOSE_WAIT');
      expect(original.destroyed).toBe(true);
      restored = await restoreConnection(image, { allowHalfOpen: true });
      expect(tcpState(restored)).toBe('CLOSE_WAIT');
      s.ours.attach(restored);
      await finishAfterFin(s, restored);
    } finally {
      await cleanup(s, restored, true, true);
    }
  });

  it('RST: typed ERR_SOCKET_DESTROYED (Node closed the fd meanwhile), the 4-tuple unlocked, every byte before the reset exact', async () => {
    const s = await connected();
    try {
      const original = s.ours.detach() as net.Socket;
      await freshProcessLock();
      const checkpoint = checkpointConnection(original, { lock: 'nftables' });
      await peerActs(s, 'RST');
      const error = await checkpoint.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(SoccrError);
      expect(error).toMatchObject({ code: 'ERR_SOCKET_DESTROYED' });
      expect(original.destroyed).toBe(true);
      await finishAfterRst(s);
    } finally {
      await cleanup(s, undefined, true, true);
    }
  });
});

describe("'locked': the peer's packet is sent after the 4-tuple is locked, before the pause", () => {
  it('FIN: dropped, the image is ESTABLISHED; after the restore the retransmitted FIN arrives, all exact', async () => {
    const s = await connected();
    let restored: net.Socket | undefined;
    try {
      const original = s.ours.detach() as net.Socket;
      await lock.add([tupleOf(original)]);
      await peerActs(s, 'FIN');
      expect(tcpState(s.pair.client)).toBe('FIN_WAIT1'); // our side never acknowledged it
      const image = await checkpointConnection(original, { lock });
      expect(image.skData.stateName).toBe('ESTABLISHED');
      restored = await restoreConnection(image, { allowHalfOpen: true });
      s.ours.attach(restored);
      await finishAfterFin(s, restored);
    } finally {
      await cleanup(s, restored);
    }
  });

  it('RST: dropped (never repeated), the image is ESTABLISHED; the restored socket meets the reset at once (ECONNRESET)', async () => {
    const s = await connected();
    let restored: net.Socket | undefined;
    try {
      const original = s.ours.detach() as net.Socket;
      await lock.add([tupleOf(original)]);
      await peerActs(s, 'RST');
      const image = await checkpointConnection(original, { lock });
      expect(image.skData.stateName).toBe('ESTABLISHED');
      expect(image.recvQueue.length + image.pendingRead.length).toBe(0); // everything was read before
      restored = await restoreConnection(image);
      s.ours.attach(restored);
      // Repair off sends a window probe; the peer's kernel (no socket any more) answers with RST.
      await finishAfterRst(s);
      await waitFor(
        () => (restored as net.Socket).destroyed,
        5000,
        () => 'restored socket still open',
      );
    } finally {
      await cleanup(s, restored);
    }
  });
});

describe("'paused': the peer's packet arrives after soccr.pause() (repair mode, no lock), before the save", () => {
  it('FIN: the save sees CLOSE_WAIT; resumed, the original reads EOF and sends on, all exact', async () => {
    const s = await connected();
    try {
      const original = s.ours.detach() as net.Socket;
      const handle = soccr.pause(original);
      await peerActs(s, 'FIN');
      const skData = handle.getSkData();
      expect(skData.stateName).toBe('CLOSE_WAIT');
      expect(skData.inqLen).toBe(0);
      handle.resume();
      s.ours.attach(original);
      await finishAfterFin(s, original);
    } finally {
      await cleanup(s);
    }
  });

  it('RST: the save fails with a typed ENOTCONN; resumed, the original reads EOF; nothing left in repair mode', async () => {
    const s = await connected();
    try {
      const original = s.ours.detach() as net.Socket;
      const handle = soccr.pause(original);
      await peerActs(s, 'RST');
      let thrown: unknown;
      try {
        handle.getSkData();
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(SoccrError);
      expect(thrown).toMatchObject({ code: 'ENOTCONN' });
      handle.resume();
      expect(fdsInRepairMode()).toEqual([]);
      // The kernel took the reset in repair mode: the socket is CLOSE, and reading it gives EOF
      // (not ECONNRESET); the application learns the connection is over either way.
      const ended = new Promise((resolve) => original.once('end', resolve));
      original.resume();
      await ended;
      original.destroy();
      const peer = s.peer.report();
      const ours = s.ours.report();
      expectExactBothWays(peer, ours, BEFORE);
      expect(s.rsts.counts().ours).toBe(0);
    } finally {
      await cleanup(s);
    }
  });
});

describe("'saved': the peer's packet arrives after the low-level save, before the original is closed (4-tuple locked by the caller)", () => {
  it.each(['FIN', 'RST'] as const)(
    '%s: dropped; the original closed silently, the image restored, the FIN or reset arrives the normal way',
    async (kind) => {
      const s = await connected();
      let restored: net.Socket | undefined;
      try {
        const original = s.ours.detach() as net.Socket;
        expect(original.readableLength).toBe(0); // nothing read but unconsumed: no pendingRead
        await lock.add([tupleOf(original)]);
        const handle = soccr.pause(original);
        const skData = handle.getSkData();
        const image: ConnectionImage = {
          version: CONNECTION_IMAGE_VERSION,
          family: 4,
          local: handle.getLocalAddress(),
          remote: handle.getRemoteAddress(),
          skData,
          recvQueue: handle.getQueueBytes('recv'),
          sendQueue: handle.getQueueBytes('send'),
          sendQueueUnsent: skData.unsqLen,
          pendingRead: Buffer.alloc(0),
          lock: lock.ref,
        };
        await peerActs(s, kind);
        handle.release();
        original.destroy(); // repair mode on: the kernel drops it without FIN or RST
        restored = await restoreConnection(image, { allowHalfOpen: true });
        s.ours.attach(restored);
        if (kind === 'FIN') await finishAfterFin(s, restored);
        else await finishAfterRst(s);
      } finally {
        await cleanup(s, restored);
      }
    },
  );
});

describe("'gap': the peer's packet is sent after the checkpoint closed the original, before the restore", () => {
  it('FIN: dropped by the lock until the restore, then retransmitted: EOF, all exact', async () => {
    const s = await connected();
    let restored: net.Socket | undefined;
    try {
      const original = s.ours.detach() as net.Socket;
      const image = await checkpointConnection(original, { lock });
      expect(image.skData.stateName).toBe('ESTABLISHED');
      await peerActs(s, 'FIN');
      restored = await restoreConnection(image, { allowHalfOpen: true });
      s.ours.attach(restored);
      await finishAfterFin(s, restored);
    } finally {
      await cleanup(s, restored);
    }
  });

  it('RST: the restore succeeds, then the restored socket meets the reset the normal way (ECONNRESET)', async () => {
    const s = await connected();
    let restored: net.Socket | undefined;
    try {
      const original = s.ours.detach() as net.Socket;
      const image = await checkpointConnection(original, { lock });
      await peerActs(s, 'RST');
      restored = await restoreConnection(image);
      s.ours.attach(restored);
      await finishAfterRst(s);
    } finally {
      await cleanup(s, restored);
    }
  });
});

describe('checkpointConnections: one peer of a batch resets while the lock table is created', () => {
  it('the batch fails with ERR_SOCKET_DESTROYED before any pause; the other connections run on, exact both ways', async () => {
    const setups = [await connected(), await connected(), await connected()];
    const fds = setups[0].fds;
    try {
      const originals = setups.map((s) => s.ours.detach() as net.Socket);
      await freshProcessLock();
      const checkpoint = checkpointConnections(originals, { lock: 'nftables' });
      await peerActs(setups[1], 'RST');
      await expect(checkpoint).rejects.toMatchObject({ code: 'ERR_SOCKET_DESTROYED' });
      expect(lockElements(await processLock())).toEqual([]);
      expect(fdsInRepairMode()).toEqual([]);
      await finishAfterRst(setups[1]);
      for (const i of [0, 2]) {
        const s = setups[i];
        s.ours.attach(originals[i]);
        s.peer.sendMore(50_000);
        s.ours.sendMore(50_000);
        await Promise.all([
          s.ours.waitForReceived(BEFORE.peerToUs + 50_000),
          s.peer.waitForReceived(BEFORE.usToPeer + 50_000),
        ]);
        const peer = s.peer.report();
        const ours = s.ours.report();
        expectExactBothWays(peer, ours, { peerToUs: BEFORE.peerToUs + 50_000, usToPeer: BEFORE.usToPeer + 50_000 });
        expect([...peer.errors, ...ours.errors]).toEqual([]);
        expect(s.rsts.counts()).toEqual({ ours: 0, peer: 0 });
      }
    } finally {
      for (const s of setups) await cleanup(s, undefined, false);
    }
    expect(newFds(fds)).toEqual([]);
  });
});
