/**
 * WebSocket handover across two hosts through the migration agent: the ws server on A hands its
 * clients (repair images, originals held behind a drop filter) over mutual TLS to `node-criu agent
 * --app-socket` on B, which restores them and passes them to the ws server registered there
 * (webSocketAdopter with acceptHandoverViaAgent); the service address moves A -> B in between.
 * `ws` clients in C stream text and binary messages both ways throughout:
 *
 *   A 10.77.0.1 (service address 10.77.0.100) ─┐
 *   B 10.77.0.2 (agent, target ws server)     ─┼─ br0      C 10.77.0.10: ws clients
 *
 * Proved: every WebSocket message once, in order and exact both ways, the application's
 * per-connection state continuous, the negotiated subprotocol kept, no close, error or RST.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { startAppSocketAgent, type AppSocketAgent } from '../agent/app-socket-agent';
import { RstCounter } from '../fixtures/fault-helpers';
import { HostLab, SERVICE_ADDRESS, SERVICE_CIDR, addServiceAddress, type LabHost } from '../helpers/hosts';
import { makeTestPki, type TestPki } from '../helpers/pki';
import { FixtureProcess } from '../migration/connections-helpers';
import { WS_CLIENTS, WS_SERVER, expectStreamsComplete, serverReports, waitForMessages } from './ws-lab';

const AGENT_PORT = 7150;
const COUNT = 6;
const TOTAL = 600;
const INTERVAL_MS = 5;
let hosts: HostLab;
let A: LabHost;
let B: LabHost;
let C: LabHost;
let pki: TestPki;
let dir: string;
let rsts: RstCounter;
let agent: AppSocketAgent | undefined;
const started: FixtureProcess[] = [];

beforeAll(async () => {
  hosts = new HostLab();
  A = hosts.addHost('a', 1);
  B = hosts.addHost('b', 2);
  C = hosts.addHost('c', 10);
  addServiceAddress(hosts, A);
  pki = makeTestPki([`IP:${B.address}`]);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-ws-agent-'));
  rsts = RstCounter.incoming(C.netnsPath);
  agent = await startAppSocketAgent(B.netnsPath, `${B.address}:${AGENT_PORT}`, pki, dir);
});

afterEach(async () => {
  await Promise.all(started.splice(0).map((p) => p.stop()));
});

afterAll(async () => {
  await agent?.stop();
  await hosts.destroy();
  pki.remove();
  fs.rmSync(dir, { recursive: true, force: true });
});

function start(host: LabHost, script: string): FixtureProcess {
  const child = FixtureProcess.start(hosts.lab, host.netns, script);
  started.push(child);
  return child;
}

/** The service address leaves `from` for `to` (C forgets the old MAC, as a gratuitous ARP would make it). */
function moveServiceAddress(from: LabHost, to: LabHost): void {
  hosts.ip(from, ['addr', 'del', SERVICE_CIDR, 'dev', 'eth0']);
  hosts.ip(to, ['addr', 'add', SERVICE_CIDR, 'dev', 'eth0']);
  hosts.ip(C, ['neigh', 'flush', 'to', SERVICE_ADDRESS]);
}

it('hands every WebSocket to the ws server on another host through the agent (TLS): each message once and in order', async () => {
  const rstsBefore = rsts.counts().in;
  const source = start(A, WS_SERVER);
  const { port } = await source.request<{ port: number }>({
    cmd: 'listen',
    host: SERVICE_ADDRESS,
    port: 0,
    total: TOTAL,
    intervalMs: INTERVAL_MS,
  });
  const clients = start(C, WS_CLIENTS);
  await clients.request({
    cmd: 'start',
    url: `ws://${SERVICE_ADDRESS}:${port}`,
    count: COUNT,
    total: TOTAL,
    intervalMs: INTERVAL_MS,
    protocols: ['chat.v2', 'chat'],
  });
  await waitForMessages(clients, 40, COUNT);

  const target = start(B, WS_SERVER);
  await target.request({
    cmd: 'acceptViaAgent',
    agent: agent?.appSocket,
    ports: [port],
    total: TOTAL,
    intervalMs: INTERVAL_MS,
  });
  source.onEvent((e) => {
    if (e.event !== 'moveAddress') return;
    moveServiceAddress(A, B);
    source.process.send({ cmd: 'addressMoved' });
  });
  const reply = await source.request<{ result?: Record<string, unknown>; code?: string; message?: string }>({
    cmd: 'handover',
    to: { host: B.address, port: AGENT_PORT, tls: pki.client },
    method: 'repair',
    moveAddress: true,
  });
  expect(reply).toMatchObject({ result: { method: 'repair', handedOver: COUNT, resumed: 0, lost: 0, left: 0 } });
  expect((await target.nextEvent('accepted')).result).toMatchObject({ accepted: COUNT, failed: 0 });
  expect(await serverReports(source)).toEqual([]);

  await expectStreamsComplete(clients, target, COUNT, TOTAL, { handedOver: true, protocol: 'chat.v2', extensions: '' });
  expect(rsts.counts().in - rstsBefore).toBe(0);
  expect(agent?.events.some((e) => e.event === 'relayed' && e.passed === COUNT && e.lost === 0)).toBe(true);
});
