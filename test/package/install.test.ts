/**
 * The published package: `npm pack` (prepack builds prebuilds/<platform>-<arch>/) and an install of
 * that tarball into a fresh project, the way a user gets it. With the prebuild, a machine with no
 * compiler (PATH holds node, npm and sh only; CC=false CXX=false) loads the addon and nothing is
 * compiled; without one, the install compiles from source. Dependencies come from the npm cache
 * (`--offline`: the suite runs in a network namespace with only loopback), pinned by a lockfile made
 * from the checkout's package-lock.json, whose entries `npm ci` fetched into that cache.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const root = path.join(__dirname, '..', '..');
const tuple = `${process.platform}-${process.arch}`;
const nodeBin = fs.realpathSync(process.execPath);
// What `npm pack` takes from a checkout: package.json's "files" less the build outputs (prepack and
// prepare make them), the files npm always packs, and the TypeScript build's configuration.
const OUTPUTS = new Set(['dist/', 'prebuilds/']);
const ALWAYS = ['package.json', 'README.md', 'LICENSE', 'tsconfig.json', 'tsconfig.build.json'];

// The children build and install a package: no sanitizer runtime for them (test-asan.sh sets one).
const hostEnv: NodeJS.ProcessEnv = { ...process.env };
for (const name of ['LD_PRELOAD', 'ASAN_OPTIONS', 'UBSAN_OPTIONS']) delete hostEnv[name];

let tmp: string;
let tarball: string;
let registry: string;

async function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, { cwd, env, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const e = error as Error & { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`, {
      cause: error,
    });
  }
}

/** The environment a user's shell would have: no npm_config_* or npm_lifecycle_* from the runner. */
function cleanEnv(pathValue: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: pathValue, HOME: process.env.HOME ?? os.homedir(), LC_ALL: 'C' };
  if (process.env.TMPDIR) env.TMPDIR = process.env.TMPDIR;
  return env;
}

/**
 * The package's runtime dependencies as the checkout's lockfile has them, with the tarball URLs
 * (npm may omit `resolved`; without it npm asks the registry for metadata the cache may not hold).
 */
function seededLockfile(name: string): object {
  const lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { version: string; dev?: boolean; resolved?: string }>;
  };
  const packages: Record<string, object> = { '': { name, version: '1.0.0' } };
  for (const [key, entry] of Object.entries(lock.packages)) {
    if (key === '' || entry.dev) continue;
    const pkg = key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
    const resolved = `${registry}${pkg}/-/${pkg.split('/').pop()}-${entry.version}.tgz`;
    packages[key] = { resolved, ...entry };
  }
  return { name, version: '1.0.0', lockfileVersion: 3, requires: true, packages };
}

/** A fresh project that installs `pkg` and loads it; returns the addon file node-gyp-build picked. */
async function installAndLoad(pkg: string, name: string, env: NodeJS.ProcessEnv): Promise<string> {
  const app = path.join(tmp, name);
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }));
  fs.writeFileSync(path.join(app, 'package-lock.json'), JSON.stringify(seededLockfile(name)));
  await run('npm', ['install', pkg, '--offline', '--no-audit', '--no-fund', '--loglevel=error'], app, env);
  // Loads the addon through the public API (a TCP socket made and closed: no privilege needed).
  const script = `
    const path = require('node:path');
    const { soccr } = require('node-criu');
    const fd = soccr.createTcpSocket(4);
    soccr.closeFd(fd);
    const dir = path.dirname(require.resolve('node-criu/package.json'));
    const gypBuild = require(require.resolve('node-gyp-build', { paths: [dir] }));
    process.stdout.write(path.relative(dir, gypBuild.path(dir)));`;
  return (await run('node', ['-e', script], app, env)).trim();
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'node-criu-package-'));
  const src = path.join(tmp, 'src');
  fs.mkdirSync(src);
  const files = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { files: string[] }).files;
  for (const name of [...ALWAYS, ...files.filter((f) => !OUTPUTS.has(f))]) {
    fs.cpSync(path.join(root, name), path.join(src, name), { recursive: true });
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(src, 'node_modules'));
  registry = (await run('npm', ['config', 'get', 'registry'], root, hostEnv)).trim().replace(/\/?$/, '/');
  await run('npm', ['pack', '--pack-destination', tmp, '--loglevel=error'], src, hostEnv);
  const packed = fs.readdirSync(tmp).filter((f) => f.endsWith('.tgz'));
  expect(packed).toHaveLength(1);
  tarball = path.join(tmp, packed[0]);
}, 240_000);

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

it('npm pack carries the prebuild and no local build', async () => {
  const files = (await run('tar', ['-tzf', tarball], tmp, hostEnv)).split('\n');
  // One Node-API binary for this platform and architecture, whatever the Node.js version.
  expect(files.filter((f) => f.startsWith('package/prebuilds/'))).toEqual([
    `package/prebuilds/${tuple}/node-criu.glibc.node`,
  ]);
  expect(files).toContain('package/dist/index.js');
  expect(files.filter((f) => f.startsWith('package/build/'))).toEqual([]);
});

it('installs and loads on a machine with no C compiler', async () => {
  // The only programs on PATH: node, npm and the shell npm runs scripts with.
  const bin = path.join(tmp, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(nodeBin, path.join(bin, 'node'));
  fs.symlinkSync(fs.realpathSync(path.join(path.dirname(nodeBin), 'npm')), path.join(bin, 'npm'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  const env = { ...cleanEnv(bin), CC: 'false', CXX: 'false' };
  for (const tool of ['cc', 'gcc', 'g++', 'c++', 'make', 'python3']) {
    await expect(run('sh', ['-c', `command -v ${tool}`], tmp, env)).rejects.toThrow();
  }

  const loaded = await installAndLoad(tarball, 'no-compiler', env);
  expect(loaded).toBe(path.join('prebuilds', tuple, 'node-criu.glibc.node'));
  expect(fs.existsSync(path.join(tmp, 'no-compiler', 'node_modules', 'node-criu', 'build'))).toBe(false);
}, 120_000);

it('builds from source when no prebuild matches', async () => {
  // The same tarball without prebuilds/.
  const unpacked = path.join(tmp, 'unpacked');
  fs.mkdirSync(unpacked);
  await run('tar', ['-xzf', tarball, '-C', unpacked], tmp, hostEnv);
  fs.rmSync(path.join(unpacked, 'package', 'prebuilds'), { recursive: true });
  const bare = path.join(tmp, 'no-prebuild.tgz');
  await run('tar', ['-czf', bare, '-C', unpacked, 'package'], tmp, hostEnv);

  const env: NodeJS.ProcessEnv = { ...cleanEnv(process.env.PATH ?? ''), npm_config_jobs: 'max' };
  // node-gyp: the running node's headers when it has them, so no download is needed.
  const prefix = path.dirname(path.dirname(nodeBin));
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
  const loaded = await installAndLoad(bare, 'from-source', env);
  expect(loaded).toBe(path.join('build', 'Release', 'node_criu.node'));
}, 240_000);
