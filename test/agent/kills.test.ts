/**
 * The agent SIGKILLed (its host failing) while the images travel, and right before RESTORE (the
 * images complete, the service address already removed on A): the source restores the server
 * on A from its local images, the address comes back, and the clients go on byte-exact, no RST.
 * The RESTORE case holds the source inside its `ip addr del` (a wrapper first on its PATH) until
 * the agent is dead and the source has seen the channel close, so RESTORE is never sent.
 * And the agent's CRIU failing the restore (CRIU's fault injection): RESTORE_FAILED after the
 * agent undid its side (hold, address, half-restored tree), then the same rollback.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { locateCriu } from '../../lib';
import { expectEveryConnectionExact } from '../helpers/traffic';
import { waitUntil } from '../helpers/wait';
import { AGENT_PORT, AgentLab, type AgentProcess } from './agent-lab';

const STREAM = { connections: 3, total: 12 * 1024 * 1024, paceBytes: 8192, paceMs: 5 };

let lab: AgentLab | undefined;

afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

function killAgent(agent: AgentProcess): Promise<void> {
  agent.child.kill('SIGKILL');
  return waitUntil(() => agent.child.exitCode !== null || agent.child.signalCode !== null, {
    what: 'the agent to die',
  });
}

/** The per-migration directory's files, seen inside the agent's mount namespace. */
function receivedFiles(l: AgentLab, agent: AgentProcess): number {
  try {
    return l
      .agentWorkDir(agent.pid)
      .reduce((n, dir) => n + fs.readdirSync(`/proc/${agent.pid}/root${l.B.workDir}/${dir}`).length, 0);
  } catch {
    return 0;
  }
}

async function expectRolledBack(
  l: AgentLab,
  run: Awaited<ReturnType<AgentLab['migrate']>>,
  pid: number,
  phase: string,
  before: unknown,
  agentKilled = false,
): Promise<void> {
  expect(run).toMatchObject({
    code: 5,
    json: { ok: false, error: { code: 'ERR_MIGRATION_ROLLED_BACK', serverOn: 'source', phase } },
  });
  expect(fs.statSync(`/proc/${pid}/ns/net`).ino).toBe(l.netnsInode(l.A));
  expect(l.hasAddress(l.A)).toBe(true);
  expect(l.hasAddress(l.B)).toBe(false);
  expect(l.clientResets()).toEqual(before);
  expect(l.nftTables(l.A)).not.toMatch(/CRIU|node_criu_migrate/);
  if (agentKilled) {
    // A SIGKILLed agent leaves its hold (made at HELLO: dropping, never answering); the next
    // agent deletes it at start.
    expect(l.nftTables(l.B)).not.toMatch(/CRIU/);
    const next = await l.startAgent();
    expect(next.events).toContainEqual(expect.objectContaining({ event: 'swept' }));
  }
  expect(l.nftTables(l.B)).not.toMatch(/node_criu_agent|CRIU/);
}

it('agent killed during the image transfer: the server is restored on A, clients exact', async () => {
  lab = new AgentLab(locateCriu().path);
  const l = lab;
  const agent = await l.startAgent();
  const pair = await l.startPair('transfer', STREAM);
  await pair.waitFlowing(256 * 1024);
  const before = l.clientResets();
  // Freeze the agent at its first received file (the source's sends then block: mid-transfer), then kill it.
  let killed: Promise<void> | undefined;
  const watcher = setInterval(() => {
    if (killed === undefined && receivedFiles(l, agent) > 0) {
      agent.child.kill('SIGSTOP');
      killed = killAgent(agent);
    }
  }, 2);
  let run;
  try {
    run = await l.migrate(pair.serverPid);
  } finally {
    clearInterval(watcher);
  }
  expect(killed).toBeDefined();
  await killed;
  const { clients, server } = await pair.reports();
  expectEveryConnectionExact(clients, server, STREAM);
  await expectRolledBack(l, run, pair.serverPid, 'transfer', before, true);
}, 180_000);

it('agent killed right before RESTORE (address already removed on A): the server is restored on A, clients exact', async () => {
  lab = new AgentLab(locateCriu().path);
  const l = lab;
  const agent = await l.startAgent();
  const pair = await l.startPair('moveAddress', STREAM);
  // `ip addr del` waits for a go file; everything else is the real ip.
  const bin = path.join(l.statusRoot, 'bin');
  fs.mkdirSync(bin);
  const realIp = execFileSync('sh', ['-c', 'command -v ip'], { encoding: 'utf8' }).trim();
  fs.writeFileSync(
    path.join(bin, 'ip'),
    `#!/bin/sh\nif [ "$1" = addr ] && [ "$2" = del ]; then\n  : > "${bin}/waiting"\n  n=0; while [ ! -e "${bin}/go" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done\nfi\nexec ${realIp} "$@"\n`,
    { mode: 0o755 },
  );
  await pair.waitFlowing(256 * 1024);
  const before = l.clientResets();
  const migrating = l.migrate(pair.serverPid, { env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` } });
  await waitUntil(() => fs.existsSync(path.join(bin, 'waiting')), {
    what: 'the source to remove the address',
    timeoutMs: 60000,
  });
  expect(agent.events.some((e) => e.event === 'images')).toBe(true);
  await killAgent(agent);
  // The source has seen the channel close once A has no connection to the agent left.
  await waitUntil(
    () => !l.hosts.lab.exec(l.A.netns, 'ss', ['-tnH', 'state', 'all', `dst ${l.B.address}:${AGENT_PORT}`]).trim(),
    { what: 'the source to close its channel' },
  );
  fs.writeFileSync(path.join(bin, 'go'), '');
  const run = await migrating;
  const { clients, server } = await pair.reports();
  expectEveryConnectionExact(clients, server, STREAM);
  await expectRolledBack(l, run, pair.serverPid, 'moveAddress', before, true);
}, 180_000);

it("the agent's restore fails: it undoes its side, the server is restored on A, clients exact", async () => {
  lab = new AgentLab(locateCriu().path);
  const l = lab;
  // CRIU's fault injection 2 (FI_RESTORE_ROOT_ONLY) fails the restore midway, on B only.
  const faulty = path.join(l.statusRoot, 'criu-restore-fails');
  fs.writeFileSync(faulty, `#!/bin/sh\nexport CRIU_FAULT=2\nexec "${l.criuPath}" "$@"\n`, { mode: 0o755 });
  const agent = await l.startAgent([], faulty);
  const pair = await l.startPair('restore', STREAM);
  await pair.waitFlowing(256 * 1024);
  const before = l.clientResets();
  const run = await l.migrate(pair.serverPid);
  const { clients, server } = await pair.reports();
  expectEveryConnectionExact(clients, server, STREAM);
  await expectRolledBack(l, run, pair.serverPid, 'restore', before);
  expect(agent.events).toEqual(
    expect.arrayContaining([expect.objectContaining({ event: 'restore', state: 'failed' })]),
  );
  await agent.waitEvent((e) => e.event === 'session-end', 'the session to end');
  expect(l.agentWorkDir(agent.pid)).toEqual([]);
}, 180_000);
