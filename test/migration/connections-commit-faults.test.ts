/**
 * One owner at every moment: the connections route between two hosts (source server in A, target
 * in B, clients in C, mutual TLS channel, the service address moving A -> B with the hooks) with a
 * fault injected at every protocol step: SIGKILL of the source, SIGKILL of the target, the
 * channel cut by nftables in A and healed after HEAL_MS (TCP recovers), and cut for good (both
 * sides time out). Each side pauses at the step (its onProgress hook) while the fault is made.
 * Afterwards every connection is established on at most one host, and every connection whose
 * owner was not killed is live where the table says, every byte once both ways, no reset seen by
 * a client. All 24 cases run at once in one lab, each with its own service address and port.
 *
 *   A 10.77.0.1 (source, service addresses 10.77.0.1xx)   B 10.77.0.2 (target)   C 10.77.0.10 (clients)
 */
import { HostLab } from '../helpers/hosts';
import type { LabHost } from '../helpers/hosts';
import { makeTestPki } from '../helpers/pki';
import type { TestPki } from '../helpers/pki';
import {
  CLIENTS_FIXTURE,
  FixtureProcess,
  SERVER_FIXTURE,
  expectAllExact,
  waitForAccepted,
  waitForTrafficFlowing,
} from './connections-helpers';
import type { PortReport } from './connections-helpers';
import { waitUntil } from '../helpers/wait';

const COUNT = 2;
const TOTAL = 1_000_000;
const HEAL_MS = 1500;
const SHORT_TIMEOUT_MS = 8000;

type Fault = 'kill-source' | 'kill-target' | 'cut-heal' | 'cut-permanent';
type Owner = 'A' | 'B' | 'nowhere' | 'owner-killed';
const STEPS = [
  { name: 'after HELLO', source: 'hello', target: 'hello' },
  { name: 'during CONNECTION frames', source: 'transfer', target: 'connection' },
  { name: 'after STAGE_END/STAGED', source: 'staged', target: 'staged' },
  { name: 'after COMMIT', source: 'commit', target: 'commit' },
  { name: 'after RESULT', source: 'result', target: 'result' },
  { name: 'after DONE', source: 'done', target: 'done' },
];
const DONE = STEPS.length - 1;
const RESULT = DONE - 1;

/** The state table of docs/ARCHITECTURE.md ("Who owns a connection"), as expectations. */
function expected(fault: Fault, step: number): { owner: Owner; uncertain: boolean; why: string } {
  switch (fault) {
    case 'kill-source':
      return step === DONE
        ? { owner: 'B', uncertain: false, why: 'DONE was sent: the target commits' }
        : {
            owner: 'owner-killed',
            uncertain: false,
            why: 'the source owned them and died; the target drops its copies',
          };
    case 'kill-target':
      return { owner: 'A', uncertain: false, why: 'no COMMITTED: the source resumes (address moved back)' };
    case 'cut-heal':
      return { owner: 'B', uncertain: false, why: 'TCP recovers within the time limits: handed over' };
    case 'cut-permanent':
      if (step < RESULT) return { owner: 'A', uncertain: false, why: 'both time out before DONE: the source resumes' };
      if (step === RESULT)
        return {
          owner: 'nowhere',
          uncertain: true,
          why: 'DONE is lost: the target drops, the source releases (uncertain)',
        };
      return {
        owner: 'B',
        uncertain: true,
        why: 'DONE arrived, COMMITTED is lost: the target owns, the source releases (uncertain)',
      };
  }
}

const ONLY = process.env.NCR_FAULT_CASES === undefined ? undefined : new RegExp(process.env.NCR_FAULT_CASES);
const CASES = (['kill-source', 'kill-target', 'cut-heal', 'cut-permanent'] as Fault[])
  .flatMap((fault) =>
    STEPS.map((step, index) => ({ fault, step: index, ...expected(fault, index), label: `${fault} ${step.name}` })),
  )
  .filter((c) => ONLY === undefined || ONLY.test(c.label));
const debug = (...args: unknown[]): void => void (process.env.NCR_FAULT_DEBUG && console.error(...args));

let hosts: HostLab;
let A: LabHost;
let B: LabHost;
let C: LabHost;
let pki: TestPki;
let clients: FixtureProcess;
const started: FixtureProcess[] = [];
const outcomes = new Map<string, Promise<void>>();

function start(host: LabHost, script: string): FixtureProcess {
  const child = FixtureProcess.start(hosts.lab, host.netns, script);
  started.push(child);
  return child;
}

function established(host: LabHost, vip: string): number {
  return hosts.exec(host, 'ss', ['-Htn', 'state', 'established', 'src', vip]).trim().split('\n').filter(Boolean).length;
}

/** Drops the channel's packets in A (both directions), as a cut cable would. */
function cut(port: number): () => void {
  const table = `ncr_cut_${port}`;
  const chain = (hook: string): string =>
    ` chain ${hook} {\n  type filter hook ${hook} priority -200; policy accept;\n  tcp dport ${port} drop\n  tcp sport ${port} drop\n }\n`;
  hosts.lab.exec(A.netns, 'nft', ['-f', '-'], `table inet ${table} {\n${chain('input')}${chain('output')}}\n`);
  return () => hosts.exec(A, 'nft', ['delete', 'table', 'inet', table]);
}

async function runCase(index: number, c: (typeof CASES)[number]): Promise<void> {
  const vip = `10.77.0.${100 + index}`;
  const channelPort = 7100 + index;
  let vipOn: 'A' | 'B' = 'A';
  const moveVip = (to: 'A' | 'B'): void => {
    if (vipOn === to) return;
    hosts.ip(to === 'A' ? B : A, ['addr', 'del', `${vip}/32`, 'dev', 'eth0']);
    hosts.ip(to === 'A' ? A : B, ['addr', 'add', `${vip}/32`, 'dev', 'eth0']);
    hosts.ip(C, ['neigh', 'flush', 'to', vip]); // stands in for the gratuitous ARP
    vipOn = to;
  };
  hosts.ip(A, ['addr', 'add', `${vip}/32`, 'dev', 'eth0']);
  const source = start(A, SERVER_FIXTURE);
  const target = start(B, SERVER_FIXTURE);
  const { port } = await source.request<{ port: number }>({ cmd: 'listen', host: vip, port: 0, total: TOTAL });
  const { ports } = await clients.request<{ ports: number[] }>({
    cmd: 'connect',
    host: vip,
    port,
    count: COUNT,
    total: TOTAL,
  });
  await waitForAccepted(source, COUNT);
  await waitForTrafficFlowing(source, COUNT);
  debug(c.label, 'flowing');

  const permanent = c.fault === 'cut-permanent';
  const timeoutMs = permanent ? SHORT_TIMEOUT_MS : 40000;
  // A permanent cut after COMMIT is made where the target got COMMIT, before its RESULT can leave
  // (cut at the source, a RESULT already in flight would make it the after-RESULT case); after
  // DONE, where the target got DONE.
  const targetCut = permanent && (c.step === DONE || STEPS[c.step].source === 'commit');
  const pauseSide = c.fault === 'kill-target' || targetCut ? 'target' : 'source';
  const phase = STEPS[c.step][pauseSide];
  const paused = pauseSide === 'source' ? source : target;
  await target.request({
    cmd: 'accept',
    listen: { host: B.address, port: channelPort },
    tls: pki.server,
    allow: { addresses: [vip] },
    timeoutMs,
    pauseAt: pauseSide === 'target' ? [phase] : [],
  });
  source.onEvent((e) => {
    if (e.event !== 'moveAddress' && e.event !== 'moveAddressBack') return;
    moveVip(e.event === 'moveAddress' ? 'B' : 'A');
    source.process.send({ cmd: 'addressMoved' });
  });
  const fault = paused.nextEvent('paused', 60000).then(async () => {
    if (c.fault === 'kill-source') return source.stop();
    if (c.fault === 'kill-target') return target.stop();
    const heal = cut(channelPort);
    if (c.fault === 'cut-heal') setTimeout(heal, HEAL_MS);
    await paused.request({ cmd: 'continue' });
  });
  const reply = await source
    .request<{ result?: { handedOver: number }; code?: string; uncertain?: number }>({
      cmd: 'handover',
      to: { host: B.address, port: channelPort, tls: pki.client },
      method: 'repair',
      moveAddress: true,
      pauseAt: pauseSide === 'source' ? [phase] : [],
      timeoutMs,
    })
    .catch(() => ({ killed: true }) as { result?: undefined; code?: string; uncertain?: number });
  debug(c.label, 'reply', JSON.stringify(reply));
  await fault;
  if (c.uncertain) expect(reply).toMatchObject({ code: 'ERR_HANDOVER_TIMEOUT', uncertain: COUNT });
  if (c.owner === 'B' && !c.uncertain && c.fault !== 'kill-source')
    expect(reply).toMatchObject({ result: { handedOver: COUNT } });
  if (c.owner === 'A') expect(reply).toMatchObject({ code: expect.stringMatching(/^ERR_HANDOVER_/) });
  if (c.fault !== 'kill-target') await target.nextEvent(c.owner === 'B' ? 'accepted' : 'acceptFailed', 60000);

  debug(c.label, 'target done');
  const owner = c.owner === 'A' ? source : c.owner === 'B' ? target : undefined;
  if (owner) {
    expect(vipOn).toBe(c.owner);
    // The clients process serves every case: only this case's ports count.
    let mine: PortReport[] = [];
    let served = new Map<number, PortReport>();
    const complete = (): boolean =>
      mine.length === COUNT &&
      mine.every((r) => {
        const server = served.get(r.port)?.report;
        return (
          Math.min(
            r.report.sent.bytes,
            r.report.received.bytes,
            server?.sent.bytes ?? 0,
            server?.received.bytes ?? 0,
          ) >= TOTAL
        );
      });
    await waitUntil(
      async () => {
        mine = (await clients.reports()).filter((r) => ports.includes(r.port));
        served = new Map((await owner.reports()).map((r) => [r.port, r]));
        return complete();
      },
      {
        timeoutMs: 60000,
        what: `${c.label}: every byte both ways`,
        detail: () => JSON.stringify(mine.map((r) => r.report.received.bytes)),
      },
    );
    expectAllExact(mine, served, TOTAL, COUNT);
  }
  // Never two owners: the service address's connections are established on one host at most.
  const onA = established(A, vip);
  const onB = established(B, vip);
  expect(onA + onB).toBeLessThanOrEqual(COUNT);
  expect(Math.min(onA, onB)).toBe(0);
  if (c.owner === 'A') expect([onA, onB]).toEqual([COUNT, 0]);
  if (c.owner === 'B') expect([onA, onB]).toEqual([0, COUNT]);
  if (c.owner === 'nowhere') expect([onA, onB]).toEqual([0, 0]);
}

beforeAll(async () => {
  hosts = new HostLab();
  A = hosts.addHost('a', 1);
  B = hosts.addHost('b', 2);
  C = hosts.addHost('c', 10);
  // 24 cases run at once on 2 CPUs and some hold connections for seconds: a lost segment's
  // retransmission timer could then back off for minutes. Capped at 1 s in these namespaces (as
  // the CRIU fault lab does); every byte is still checked.
  for (const host of [A, B, C]) hosts.exec(host, 'sysctl', ['-q', '-w', 'net.ipv4.tcp_rto_max_ms=1000']);
  pki = makeTestPki([`IP:${B.address}`]);
  clients = start(C, CLIENTS_FIXTURE);
  CASES.forEach((c, i) => {
    const outcome = runCase(i, c);
    outcome.catch(() => undefined); // awaited by its own test
    outcomes.set(c.label, outcome);
  });
}, 30000);

afterAll(async () => {
  await Promise.all(started.splice(0).map((p) => p.stop()));
  await hosts?.destroy();
  pki?.remove();
});

describe.each(CASES)('$label', ({ label, owner, uncertain, why }) => {
  const where = owner === 'owner-killed' ? 'the owner was killed: live on no host twice' : `live on ${owner}`;
  it(`${where}${uncertain ? ', reported uncertain' : ''} (${why})`, async () => {
    await outcomes.get(label);
  }, 90000);
});
