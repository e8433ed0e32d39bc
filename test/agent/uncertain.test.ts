/**
 * The channel lost after RESTORE was sent: the agent is SIGKILLed while it adds the address (its
 * `ip addr add` held by a wrapper first on its PATH, so CRIU never starts there). The source must
 * not roll back: ERR_MIGRATION_UNCERTAIN (exit 7), its images and CRIU's lock kept. A new agent
 * sweeps the dead one's hold table, and the server is restored on A by hand as the message says:
 * the clients go on byte-exact, no RST (the lock dropped their packets meanwhile).
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { locateCriu } from '../../lib';
import { SERVICE_CIDR } from '../helpers/hosts';
import { expectEveryConnectionExact } from '../helpers/traffic';
import { waitUntil } from '../helpers/wait';
import { AgentLab, CLI } from './agent-lab';

const STREAM = { connections: 3, total: 12 * 1024 * 1024, paceBytes: 8192, paceMs: 5 };

let lab: AgentLab | undefined;

afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

it('agent killed after RESTORE: uncertain, nothing rolled back, a new agent sweeps, restored by hand exactly', async () => {
  lab = new AgentLab(locateCriu().path);
  const l = lab;
  const bin = path.join(l.statusRoot, 'bin');
  fs.mkdirSync(bin);
  const realIp = execFileSync('sh', ['-c', 'command -v ip'], { encoding: 'utf8' }).trim();
  fs.writeFileSync(
    path.join(bin, 'ip'),
    `#!/bin/sh\nif [ "$1" = addr ] && [ "$2" = add ]; then\n  echo $$ > "${bin}/waiting"\n  n=0; while [ ! -e "${bin}/go" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done\n  [ -e "${bin}/go" ] || exit 1\nfi\nexec ${realIp} "$@"\n`,
    { mode: 0o755 },
  );
  const agent = await l.startAgent([], l.criuPath, { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` });
  // In A's own mount namespace (no external files): a plain `node-criu restore` can bring it back.
  const pair = await l.startPair('uncertain', STREAM, false);
  await pair.waitFlowing(256 * 1024);
  const before = l.clientResets();
  const imagesDir = path.join(l.statusRoot, 'a-images');
  const migrating = l.migrate(pair.serverPid, { imagesDir });
  await waitUntil(() => fs.existsSync(path.join(bin, 'waiting')), {
    what: "the agent's ip addr add",
    timeoutMs: 60000,
  });
  agent.child.kill('SIGKILL');
  process.kill(Number(fs.readFileSync(path.join(bin, 'waiting'), 'utf8')), 'SIGKILL');
  const run = await migrating;
  expect(run).toMatchObject({
    code: 7,
    json: { ok: false, error: { code: 'ERR_MIGRATION_UNCERTAIN', serverOn: 'unknown', phase: 'restore' } },
  });
  const error = (run.json as { error: { message: string; imagesDir: string } }).error;
  expect(error.message).toContain(`node-criu restore --images-dir ${error.imagesDir}`);
  expect(error.message).toContain(`ip addr add ${SERVICE_CIDR} dev eth0`);
  // Nothing rolled back: no server and no address on A, the migration's lock still there (the
  // message names its table and how to lift it); the dead agent's hold on B.
  expect(fs.existsSync(`/proc/${pair.serverPid}`)).toBe(false);
  expect(l.hasAddress(l.A)).toBe(false);
  expect(l.hasAddress(l.B)).toBe(false);
  const lockTable = /table inet (node_criu_migrate_\d+_[0-9a-f]+)/.exec(l.nftTables(l.A))?.[1];
  expect(lockTable).toBeDefined();
  expect(error.message).toContain(`nft delete table inet ${lockTable}`);
  expect(l.nftTables(l.B)).toMatch(/node_criu_agent_/);

  // A new agent sweeps the dead one's hold table.
  const next = await l.startAgent();
  expect(next.events).toEqual(expect.arrayContaining([expect.objectContaining({ event: 'swept' })]));
  expect(l.nftTables(l.B)).not.toMatch(/node_criu_agent_/);

  // By hand, as the message says: the address back on A, then node-criu restore there.
  l.hosts.ip(l.A, ['addr', 'add', SERVICE_CIDR, 'dev', 'eth0']);
  const restored = await promisify(execFile)('nsenter', [
    `--net=${l.A.netnsPath}`,
    '--',
    process.execPath,
    CLI,
    'restore',
    '--images-dir',
    error.imagesDir,
    '--criu-path',
    l.criuPath,
    '--json',
  ]);
  expect(JSON.parse(restored.stdout)).toMatchObject({ ok: true });
  // Then the lock, as the message says.
  execFileSync('nsenter', [`--net=${l.A.netnsPath}`, '--', 'nft', 'delete', 'table', 'inet', lockTable as string]);
  l.track(pair.serverPid);
  expect(fs.statSync(`/proc/${pair.serverPid}/ns/net`).ino).toBe(l.netnsInode(l.A));
  const { clients, server } = await pair.reports();
  expectEveryConnectionExact(clients, server, STREAM);
  expect(l.clientResets()).toEqual(before);
  expect(l.nftTables(l.A)).not.toMatch(/CRIU-|node_criu_migrate_/);
}, 180_000);
