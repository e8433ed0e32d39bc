/**
 * scripts/install-criu.sh and lib/criu/locate.ts against the real machine: the cached install's
 * fast path does no network and no rebuild, the wrapper runs CRIU 4.2+ and passes an inherited fd
 * to `criu swrk 3`, and locateCriu follows its documented order.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { decodeResponse } from '../../lib/criu/codec';
import { CriuConnectionError } from '../../lib/criu/errors';
import { CriuReqType } from '../../lib/criu/messages';
import { criuCacheDir, criuRoot, ensureCriu, INSTALL_CRIU_SCRIPT, locateCriu } from '../../lib/criu/locate';

const CACHE = criuCacheDir();
const WRAPPER = path.join(CACHE, 'bin', 'criu');

function run(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(command, args, { env, encoding: 'utf8', timeout: 600_000 });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function versionOf(criu: string): string {
  const out = run(criu, ['--version']);
  expect(out.status).toBe(0);
  const match = /^Version: (\d+\.\d+(?:\.\d+)?)/m.exec(out.stdout);
  expect(match).not.toBeNull();
  return match![1];
}

function atLeast42(version: string): boolean {
  const [major, minor] = version.split('.').map(Number);
  return major > 4 || (major === 4 && minor >= 2);
}

/** Every file in the cache (not inside root/) with size, mtime and inode, plus root/'s inode. */
function snapshotCache(): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      const st = fs.lstatSync(full);
      out[path.relative(CACHE, full)] = `${st.ino}:${st.size}:${st.mtimeMs}`;
      if (entry.isDirectory() && full !== path.join(CACHE, 'root')) walk(full);
    }
  };
  walk(CACHE);
  return out;
}

let scratch: string;
/** A directory of fake network and build tools that only record that they were run. */
let trapBin: string;
let trapLog: string;

beforeAll(() => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), `ncr-install-${process.pid}-`));
  trapBin = path.join(scratch, 'trap-bin');
  trapLog = path.join(scratch, 'trap.log');
  fs.mkdirSync(trapBin);
  for (const tool of ['debootstrap', 'apt-get', 'apt', 'wget', 'curl']) {
    fs.writeFileSync(path.join(trapBin, tool), `#!/bin/sh\necho "${tool} $*" >> '${trapLog}'\nexit 1\n`, {
      mode: 0o755,
    });
  }
});

afterAll(() => {
  // rmSync removes symlinks without following them (the temp cache links to the real root).
  fs.rmSync(scratch, { recursive: true, force: true });
});

describe('scripts/install-criu.sh', () => {
  beforeAll(() => {
    // Normally a no-op (pretest ran it); on a fresh machine this is the one slow build.
    const first = run('bash', [INSTALL_CRIU_SCRIPT, '--quiet']);
    expect(first).toMatchObject({ status: 0 });
  });

  it('a second run takes the fast path: no debootstrap, no apt, no network, nothing rebuilt', () => {
    const before = snapshotCache();
    const env = { ...process.env, PATH: `${trapBin}:${process.env.PATH}` };
    const second = run('bash', [INSTALL_CRIU_SCRIPT], env);
    expect(second.status).toBe(0);
    expect(second.stdout).toBe(`${WRAPPER}\n`);
    expect(second.stderr).toMatch(/already installed/);
    expect(fs.existsSync(trapLog)).toBe(false);
    expect(snapshotCache()).toEqual(before);
    expect(Object.keys(before).filter((name) => name.startsWith('.build-'))).toEqual([]);

    const quiet = run('bash', [INSTALL_CRIU_SCRIPT, '--quiet'], env);
    expect(quiet).toEqual({ status: 0, stdout: '', stderr: '' });
    expect(fs.existsSync(trapLog)).toBe(false);
  });

  it('records what it installed in the state file', () => {
    const state = Object.fromEntries(
      fs
        .readFileSync(path.join(CACHE, 'state'), 'utf8')
        .trim()
        .split('\n')
        .map((line) => line.split(/=(.*)/s).slice(0, 2)),
    );
    expect(['root', 'system']).toContain(state.source);
    expect(atLeast42(state.version)).toBe(true);
    expect(state.version).toBe(versionOf(WRAPPER));
    if (state.source === 'root') {
      // The private root is the pinned version, built from GPG-verified packages.
      expect(state).toMatchObject({ version: '4.2.1', verified: 'gpg', suite: 'sid' });
      expect(state.package).toMatch(/^4\.2\.1-/);
      const provenance = fs.readFileSync(path.join(criuRoot()!, '.node-criu-provenance'), 'utf8');
      expect(provenance).toMatch(/^gpg=verified$/m);
      expect(provenance).toMatch(/^criu_version=4\.2\.1$/m);
    }
  });

  it('--print-path and --print-root print the cache paths', () => {
    expect(run('bash', [INSTALL_CRIU_SCRIPT, '--print-path'])).toEqual({
      status: 0,
      stdout: `${WRAPPER}\n`,
      stderr: '',
    });
    const root = run('bash', [INSTALL_CRIU_SCRIPT, '--print-root']);
    expect(root.status).toBe(0);
    expect(root.stdout.trim()).toBe(criuRoot());
    expect(fs.existsSync(path.join(root.stdout.trim(), 'usr/include/criu/rpc.proto'))).toBe(true);
  });

  it('--print-path on an empty cache exits 3 without installing', () => {
    const empty = path.join(scratch, 'empty-cache');
    const out = run('bash', [INSTALL_CRIU_SCRIPT, '--print-path'], { ...process.env, NODE_CRIU_CACHE_DIR: empty });
    expect(out.status).toBe(3);
    expect(out.stdout).toBe('');
    expect(fs.existsSync(empty)).toBe(false);
  });

  it('rejects unknown arguments', () => {
    const out = run('bash', [INSTALL_CRIU_SCRIPT, '--frobnicate']);
    expect(out.status).toBe(2);
    expect(out.stderr).toMatch(/unknown argument: --frobnicate/);
  });

  it('the wrapper runs CRIU 4.2+ whose `criu check` passes, with the nftables network lock', () => {
    expect(atLeast42(versionOf(WRAPPER))).toBe(true);
    const check = run(WRAPPER, ['check']);
    expect(check.status).toBe(0);
    expect(check.stdout + check.stderr).toMatch(/Looks good\./);
    const nft = run(WRAPPER, ['check', '--feature', 'network_lock_nftables']);
    expect(nft.stdout + nft.stderr).toMatch(/network_lock_nftables is supported/);
    expect(nft.status).toBe(0);
  });

  it('spawn(wrapper, ["swrk", "3"]) with an inherited SEQPACKET fd serves real requests', () => {
    // perl (Debian-essential) owns the socketpair; node spawns the wrapper exactly as the client does.
    const spawner = path.join(scratch, 'spawn-swrk.js');
    fs.writeFileSync(
      spawner,
      `const { spawn } = require('node:child_process');
const fs = require('node:fs');
const fd = Number(process.env.SP_FD);
const child = spawn(process.env.WRAPPER, ['swrk', '3'], { stdio: ['ignore', 'pipe', 'pipe', fd] });
const mine = fs.readlinkSync('/proc/self/fd/' + fd);
const theirs = fs.readlinkSync('/proc/' + child.pid + '/fd/3');
fs.closeSync(fd);
let stderr = '';
child.stderr.on('data', (d) => { stderr += d; });
child.on('exit', (code, signal) => {
  process.stdout.write(JSON.stringify({ mine, theirs, code, signal, stderr }) + '\\n');
});
`,
    );
    const perl = `
use strict; use warnings; use Socket;
$^F = 1023; # keep the peer end open across exec
socketpair(my $ours, my $theirs, AF_UNIX, SOCK_SEQPACKET, 0) or die "socketpair: $!";
alarm 30;
my $pid = fork() // die "fork: $!";
if ($pid == 0) { close $ours; $ENV{SP_FD} = fileno($theirs); exec($ARGV[0], $ARGV[1]) or die "exec: $!"; }
close $theirs;
my $buf;
send($ours, "\\x08\\x0a\\x20\\x01", 0) or die "send: $!";   # VERSION, keep_open
defined(recv($ours, $buf, 65536, 0)) or die "recv: $!"; print unpack('H*', $buf), "\\n";
send($ours, "\\x08\\x03", 0) or die "send: $!";            # CHECK (ends the session)
defined(recv($ours, $buf, 65536, 0)) or die "recv: $!"; print unpack('H*', $buf), "\\n";
defined(recv($ours, $buf, 65536, 0)) or die "recv: $!"; print length($buf) == 0 ? "eof\\n" : "more\\n";
waitpid($pid, 0); print "spawner $?\\n";
`;
    const out = run('perl', ['-e', perl, process.execPath, spawner], { ...process.env, WRAPPER });
    expect(out.stderr).toBe('');
    // perl and node share stdout: node's JSON line can land anywhere among perl's lines.
    const lines = out.stdout.trim().split('\n');
    const status = lines.find((line) => line.startsWith('{'))!;
    const [versionHex, checkHex, eof, spawnerStatus] = lines.filter((line) => !line.startsWith('{'));
    const version = decodeResponse(Buffer.from(versionHex, 'hex'));
    expect(version).toMatchObject({ type: CriuReqType.VERSION, success: true, version: { majorNumber: 4 } });
    const [major, minor] = versionOf(WRAPPER).split('.').map(Number);
    expect([version.version!.majorNumber, version.version!.minorNumber]).toEqual([major, minor]);
    expect(decodeResponse(Buffer.from(checkHex, 'hex'))).toEqual({ type: CriuReqType.CHECK, success: true });
    expect(eof).toBe('eof');
    const swrk = JSON.parse(status) as {
      mine: string;
      theirs: string;
      code: number;
      signal: string | null;
      stderr: string;
    };
    expect(swrk.theirs).toMatch(/^socket:\[\d+\]$/);
    expect(swrk.theirs).toBe(swrk.mine);
    expect({ code: swrk.code, signal: swrk.signal }).toEqual({ code: 0, signal: null });
    expect(spawnerStatus).toBe('spawner 0');
  });
});

describe('install-criu.sh: which criu it picks', () => {
  /** A fake system criu: prints `version`, and `criu check` exits `checkStatus`. */
  function fakeSystemCriu(dir: string, version: string, checkStatus: number): string {
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'criu');
    fs.writeFileSync(
      file,
      `#!/bin/sh\ncase "$1" in\n  --version) echo "Version: ${version}" ;;\n  check) echo checked; exit ${checkStatus} ;;\n  *) echo "fake criu $*" ;;\nesac\n`,
      { mode: 0o755 },
    );
    return file;
  }

  /** A temp cache whose root/ links to the real private root, so no case here needs a build. */
  function cacheWithRoot(name: string): string {
    const cache = path.join(scratch, name);
    fs.mkdirSync(cache);
    fs.symlinkSync(criuRoot()!, path.join(cache, 'root'));
    return cache;
  }

  function install(
    cache: string,
    systemDir: string,
    extraEnv: NodeJS.ProcessEnv = {},
  ): { status: number | null; stdout: string; stderr: string } {
    const env = {
      ...process.env,
      NODE_CRIU_CACHE_DIR: cache,
      PATH: `${trapBin}:${systemDir}:${process.env.PATH}`,
      ...extraEnv,
    };
    return run('bash', [INSTALL_CRIU_SCRIPT], env);
  }

  function state(cache: string): Record<string, string> {
    return Object.fromEntries(
      fs
        .readFileSync(path.join(cache, 'state'), 'utf8')
        .trim()
        .split('\n')
        .map((line) => line.split(/=(.*)/s).slice(0, 2)),
    );
  }

  it('uses a system criu that is 4.2+ and passes `criu check`, through a wrapper', () => {
    const cache = cacheWithRoot('pick-system');
    const system = fakeSystemCriu(path.join(scratch, 'sys-good'), '4.3', 0);
    const out = install(cache, path.dirname(system));
    expect(out.status).toBe(0);
    expect(out.stdout).toBe(`${path.join(cache, 'bin', 'criu')}\n`);
    expect(state(cache)).toMatchObject({ source: 'system', version: '4.3', criu: system });
    expect(run(path.join(cache, 'bin', 'criu'), ['dump', '-t', '1']).stdout).toBe('fake criu dump -t 1\n');
    expect(fs.existsSync(trapLog)).toBe(false);
  });

  it.each([
    ['too old (bookworm ships 3.17.1)', '3.17.1', 0],
    ['4.2 but `criu check` fails', '4.2.1', 1],
  ])('does not use a system criu that is %s: it keeps the private root', (_name, version, checkStatus) => {
    const cache = cacheWithRoot(`pick-root-${version}-${checkStatus}`);
    const system = fakeSystemCriu(path.join(scratch, `sys-${version}-${checkStatus}`), version, checkStatus);
    const out = install(cache, path.dirname(system));
    expect(out.status).toBe(0);
    expect(out.stderr).toMatch(/is not usable/);
    expect(state(cache)).toMatchObject({ source: 'root', version: versionOf(WRAPPER) });
    expect(versionOf(path.join(cache, 'bin', 'criu'))).toBe(versionOf(WRAPPER));
    expect(fs.existsSync(trapLog)).toBe(false);
  });

  /** A temp cache whose root/ is a copy of the real root's top level without its provenance. */
  function cacheWithUnverifiedRoot(name: string): string {
    const cache = path.join(scratch, name);
    const root = path.join(cache, 'root');
    fs.mkdirSync(root, { recursive: true });
    for (const entry of fs.readdirSync(criuRoot()!)) {
      if (entry !== '.node-criu-provenance') fs.symlinkSync(path.join(criuRoot()!, entry), path.join(root, entry));
    }
    return cache;
  }

  it('never keeps a root without a record of a GPG-verified build: it rebuilds with --force-check-gpg', () => {
    const cache = cacheWithUnverifiedRoot('unverified-root');
    const out = install(cache, path.join(scratch, 'no-system'), { NODE_CRIU_USE_SYSTEM: '0' });
    expect(out.status).toBe(1);
    expect(out.stderr).toMatch(/existing root .* is not usable; rebuilding/);
    expect(out.stderr).toMatch(/debootstrap failed/);
    const calls = fs.readFileSync(trapLog, 'utf8');
    fs.rmSync(trapLog);
    expect(calls).toMatch(
      /^debootstrap --force-check-gpg --keyring=\S+debian-archive-keyring\.gpg --variant=minbase /m,
    );
    expect(fs.existsSync(path.join(cache, 'state'))).toBe(false);
    expect(fs.readdirSync(cache).filter((name) => name.startsWith('.build-'))).toEqual([]);
  });

  it('refuses a root that is not the pinned CRIU version', () => {
    const cache = cacheWithRoot('other-pin');
    const out = install(cache, path.join(scratch, 'no-system'), {
      NODE_CRIU_USE_SYSTEM: '0',
      NODE_CRIU_CRIU_VERSION: '9.9.9',
    });
    expect(out.status).toBe(1);
    expect(out.stderr).toMatch(/is not usable; rebuilding/);
    expect(fs.readFileSync(trapLog, 'utf8')).toMatch(/^debootstrap /m);
    fs.rmSync(trapLog);
    expect(fs.existsSync(path.join(cache, 'state'))).toBe(false);
  });

  it.each([
    ['on a host that is not x86_64', ['setarch', 'i686', 'bash'], /built for x86_64 only \(this host is i686\)/],
    [
      'on a host that is not Debian',
      ['unshare', '--mount', '--', 'sh', '-c', 'mount -t tmpfs none /etc && exec bash "$@"', 'sh'],
      /this host is not Debian/,
    ],
  ])('says why it cannot build the root %s, before downloading anything', (_name, prefix, message) => {
    const cache = path.join(scratch, `no-build-${prefix[0]}`);
    const env = {
      ...process.env,
      NODE_CRIU_CACHE_DIR: cache,
      NODE_CRIU_USE_SYSTEM: '0',
      PATH: `${trapBin}:${process.env.PATH}`,
    };
    const out = run(prefix[0], [...prefix.slice(1), INSTALL_CRIU_SCRIPT], env);
    expect(out.status).toBe(1);
    expect(out.stderr).toMatch(message);
    expect(out.stderr).toMatch(/install CRIU 4\.2\+ from your distribution, or set CRIU_PATH/);
    expect(fs.existsSync(trapLog)).toBe(false);
    expect(fs.readdirSync(cache).filter((name) => name.startsWith('.build-'))).toEqual([]);
  });

  it('NODE_CRIU_USE_SYSTEM=0 ignores even a good system criu', () => {
    const cache = cacheWithRoot('pick-forced-root');
    const system = fakeSystemCriu(path.join(scratch, 'sys-ignored'), '4.3', 0);
    const out = install(cache, path.dirname(system), { NODE_CRIU_USE_SYSTEM: '0' });
    expect(out.status).toBe(0);
    expect(state(cache).source).toBe('root');
  });
});

describe('locateCriu', () => {
  const savedEnv = { ...process.env };
  let dirs: { option: string; env: string; cache: string; pathDir: string };

  beforeAll(() => {
    const base = path.join(scratch, 'locate');
    dirs = {
      option: path.join(base, 'option'),
      env: path.join(base, 'env'),
      cache: path.join(base, 'cache'),
      pathDir: path.join(base, 'path'),
    };
    for (const dir of [dirs.option, dirs.env, path.join(dirs.cache, 'bin'), dirs.pathDir])
      fs.mkdirSync(dir, { recursive: true });
    for (const file of [
      path.join(dirs.option, 'criu'),
      path.join(dirs.env, 'criu'),
      path.join(dirs.cache, 'bin', 'criu'),
      path.join(dirs.pathDir, 'criu'),
    ]) {
      fs.writeFileSync(file, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    }
    fs.writeFileSync(path.join(dirs.cache, 'state'), 'source=root\nversion=4.2.1\ncriu=/x\n');
  });

  afterEach(() => {
    for (const key of ['CRIU_PATH', 'NODE_CRIU_CACHE_DIR', 'PATH']) {
      if (savedEnv[key] === undefined) delete process.env[key];
      else process.env[key] = savedEnv[key];
    }
  });

  function setEnv(values: { criuPath?: string; cache?: string; pathDirs?: string }): void {
    if (values.criuPath === undefined) delete process.env.CRIU_PATH;
    else process.env.CRIU_PATH = values.criuPath;
    process.env.NODE_CRIU_CACHE_DIR = values.cache ?? path.join(scratch, 'no-such-cache');
    process.env.PATH = values.pathDirs ?? path.join(scratch, 'no-such-dir');
  }

  it('options.criuPath beats CRIU_PATH beats the cache beats PATH', () => {
    const all = { criuPath: path.join(dirs.env, 'criu'), cache: dirs.cache, pathDirs: `/nonexistent:${dirs.pathDir}` };
    setEnv(all);
    expect(locateCriu({ criuPath: path.join(dirs.option, 'criu') })).toEqual({
      path: path.join(dirs.option, 'criu'),
      source: 'option',
    });
    expect(locateCriu()).toEqual({ path: path.join(dirs.env, 'criu'), source: 'env' });
    setEnv({ ...all, criuPath: undefined });
    expect(locateCriu()).toEqual({ path: path.join(dirs.cache, 'bin', 'criu'), source: 'cache', version: '4.2.1' });
    setEnv({ ...all, criuPath: '' }); // an empty CRIU_PATH counts as unset
    expect(locateCriu().source).toBe('cache');
    setEnv({ pathDirs: all.pathDirs });
    expect(locateCriu()).toEqual({ path: path.join(dirs.pathDir, 'criu'), source: 'path' });
  });

  it('a cache without its state file does not count (an interrupted install)', () => {
    const half = path.join(scratch, 'half-cache');
    fs.mkdirSync(path.join(half, 'bin'), { recursive: true });
    fs.writeFileSync(path.join(half, 'bin', 'criu'), '#!/bin/sh\n', { mode: 0o755 });
    setEnv({ cache: half, pathDirs: dirs.pathDir });
    expect(locateCriu().source).toBe('path');
  });

  it('throws ERR_CRIU_NOT_FOUND for a bogus criuPath, without falling back', () => {
    setEnv({ cache: dirs.cache, pathDirs: dirs.pathDir });
    for (const bogus of [
      path.join(scratch, 'does-not-exist'),
      dirs.option,
      path.join(scratch, 'trap.log-not-executable'),
      '',
    ]) {
      if (bogus.endsWith('not-executable')) fs.writeFileSync(bogus, 'x', { mode: 0o644 });
      let caught: unknown;
      try {
        locateCriu({ criuPath: bogus });
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(CriuConnectionError);
      expect((caught as CriuConnectionError).code).toBe('ERR_CRIU_NOT_FOUND');
      expect((caught as Error).message).toContain(`criuPath ${JSON.stringify(bogus)}`);
    }
  });

  it('throws ERR_CRIU_NOT_FOUND for a bogus CRIU_PATH, and lists every place when nothing is found', () => {
    setEnv({ criuPath: '/nonexistent/criu', cache: dirs.cache, pathDirs: dirs.pathDir });
    expect(() => locateCriu()).toThrow(
      expect.objectContaining({
        code: 'ERR_CRIU_NOT_FOUND',
        message: expect.stringContaining('CRIU_PATH=/nonexistent/criu'),
      }),
    );
    setEnv({});
    let caught: unknown;
    try {
      locateCriu();
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(CriuConnectionError);
    expect((caught as CriuConnectionError).code).toBe('ERR_CRIU_NOT_FOUND');
    const message = (caught as Error).message;
    for (const part of [
      'options.criuPath (not given)',
      'CRIU_PATH (not set)',
      path.join(scratch, 'no-such-cache', 'bin', 'criu'),
      'criu on PATH',
    ]) {
      expect(message).toContain(part);
    }
  });

  it('ensureCriu installs nothing unless asked: ERR_CRIU_NOT_FOUND by default and with install false', async () => {
    setEnv({ pathDirs: trapBin });
    await expect(ensureCriu()).rejects.toMatchObject({ code: 'ERR_CRIU_NOT_FOUND' });
    await expect(ensureCriu({ install: false })).rejects.toMatchObject({ code: 'ERR_CRIU_NOT_FOUND' });
    await expect(ensureCriu({ criuPath: '/nonexistent/criu', install: true })).rejects.toMatchObject({
      code: 'ERR_CRIU_NOT_FOUND',
    });
    expect(fs.existsSync(path.join(scratch, 'no-such-cache'))).toBe(false);
    expect(fs.existsSync(trapLog)).toBe(false);
    await expect(ensureCriu({ criuPath: '/nonexistent/criu' })).rejects.toMatchObject({ code: 'ERR_CRIU_NOT_FOUND' });
  });

  it('ensureCriu({ install: true }) runs install-criu.sh when nothing is found (here it finds a verified root, so it builds nothing)', async () => {
    const realRoot = criuRoot();
    expect(realRoot).toBeDefined();
    const cache = path.join(scratch, 'ensure-cache');
    fs.mkdirSync(cache);
    fs.symlinkSync(realRoot!, path.join(cache, 'root'));
    // Only PATH dirs without a criu, so the lookup falls through to the install; trapBin first.
    const pathDirs = [
      trapBin,
      ...(savedEnv.PATH ?? '').split(':').filter((d) => d !== '' && !fs.existsSync(path.join(d, 'criu'))),
    ].join(':');
    setEnv({ cache, pathDirs });
    process.env.NODE_CRIU_USE_SYSTEM = '0';
    try {
      const found = await ensureCriu({ install: true });
      expect(found).toEqual({ path: path.join(cache, 'bin', 'criu'), source: 'cache', version: versionOf(WRAPPER) });
      expect(fs.readFileSync(path.join(cache, 'state'), 'utf8')).toMatch(/^source=root$/m);
      expect(atLeast42(versionOf(found.path))).toBe(true);
      expect(fs.existsSync(trapLog)).toBe(false);
      expect(fs.readdirSync(cache).filter((name) => name.startsWith('.build-'))).toEqual([]);
    } finally {
      delete process.env.NODE_CRIU_USE_SYSTEM;
    }
  });
});
