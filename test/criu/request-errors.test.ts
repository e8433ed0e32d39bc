/**
 * What a user of `new Criu()` meets first: a missing imagesDir is created (0700) by requests that
 * write images, and a failed request's message names the real cause from CRIU's log (a dump of
 * a pid that does not exist says "No such process", not CRIU's first, harmless RLIMIT_NOFILE error).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Criu } from '../../lib/criu';
import { makeTempDir, newFds, openFds, removeDir } from './helpers';

/** A pid no task has: counting down from pid_max. */
function freePid(): number {
  const max = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  for (let pid = max - 1; pid > 1; pid--) {
    try {
      process.kill(pid, 0);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
  throw new Error('no free pid');
}

describe('Criu: imagesDir and failure messages (real CRIU)', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir('reqerr');
  });
  afterEach(() => removeDir(dir));

  it("a dump of a pid that does not exist fails with ESRCH naming 'No such process'; the missing imagesDir was created 0700", async () => {
    const criu = new Criu();
    const imagesDir = path.join(dir, 'new', 'ckpt');
    const pid = freePid();
    const fds = openFds();
    try {
      const error = (await criu.dump({ pid, imagesDir, tcpEstablished: true }).catch((e: unknown) => e)) as Error & {
        code: string;
        crErrmsg?: string;
        logFile?: string;
      };
      expect(error).toMatchObject({ name: 'CriuRequestError', code: 'ESRCH', requestType: 'DUMP' });
      expect(error.message).toMatch(new RegExp(`^CRIU DUMP failed: .*${pid}.*No such process; errno 3, ESRCH; log: `));
      expect(error.message).not.toMatch(/RLIMIT_NOFILE/);
      // The log the message points to is in the directory the client created.
      expect(error.logFile).toBe(path.join(imagesDir, 'criu-dump.log'));
      expect(fs.existsSync(error.logFile as string)).toBe(true);
      for (const created of [path.join(dir, 'new'), imagesDir]) expect(fs.statSync(created).mode & 0o777).toBe(0o700);
    } finally {
      await criu.close();
    }
    expect(newFds(fds)).toEqual([]);
  });

  it('cpuinfoDump creates its imagesDir; restore and cpuinfoCheck need an existing one (ENOENT, nothing created)', async () => {
    const criu = new Criu();
    try {
      const imagesDir = path.join(dir, 'cpu');
      await criu.cpuinfoDump({ imagesDir });
      expect(fs.existsSync(path.join(imagesDir, 'cpuinfo.img'))).toBe(true);
      expect(fs.statSync(imagesDir).mode & 0o777).toBe(0o700);
      const missing = path.join(dir, 'missing');
      await expect(criu.restore({ imagesDir: missing })).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
      await expect(criu.cpuinfoCheck({ imagesDir: missing })).rejects.toMatchObject({ code: 'ENOENT' });
      expect(fs.existsSync(missing)).toBe(false);
    } finally {
      await criu.close();
    }
  });

  it('an existing imagesDir is used as it is (its mode is not changed)', async () => {
    const criu = new Criu();
    try {
      const imagesDir = path.join(dir, 'shared');
      fs.mkdirSync(imagesDir);
      fs.chmodSync(imagesDir, 0o750);
      await criu.cpuinfoDump({ imagesDir });
      expect(fs.statSync(imagesDir).mode & 0o777).toBe(0o750);
    } finally {
      await criu.close();
    }
  });
});
