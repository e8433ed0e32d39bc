/**
 * Finds the `criu` to run, in one documented order:
 *   1. `options.criuPath`
 *   2. the CRIU_PATH environment variable
 *   3. the wrapper scripts/install-criu.sh leaves in its cache (`<cache>/bin/criu`, cache =
 *      NODE_CRIU_CACHE_DIR or /var/cache/node-criu); it runs a private Debian criu 4.2 root
 *      through that root's own loader, or the system criu when that one passed the script's check
 *   4. `criu` on PATH
 * An explicit choice (1 or 2) that is not an executable file fails instead of falling through,
 * so a typo never silently runs some other criu. Nothing here runs criu: it only looks at files.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { CriuConnectionError } from './errors';

export interface CriuCommand {
  /** An executable to spawn like `criu` (for the private root: the cache's wrapper script). */
  path: string;
  /** CRIU's version ('4.2.1') when known without running it (the install cache records it). */
  version?: string;
  /** Which rule found it. */
  source: 'option' | 'env' | 'cache' | 'path';
}

export const DEFAULT_CRIU_CACHE_DIR = '/var/cache/node-criu';

/** The install-criu.sh cache directory: NODE_CRIU_CACHE_DIR or /var/cache/node-criu. */
export function criuCacheDir(): string {
  const fromEnv = process.env.NODE_CRIU_CACHE_DIR;
  return fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEFAULT_CRIU_CACHE_DIR;
}

/** scripts/install-criu.sh (the package root is two levels above lib/criu and dist/criu). */
export const INSTALL_CRIU_SCRIPT = path.join(__dirname, '..', '..', 'scripts', 'install-criu.sh');

function isExecutableFile(file: string): boolean {
  try {
    if (!fs.statSync(file).isFile()) return false;
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** key=value lines of `<cache>/state`, written last (atomically) by install-criu.sh. */
function readCacheState(cacheDir: string): Record<string, string> | undefined {
  let text: string;
  try {
    text = fs.readFileSync(path.join(cacheDir, 'state'), 'utf8');
  } catch {
    return undefined;
  }
  const state: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) state[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return state;
}

/**
 * The private Debian root the install script built or adopted (`<cache>/root`), when there is
 * one. It holds Debian's own criu, libcriu-dev (usr/include/criu/rpc.proto) and python3-pycriu.
 */
export function criuRoot(): string | undefined {
  const root = path.join(criuCacheDir(), 'root');
  return isExecutableFile(path.join(root, 'usr', 'sbin', 'criu')) ? root : undefined;
}

/** Debian's criu rpc.proto: from the private root, else from an installed libcriu-dev. */
export function debianRpcProtoPath(): string | undefined {
  const root = criuRoot();
  const candidates = [
    ...(root !== undefined ? [path.join(root, 'usr', 'include', 'criu', 'rpc.proto')] : []),
    '/usr/include/criu/rpc.proto',
  ];
  return candidates.find((file) => fs.existsSync(file));
}

function notFound(tried: string[]): CriuConnectionError {
  return new CriuConnectionError(
    `criu not found; tried: ${tried.join('; ')}. Run scripts/install-criu.sh (as root) or pass criuPath`,
    { code: 'ERR_CRIU_NOT_FOUND' },
  );
}

/** Synchronous lookup in the documented order; throws CriuConnectionError 'ERR_CRIU_NOT_FOUND'. */
export function locateCriu(options: { criuPath?: string } = {}): CriuCommand {
  if (options.criuPath !== undefined) {
    if (typeof options.criuPath === 'string' && options.criuPath !== '' && isExecutableFile(options.criuPath)) {
      return { path: options.criuPath, source: 'option' };
    }
    throw notFound([`criuPath ${JSON.stringify(options.criuPath)} (not an executable file)`]);
  }
  const fromEnv = process.env.CRIU_PATH;
  if (fromEnv !== undefined && fromEnv !== '') {
    if (isExecutableFile(fromEnv)) return { path: fromEnv, source: 'env' };
    throw notFound([`CRIU_PATH=${fromEnv} (not an executable file)`]);
  }
  const tried: string[] = ['options.criuPath (not given)', 'CRIU_PATH (not set)'];

  const cacheDir = criuCacheDir();
  const wrapper = path.join(cacheDir, 'bin', 'criu');
  const state = readCacheState(cacheDir);
  if (state !== undefined && isExecutableFile(wrapper)) {
    return { path: wrapper, source: 'cache', ...(state.version ? { version: state.version } : {}) };
  }
  tried.push(`${wrapper} (${state === undefined ? 'no install-criu.sh state' : 'missing'})`);

  const searchPath = process.env.PATH ?? '';
  for (const dir of searchPath.split(':')) {
    if (dir === '') continue;
    const candidate = path.join(dir, 'criu');
    if (isExecutableFile(candidate)) return { path: candidate, source: 'path' };
  }
  tried.push(`criu on PATH (${searchPath || 'PATH empty'})`);
  throw notFound(tried);
}

function runInstallScript(): Promise<void> {
  return new Promise((resolve, reject) => {
    // env spelled out: the caller's process.env (in jest, the sandbox's copy) must reach the script.
    const env = { ...process.env };
    execFile(
      'bash',
      [INSTALL_CRIU_SCRIPT, '--quiet'],
      { env, maxBuffer: 16 * 1024 * 1024 },
      (error, _stdout, stderr) => {
        if (error) {
          reject(
            new CriuConnectionError(
              `scripts/install-criu.sh failed: ${String(stderr).trim().split('\n').slice(-5).join(' | ')}`,
              {
                code: 'ERR_CRIU_NOT_FOUND',
                cause: error,
              },
            ),
          );
        } else {
          resolve();
        }
      },
    );
  });
}

/**
 * Like locateCriu, but when nothing was found, no explicit path was given, `install: true` was
 * passed and we are root, runs scripts/install-criu.sh first (downloads and verifies a Debian root
 * once; later calls cost a file lookup). Installing is never implied: a library call downloads
 * nothing unless its caller asked for it, as the CLI's `check --install`, the demo and the tests do.
 */
export async function ensureCriu(options: { criuPath?: string; install?: boolean } = {}): Promise<CriuCommand> {
  try {
    return locateCriu(options);
  } catch (error) {
    const explicit = options.criuPath !== undefined || (process.env.CRIU_PATH ?? '') !== '';
    const root = typeof process.getuid === 'function' && process.getuid() === 0;
    if (explicit || options.install !== true || !root) throw error;
  }
  await runInstallScript();
  return locateCriu(options);
}
