/**
 * `node-criu dump --leave-running` then `restore`: the restore is refused (exit 8,
 * ERR_ORIGINAL_RUNNING) while the original runs and owns its connections, which go on untouched;
 * once it has stopped, the refusal lifts and a warning says the connections are stale.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { readDumpRecord, checkOriginal } from '../../lib/cli/dump-record';
import { expectEveryConnectionExact } from '../helpers/traffic';
import { ProcessLab, killPid, pidAlive } from '../migration/process-lab';

const CLI = path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js');

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('node-criu dump --leave-running, then restore', () => {
  const STREAM = { connections: 2, total: 2 * 1024 * 1024, paceBytes: 16384, paceMs: 5 };
  let lab: ProcessLab;

  beforeEach(() => {
    lab = new ProcessLab();
  });
  afterEach(async () => {
    await lab?.destroy();
  });

  it('refuses the restore while the original runs (exit 8); its clients lose nothing; lifted once it has stopped', async () => {
    const pair = await lab.startPair('cli-leave', STREAM);
    await pair.waitFlowing(256 * 1024);
    const rsts = lab.rstsIntoClients();
    const images = path.join(pair.statusDir, 'images');
    const netns = lab.path(lab.S);
    const dump = await cli([
      'dump',
      '--pid',
      String(pair.serverPid),
      '--images-dir',
      images,
      '--netns',
      netns,
      '--leave-running',
    ]);
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
    expectEveryConnectionExact(clients, server, STREAM);
    expect(lab.rstsIntoClients()).toBe(rsts);

    await killPid(pair.serverPid);
    expect(await checkOriginal(images)).toMatch(/stale|reset the restored ones/);
    // A dump without the note (not made by node-criu dump) is not second-guessed.
    fs.rmSync(path.join(images, 'node-criu-dump.json'));
    expect(await checkOriginal(images)).toBeUndefined();
  });
});
