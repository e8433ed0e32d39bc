/**
 * Half-closed connections move too: CLOSE_WAIT (the peer's FIN received), FIN_WAIT2 (our FIN
 * sent and acknowledged), FIN_WAIT1 (our FIN not acknowledged yet: the peer's ACKs are held back
 * with the drop filter). Data still flowing in the open direction arrives exactly, and each side
 * sees exactly one end-of-stream. (LAST_ACK and CLOSING cannot be reached through a net.Socket:
 * Node destroys the socket, closing its fd, once both directions have ended.)
 */
import type * as net from 'node:net';

import { NftablesLock, checkpointConnection, restoreConnection, soccr, tcpStateName } from '../../lib';
import { binding } from '../../lib/native';
import type { TcpStateName } from '../../lib';
import { TrafficEndpoint, expectExactTwoWay, waitFor } from '../helpers/traffic';
import { fdsInRepairMode, tcpPair } from '../helpers/soccr';

let lock: NftablesLock;
beforeAll(async () => {
  lock = await NftablesLock.create();
});
afterAll(async () => {
  await lock.destroy();
});

interface Case {
  state: TcpStateName;
  /** a = client (peer), b = accepted (moves). Brings b into `state`; returns the byte totals. */
  setup(pair: { client: net.Socket; accepted: net.Socket }, a: TrafficEndpoint, b: TrafficEndpoint): Promise<void>;
  /** After the restore: what finishes the exchange. */
  finish(pair: { client: net.Socket }, a: TrafficEndpoint, b: TrafficEndpoint, restored: net.Socket): Promise<void>;
  aToB: number;
  bToA: number;
}

const endWhenSent = async (e: TrafficEndpoint, socket: net.Socket) => {
  await e.waitForSent();
  socket.end();
};

const cases: Case[] = [
  {
    state: 'CLOSE_WAIT',
    aToB: 50_000,
    bToA: 300_000,
    async setup(pair, a, b) {
      b.sendMore(300_000);
      await a.waitForReceived(300_000);
      b.detach(); // b stops reading: a's bytes and FIN wait in b's kernel queue
      a.sendMore(50_000); // fits b's receive window, so the FIN follows it in
      await endWhenSent(a, pair.client);
    },
    async finish(_pair, a, b, restored) {
      await waitFor(
        () => b.peerEnded,
        20000,
        () => 'b has not seen the FIN',
      );
      restored.end();
      await waitFor(
        () => a.peerEnded,
        20000,
        () => 'a has not seen the FIN',
      );
    },
  },
  {
    state: 'FIN_WAIT2',
    aToB: 2_000_000,
    bToA: 200_000,
    async setup(pair, a, b) {
      b.sendMore(200_000);
      await endWhenSent(b, pair.accepted);
      await waitFor(
        () => stateOf(pair.accepted) === 'FIN_WAIT2',
        10000,
        () => stateOf(pair.accepted),
      );
      a.sendMore(2_000_000);
      await b.waitForReceived(500_000);
    },
    async finish(pair, a, b) {
      await b.waitForReceived(2_000_000);
      await endWhenSent(a, pair.client);
      await waitFor(
        () => b.peerEnded && a.peerEnded,
        20000,
        () => `b ended ${b.peerEnded}, a ended ${a.peerEnded}`,
      );
    },
  },
  {
    state: 'FIN_WAIT1',
    aToB: 400_000,
    bToA: 100_000,
    async setup(pair, a, b) {
      b.sendMore(100_000);
      await a.waitForReceived(100_000);
      soccr.attachDropFilter(pair.accepted); // a's ACK of b's FIN never reaches b
      await endWhenSent(b, pair.accepted);
      await waitFor(
        () => a.peerEnded,
        10000,
        () => 'a has not seen the FIN',
      );
      a.sendMore(400_000); // dropped at b for now; retransmitted after the restore
    },
    async finish(pair, a, b) {
      await b.waitForReceived(400_000);
      await endWhenSent(a, pair.client);
      await waitFor(
        () => b.peerEnded,
        20000,
        () => 'b has not seen the FIN',
      );
    },
  },
];

/** The kernel's TCP state of the socket, by name. */
function stateOf(socket: net.Socket): string {
  if (socket.destroyed) return 'destroyed';
  return tcpStateName(binding().socketOps.socketInfo(soccr.fdOfSocket(socket)).tcpState) ?? 'unknown';
}

it.each(cases)('moves a connection in $state', async (c) => {
  const pair = await tcpPair(4, { allowHalfOpen: true });
  const a = new TrafficEndpoint({ seed: 71, total: 0 }).attach(pair.client);
  const b = new TrafficEndpoint({ seed: 72, total: 0 }).attach(pair.accepted);
  let restored: net.Socket | undefined;
  try {
    await c.setup({ client: pair.client, accepted: pair.accepted }, a, b);
    await waitFor(
      () => stateOf(pair.accepted) === c.state,
      10000,
      () => `state ${stateOf(pair.accepted)}, want ${c.state}`,
    );
    const original = b.detach() ?? pair.accepted;
    const image = await checkpointConnection(original, { lock });
    expect(image.skData.stateName).toBe(c.state);
    restored = await restoreConnection(image, { allowHalfOpen: true });
    b.attach(restored);
    await c.finish({ client: pair.client }, a, b, restored);
    expectExactTwoWay(a.report(), b.report(), { aToB: c.aToB, bToA: c.bToA });
  } finally {
    restored?.destroy();
    await pair.close();
  }
  expect(fdsInRepairMode()).toEqual([]);
});
