/**
 * handOverServer/acceptServerHandover with a node:http server under load from clients nobody
 * here wrote (autocannon, undici), handed to a successor process over a SEQPACKET channel:
 *
 *   C: clients 10.83.0.2 ── veth ── H: servers 10.83.0.1 (source and successor processes)
 *
 * Every response is checked by the client (test/fixtures/http-load.js): status, body, and per
 * connection a request counter kept by the server that continues on the successor with no gap
 * or repeat (nothing lost, nothing answered twice, no reconnect). No RST reaches a client while the
 * load runs, the
 * first server ends with no connection and no listener, and no nftables table stays behind.
 */
import { closeSync } from 'node:fs';

import { RstCounter } from '../fixtures/fault-helpers';
import { NetnsLab } from '../helpers/netns';
import { waitUntil } from '../helpers/wait';
import { FixtureProcess, seqpacketPair, serverAndClientNetns } from './connections-helpers';
import { HTTP_LOAD, HTTP_SERVER, finishLoad, responsesFrom, type Stats } from './server-helpers';

const lab = new NetnsLab();
let H = '';
let C = '';
const SERVER_IP = '10.83.0.1';
const started: FixtureProcess[] = [];
let clientRsts: RstCounter;

beforeAll(() => {
  ({ H, C } = serverAndClientNetns(lab, '10.83.0'));
  clientRsts = RstCounter.incoming(lab.path(C));
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

async function handOverUnderLoad(
  load: { tool: 'autocannon' | 'undici'; connections: number; pipelining: number },
  method: 'fd' | 'repair',
  slowMs = 20,
): Promise<void> {
  const rstsBefore = clientRsts.counts().in;
  const [a, b] = seqpacketPair();
  let source: FixtureProcess;
  let target: FixtureProcess;
  try {
    source = start(H, HTTP_SERVER, a);
    target = start(H, HTTP_SERVER, b);
  } finally {
    closeSync(a);
    closeSync(b);
  }
  const { port } = await source.request<{ port: number }>({ cmd: 'listen', host: SERVER_IP, port: 0, slowMs });
  const clients = start(C, HTTP_LOAD);
  await clients.request({ cmd: 'start', host: SERVER_IP, port, ...load });
  await waitUntil(async () => (await source.request<Stats>({ cmd: 'stats' })).connections === load.connections, {
    what: 'every client connected',
    timeoutMs: 30000,
  });
  const sourcePid = (await source.request<Stats>({ cmd: 'stats' })).pid;
  await responsesFrom(clients, sourcePid, 1000);

  await target.request({ cmd: 'accept', channelFd: 4, listen: { host: SERVER_IP, port } });
  const reply = await source.request<{ result?: Record<string, unknown>; failed?: boolean; message?: string }>({
    cmd: 'handover',
    channelFd: 4,
    method,
  });
  expect(reply).toMatchObject({ result: { method, handedOver: load.connections, resumed: 0, lost: 0 } });
  const accepted = await Promise.race([target.nextEvent('accepted', 60000), target.nextEvent('acceptFailed', 60000)]);
  if (accepted.event !== 'accepted') throw new Error(`the successor failed: ${JSON.stringify(accepted)}`);
  expect(accepted.result).toMatchObject({ accepted: load.connections, entered: load.connections, failed: 0 });

  await finishLoad(clients, source, target, load.connections, () => clientRsts.counts().in - rstsBefore);
  expect(lab.exec(H, 'nft', ['list', 'tables']).trim()).toBe('');
}

it('autocannon, 100 keep-alive connections: handed over live (fd), every response right, counters continue, no reset', async () => {
  await handOverUnderLoad({ tool: 'autocannon', connections: 100, pipelining: 1 }, 'fd');
}, 180000);

it('autocannon, 100 connections pipelining 10: re-created from TCP_REPAIR images, no pipelined request lost', async () => {
  // A third of the requests take 1 s: most connections have responses pending when it starts.
  await handOverUnderLoad({ tool: 'autocannon', connections: 100, pipelining: 10 }, 'repair', 1000);
}, 180000);

it('undici, 10 clients pipelining 10: handed over live (fd), every response right', async () => {
  await handOverUnderLoad({ tool: 'undici', connections: 10, pipelining: 10 }, 'fd');
}, 180000);
