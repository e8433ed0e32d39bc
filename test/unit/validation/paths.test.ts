/**
 * The pure halves of the path rules (no root needed): which directory modes and owners are safe
 * for images and above them (lib/security.ts), and which files are namespace files
 * (lib/sys/netns.ts: O_PATH, O_NOFOLLOW, nsfs), refusing a FIFO without blocking.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { ancestorProblem, directoryProblem } from '../../../lib/security';
import { assertNamespaceFile, isProcNamespaceLink } from '../../../lib/sys/netns';

function stat(mode: number, uid: number, kind: 'dir' | 'file' | 'link' = 'dir') {
  return { mode, uid, isDirectory: () => kind === 'dir', isSymbolicLink: () => kind === 'link' };
}

describe('directory rules', () => {
  const me = 1000;

  it('ancestors: root or us, not writable by group/others unless sticky', () => {
    expect(ancestorProblem(stat(0o755, 0), me)).toBeUndefined();
    expect(ancestorProblem(stat(0o700, me), me)).toBeUndefined();
    expect(ancestorProblem(stat(0o1777, 0), me)).toBeUndefined(); // /tmp
    expect(ancestorProblem(stat(0o1770, 0), me)).toBeUndefined();
    expect(ancestorProblem(stat(0o775, 0), me)).toMatch(/writable by its group \(mode 0775\)/);
    expect(ancestorProblem(stat(0o757, 0), me)).toMatch(/writable by every user/);
    expect(ancestorProblem(stat(0o755, 1001), me)).toMatch(/owned by uid 1001, neither root nor us/);
    expect(ancestorProblem(stat(0o755, 0, 'file'), me)).toBe('is not a directory');
  });

  it('the directory itself: ours, a directory and no symlink, not writable by group/others (sticky or not)', () => {
    expect(directoryProblem(stat(0o700, me), me)).toBeUndefined();
    expect(directoryProblem(stat(0o755, me), me)).toBeUndefined();
    expect(directoryProblem(stat(0o777, me, 'link'), me)).toBe('is a symbolic link');
    expect(directoryProblem(stat(0o600, me, 'file'), me)).toBe('is not a directory');
    expect(directoryProblem(stat(0o700, 0), me)).toMatch(/owned by uid 0, not by us/);
    expect(directoryProblem(stat(0o1777, me), me)).toMatch(/writable by every user/);
    expect(directoryProblem(stat(0o770, me), me)).toMatch(/writable by its group/);
  });
});

describe('namespace files', () => {
  let dir: string;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-unit-netns-'));
  });

  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('only /proc/<pid|self|thread-self>/ns/net is followed as a link', () => {
    for (const ok of ['/proc/self/ns/net', '/proc/thread-self/ns/net', '/proc/42/ns/net'])
      expect(isProcNamespaceLink(ok)).toBe(true);
    for (const no of ['/proc/self/ns/pid', '/proc/../tmp/ns/net', '/proc/1x/ns/net', '/run/netns/a', '/proc//ns/net'])
      expect(isProcNamespaceLink(no)).toBe(false);
  });

  it('a FIFO, a file, a device, a directory and a symlink to a namespace are refused (ERR_INVALID_NETNS) at once; no fd left', () => {
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    fs.writeFileSync(path.join(dir, 'file'), '');
    fs.symlinkSync('/proc/self/ns/net', path.join(dir, 'link'));
    const fds = fs.readdirSync('/proc/self/fd').length;
    for (const p of [fifo, path.join(dir, 'file'), '/dev/null', dir, path.join(dir, 'link')]) {
      const started = Date.now();
      expect(() => assertNamespaceFile(p)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_NETNS' }));
      expect(Date.now() - started).toBeLessThan(1000);
    }
    expect(() => assertNamespaceFile(path.join(dir, 'missing'))).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(() => assertNamespaceFile('/proc/self/ns/net')).not.toThrow();
    expect(fs.readdirSync('/proc/self/fd').length).toBe(fds);
  });
});
