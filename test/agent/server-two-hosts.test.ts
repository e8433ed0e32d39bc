/**
 * handOverServer across two hosts through the migration agent (test/agent/agent-lab.ts): a
 * node:http server on A, on the service address, under autocannon from C, hands over to the
 * agent on B over mutual TLS (method 'repair', the address moving from A to B between staging
 * and commit); the agent restores the connections and passes them to the successor registered
 * on its application socket (acceptServerHandover with `from: { agent }`), which enters them and
 * listens on the service address. autocannon sees no error, timeout or non-2xx, every body and
 * per-connection request count checked (test/fixtures/http-load.js), and no RST reaches C.
 */
import * as path from 'node:path';

import { locateCriu } from '../../lib';
import { addAddress, removeAddress } from '../../lib/sys/address';
import { SERVICE_ADDRESS, SERVICE_CIDR, type LabHost } from '../helpers/hosts';
import { waitUntil } from '../helpers/wait';
import { FixtureProcess } from '../migration/connections-helpers';
import { HTTP_LOAD, HTTP_SERVER, finishLoad, responsesFrom } from '../migration/server-helpers';
import { AGENT_PORT, AgentLab } from './agent-lab';

let lab: AgentLab;
const started: FixtureProcess[] = [];

const appSocket = (): string => path.join(lab.statusRoot, 'app.sock');

beforeAll(async () => {
  lab = new AgentLab(locateCriu().path);
  await lab.startAgent(['--app-socket', appSocket()]);
});

afterAll(async () => {
  await Promise.all(started.map((p) => p.stop()));
  await lab.destroy();
});

function start(netns: string, script: string): FixtureProcess {
  const child = FixtureProcess.start(lab.hosts.lab, netns, script);
  started.push(child);
  return child;
}

async function moveAddress(from: LabHost, to: LabHost): Promise<void> {
  await removeAddress({ cidr: SERVICE_CIDR, device: 'eth0', netns: from.netnsPath });
  await addAddress({ cidr: SERVICE_CIDR, device: 'eth0', netns: to.netnsPath });
}

async function handOverToAgent(pipelining: number, port: number): Promise<void> {
  // The service address starts on A (an earlier case moved it to B).
  if (lab.hasAddress(lab.B)) await moveAddress(lab.B, lab.A);
  const rstsBefore = lab.rstsIntoClients();
  const source = start(lab.A.netns, HTTP_SERVER);
  await source.request({ cmd: 'listen', host: SERVICE_ADDRESS, port });
  const sourcePid = (await source.request<{ pid: number }>({ cmd: 'stats' })).pid;
  const clients = start(lab.C.netns, HTTP_LOAD);
  await clients.request({
    cmd: 'start',
    tool: 'autocannon',
    host: SERVICE_ADDRESS,
    port,
    connections: 100,
    pipelining,
  });
  await waitUntil(async () => (await source.request<{ connections: number }>({ cmd: 'stats' })).connections === 100, {
    what: 'every client connected',
    timeoutMs: 30000,
  });
  await responsesFrom(clients, sourcePid, 1000);

  const target = start(lab.B.netns, HTTP_SERVER);
  await target.request({
    cmd: 'accept',
    from: { agent: appSocket(), ports: [port] },
    listen: { host: SERVICE_ADDRESS, port },
  });
  await target.nextEvent('registered');
  source.onEvent((e) => {
    if (e.event !== 'moveAddress') return;
    void moveAddress(lab.A, lab.B).then(() => source.process.send({ cmd: 'addressMoved' }));
  });
  const reply = await source.request<{ result?: Record<string, unknown> }>({
    cmd: 'handover',
    to: { host: lab.B.address, port: AGENT_PORT, tls: lab.pki.client },
    method: 'repair',
    moveAddress: true,
  });
  expect(reply).toMatchObject({ result: { handedOver: 100, resumed: 0, lost: 0 } });
  const accepted = await Promise.race([target.nextEvent('accepted', 60000), target.nextEvent('acceptFailed', 60000)]);
  if (accepted.event !== 'accepted') throw new Error(`the successor failed: ${JSON.stringify(accepted)}`);
  expect(accepted.result).toMatchObject({ accepted: 100, entered: 100 });

  await finishLoad(clients, source, target, 100, () => lab.rstsIntoClients() - rstsBefore);
  expect(lab.nftTables(lab.A).trim()).toBe('');
}

it('autocannon, 100 keep-alive connections: A hands its http server to the agent on B (TLS, address moves), no error, no reset', async () => {
  await handOverToAgent(1, 7080);
}, 240000);

it('autocannon, 100 connections pipelining 10: the same, no pipelined request lost', async () => {
  await handOverToAgent(10, 7081);
}, 240000);
