/**
 * WebSocket handover (node-criu/ws) between two server processes on one host, with `ws` clients in
 * another namespace streaming text and binary messages both ways every few ms the whole time:
 *
 *   C: ws clients 10.79.0.2 ── veth ── H: ws servers 10.79.0.1 (source, then its successor)
 *
 * Every test proves each WebSocket message arrived once, in order and exact both ways, the
 * application's per-connection state continuous, no close or error on any client, no RST.
 */
import { closeSync } from 'node:fs';

import { waitUntil } from '../helpers/wait';
import { seqpacketPair } from '../migration/connections-helpers';
import type { FixtureProcess } from '../migration/connections-helpers';
import { WS_CLIENTS, WS_SERVER, WsLab, expectStreamsComplete, serverReports, waitForMessages } from './ws-lab';

const SERVER_IP = '10.79.0.1';
const COUNT = 6;
const TOTAL = 600;
const INTERVAL_MS = 5;
const PROTOCOLS = ['chat.v2', 'chat'];
let lab: WsLab;

beforeAll(() => {
  lab = new WsLab(SERVER_IP);
});

afterEach(async () => {
  await lab.stopAll();
});

afterAll(() => {
  lab.destroy();
});

interface HandoverReply {
  result?: { method: string; handedOver: number; resumed: number; lost: number; clients: number; left: number };
  failed?: boolean;
  code?: string;
}

/**
 * A source and a successor in H joined by a SEQPACKET pair (fd 4 in each), and COUNT ws clients in
 * C streaming to the source, mid-stream both ways.
 */
async function streaming(deflate?: Record<string, unknown>) {
  const [a, b] = seqpacketPair();
  let source: FixtureProcess;
  let target: FixtureProcess;
  try {
    source = lab.start(lab.H, WS_SERVER, a);
    target = lab.start(lab.H, WS_SERVER, b);
  } finally {
    closeSync(a);
    closeSync(b);
  }
  const { port } = await source.request<{ port: number }>({
    cmd: 'listen',
    host: SERVER_IP,
    port: 0,
    total: TOTAL,
    intervalMs: INTERVAL_MS,
    ...(deflate ? { deflate } : {}),
  });
  const clients = lab.start(lab.C, WS_CLIENTS);
  await clients.request({
    cmd: 'start',
    url: `ws://${SERVER_IP}:${port}`,
    count: COUNT,
    total: TOTAL,
    intervalMs: INTERVAL_MS,
    protocols: PROTOCOLS,
    ...(deflate ? { deflate } : {}),
  });
  await waitForMessages(clients, 40, COUNT);
  return { source, target, clients, port };
}

/**
 * `listen`: the successor listens on the service port once it has the connections. Not after
 * 'repair': a restored connection has no SO_REUSEADDR (the accepted original had the listener's),
 * so listen() on its address and port fails with EADDRINUSE (a connections-route matter).
 */
const cases: Array<{ name: string; method: 'fd' | 'repair'; listen: boolean; deflate?: Record<string, unknown> }> = [
  { name: 'the live fds (SCM_RIGHTS)', method: 'fd', listen: true },
  { name: 'TCP_REPAIR images (nftables lock)', method: 'repair', listen: false },
  {
    name: 'the live fds, with permessage-deflate without context takeover',
    method: 'fd',
    listen: true,
    deflate: { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 512 },
  },
];

it.each(cases)(
  'hands every WebSocket to a successor by $name: each message once and in order both ways',
  async ({ method, listen, deflate }) => {
    const before = lab.resets();
    const { source, target, clients, port } = await streaming(deflate);

    await target.request({
      cmd: 'accept',
      channelFd: 4,
      total: TOTAL,
      intervalMs: INTERVAL_MS,
      ...(listen ? { listen: { host: SERVER_IP, port } } : {}),
      ...(deflate ? { deflate } : {}),
    });
    const reply = await source.request<HandoverReply>({ cmd: 'handover', channelFd: 4, method });
    expect(reply).toMatchObject({
      result: { method, handedOver: COUNT, resumed: 0, lost: 0, clients: COUNT, left: 0 },
    });
    expect((await target.nextEvent('accepted')).result).toMatchObject({
      accepted: COUNT,
      failed: 0,
      ...(listen ? { port } : {}),
    });
    expect(await serverReports(source)).toEqual([]);

    await expectStreamsComplete(clients, target, COUNT, TOTAL, {
      handedOver: true,
      protocol: 'chat.v2',
      extensions: deflate ? 'permessage-deflate' : '',
    });
    expect(lab.resets()).toEqual(before);
  },
);

const keptCases: Array<{ name: string; method: 'fd' | 'repair'; accept: Record<string, unknown>; code: unknown }> = [
  { name: 'the successor refuses', method: 'fd', accept: { refuse: 'draining' }, code: 'ERR_HANDOVER_REFUSED' },
  {
    // The originals were closed at checkpoint (nftables lock): they come back restored here.
    name: 'the successor fails their states (repair)',
    method: 'repair',
    accept: { maxStateBytes: 64 },
    code: expect.stringMatching(/^ERR_HANDOVER_/), // the target gives up on the channel
  },
];

it.each(keptCases)('keeps every WebSocket on the source, live, when $name', async ({ method, accept, code }) => {
  const before = lab.resets();
  const { source, target, clients } = await streaming();
  await target.request({ cmd: 'accept', channelFd: 4, ...accept });
  const reply = await source.request<HandoverReply>({ cmd: 'handover', channelFd: 4, method });
  expect(reply).toMatchObject({ failed: true, code });
  await target.nextEvent('acceptFailed');
  // Each came back through onResumed, with the state it had given.
  await waitUntil(() => source.events.filter((e) => e.event === 'resumed').length === COUNT, {
    what: `${COUNT} WebSockets resumed`,
  });
  await expectStreamsComplete(clients, source, COUNT, TOTAL, { handedOver: false, protocol: 'chat.v2' });
  expect(lab.resets()).toEqual(before);
});
