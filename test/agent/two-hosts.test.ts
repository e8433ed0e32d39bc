/**
 * The process route across two hosts that share nothing but the network (agent-lab.ts):
 * `node-criu agent` on B, `node-criu migrate --to` on A, a server streaming both ways with
 * clients in C. Every byte once both ways, no RST, no reconnect; the longest client gap is
 * printed. Nothing is left on either host afterwards (files, nft tables, addresses, CRIU).
 */
import { existsSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { locateCriu } from '../../lib';
import { expectEveryConnectionExact } from '../helpers/traffic';
import { waitUntil } from '../helpers/wait';
import { AgentLab } from './agent-lab';

// Paced to flow ~8 s, so the move happens mid-stream in both directions.
const STREAM = { connections: 3, total: 12 * 1024 * 1024, paceBytes: 8192, paceMs: 5 };

let lab: AgentLab | undefined;

afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

it('moves a streaming server from A to B through the agent: bytes exact both ways, no RST, nothing left', async () => {
  lab = new AgentLab(locateCriu().path);
  const agent = await lab.startAgent();
  const pair = await lab.startPair('happy', STREAM);
  await pair.waitFlowing(256 * 1024);
  const before = lab.clientResets();

  const run = await lab.migrate(pair.serverPid);
  // The stream was still going when the move ended (the gap below is a real one).
  expect(existsSync(path.join(pair.statusDir, 'clients.json'))).toBe(false);
  expect({ code: run.code, stderr: run.code === 0 ? '' : run.stderr }).toEqual({ code: 0, stderr: '' });
  const result = run.json as Record<string, any>;
  expect(result).toMatchObject({ ok: true, restoredPid: pair.serverPid, transfer: 'agent' });
  expect(result.files).toBeGreaterThan(3);
  expect(result.agent).toMatchObject({ host: lab.B.address, name: 'agent' });
  // The server runs on B now, in B's network namespace.
  expect(statSync(`/proc/${pair.serverPid}/ns/net`).ino).toBe(lab.netnsInode(lab.B));

  const { clients, server } = await pair.reports();
  expectEveryConnectionExact(clients, server, STREAM);
  expect(lab.clientResets()).toEqual(before);
  const gap = Math.max(...Object.values(clients.maxGapMs));
  process.stdout.write(
    `two hosts: downtime ${Math.round(result.downtimeMs as number)} ms (dump ${result.phases.dump}, transfer ${result.phases.transfer}, restore ${result.phases.restore}; ${result.files} files, ${result.bytes} bytes); longest client gap ${gap} ms\n`,
  );

  // Nothing left: the agent's per-migration directory, hold tables, CRIU locks; the address moved.
  await agent.waitEvent((e) => e.event === 'session-end', 'the session to end');
  expect(lab.agentWorkDir(agent.pid)).toEqual([]);
  expect(lab.nftTables(lab.B)).not.toMatch(/node_criu_agent|CRIU/);
  expect(lab.nftTables(lab.A)).not.toMatch(/CRIU/);
  expect(lab.hasAddress(lab.A)).toBe(false);
  expect(lab.hasAddress(lab.B)).toBe(true);
  expect(agent.events.map((e) => e.event)).toEqual(expect.arrayContaining(['hello', 'images', 'restore']));

  // SIGTERM: the agent closes cleanly.
  agent.child.kill('SIGTERM');
  await waitUntil(() => agent.child.exitCode !== null, { what: 'the agent to exit' });
  expect(agent.child.exitCode).toBe(0);
}, 180_000);
