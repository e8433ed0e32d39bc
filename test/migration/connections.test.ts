/**
 * Connections-only migration between two server processes (handOverConnections/acceptHandover),
 * with clients in another namespace streaming both ways the whole time:
 *
 *   C: clients 10.78.0.2 ── veth ── H: servers 10.78.0.1 (source and target processes)
 *
 * Every test proves each connection byte-exact in both directions (counts and SHA-256) and that no
 * RST reached a client. The control channel is mutual TLS on H's loopback.
 */
import { closeSync } from 'node:fs';

import { RstCounter } from '../fixtures/fault-helpers';
import { NetnsLab } from '../helpers/netns';
import { makeTestPki } from '../helpers/pki';
import type { TestPki } from '../helpers/pki';
import { waitUntil } from '../helpers/wait';
import {
  CLIENTS_FIXTURE,
  FixtureProcess,
  SERVER_FIXTURE,
  expectAllExact,
  seqpacketPair,
  serverAndClientNetns,
  waitForAccepted,
  waitForExactTraffic,
  waitForTrafficFlowing,
} from './connections-helpers';

const lab = new NetnsLab();
let H = '';
let C = '';
const SERVER_IP = '10.78.0.1';
const COUNT = 12;
const TOTAL = 3_000_000;
const started: FixtureProcess[] = [];
let pki: TestPki;
let clientRsts: RstCounter;

beforeAll(() => {
  pki = makeTestPki();
  ({ H, C } = serverAndClientNetns(lab, '10.78.0'));
  clientRsts = RstCounter.incoming(lab.path(C));
});

afterEach(async () => {
  await Promise.all(started.splice(0).map((p) => p.stop()));
});

afterAll(() => {
  lab.destroy();
  pki.remove();
});

/** The target's listener: mutual TLS on loopback, restoring only connections to the server's address. */
const tlsListen = () => ({
  listen: { host: '127.0.0.1', port: 0 },
  tls: pki.server,
  allow: { addresses: [SERVER_IP] },
});
const tlsTo = (port: number) => ({ host: '127.0.0.1', port, tls: pki.client });

function start(ns: string, script: string, channelFd?: number): FixtureProcess {
  const child = FixtureProcess.start(lab, ns, script, channelFd);
  started.push(child);
  return child;
}

/**
 * Resets the clients saw or sent: every RST arriving in C (counted by nftables) and C's own TCP
 * counters. (H's OutRsts would also count the TLS control channel's teardown on loopback.)
 */
function resets(): { inC: number; C: number } {
  const c = lab.tcpCounters(C);
  return { inC: clientRsts.counts().in, C: c.OutRsts + c.EstabResets };
}

/** A source server in H with COUNT streaming clients from C. */
async function sourceWithClients(
  channelFd?: number,
): Promise<{ source: FixtureProcess; clients: FixtureProcess; port: number; ports: number[] }> {
  const source = start(H, SERVER_FIXTURE, channelFd);
  const { port } = await source.request<{ port: number }>({ cmd: 'listen', host: SERVER_IP, port: 0, total: TOTAL });
  const clients = start(C, CLIENTS_FIXTURE);
  const { ports } = await clients.request<{ ports: number[] }>({
    cmd: 'connect',
    host: SERVER_IP,
    port,
    count: COUNT,
    total: TOTAL,
  });
  await waitForAccepted(source, COUNT);
  // The handover happens mid-stream.
  await waitForTrafficFlowing(source, COUNT);
  return { source, clients, port, ports };
}

interface HandoverReply {
  result?: { handedOver: number; resumed: number; lost: number; method: string };
  failed?: boolean;
  code?: string;
  resumed?: number;
  lost?: number;
}

it('hands every connection to a new process over mutual TLS (repair, nftables lock): exact both ways, no reset', async () => {
  const before = resets();
  const { source, clients } = await sourceWithClients();
  const target = start(H, SERVER_FIXTURE);
  const { listening } = await target.request<{ listening: { port: number } }>({
    cmd: 'accept',
    ...tlsListen(),
  });
  const reply = await source.request<HandoverReply>({
    cmd: 'handover',
    to: tlsTo(listening.port),
    method: 'repair',
  });
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

it('keeps serving every connection on the source when the target refuses', async () => {
  const before = resets();
  const { source, clients } = await sourceWithClients();
  const target = start(H, SERVER_FIXTURE);
  const { listening } = await target.request<{ listening: { port: number } }>({
    cmd: 'accept',
    ...tlsListen(),
    refuse: 'draining',
  });
  const reply = await source.request<HandoverReply>({
    cmd: 'handover',
    to: tlsTo(listening.port),
  });
  expect(reply).toMatchObject({ failed: true, code: 'ERR_HANDOVER_REFUSED', resumed: 0, lost: 0 });
  expect(await target.nextEvent('acceptFailed')).toMatchObject({ code: 'ERR_HANDOVER_REFUSED' });

  const { clientReports, serverReports } = await waitForExactTraffic(clients, [source], TOTAL);
  expectAllExact(clientReports, serverReports, TOTAL, COUNT);
  expect(resets()).toEqual(before);
});

describe.each([
  ['filter', 'the paused originals resume'],
  ['nftables', 'the source restores its images locally'],
])('target killed after staging, before it restores (lock %s)', (lock, how) => {
  it(`loses nothing: ${how} and the server keeps running on the source`, async () => {
    const before = resets();
    const { source, clients } = await sourceWithClients();
    const target = start(H, SERVER_FIXTURE);
    const { listening } = await target.request<{ listening: { port: number } }>({
      cmd: 'accept',
      ...tlsListen(),
    });
    // The source's moveAddress hook asks us: kill the target (SIGKILL) right then, so it dies
    // holding every staged connection and before COMMIT; moveAddressBack is answered the same way.
    const hooks: string[] = [];
    source.onEvent((e) => {
      if (e.event !== 'moveAddress' && e.event !== 'moveAddressBack') return;
      hooks.push(e.event);
      void (async () => {
        if (e.event === 'moveAddress') await target.stop();
        source.process.send({ cmd: 'addressMoved' });
      })();
    });
    const reply = await source.request<HandoverReply>({
      cmd: 'handover',
      to: tlsTo(listening.port),
      lock,
      moveAddress: true,
    });
    expect(reply).toMatchObject({ failed: true, code: 'ERR_HANDOVER_CHANNEL_CLOSED', resumed: COUNT, lost: 0 });
    expect(hooks).toEqual(['moveAddress', 'moveAddressBack']);

    const { clientReports, serverReports } = await waitForExactTraffic(clients, [source], TOTAL);
    expectAllExact(clientReports, serverReports, TOTAL, COUNT);
    expect(resets()).toEqual(before);
    // The source left no nftables table. The killed target could not delete its own gap lock
    // (SIGKILL runs no exit hook): its table is named after its pid; remove it here.
    const tables = lab.exec(H, 'nft', ['list', 'tables']).trim().split('\n').filter(Boolean);
    const targetTables = tables.filter((t) => t.startsWith(`table inet node_criu_${target.process.pid}_`));
    expect(tables.filter((t) => !targetTables.includes(t))).toEqual([]);
    for (const t of targetTables) lab.exec(H, 'nft', ['delete', ...t.split(' ')]);
  });
});

it('carries on when a client closes its connection in the middle of the handover', async () => {
  const before = resets();
  const { source, clients, ports } = await sourceWithClients();
  const target = start(H, SERVER_FIXTURE);
  const { listening } = await target.request<{ listening: { port: number } }>({
    cmd: 'accept',
    ...tlsListen(),
  });
  const handover = source.request<HandoverReply>({ cmd: 'handover', to: tlsTo(listening.port) });
  await source.nextEvent('progress');
  await clients.request({ cmd: 'end', port: ports[0] });
  const reply = await handover;
  expect(reply).toMatchObject({ result: { handedOver: expect.any(Number) } });
  expect(reply.result?.resumed).toBe(0);
  expect(reply.result?.lost).toBe(0);

  let { clientReports, serverReports } = await waitForExactTraffic(clients, [source, target], TOTAL);
  // When the closed connection had already moved all its bytes, the byte counts above are complete
  // before the FINs have crossed: wait (bounded) for both ends to see the other's FIN too.
  const bothEnded = (): boolean =>
    clientReports.find((r) => r.port === ports[0])?.ended === true && serverReports.get(ports[0])?.ended === true;
  await waitUntil(
    async () => {
      if (bothEnded()) return true;
      ({ clientReports, serverReports } = await waitForExactTraffic(clients, [source, target], TOTAL));
      return bothEnded();
    },
    { timeoutMs: 10_000, what: `both ends of connection ${ports[0]} to see the other's FIN` },
  );
  expectAllExact(clientReports, serverReports, TOTAL, COUNT);
  const closed = clientReports.find((r) => r.port === ports[0]);
  expect(closed).toMatchObject({ ended: true });
  expect(serverReports.get(ports[0])?.ended).toBe(true);
  expect(resets()).toEqual(before);
});

it('moveAddress failing: moveAddressBack runs, every original resumes, nothing lost', async () => {
  const before = resets();
  const { source, clients } = await sourceWithClients();
  const target = start(H, SERVER_FIXTURE);
  const { listening } = await target.request<{ listening: { port: number } }>({
    cmd: 'accept',
    ...tlsListen(),
  });
  const hooks: string[] = [];
  source.onEvent((e) => {
    if (e.event !== 'moveAddress' && e.event !== 'moveAddressBack') return;
    hooks.push(e.event);
    source.process.send({
      cmd: 'addressMoved',
      ...(e.event === 'moveAddress' ? { fail: 'no route to the new host' } : {}),
    });
  });
  const reply = await source.request<HandoverReply>({
    cmd: 'handover',
    to: tlsTo(listening.port),
    moveAddress: true,
  });
  expect(reply).toMatchObject({ failed: true, code: 'ERR_HANDOVER_ADDRESS', resumed: COUNT, lost: 0 });
  expect(hooks).toEqual(['moveAddress', 'moveAddressBack']);
  expect(await target.nextEvent('acceptFailed')).toMatchObject({ code: 'ERR_HANDOVER_PEER_ABORTED' });

  const { clientReports, serverReports } = await waitForExactTraffic(clients, [source], TOTAL);
  expectAllExact(clientReports, serverReports, TOTAL, COUNT);
  expect(resets()).toEqual(before);
  expect(lab.exec(H, 'nft', ['list', 'tables']).trim()).toBe('');
});
