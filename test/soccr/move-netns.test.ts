/**
 * (c) A connection moves into another network namespace together with its address, while the
 * peer (in a namespace of its own, another process) keeps streaming both ways.
 *
 *   P: peer 10.77.0.1, fd77::1 ──┐
 *   S: source 10.77.0.2, fd77::2 ├── bridge (namespace B)
 *   T: target (empty) ───────────┘
 *
 * The source socket lives in S. Checkpoint (nftables lock in S), then the address and MAC move
 * from S's interface to T's (a second lock in T covers the time between the address arriving and
 * the restored socket existing), then the restore creates the new socket in T and removes both.
 */
import type * as net from 'node:net';
import * as path from 'node:path';

import {
  NftablesLock,
  checkpointConnection,
  decodeConnectionImage,
  encodeConnectionImage,
  restoreConnection,
} from '../../lib';
import type { TrafficReport } from '../helpers/traffic';
import { TrafficEndpoint, expectExactTwoWay } from '../helpers/traffic';
import { NetnsLab } from '../helpers/netns';
import { Child, connectFromNetns, fdsInRepairMode } from '../helpers/soccr';
import { newFds, openFds } from '../helpers/fds';

const lab = new NetnsLab();
const ns: Record<'P' | 'S' | 'T' | 'B', string> = { P: '', S: '', T: '', B: '' };
let peer: Child | undefined;

beforeAll(() => {
  for (const key of ['P', 'S', 'T', 'B'] as const) ns[key] = lab.add(key.toLowerCase());
  lab.ip(ns.B, ['link', 'add', 'br0', 'type', 'bridge']);
  lab.ip(ns.B, ['link', 'set', 'br0', 'up']);
  for (const key of ['P', 'S', 'T'] as const) {
    lab.ip(ns.B, ['link', 'add', `b${key}`, 'type', 'veth', 'peer', 'name', `v${key}`, 'netns', ns[key]]);
    lab.ip(ns.B, ['link', 'set', `b${key}`, 'master', 'br0', 'up']);
  }
  lab.ip(ns.P, ['addr', 'add', '10.77.0.1/24', 'dev', 'vP']);
  lab.ip(ns.P, ['addr', 'add', 'fd77::1/64', 'dev', 'vP', 'nodad']);
  lab.ip(ns.P, ['link', 'set', 'vP', 'up']);
});

afterAll(async () => {
  await peer?.stop();
  lab.destroy();
});

function macOf(name: string, dev: string): string {
  const match = /link\/ether ([0-9a-f:]{17})/.exec(lab.ip(name, ['link', 'show', dev]));
  if (!match) throw new Error(`no MAC for ${dev}`);
  return match[1];
}

it.each([
  { family: 4 as const, peer: '10.77.0.1', moving: '10.77.0.2', prefix: 24 },
  { family: 6 as const, peer: 'fd77::1', moving: 'fd77::2', prefix: 64 },
])(
  'moves a streaming IPv$family connection and its address from namespace S to namespace T',
  async ({ family, peer: peerAddress, moving, prefix }) => {
    // S owns the moving address (and T's interface is down) at the start of each case.
    lab.ip(ns.S, ['addr', 'add', `${moving}/${prefix}`, 'dev', 'vS', ...(family === 6 ? ['nodad'] : [])]);
    lab.ip(ns.S, ['link', 'set', 'vS', 'up']);
    await peer?.stop();
    peer = new Child(lab.spawnNode(ns.P, path.join(__dirname, '..', 'fixtures', 'soccr-peer.js')));
    const fdsBefore = openFds();
    const { port } = await peer.request<{ port: number }>({
      cmd: 'listen',
      host: peerAddress,
      seedBase: 300,
      total: 30_000_000,
    });
    const lock = await NftablesLock.create({ netns: lab.path(ns.S) });
    const targetLock = await NftablesLock.create({ netns: lab.path(ns.T) });
    let restored: net.Socket | undefined;
    try {
      const original = await connectFromNetns(lab.path(ns.S), family, peerAddress, port);
      const ours = new TrafficEndpoint({ seed: 400, total: 20_000_000 }).attach(original);
      await ours.waitForReceived(3_000_000);
      const rsts = {
        P: lab.tcpCounters(ns.P).OutRsts,
        S: lab.tcpCounters(ns.S).OutRsts,
        T: lab.tcpCounters(ns.T).OutRsts,
      };

      ours.detach();
      const image = await checkpointConnection(original, { lock, netns: lab.path(ns.S) });
      expect(image.local).toEqual({ family, address: moving, port: image.local.port });

      // T drops the peer's packets from the moment the address arrives until the restore (else
      // T itself would answer them with a RST); the restore releases that lock too.
      await targetLock.add([{ local: image.local, remote: image.remote }]);
      // The address (and the MAC that the peer's neighbour entry points at) moves to T.
      const mac = macOf(ns.S, 'vS');
      lab.ip(ns.S, ['addr', 'del', `${moving}/${prefix}`, 'dev', 'vS']);
      lab.ip(ns.S, ['link', 'set', 'vS', 'down']);
      lab.ip(ns.T, ['link', 'set', 'vT', 'address', mac]);
      lab.ip(ns.T, ['addr', 'add', `${moving}/${prefix}`, 'dev', 'vT', ...(family === 6 ? ['nodad'] : [])]);
      lab.ip(ns.T, ['link', 'set', 'vT', 'up']);

      restored = await restoreConnection(decodeConnectionImage(encodeConnectionImage(image)), {
        netns: lab.path(ns.T),
        locks: [targetLock],
      });
      ours.attach(restored);
      await ours.waitForReceived(30_000_000, 60000);
      const { reports } = await peer.request<{ reports: TrafficReport[] }>({
        cmd: 'wait',
        receivedEach: 20_000_000,
        flushed: true,
      });
      expectExactTwoWay(ours.report(), reports[0], { aToB: 20_000_000, bToA: 30_000_000 });
      expect(lab.tcpCounters(ns.P).OutRsts - rsts.P).toBe(0);
      expect(lab.tcpCounters(ns.S).OutRsts - rsts.S).toBe(0);
      expect(lab.tcpCounters(ns.T).OutRsts - rsts.T).toBe(0);
      // The restored socket lives in T: S has no TCP socket left.
      expect(lab.exec(ns.S, 'ss', ['-Htan']).trim()).toBe('');
      expect(lab.exec(ns.T, 'ss', ['-Htn', 'state', 'established']).trim()).toContain(
        family === 4 ? `${moving}:` : `[${moving}]:`,
      );
    } finally {
      restored?.destroy();
      await lock.destroy();
      await targetLock.destroy();
      // Hand the address back to S for the next case.
      lab.ip(ns.T, ['link', 'set', 'vT', 'down']);
      lab.ip(ns.T, ['addr', 'flush', 'dev', 'vT']);
      lab.ip(ns.S, ['addr', 'flush', 'dev', 'vS']);
    }
    expect(fdsInRepairMode()).toEqual([]);
    expect(newFds(fdsBefore)).toEqual([]);
  },
);
