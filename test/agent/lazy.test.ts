/**
 * Post-copy (lazy pages) across two hosts that share nothing but the network (agent-lab.ts):
 * `node-criu agent` on B in a pid and mount namespace of its own (as another host has: the
 * source tree keeps its pids until every page is served), `node-criu migrate --to --lazy-pages`
 * on A, a server streaming both ways with clients in C. The pages travel as PAGE_DATA frames on
 * the agent's TLS channel. Every byte once both ways, no RST; the longest client gap is printed.
 * And the agent killed right before RESTORE: the lazy dump is undone on A (the server resumes
 * there), clients exact; killed during the page transfer: no rollback (post-copy), the process is
 * lost on both hosts (exit 6, ERR_MIGRATION_LOST) and A is left clean.
 *
 * CRIU serves lazy pages through a 4 MiB pipe: fs.pipe-max-size is raised for this file and
 * restored afterwards (as in test/migration/lazy-pages.test.ts).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { locateCriu } from '../../lib';
import { findInPidNamespace, pidNamespaceOf } from '../../lib/migration/lazy-tasks';
import { expectEveryConnectionExact } from '../helpers/traffic';
import { waitUntil } from '../helpers/wait';
import { AGENT_PORT, AgentLab, type AgentProcess } from './agent-lab';

// Paced to flow ~8 s, so the move happens mid-stream in both directions.
const STREAM = { connections: 3, total: 12 * 1024 * 1024, paceBytes: 8192, paceMs: 5 };
const PIPE_MAX = '/proc/sys/fs/pipe-max-size';

let lab: AgentLab | undefined;
let pipeMaxBefore: string | undefined;

beforeAll(() => {
  pipeMaxBefore = fs.readFileSync(PIPE_MAX, 'utf8').trim();
  if (Number(pipeMaxBefore) < 4 * 1024 * 1024) fs.writeFileSync(PIPE_MAX, String(4 * 1024 * 1024));
});

afterAll(() => {
  if (pipeMaxBefore !== undefined) fs.writeFileSync(PIPE_MAX, pipeMaxBefore);
});

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

it('moves a streaming server from A to B with lazy pages over the agent channel: bytes exact both ways, no RST, nothing left', async () => {
  lab = new AgentLab(locateCriu().path);
  const l = lab;
  const agent = await l.startAgent([], l.criuPath, undefined, true);
  const pair = await l.startPair('lazy', STREAM);
  await pair.waitFlowing(256 * 1024);
  const before = l.clientResets();

  const run = await l.migrate(pair.serverPid, { extra: ['--lazy-pages'] });
  expect(fs.existsSync(path.join(pair.statusDir, 'clients.json'))).toBe(false);
  expect({ code: run.code, stderr: run.code === 0 ? '' : run.stderr }).toEqual({ code: 0, stderr: '' });
  const result = run.json as Record<string, any>;
  // The pid CRIU restored in B's pid namespace: the one the server had on A.
  expect(result).toMatchObject({ ok: true, restoredPid: pair.serverPid, transfer: 'agent' });
  expect(result.lazyPages.bytes).toBeGreaterThan(1024 * 1024); // the heap came over as pages
  expect(agent.events).toEqual(expect.arrayContaining([expect.objectContaining({ event: 'pages', state: 'done' })]));
  // The server runs on B: in B's pid namespace (under that pid) and B's network namespace.
  const [onB] = findInPidNamespace(result.restoredPid as number, pidNamespaceOf(agent.mainPid));
  expect(onB).toBeDefined();
  expect(fs.statSync(`/proc/${onB}/ns/net`).ino).toBe(l.netnsInode(l.B));
  expect(fs.readFileSync(`/proc/${onB}/cmdline`, 'utf8')).toContain('process-server');

  const { clients, server } = await pair.reports();
  expectEveryConnectionExact(clients, server, STREAM);
  expect(l.clientResets()).toEqual(before);
  const gap = Math.max(...Object.values(clients.maxGapMs));
  process.stdout.write(
    `two hosts, lazy pages: downtime ${Math.round(result.downtimeMs as number)} ms (dump ${result.phases.dump}, transfer ${result.phases.transfer}, restore ${result.phases.restore}; ${result.files} files, ${result.bytes} bytes; then ${result.lazyPages.bytes} bytes of pages in ${Math.round(result.lazyPages.ms as number)} ms); longest client gap ${gap} ms\n`,
  );

  await agent.waitEvent((e) => e.event === 'session-end', 'the session to end');
  expect(l.agentWorkDir(agent.pid)).toEqual([]);
  expect(l.nftTables(l.B)).not.toMatch(/node_criu_agent|CRIU/);
  expect(l.nftTables(l.A)).not.toMatch(/CRIU/);
  expect(l.hasAddress(l.A)).toBe(false);
  expect(l.hasAddress(l.B)).toBe(true);
  expect(l.agentWorkDir(agent.pid)).toEqual([]);

  // SIGTERM: the agent closes cleanly.
  process.kill(agent.mainPid, 'SIGTERM');
  await waitUntil(() => agent.child.exitCode !== null, { what: 'the agent to exit' });
  expect(agent.child.exitCode).toBe(0);
}, 180_000);

it('lazy: agent killed right before RESTORE (address already removed on A): the server resumes on A, clients exact', async () => {
  lab = new AgentLab(locateCriu().path);
  const l = lab;
  const agent = await l.startAgent([], l.criuPath, undefined, true);
  const pair = await l.startPair('lazy-back', STREAM);
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
  const migrating = l.migrate(pair.serverPid, {
    extra: ['--lazy-pages'],
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` },
  });
  try {
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
  } finally {
    fs.writeFileSync(path.join(bin, 'go'), '');
  }
  const run = await migrating;
  expect(run).toMatchObject({
    code: 5,
    json: { ok: false, error: { code: 'ERR_MIGRATION_ROLLED_BACK', serverOn: 'source', phase: 'moveAddress' } },
  });
  const { clients, server } = await pair.reports();
  expectEveryConnectionExact(clients, server, STREAM);
  expect(server.pid).toBe(pair.serverPid); // the very process, resumed, not a restored copy
  expect(fs.statSync(`/proc/${pair.serverPid}/ns/net`).ino).toBe(l.netnsInode(l.A));
  expect(l.hasAddress(l.A)).toBe(true);
  expect(l.hasAddress(l.B)).toBe(false);
  expect(l.clientResets()).toEqual(before);
  expect(l.nftTables(l.A)).not.toMatch(/CRIU/);
}, 180_000);

it('lazy: agent killed during the page transfer (after RESTORED): no rollback, the process is lost on both hosts, A clean', async () => {
  lab = new AgentLab(locateCriu().path);
  const l = lab;
  const agent = await l.startAgent([], l.criuPath, undefined, true);
  const pair = await l.startPair('lazy-lost', STREAM);
  await pair.waitFlowing(256 * 1024);
  const migrating = l.migrate(pair.serverPid, { extra: ['--lazy-pages'] });
  await agent.waitEvent((e) => e.event === 'restore' && e.state === 'done', 'the agent to restore', 60000);
  // Still transferring: the test would prove nothing if every page had already arrived.
  expect(agent.events.some((e) => e.event === 'pages')).toBe(false);
  await killAgent(agent); // B fails: its namespace (the restored tree, the daemon) dies with it
  const run = await migrating;
  expect(run).toMatchObject({
    code: 6,
    json: { ok: false, error: { code: 'ERR_MIGRATION_LOST', serverOn: 'none', phase: 'restore' } },
  });
  // The frozen source copy was killed, not resumed (its connections belong to the target's past).
  await waitUntil(
    () => {
      try {
        return fs.readFileSync(`/proc/${pair.serverPid}/stat`, 'utf8').includes(') Z ');
      } catch {
        return true;
      }
    },
    { what: 'the source copy to be gone' },
  );
  expect(fs.existsSync(path.join(pair.statusDir, 'server.json'))).toBe(false);
  expect(l.nftTables(l.A)).not.toMatch(/CRIU/);
  expect(l.hasAddress(l.A)).toBe(false);
}, 180_000);
