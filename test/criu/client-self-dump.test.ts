/**
 * Self-dump: a Node process dumps itself with `criu.dump({ imagesDir })` (no pid). CRIU kills it;
 * the copy restored later returns from the same await with restored: true. The fixture runs the
 * compiled client, built here into a temporary dist/ (so a stale dist/ cannot fool the test).
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Criu } from '../../lib';
import { FIXTURES, killPid, makeTempDir, removeDir, waitForFile } from './helpers';

const repo = path.join(__dirname, '..', '..');

describe('Criu self-dump (DUMP without pid) against CRIU 4.2.1', () => {
  let dir: string;
  let restoredPid: number | undefined;

  beforeAll(() => {
    dir = makeTempDir('self-dump');
    execFileSync(process.execPath, [
      path.join(repo, 'node_modules', 'typescript', 'bin', 'tsc'),
      '-p',
      path.join(repo, 'tsconfig.build.json'),
      '--outDir',
      path.join(dir, 'pkg', 'dist'),
    ]);
    // dist/ finds the addon and the schema relative to its parent, like in the package.
    for (const name of ['build', 'proto', 'node_modules'])
      fs.symlinkSync(path.join(repo, name), path.join(dir, 'pkg', name));
  }, 120000);

  afterAll(async () => {
    await killPid(restoredPid);
    removeDir(dir);
  });

  it('the restored process resolves dump() with restored: true', async () => {
    const images = path.join(dir, 'images');
    const status = path.join(dir, 'status');
    fs.mkdirSync(images);
    fs.mkdirSync(status);
    const child = spawn(
      process.execPath,
      [path.join(FIXTURES, 'criu-self-dump.js'), path.join(dir, 'pkg', 'dist', 'index.js'), images, status],
      {
        detached: true,
        stdio: 'ignore',
        env: { ...process.env, UV_USE_IO_URING: '0' },
      },
    );
    const exit = await new Promise<{ code: number | null; signal: string | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    // CRIU kills the dumped process once its images are written; no outcome file was written.
    expect(exit).toEqual({ code: null, signal: 'SIGKILL' });
    expect(fs.readdirSync(status)).toEqual([]);
    expect(fs.existsSync(path.join(images, 'inventory.img'))).toBe(true);

    const criu = new Criu();
    const restored = await criu.restore({ imagesDir: images, networkLock: 'skip' });
    restoredPid = restored.pid;
    expect(restored.pid).toBe(child.pid);
    const outcome = JSON.parse(await waitForFile(path.join(status, 'restored.json')));
    expect(outcome).toEqual({ restored: true, pid: child.pid });
    await criu.close();
  });
});
