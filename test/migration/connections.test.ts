/**
 * Connections-only migration between two server processes (handOverConnections/acceptHandover),
 * with clients in another namespace streaming both ways the whole time:
 *
 *   C: clients 10.78.0.2 ── veth ── H: servers 10.78.0.1 (source and target processes)
 *
 * Every test proves each connection byte-exact in both directions (counts and SHA-256), no reset
 * seen by any client, and no RST sent from either namespace.
 */
import { closeSync } from 'node:fs';

import { NetnsLab } from '../helpers/netns';
import { CLIENTS_FIXTURE, FixtureProcess, SERVER_FIXTURE, expectAllExact, seqpacketPair, waitForExactTraffic } from './connections-helpers';

const lab = new NetnsLab();
let H = '';
let C = '';
const SERVER_IP = '10.78.0.1';
const COUNT = 12;
const TOTAL = 3_000_000;
const started: FixtureProcess[] = [];

beforeAll(() => {
  H = lab.add('h');
  C = lab.add('c');
  lab.ip(H, ['link', 'add', 'vh', 'type', 'veth', 'peer', 'name', 'vc', 'netns', C]);
  lab.ip(H, ['addr', 'add', `${SERVER_IP}/24`, 'dev', 'vh']);
  lab.ip(H, ['link', 'set', 'vh', 'up']);
  lab.ip(C, ['addr', 'add', '10.78.0.2/24', 'dev', 'vc']);
  lab.ip(C, ['link', 'set', 'vc', 'up']);
});

afterEach(async () => {
  await Promise.all(started.splice(0).map((p) => p.stop()));
});

afterAll(() => {
  lab.destroy();
});

function start(ns: string, script: string, channelFd?: number): FixtureProcess {
  const child = FixtureProcess.start(lab, ns, script, channelFd);
  started.push(child);
  return child;
}

function resets(): { H: number; C: number } {
  const h = lab.tcpCounters(H);
  const c = lab.tcpCounters(C);
  return { H: h.OutRsts, C: c.OutRsts + c.EstabResets };
}

/** A source server in H with COUNT streaming clients from C. */
async function sourceWithClients(channelFd?: number): Promise<{ source: FixtureProcess; clients: FixtureProcess; port: number; ports: number[] }> {
  const source = start(H, SERVER_FIXTURE, channelFd);
  const { port } = await source.request<{ port: number }>({ cmd: 'listen', host: SERVER_IP, port: 0, total: TOTAL });
  const clients = start(C, CLIENTS_FIXTURE);
  const { ports } = await clients.request<{ ports: number[] }>({ cmd: 'connect', host: SERVER_IP, port, count: COUNT, total: TOTAL });
  // Let the traffic get going, so the handover happens mid-stream.
  await new Promise((resolve) => setTimeout(resolve, 300));
  return { source, clients, port, ports };
}

interface HandoverReply {
  result?: { handedOver: number; resumed: number; lost: number; method: string };
  failed?: boolean;
  code?: string;
  resumed?: number;
  lost?: number;
}

it('hands every connection to a new process over TCP (repair, nftables lock): exact both ways, no reset', async () => {
  const before = resets();
  const { source, clients } = await sourceWithClients();
  const target = start(H, SERVER_FIXTURE);
  const { listening } = await target.request<{ listening: { port: number } }>({ cmd: 'accept', listen: { host: '127.0.0.1', port: 0 } });
  const reply = await source.request<HandoverReply>({ cmd: 'handover', to: { host: '127.0.0.1', port: listening.port }, method: 'repair' });
  expect(reply.result).toMatchObject({ method: 'repair', handedOver: COUNT, resumed: 0, lost: 0 });
  expect((await target.nextEvent('accepted')).result).toMatchObject({ accepted: COUNT, failed: 0 });
  expect(await source.reports()).toEqual([]);

  const { clientReports, serverReports } = await waitForExactTraffic(clients, [target], TOTAL);
  expectAllExact(clientReports, serverReports, TOTAL, COUNT);
  expect(resets()).toEqual(before);
  // The source's nftables table is gone with the handover.
  expect(lab.exec(H, 'nft', ['list', 'tables']).trim()).toBe('');
});

it('hands the live fds to a new process over SEQPACKET (SCM_RIGHTS): exact both ways, no reset', async () => {
  const before = resets();
  const [a, b] = seqpacketPair();
  let source: FixtureProcess;
  let clients: FixtureProcess;
  let target: FixtureProcess;
  try {
    ({ source, clients } = await sourceWithClients(a));
    target = start(H, SERVER_FIXTURE, b);
  } finally {
    closeSync(a);
    closeSync(b);
  }
  await target.request({ cmd: 'accept', channelFd: 4 });
  const reply = await source.request<HandoverReply>({ cmd: 'handover', channelFd: 4, method: 'fd' });
  expect(reply.result).toMatchObject({ method: 'fd', handedOver: COUNT, resumed: 0, lost: 0 });
  expect((await target.nextEvent('accepted')).result).toMatchObject({ method: 'fd', accepted: COUNT });

  const { clientReports, serverReports } = await waitForExactTraffic(clients, [target], TOTAL);
  expectAllExact(clientReports, serverReports, TOTAL, COUNT);
  expect(resets()).toEqual(before);
});
