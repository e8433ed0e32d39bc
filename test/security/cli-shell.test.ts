/**
 * No user string ever meets a shell. Statically: nothing in lib/ spawns with `shell: true`, calls
 * child_process exec/execSync, or builds a `sh -c` script from a value. Dynamically: every CLI
 * subcommand's path, pid, name and hook arguments carrying shell metacharacters (`; touch X`,
 * `$(touch X)`, backticks, a newline, `|`, `&&`) are taken literally, so X is never created; and
 * a real dump + migrate run with paths that contain those characters (images directory, CRIU
 * binary, namespaces, hook) works, the hook with the odd name runs as itself, and X never appears.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { criuPath } from '../criu/helpers';
import { NetnsLab } from '../helpers/netns';

const ROOT = path.join(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') ? [full] : [];
  });
}

describe('lib/ never spawns a shell with a user string', () => {
  it('no shell: true, no exec/execSync, every sh -c script is a constant', () => {
    const problems: string[] = [];
    for (const file of sourceFiles(path.join(ROOT, 'lib'))) {
      const text = fs.readFileSync(file, 'utf8');
      const where = path.relative(ROOT, file);
      if (/shell\s*:\s*true/.test(text)) problems.push(`${where}: shell: true`);
      // exec/execSync run their command line through /bin/sh.
      const imported = [
        ...[...text.matchAll(/import \{([^}]*)\} from 'node:child_process'/g)].map((m) => m[1]),
        ...[...text.matchAll(/\{([^}]*)\}\s*=\s*require\('node:child_process'\)/g)].map((m) => m[1]),
      ].flatMap((names) => names.split(',').map((name) => name.trim().split(/\s+(?:as|:)\s+/)[0]));
      if (imported.some((name) => name === 'exec' || name === 'execSync'))
        problems.push(`${where}: child_process exec/execSync`);
      if (/child_process\.exec(Sync)?\(/.test(text)) problems.push(`${where}: child_process.exec`);
      // `sh -c SCRIPT ...`: SCRIPT must be a plain literal; values go in as positional parameters.
      for (const match of text.matchAll(/'-c',\s*([^,\]]+)/g)) {
        const script = match[1].trim();
        if (!/^'[^'$]*(\$[0-9@][^']*)*'$/.test(script) || script.includes('${'))
          problems.push(`${where}: sh -c with a non-constant script ${script}`);
      }
    }
    expect(problems).toEqual([]);
  });
});

describe('CLI arguments with shell metacharacters are literal', () => {
  let dir: string;
  let marker: string;
  let payloads: string[];

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-sec-shell-'));
    marker = path.join(dir, 'PWNED');
    payloads = [
      `; touch ${marker}`,
      `$(touch ${marker})`,
      `\`touch ${marker}\``,
      `x\ntouch ${marker}`,
      `| touch ${marker}`,
      `&& touch ${marker} #`,
    ];
  });

  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
    const run = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60000 });
    return { status: run.status, stdout: run.stdout, stderr: run.stderr };
  }

  /** The CLI without blocking our event loop (so our own children are reaped meanwhile). */
  function cliAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });
  }

  it('every subcommand, every path/pid/name/hook argument: refused or used as given; the marker never appears', () => {
    const self = String(process.pid);
    const cases: ((p: string) => string[])[] = [
      // dump: pid, images dir, netns, criu path, lock name
      (p) => ['dump', '--pid', `1${p}`, '--images-dir', path.join(dir, 'i')],
      (p) => ['dump', '--pid', self, '--images-dir', path.join(dir, 'i'), '--netns', `/run/netns/x${p}`],
      (p) => ['dump', '--pid', self, '--images-dir', path.join(dir, 'i'), '--criu-path', `/nonexistent/criu${p}`],
      (p) => ['dump', '--pid', self, '--images-dir', path.join(dir, 'i'), '--network-lock', `nftables${p}`],
      // restore: images dir, netns, criu path
      (p) => ['restore', '--images-dir', path.join(dir, `r${p}`)],
      (p) => ['restore', '--images-dir', dir, '--netns', `/run/netns/x${p}`],
      // migrate: pid, images dir, namespaces, address, device, hook, transfer, route, criu path
      (p) => ['migrate', '--pid', `${self}${p}`, '--images-dir', path.join(dir, 'm')],
      (p) => ['migrate', '--pid', self, '--images-dir', path.join(dir, 'm'), '--source-netns', `/run/netns/a${p}`],
      (p) => ['migrate', '--pid', self, '--images-dir', path.join(dir, 'm'), '--target-netns', `/run/netns/b${p}`],
      (p) => ['migrate', '--pid', self, '--images-dir', path.join(dir, 'm'), '--move-address', `10.0.0.1/24${p}`],
      (p) => ['migrate', '--pid', self, '--images-dir', path.join(dir, 'm'), '--transfer', `directory${p}`],
      (p) => ['migrate', '--pid', self, '--images-dir', path.join(dir, 'm'), '--route', `process${p}`],
      (p) => ['migrate', '--pid', self, '--images-dir', path.join(dir, 'm'), '--criu-path', `/nonexistent/criu${p}`],
      (p) => ['migrate', '--pid', '4194303', '--images-dir', path.join(dir, 'm'), '--hook', `/bin/true${p}`],
      (p) => [
        'migrate',
        '--pid',
        '4194303',
        '--images-dir',
        path.join(dir, 'm'),
        '--move-address',
        '10.0.0.1/24',
        '--device',
        `eth0${p}`,
      ],
      // check and demo: criu path, routes, counts
      (p) => ['check', '--criu-path', `/nonexistent/criu${p}`],
      (p) => ['demo', '--routes', `process${p}`],
      (p) => ['demo', '--clients', `3${p}`],
      // service: the socket mode (the address itself is run for real in criu-service.test.ts)
      (p) => ['service', '--address', path.join(dir, 's.sock'), '--socket-mode', `0600${p}`],
      (p) => ['service', '--address', path.join(dir, 's.sock'), '--criu-path', `/nonexistent/criu${p}`],
      // an unknown command name
      (p) => [`dump${p}`],
    ];
    const unexpected: { args: string[]; status: number | null; stdout: string }[] = [];
    let runs = 0;
    for (const payload of payloads) {
      for (const build of cases) {
        const args = [...build(payload), '--json'];
        const run = cli(args);
        runs++;
        // Refused as usage (2), environment (3) or not found (4): never run, never through a shell.
        const last = run.stdout.trim().split('\n').pop() ?? '';
        if (![2, 3, 4].includes(run.status as number) || !last.startsWith('{"ok":false'))
          unexpected.push({ args, status: run.status, stdout: last });
        expect(fs.existsSync(marker)).toBe(false);
      }
    }
    expect(unexpected).toEqual([]);
    expect(runs).toBe(payloads.length * cases.length);
  }, 400000);

  it('a real dump and migrate with metacharacters in every path: they work, the odd hook runs as itself, no marker', async () => {
    const lab = new NetnsLab();
    const odd = path.join(dir, 'odd $(touch PWNED) `touch PWNED`; touch PWNED');
    fs.mkdirSync(odd, { mode: 0o700 });
    const server = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
    const serverExited = new Promise((resolve) => server.once('exit', resolve));
    const mounted: string[] = [];
    try {
      const source = lab.add('src');
      const target = lab.add('dst');
      // Namespace paths with metacharacters: bind mounts of the real ones, as `ip netns` makes
      // them (a symlink is refused as a namespace path); the CRIU path: a symlink.
      const sourceLink = path.join(odd, 'ns; touch PWNED');
      const targetLink = path.join(odd, 'ns $(touch PWNED)');
      for (const [ns, at] of [
        [source, sourceLink],
        [target, targetLink],
      ]) {
        fs.writeFileSync(at, '');
        expect(spawnSync('mount', ['--bind', lab.path(ns), at]).status).toBe(0);
        mounted.push(at);
      }
      const criuLink = path.join(odd, 'criu `touch PWNED`');
      fs.symlinkSync(criuPath(), criuLink);
      const hookLog = path.join(odd, 'hook.log');
      const hook = path.join(odd, 'hook && touch PWNED');
      fs.writeFileSync(hook, `#!/bin/sh\nprintf '%s\\n' "$1" >> '${hookLog.replace(/'/g, `'\\''`)}'\n`, {
        mode: 0o700,
      });

      // The sleeper runs in our namespace: move it into src by restoring it there first.
      const dumpDir = path.join(odd, 'dump $(touch PWNED)');
      const dump = await cliAsync([
        'dump',
        '--pid',
        String(server.pid),
        '--images-dir',
        dumpDir,
        '--criu-path',
        criuLink,
        '--network-lock',
        'skip',
        '--json',
      ]);
      expect(dump.stderr).not.toContain('PWNED: ');
      expect(dump.status).toBe(0);
      expect(fs.statSync(dumpDir).mode & 0o777).toBe(0o700);
      await serverExited; // reaped: CRIU restores the same pid
      const restore = await cliAsync([
        'restore',
        '--images-dir',
        dumpDir,
        '--netns',
        sourceLink,
        '--criu-path',
        criuLink,
        '--network-lock',
        'skip',
        '--json',
      ]);
      expect(restore.stderr).not.toMatch(/error/);
      expect(restore.status).toBe(0);
      const pid = JSON.parse(restore.stdout.trim()).pid as number;
      expect(pid).toBe(server.pid);

      const migrate = await cliAsync([
        'migrate',
        '--pid',
        String(pid),
        '--images-dir',
        path.join(odd, 'm | touch PWNED'),
        '--source-netns',
        sourceLink,
        '--target-netns',
        targetLink,
        '--hook',
        hook,
        '--criu-path',
        criuLink,
        '--no-pre-dump',
        '--json',
      ]);
      expect(migrate.stderr).not.toMatch(/error/);
      expect(migrate.status).toBe(0);
      expect(JSON.parse(migrate.stdout.trim())).toMatchObject({ ok: true, command: 'migrate', restoredPid: pid });
      expect(fs.readFileSync(hookLog, 'utf8')).toBe('to-target\n');
      expect(fs.statSync(`/proc/${pid}/ns/net`).ino).toBe(fs.statSync(lab.path(target)).ino);
      for (const place of [dir, odd, process.cwd(), os.tmpdir()])
        expect(fs.existsSync(path.join(place, 'PWNED'))).toBe(false);
      expect(fs.existsSync(marker)).toBe(false);
    } finally {
      try {
        process.kill(server.pid as number, 'SIGKILL');
      } catch {
        // restored and migrated under the same pid, or already gone
      }
      for (const at of mounted) spawnSync('umount', [at]);
      lab.destroy();
    }
  }, 240000);
});
