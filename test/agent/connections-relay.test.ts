/**
 * The connections route through the migration agent: `node-criu agent --app-socket` in H restores
 * a source's connections (mutual TLS) and passes them live to the application registered for
 * their port, which needs no TCP_REPAIR of its own. Clients in C stream both ways throughout:
 *
 *   C: clients 10.79.0.2 ── veth ── H: source server, agent, target server 10.79.0.1
 *
 * Proved: every byte once both ways and no RST through the relay; with no application registered
 * for the port the agent takes nothing and the source keeps (resumes) every connection.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { RstCounter } from '../fixtures/fault-helpers';
import { startAppSocketAgent, type AppSocketAgent } from './app-socket-agent';
import { NetnsLab } from '../helpers/netns';
import { makeTestPki, type TestPki } from '../helpers/pki';
import {
  CLIENTS_FIXTURE,
  FixtureProcess,
  SERVER_FIXTURE,
  expectAllExact,
  waitForAccepted,
  waitForExactTraffic,
  waitForTrafficFlowing,
} from '../migration/connections-helpers';

const lab = new NetnsLab();
let H = '';
let C = '';
const SERVER_IP = '10.79.0.1';
const AGENT_PORT = 7200;
const COUNT = 8;
const TOTAL = 2_000_000;
let pki: TestPki;
let dir: string;
let clientRsts: RstCounter;
let agent: AppSocketAgent | undefined;
const started: FixtureProcess[] = [];

beforeAll(async () => {
  pki = makeTestPki([`IP:${SERVER_IP}`]);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-relay-'));
  H = lab.add('h');
  C = lab.add('c');
  lab.ip(H, ['link', 'add', 'vh', 'type', 'veth', 'peer', 'name', 'vc', 'netns', C]);
  lab.ip(H, ['addr', 'add', `${SERVER_IP}/24`, 'dev', 'vh']);
  lab.ip(H, ['link', 'set', 'vh', 'up']);
  lab.ip(C, ['addr', 'add', '10.79.0.2/24', 'dev', 'vc']);
  lab.ip(C, ['link', 'set', 'vc', 'up']);
  clientRsts = RstCounter.incoming(lab.path(C));
  agent = await startAppSocketAgent(lab.path(H), `${SERVER_IP}:${AGENT_PORT}`, pki, dir);
});

afterEach(async () => {
  await Promise.all(started.splice(0).map((p) => p.stop()));
});

afterAll(async () => {
  await agent?.stop();
  lab.destroy();
  pki.remove();
  fs.rmSync(dir, { recursive: true, force: true });
});

function start(ns: string, script: string): FixtureProcess {
  const child = FixtureProcess.start(lab, ns, script);
  started.push(child);
  return child;
}

async function sourceWithClients(): Promise<{ source: FixtureProcess; clients: FixtureProcess; port: number }> {
  const source = start(H, SERVER_FIXTURE);
  const { port } = await source.request<{ port: number }>({ cmd: 'listen', host: SERVER_IP, port: 0, total: TOTAL });
  const clients = start(C, CLIENTS_FIXTURE);
  await clients.request({ cmd: 'connect', host: SERVER_IP, port, count: COUNT, total: TOTAL });
  await waitForAccepted(source, COUNT);
  await waitForTrafficFlowing(source, COUNT);
  return { source, clients, port };
}

const toAgent = () => ({ host: SERVER_IP, port: AGENT_PORT, tls: pki.client });

it('relays every connection to the registered application: exact both ways, no reset', async () => {
  const rstsBefore = clientRsts.counts().in;
  const { source, clients, port } = await sourceWithClients();
  const target = start(H, SERVER_FIXTURE);
  await target.request({ cmd: 'acceptViaAgent', agent: agent?.appSocket, ports: [port] });
  const reply = await source.request<{ result?: { handedOver: number }; code?: string; message?: string }>({
    cmd: 'handover',
    to: toAgent(),
  });
  expect(reply).toMatchObject({ result: { handedOver: COUNT } });
  const accepted = await target.nextEvent('accepted');
  expect(accepted.result).toMatchObject({ accepted: COUNT });
  const { clientReports, serverReports } = await waitForExactTraffic(clients, [target], TOTAL);
  expectAllExact(clientReports, serverReports, TOTAL, COUNT);
  expect(clientRsts.counts().in - rstsBefore).toBe(0);
  expect(agent?.events.some((e) => e.event === 'relayed' && e.passed === COUNT && e.lost === 0)).toBe(true);
});

it('with no application registered for the port, the agent takes nothing and the source keeps every connection', async () => {
  const rstsBefore = clientRsts.counts().in;
  const { source, clients } = await sourceWithClients();
  // Registered, but for another port: the connections are not allowed here.
  const other = start(H, SERVER_FIXTURE);
  await other.request({ cmd: 'acceptViaAgent', agent: agent?.appSocket, ports: [1] });
  const reply = await source.request<{ result?: unknown; failed?: boolean; code?: string; resumed?: number }>({
    cmd: 'handover',
    to: toAgent(),
  });
  expect(reply).toMatchObject({ failed: true, resumed: COUNT });
  expect(typeof reply.code).toBe('string');
  const { clientReports, serverReports } = await waitForExactTraffic(clients, [source], TOTAL);
  expectAllExact(clientReports, serverReports, TOTAL, COUNT);
  expect(clientRsts.counts().in - rstsBefore).toBe(0);
});
