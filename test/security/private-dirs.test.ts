/**
 * Images directories are created 0700 (also the missing parents, whatever the umask), an existing
 * one keeps its mode, and one another user could write to (group/world-writable, or owned by
 * another uid, or a symlink, or below a parent others could change) is refused with
 * ERR_UNSAFE_DIRECTORY before anything runs: by the library (ensurePrivateDirectory,
 * checkPrivateDirectory, migrateProcess) and by the CLI (dump, migrate and restore: exit 2).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { migrateProcess } from '../../lib';
import { checkPrivateDirectory, ensurePrivateDirectory } from '../../lib/security';

const DIST = path.join(__dirname, '..', '..', 'dist');
const CLI = path.join(DIST, 'cli', 'main.js');

function mode(file: string): number {
  return fs.statSync(file).mode & 0o7777;
}

describe('ensurePrivateDirectory', () => {
  let dir: string;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-sec-dirs-'));
  });

  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('creates a missing directory and its missing parents 0700, even with umask 0', () => {
    const target = path.join(dir, 'a', 'b', 'images');
    const previous = process.umask(0);
    try {
      expect(ensurePrivateDirectory(target)).toBe(target);
    } finally {
      process.umask(previous);
    }
    for (const d of [target, path.dirname(target), path.dirname(path.dirname(target))]) expect(mode(d)).toBe(0o700);
    expect(mode(dir)).toBe(0o700); // mkdtemp's, untouched
  });

  it('uses an existing directory that only we can write as it is (never loosened, never changed); warns when others can read it', () => {
    const modes = [0o700, 0o500, 0o750, 0o755];
    for (const existing of modes) {
      const target = path.join(dir, `existing-${existing.toString(8)}`);
      fs.mkdirSync(target);
      fs.chmodSync(target, existing);
    }
    // In a child: process warnings go to its stderr (jest's sandbox does not see them).
    const script = `const { ensurePrivateDirectory } = require(${JSON.stringify(path.join(DIST, 'security'))});
      for (const m of ${JSON.stringify(modes.map((m) => m.toString(8)))}) ensurePrivateDirectory(${JSON.stringify(dir)} + '/existing-' + m);`;
    const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(run.status).toBe(0);
    for (const existing of modes) expect(mode(path.join(dir, `existing-${existing.toString(8)}`))).toBe(existing);
    const warnings = run.stderr.split('\n').filter((line) => line.includes('[NODE_CRIU_IMAGES_DIR_READABLE]'));
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/existing-750 is accessible to other users \(mode 0750\)/);
    expect(warnings[1]).toMatch(/existing-755 is accessible to other users \(mode 0755\)/);
  });

  it('refuses group/world-writable directories, foreign owners and non-directories', () => {
    const cases: [string, (p: string) => void, RegExp][] = [
      ['world', (p) => (fs.mkdirSync(p), fs.chmodSync(p, 0o777)), /writable by every user \(mode 0777\)/],
      ['sticky', (p) => (fs.mkdirSync(p), fs.chmodSync(p, 0o1777)), /writable by every user/],
      ['group', (p) => (fs.mkdirSync(p), fs.chmodSync(p, 0o770)), /writable by its group \(mode 0770\)/],
      ['foreign', (p) => (fs.mkdirSync(p, { mode: 0o700 }), fs.chownSync(p, 65534, 65534)), /owned by uid 65534/],
      ['file', (p) => fs.writeFileSync(p, ''), /is not a directory/],
    ];
    for (const [name, make, message] of cases) {
      const target = path.join(dir, `unsafe-${name}`);
      make(target);
      const before = fs.statSync(target);
      expect(() => ensurePrivateDirectory(target, 'imagesDir')).toThrow(
        expect.objectContaining({ code: 'ERR_UNSAFE_DIRECTORY', message: expect.stringMatching(message) }),
      );
      const after = fs.statSync(target);
      expect([after.mode, after.uid]).toEqual([before.mode, before.uid]);
    }
  });
});

describe('symlinks and parents', () => {
  let dir: string;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-sec-chain-'));
  });

  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const refused = (fn: () => unknown, message: RegExp) =>
    expect(fn).toThrow(
      expect.objectContaining({ code: 'ERR_UNSAFE_DIRECTORY', message: expect.stringMatching(message) }),
    );

  it('a symlink to a private directory of ours is refused, for dump and restore alike', () => {
    const real = path.join(dir, 'real');
    fs.mkdirSync(real, { mode: 0o700 });
    const link = path.join(dir, 'link');
    fs.symlinkSync(real, link);
    refused(() => ensurePrivateDirectory(link), /is a symbolic link/);
    refused(() => checkPrivateDirectory(link), /is a symbolic link/);
    expect(checkPrivateDirectory(real)).toBe(real);
    expect(fs.readdirSync(real)).toEqual([]);
  });

  it('a parent another user could change (group/world-writable, not sticky; foreign owner) is refused, existing or to be created', () => {
    for (const [name, make, message] of [
      ['group-writable', (p: string) => fs.chmodSync(p, 0o770), /is writable by its group/],
      ['world-writable', (p: string) => fs.chmodSync(p, 0o777), /is writable by every user/],
      ['foreign', (p: string) => fs.chownSync(p, 65534, 65534), /is owned by uid 65534/],
    ] as const) {
      const parent = path.join(dir, `parent-${name}`);
      fs.mkdirSync(parent, { mode: 0o700 });
      fs.mkdirSync(path.join(parent, 'images'), { mode: 0o700 });
      make(parent);
      refused(() => ensurePrivateDirectory(path.join(parent, 'images')), message);
      refused(() => checkPrivateDirectory(path.join(parent, 'images')), message);
      refused(() => ensurePrivateDirectory(path.join(parent, 'new', 'images')), message);
      expect(fs.existsSync(path.join(parent, 'new'))).toBe(false);
    }
  });

  it('a sticky world-writable parent (like /tmp) is accepted below it; a symlinked parent is checked where it leads', () => {
    const sticky = path.join(dir, 'sticky');
    fs.mkdirSync(sticky);
    fs.chmodSync(sticky, 0o1777);
    expect(ensurePrivateDirectory(path.join(sticky, 'images'))).toBe(path.join(sticky, 'images'));

    // A symlink (in a safe place) leading below an unsafe directory: the target's chain counts.
    const unsafe = path.join(dir, 'unsafe');
    fs.mkdirSync(path.join(unsafe, 'inner'), { recursive: true, mode: 0o700 });
    fs.chmodSync(unsafe, 0o777);
    fs.symlinkSync(path.join(unsafe, 'inner'), path.join(dir, 'via'));
    refused(() => ensurePrivateDirectory(path.join(dir, 'via', 'images')), /unsafe, which is writable by every user/);
  });

  it('node-criu restore: an unsafe images directory is refused (exit 2) before CRIU runs', () => {
    const images = path.join(dir, 'restore-shared');
    fs.mkdirSync(images);
    fs.writeFileSync(path.join(images, 'inventory.img'), '');
    fs.chmodSync(images, 0o777);
    const link = path.join(dir, 'restore-link');
    fs.mkdirSync(path.join(dir, 'restore-real'), { mode: 0o700 });
    fs.writeFileSync(path.join(dir, 'restore-real', 'inventory.img'), '');
    fs.symlinkSync(path.join(dir, 'restore-real'), link);
    for (const target of [images, link]) {
      const run = spawnSync(process.execPath, [CLI, 'restore', '--images-dir', target, '--json'], {
        encoding: 'utf8',
        timeout: 60000,
      });
      expect([target, run.status]).toEqual([target, 2]);
      expect(JSON.parse(run.stdout.trim())).toMatchObject({
        ok: false,
        error: { code: 'ERR_UNSAFE_DIRECTORY', exitCode: 2 },
      });
    }
  });
});

describe('library and CLI refuse an unsafe images directory before touching the process', () => {
  let dir: string;
  let target: ChildProcess;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-sec-dirs-'));
    target = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
  });

  afterAll(() => {
    target?.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('migrateProcess: ERR_UNSAFE_DIRECTORY, nothing written, the process untouched', async () => {
    const images = path.join(dir, 'shared');
    fs.mkdirSync(images);
    fs.chmodSync(images, 0o777);
    await expect(migrateProcess({ pid: target.pid as number, imagesDir: images })).rejects.toMatchObject({
      code: 'ERR_UNSAFE_DIRECTORY',
    });
    expect(fs.readdirSync(images)).toEqual([]);
    expect(() => process.kill(target.pid as number, 0)).not.toThrow();
  });

  it('node-criu dump and migrate: exit 2 with ERR_UNSAFE_DIRECTORY; a new --images-dir is created 0700', () => {
    const images = path.join(dir, 'cli-shared');
    fs.mkdirSync(images);
    fs.chmodSync(images, 0o777);
    for (const command of ['dump', 'migrate']) {
      const run = spawnSync(
        process.execPath,
        [CLI, command, '--pid', String(target.pid), '--images-dir', images, '--json'],
        { encoding: 'utf8', timeout: 60000 },
      );
      expect(run.status).toBe(2);
      expect(JSON.parse(run.stdout.trim())).toMatchObject({
        ok: false,
        error: { code: 'ERR_UNSAFE_DIRECTORY', exitCode: 2 },
      });
      expect(fs.readdirSync(images)).toEqual([]);
    }
    expect(() => process.kill(target.pid as number, 0)).not.toThrow();

    const fresh = path.join(dir, 'new', 'images');
    const run = spawnSync(
      process.execPath,
      [
        CLI,
        'dump',
        '--pid',
        String(target.pid),
        '--images-dir',
        fresh,
        '--leave-running',
        '--network-lock',
        'skip',
        '--json',
      ],
      { encoding: 'utf8', timeout: 120000 },
    );
    expect(run.status).toBe(0);
    expect(mode(fresh)).toBe(0o700);
    expect(mode(path.dirname(fresh))).toBe(0o700);
    expect(fs.existsSync(path.join(fresh, 'inventory.img'))).toBe(true);
    // CRIU 4.2.1 writes most image files 0644 (measured here): the 0700 directory is what keeps
    // another user from reading them.
    const files = fs.readdirSync(fresh);
    expect(files.some((name) => (mode(path.join(fresh, name)) & 0o004) !== 0)).toBe(true);
    const asNobody = spawnSync(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', 'cat', path.join(fresh, 'inventory.img')],
      { encoding: 'utf8' },
    );
    expect(asNobody.status).not.toBe(0);
    expect(asNobody.stderr).toMatch(/Permission denied/);
    expect(() => process.kill(target.pid as number, 0)).not.toThrow();
  });
});
