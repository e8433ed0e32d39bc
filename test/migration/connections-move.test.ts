/**
 * The connections route between two hosts: the source server on A hands its connections to a
 * target server on B over a SEQPACKET channel while the service address moves from A to B
 * (originals paused behind a drop filter on A; B drops the staged 4-tuples with nftables until
 * each is restored). Clients in C stream both ways throughout.
 *
 *   A 10.79.0.2 ─┐
 *   B 10.79.0.3 ─┼─ br0 (in BR)      service address 10.79.0.100/32 moves A -> B
 *   C 10.79.0.9 ─┘
 */
import * as fs from 'node:fs';
import { closeSync } from 'node:fs';

import { soccr } from '../../lib';
import { waitUntil } from '../helpers/wait';

import { NetnsLab } from '../helpers/netns';
import {
  CLIENTS_FIXTURE,
  FixtureProcess,
  SERVER_FIXTURE,
  expectAllExact,
  seqpacketPair,
  waitForAccepted,
  waitForExactTraffic,
  waitForTrafficFlowing,
} from './connections-helpers';

const lab = new NetnsLab();
const ns = { A: '', B: '', C: '', BR: '' };
const VIP = '10.79.0.100';
const COUNT = 10;
const TOTAL = 3_000_000;
const started: FixtureProcess[] = [];
let vipOn: 'A' | 'B' = 'A';

function moveVip(to: 'A' | 'B'): void {
  const from = to === 'A' ? 'B' : 'A';
  lab.ip(ns[from], ['addr', 'del', `${VIP}/32`, 'dev', `v${from.toLowerCase()}`]);
  lab.ip(ns[to], ['addr', 'add', `${VIP}/32`, 'dev', `v${to.toLowerCase()}`]);
  // Stands in for the gratuitous ARP the new owner would send.
  lab.ip(ns.C, ['neigh', 'flush', 'to', `${VIP}/32`]);
  vipOn = to;
}

beforeAll(() => {
  ns.BR = lab.add('br');
  lab.ip(ns.BR, ['link', 'add', 'br0', 'type', 'bridge']);
  lab.ip(ns.BR, ['link', 'set', 'br0', 'up']);
  const hosts = [
    ['A', '10.79.0.2'],
    ['B', '10.79.0.3'],
    ['C', '10.79.0.9'],
  ] as const;
  for (const [key, ip] of hosts) {
    ns[key] = lab.add(key.toLowerCase());
    const dev = `v${key.toLowerCase()}`;
    lab.ip(ns.BR, ['link', 'add', `p${key.toLowerCase()}`, 'type', 'veth', 'peer', 'name', dev, 'netns', ns[key]]);
    lab.ip(ns.BR, ['link', 'set', `p${key.toLowerCase()}`, 'master', 'br0', 'up']);
    lab.ip(ns[key], ['addr', 'add', `${ip}/24`, 'dev', dev]);
    lab.ip(ns[key], ['link', 'set', dev, 'up']);
  }
  lab.ip(ns.A, ['addr', 'add', `${VIP}/32`, 'dev', 'va']);
});

afterEach(async () => {
  await Promise.all(started.splice(0).map((p) => p.stop()));
  if (vipOn !== 'A') moveVip('A');
});

afterAll(() => lab.destroy());

function start(key: 'A' | 'B' | 'C', script: string, channelFd?: number): FixtureProcess {
  const child = FixtureProcess.start(lab, ns[key], script, channelFd);
  started.push(child);
  return child;
}

function resets(): Record<string, number> {
  return {
    A: lab.tcpCounters(ns.A).OutRsts,
    B: lab.tcpCounters(ns.B).OutRsts,
    C: lab.tcpCounters(ns.C).OutRsts + lab.tcpCounters(ns.C).EstabResets,
  };
}

async function setup(): Promise<{ source: FixtureProcess; target: FixtureProcess; clients: FixtureProcess }> {
  const [a, b] = seqpacketPair();
  let source: FixtureProcess;
  let target: FixtureProcess;
  try {
    source = start('A', SERVER_FIXTURE, a);
    target = start('B', SERVER_FIXTURE, b);
  } finally {
    closeSync(a);
    closeSync(b);
  }
  const { port } = await source.request<{ port: number }>({ cmd: 'listen', host: VIP, port: 0, total: TOTAL });
  const clients = start('C', CLIENTS_FIXTURE);
  await clients.request({ cmd: 'connect', host: VIP, port, count: COUNT, total: TOTAL });
  await waitForAccepted(source, COUNT);
  await target.request({ cmd: 'accept', channelFd: 4 });
  await waitForTrafficFlowing(source, COUNT);
  return { source, target, clients };
}

it('moves every connection and the address from A to B: exact both ways, no RST anywhere', async () => {
  const before = resets();
  const { source, target, clients } = await setup();
  source.onEvent((e) => {
    if (e.event === 'moveAddress') {
      moveVip('B');
      source.process.send({ cmd: 'addressMoved' });
    }
  });
  const reply = await source.request<{ result?: { handedOver: number; resumed: number; lost: number } }>({
    cmd: 'handover',
    channelFd: 4,
    method: 'repair',
    moveAddress: true,
  });
  expect(reply.result).toMatchObject({ handedOver: COUNT, resumed: 0, lost: 0 });
  expect((await target.nextEvent('accepted')).result).toMatchObject({ accepted: COUNT, failed: 0 });
  expect(vipOn).toBe('B');

  const { clientReports, serverReports } = await waitForExactTraffic(clients, [target], TOTAL);
  expectAllExact(clientReports, serverReports, TOTAL, COUNT);
  expect(resets()).toEqual(before);
  // The connections live in B now; A has none left, and neither side left a lock table.
  expect(lab.exec(ns.A, 'ss', ['-Htn', 'state', 'established']).trim()).toBe('');
  expect(lab.exec(ns.A, 'nft', ['list', 'tables']).trim()).toBe('');
  expect(lab.exec(ns.B, 'nft', ['list', 'tables']).trim()).toBe('');
});

it('target killed after the address moved: the address moves back and the originals resume on A, nothing lost', async () => {
  const before = resets();
  const { source, target, clients } = await setup();
  source.onEvent((e) => {
    void (async () => {
      if (e.event === 'moveAddress') {
        moveVip('B');
        await target.stop();
      } else if (e.event === 'moveAddressBack') {
        moveVip('A');
      } else {
        return;
      }
      source.process.send({ cmd: 'addressMoved' });
    })();
  });
  const reply = await source.request<{ failed?: boolean; code?: string; resumed?: number; lost?: number }>({
    cmd: 'handover',
    channelFd: 4,
    method: 'repair',
    moveAddress: true,
  });
  expect(reply).toMatchObject({ failed: true, code: 'ERR_HANDOVER_CHANNEL_CLOSED', resumed: COUNT, lost: 0 });
  expect(vipOn).toBe('A');

  const { clientReports, serverReports } = await waitForExactTraffic(clients, [source], TOTAL);
  expectAllExact(clientReports, serverReports, TOTAL, COUNT);
  expect(resets()).toEqual(before);
  expect(lab.exec(ns.A, 'nft', ['list', 'tables']).trim()).toBe('');
  // The killed target's gap lock (its table in B, named after its pid) could not be deleted by
  // it; a sweep in B deletes it.
  const pid = target.process.pid as number;
  const leftInB = lab.exec(ns.B, 'nft', ['list', 'tables']).trim().split('\n').filter(Boolean);
  expect(
    leftInB.filter((t) => !t.startsWith(`table inet node_criu_${pid}_`) && !/^table ip6? node_criu_hold_/.test(t)),
  ).toEqual([]);
  await waitUntil(() => !fs.existsSync(`/proc/${pid}`), { what: 'the killed target to be reaped' });
  await soccr.sweepStaleLocks({ netns: `/run/netns/${ns.B}` });
  expect(lab.exec(ns.B, 'nft', ['list', 'tables']).trim()).toBe('');
});
