/**
 * The built CLI (node dist/cli/main.js), spawned like a user would: --help for every command,
 * --json documents on stdout, exit codes and messages for what a user gets wrong (not root, CRIU
 * missing, pid not found, namespace missing, bad flags), and real dump/restore/migrate runs of a
 * streaming server with every byte checked both ways.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { NetnsLab } from './helpers/netns';
import { expectEveryConnectionExact } from './helpers/traffic';
import { checkOriginal, readDumpRecord } from '../lib/cli/dump-record';
import { readableCopy } from './helpers/other-uid';
import { ProcessLab, killPid, pidAlive, type ClientsReport, type ServerReport } from './migration/process-lab';

const ROOT = path.join(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], options: { uid?: number; gid?: number; cli?: string; cwd?: string } = {}): Promise<Run> {
  const { cli: script = CLI, ...spawnOptions } = options;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...spawnOptions });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** stdout must be exactly one JSON document. */
function json(run: Run): Record<string, any> {
  const lines = run.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]);
}

beforeAll(() => {
  // Build when the compiled CLI is missing or older than its sources (npm test's pretest builds too).
  const newest = Math.max(
    ...fs.readdirSync(path.join(ROOT, 'lib', 'cli')).map((f) => fs.statSync(path.join(ROOT, 'lib', 'cli', f)).mtimeMs),
  );
  if (!fs.existsSync(CLI) || fs.statSync(CLI).mtimeMs < newest)
    execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'ignore', timeout: 120000 });
}, 150000);

describe('node-criu CLI: help, usage and environment errors', () => {
  it('is executable with a node shebang', () => {
    expect(fs.readFileSync(CLI, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    expect(fs.statSync(CLI).mode & 0o111).not.toBe(0);
    const direct = spawnSync(CLI, ['--help'], { encoding: 'utf8' });
    expect(direct.status).toBe(0);
    expect(direct.stdout).toMatch(/^Usage: node-criu <command>/);
  });

  it('--help lists the commands; every command has its own --help', async () => {
    const top = await cli(['--help']);
    expect(top.code).toBe(0);
    for (const command of ['check', 'dump', 'restore', 'migrate', 'demo'])
      expect(top.stdout).toContain(`  ${command} `);
    for (const command of ['check', 'dump', 'restore', 'migrate', 'demo']) {
      const help = await cli([command, '--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`^Usage: node-criu ${command}`));
      expect(help.stdout).toContain('--json');
    }
    expect((await cli([])).code).toBe(2);
  });

  it('usage errors exit 2 with a message (and a JSON document with --json)', async () => {
    const unknown = await cli(['frobnicate', '--json']);
    expect(unknown.code).toBe(2);
    expect(json(unknown)).toMatchObject({ ok: false, error: { code: 'ERR_USAGE', exitCode: 2 } });
    expect(unknown.stderr).toContain("unknown command 'frobnicate'");

    const badFlag = await cli(['dump', '--pid', '1', '--images-dir', '/tmp/x', '--frob']);
    expect(badFlag.code).toBe(2);
    expect(badFlag.stderr).toMatch(/Unknown option '--frob'/);

    const badPid = await cli(['dump', '--pid', 'abc', '--images-dir', '/tmp/x']);
    expect(badPid.code).toBe(2);
    expect(badPid.stderr).toContain("--pid must be a positive integer, got 'abc'");

    const missing = await cli(['migrate', '--images-dir', '/tmp/x']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--pid is required');

    const route = await cli(['migrate', '--route', 'connections', '--pid', '1', '--images-dir', '/tmp/x', '--json']);
    expect(route.code).toBe(2);
    expect(json(route).error.message).toContain('handOverConnections');

    const transfer = await cli(['migrate', '--pid', '1', '--images-dir', '/tmp/x', '--transfer', 'floppy']);
    expect(transfer.code).toBe(2);
    expect(transfer.stderr).toContain("--transfer must be 'directory' or 'page-server'");
  });

  it('check --json reports CRIU, kernel checks and features as one document', async () => {
    const run = await cli(['check', '--json']);
    expect(run.code).toBe(0);
    const doc = json(run);
    expect(doc).toMatchObject({ ok: true, root: true, kernelChecks: 'passed', problems: [] });
    expect(doc.criu.version).toMatch(/^4\.(2|[3-9])/);
    expect(typeof doc.features.memTrack).toBe('boolean');
    expect(run.stderr).toContain('CRIU 4.');
    const quiet = await cli(['check', '--json', '--quiet']);
    expect(quiet.stderr).toBe('');
  });

  it('CRIU missing (bogus --criu-path): exit 3 with the install hint', async () => {
    const run = await cli(['check', '--criu-path', '/nonexistent/criu', '--json']);
    expect(run.code).toBe(3);
    expect(json(run).error).toMatchObject({ code: 'ERR_CRIU_NOT_FOUND', exitCode: 3 });
    expect(run.stderr).toContain('install-criu.sh');
    const dump = await cli([
      'dump',
      '--pid',
      String(process.pid),
      '--images-dir',
      '/tmp/ncr-never',
      '--criu-path',
      '/nonexistent/criu',
    ]);
    expect(dump.code).toBe(3);
    expect(fs.existsSync('/tmp/ncr-never')).toBe(false);
  });

  it('not root: exit 3 and says to use sudo', async () => {
    // uid 65534 may not be able to read the checkout (a clone under /root): it runs a copy.
    const copy = readableCopy();
    try {
      const asNobody = { uid: 65534, gid: 65534, cli: copy.at('dist/cli/main.js'), cwd: copy.root };
      const run = await cli(['check', '--json'], asNobody);
      expect(run.code).toBe(3);
      expect(json(run).error.code).toBe('ERR_NOT_ROOT');
      expect(run.stderr).toContain('sudo');
      const dump = await cli(['dump', '--pid', '1', '--images-dir', '/tmp/ncr-never'], asNobody);
      expect(dump.code).toBe(3);
    } finally {
      copy.dispose();
    }
  });

  it('pid not found, namespace missing, no images: exit 4', async () => {
    const pid = await cli(['dump', '--pid', '4194303', '--images-dir', '/tmp/ncr-never', '--json']);
    expect(pid.code).toBe(4);
    expect(json(pid).error).toMatchObject({ code: 'ERR_PID_NOT_FOUND', exitCode: 4 });
    expect(pid.stderr).toContain('process 4194303 not found');

    const netns = await cli([
      'migrate',
      '--pid',
      String(process.pid),
      '--images-dir',
      '/tmp/ncr-never',
      '--target-netns',
      '/run/netns/ncr-no-such-ns',
      '--json',
    ]);
    expect(netns.code).toBe(4);
    expect(json(netns).error.code).toBe('ERR_NETNS_NOT_FOUND');
    expect(netns.stderr).toContain('ip netns add');

    // A namespace that exists, but the process does not run in it.
    const lab = new NetnsLab();
    try {
      const other = lab.add('other');
      const mismatch = await cli([
        'dump',
        '--pid',
        String(process.pid),
        '--images-dir',
        '/tmp/ncr-never',
        '--netns',
        lab.path(other),
        '--json',
      ]);
      expect(mismatch.code).toBe(4);
      expect(json(mismatch).error.code).toBe('ERR_NETNS_MISMATCH');
    } finally {
      lab.destroy();
    }

    const images = await cli(['restore', '--images-dir', '/tmp/ncr-no-such-images']);
    expect(images.code).toBe(4);
    expect(images.stderr).toContain('holds no CRIU dump');
    expect(fs.existsSync('/tmp/ncr-never')).toBe(false);
  });
});

describe('node-criu demo', () => {
  it('runs the demo module (process route, 5 clients) and prints its report as JSON', async () => {
    const run = await cli([
      'demo',
      '--clients',
      '5',
      '--routes',
      'process',
      '--warmup-ms',
      '300',
      '--after-ms',
      '300',
      '--json',
    ]);
    const doc = json(run);
    expect(run.code).toBe(0);
    expect(doc).toMatchObject({ ok: true, command: 'demo', report: { ok: true, clients: 5 } });
    expect(doc.report.routes).toHaveLength(1);
    expect(doc.report.routes[0]).toMatchObject({ connections: 5, kept: 5, exactBothWays: 5, rsts: 0 });
    const bad = await cli(['demo', '--routes', 'teleport']);
    expect(bad.code).toBe(2);
  });
});

describe('node-criu CLI against a streaming server', () => {
  const STREAM = { connections: 2, total: 2 * 1024 * 1024, paceBytes: 16384, paceMs: 5 };
  let lab: ProcessLab;

  beforeEach(() => {
    lab = new ProcessLab();
  });

  afterEach(async () => {
    await lab?.destroy();
  });

  const expectAllExact = (clients: ClientsReport, server: ServerReport): void =>
    expectEveryConnectionExact(clients, server, STREAM);

  /** `node-criu dump` of the server in S. */
  const dumpInS = (pid: number, images: string, ...extra: string[]): Promise<Run> =>
    cli(['dump', '--pid', String(pid), '--images-dir', images, '--netns', lab.path(lab.S), ...extra]);

  it('migrate --move-address --json: moved to the target namespace, every byte exact, no RST', async () => {
    const pair = await lab.startPair('cli-migrate', STREAM);
    await pair.waitFlowing(256 * 1024);
    const rsts = lab.rstsIntoClients();
    const run = await cli([
      'migrate',
      '--pid',
      String(pair.serverPid),
      '--images-dir',
      path.join(pair.statusDir, 'images'),
      '--source-netns',
      lab.path(lab.S),
      '--target-netns',
      lab.path(lab.T),
      '--move-address',
      `${lab.serviceIp}/24`,
      '--device',
      'eth0',
      '--json',
    ]);
    const doc = json(run);
    expect(run.code).toBe(0);
    lab.track(doc.restoredPid);
    expect(doc).toMatchObject({
      ok: true,
      command: 'migrate',
      route: 'process',
      restoredPid: pair.serverPid,
      transfer: 'directory',
    });
    for (const phase of ['dump', 'transfer', 'moveAddress', 'restore', 'total'])
      expect(doc.phases[phase]).toBeGreaterThan(0);
    expect(run.stderr).toContain('restore done in');
    expect(lab.pidNetnsInode(doc.restoredPid)).toBe(lab.netnsInode(lab.T));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(lab.rstsIntoClients()).toBe(rsts);
  });

  it('migrate whose --hook fails after the dump: rolled back onto the source, exit 5, nothing lost', async () => {
    const pair = await lab.startPair('cli-rollback', STREAM);
    await pair.waitFlowing(256 * 1024);
    const rsts = lab.rstsIntoClients();
    const hook = path.join(pair.statusDir, 'hook');
    // Refuses to move the address (a target that is not ready); moving back is a no-op.
    fs.writeFileSync(hook, '#!/bin/sh\necho "$1" >> "$(dirname "$0")/hook.log"\n[ "$1" = to-source ]\n', {
      mode: 0o755,
    });
    const run = await cli([
      'migrate',
      '--pid',
      String(pair.serverPid),
      '--images-dir',
      path.join(pair.statusDir, 'images'),
      '--source-netns',
      lab.path(lab.S),
      '--target-netns',
      lab.path(lab.T),
      '--hook',
      hook,
      '--json',
    ]);
    expect(run.code).toBe(5);
    expect(json(run).error).toMatchObject({
      code: 'ERR_MIGRATION_ROLLED_BACK',
      serverOn: 'source',
      pid: pair.serverPid,
      phase: 'moveAddress',
    });
    expect(fs.readFileSync(path.join(pair.statusDir, 'hook.log'), 'utf8')).toBe('to-target\nto-source\n');
    expect(run.stderr).toContain('rolling back to the source');
    lab.track(pair.serverPid);
    expect(lab.pidNetnsInode(pair.serverPid)).toBe(lab.netnsInode(lab.S));
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(lab.rstsIntoClients()).toBe(rsts);
  });

  it('dump then restore inside a namespace: the clients lose nothing', async () => {
    const pair = await lab.startPair('cli-dump', STREAM);
    await pair.waitFlowing(256 * 1024);
    const images = path.join(pair.statusDir, 'images');
    const dump = await dumpInS(pair.serverPid, images, '--json');
    expect(dump.code).toBe(0);
    expect(json(dump)).toMatchObject({ ok: true, command: 'dump', pid: pair.serverPid, leftRunning: false });
    expect(fs.statSync(images).mode & 0o777).toBe(0o700);
    expect(pidAlive(pair.serverPid)).toBe(false);
    const restore = await cli(['restore', '--images-dir', images, '--netns', lab.path(lab.S)]);
    expect(restore.code).toBe(0);
    expect(restore.stdout).toContain(`restored process ${pair.serverPid}`);
    lab.track(pair.serverPid);
    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
  });

  it('refuses the restore while the original runs (exit 8); its clients lose nothing; lifted once it has stopped', async () => {
    const pair = await lab.startPair('cli-leave', STREAM);
    await pair.waitFlowing(256 * 1024);
    const rsts = lab.rstsIntoClients();
    const images = path.join(pair.statusDir, 'images');
    const netns = lab.path(lab.S);
    const dump = await dumpInS(pair.serverPid, images, '--leave-running');
    expect(dump.code).toBe(0);
    expect(dump.stderr).toMatch(
      /keeps running and owns its TCP connections: 'node-criu restore' of these images is refused/,
    );
    expect(readDumpRecord(images)).toMatchObject({ pid: pair.serverPid, leftRunning: true, tcpEstablished: true });

    const refused = await cli(['restore', '--images-dir', images, '--netns', netns, '--json']);
    expect(refused.code).toBe(8);
    expect(JSON.parse(refused.stdout)).toMatchObject({
      ok: false,
      error: { code: 'ERR_ORIGINAL_RUNNING', exitCode: 8, pid: pair.serverPid },
    });
    expect(refused.stderr).toMatch(/still runs and owns its TCP connections/);
    expect(refused.stderr).toMatch(/hint: .*without --leave-running or use 'node-criu migrate'/);
    expect(pidAlive(pair.serverPid)).toBe(true);

    const { clients, server } = await pair.reports();
    expectAllExact(clients, server);
    expect(lab.rstsIntoClients()).toBe(rsts);

    await killPid(pair.serverPid);
    expect(await checkOriginal(images)).toMatch(/stale|reset the restored ones/);
    // A dump without the note (not made by node-criu dump) is not second-guessed.
    fs.rmSync(path.join(images, 'node-criu-dump.json'));
    expect(await checkOriginal(images)).toBeUndefined();
  });
});
