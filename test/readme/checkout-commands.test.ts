/**
 * The commands the README gives for a checkout: `npm run node-criu -- <command>` and `npm run demo`
 * run the built CLI at once, for root and (refusing politely) for another user, and install
 * nothing into npx's cache (`npx node-criu` in a checkout would: it installs the checkout there and
 * runs its prepare). The other user runs a readable copy: the checkout may sit under a 0700 directory.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { readableCopy } from '../helpers/other-uid';

const ROOT = path.join(__dirname, '..', '..');
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

function npm(
  args: string[],
  options: { cwd: string; home: string; uid?: number; gid?: number },
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env = { PATH: process.env.PATH, HOME: options.home, LC_ALL: 'C' };
    const child = spawn('npm', args, { ...options, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A fresh HOME (npm's cache and logs go there), owned by `uid`. */
function freshHome(uid: number): string {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-home-'));
  fs.chownSync(home, uid, uid);
  return home;
}

const npxCache = (home: string): string[] => {
  const dir = path.join(home, '.npm', '_npx');
  return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
};

describe("the README's commands in a checkout", () => {
  it('npm run node-criu -- --version and npm run demo -- --help run the built CLI; npx cache untouched', async () => {
    const home = freshHome(0);
    try {
      const version = await npm(['run', '-s', 'node-criu', '--', '--version'], { cwd: ROOT, home });
      expect(version).toMatchObject({ code: 0, stdout: `${VERSION}\n` });
      const help = await npm(['run', '-s', 'demo', '--', '--help'], { cwd: ROOT, home });
      expect(help.code).toBe(0);
      expect(help.stdout).toMatch(/^Usage: node-criu demo/);
      expect(npxCache(home)).toEqual([]);
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
    }
  });

  it('as another user: npm run node-criu -- check exits 3 saying it needs root, and leaves no npx cache', async () => {
    const copy = readableCopy();
    const home = freshHome(65534);
    try {
      const nobody = { cwd: copy.root, home, uid: 65534, gid: 65534 };
      const check = await npm(['run', '-s', 'node-criu', '--', 'check'], nobody);
      expect(check.code).toBe(3);
      expect(check.stderr).toMatch(/error: not running as root/);
      expect(check.stderr).toMatch(/hint: run it with sudo/);
      expect(npxCache(home)).toEqual([]);
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
      copy.dispose();
    }
  });
});
