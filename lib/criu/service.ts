/**
 * startCriuService: runs `criu service --address <path>` for `new Criu({ mode: 'service', address })`
 * clients, listening only on the socket the caller names, with the permissions the caller asks for.
 * The client's default (swrk, one private CRIU per call) needs no socket; a service is for callers
 * that want one long-lived CRIU (upstream discourages it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { describeValue, InvalidArgumentError } from '../errors';
import { checkPath, checkSocketPath } from '../security';
import { CriuAbortError, CriuConnectionError, CriuTimeoutError } from './errors';
import { locateCriu } from './locate';

export interface CriuServiceOptions {
  /**
   * Where the service listens: an AF_UNIX socket path (at most 107 bytes once made absolute, no
   * NUL byte). It must not exist yet. Missing parent directories are created 0700.
   */
  address: string;
  /**
   * The socket file's mode once it exists (default 0o600: only the owner, normally root, can
   * connect). Connecting needs write permission on the socket, so 0o660 admits the file's group.
   * Whoever can connect can ask CRIU, running as root, to dump or restore any process: widen it
   * only for users that are trusted as root.
   */
  socketMode?: number;
  /** The criu executable (else CRIU_PATH, the install-criu.sh cache, PATH). */
  criuPath?: string;
  /** How long to wait for the service to be ready (default 30000 ms); ERR_CRIU_TIMEOUT after. */
  timeoutMs?: number;
  /** Aborting before the service is ready stops it (ABORT_ERR); later, use close(). */
  signal?: AbortSignal;
}

export interface CriuService {
  /** The absolute socket path. */
  readonly address: string;
  /** The pid of `criu service` (also the id of its process group). */
  readonly pid: number;
  /** Whether close() was called or the service exited. */
  readonly closed: boolean;
  /** Settles when the service process has exited (by close(), or on its own). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /**
   * Stops the service and every CRIU it forked for a connection (requests in flight end), waits
   * for it to exit and removes the socket file. Idempotent.
   */
  close(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 30000;
const STOP_GRACE_MS = 5000;

function checkServiceOptions(options: unknown): {
  address: string;
  socketMode: number;
  timeoutMs: number;
  criuPath?: string;
  signal?: AbortSignal;
} {
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  const o = options as Partial<CriuServiceOptions>;
  for (const key of Object.keys(o)) {
    if (!['address', 'socketMode', 'criuPath', 'timeoutMs', 'signal'].includes(key))
      throw new InvalidArgumentError(`unknown option '${key}'`);
  }
  checkSocketPath(o.address, 'address');
  const address = path.resolve(o.address as string);
  // The kernel limit applies to what CRIU binds: the absolute path.
  checkSocketPath(address, `address (absolute: ${address})`);
  const socketMode = o.socketMode ?? 0o600;
  if (typeof socketMode !== 'number' || !Number.isInteger(socketMode))
    throw new InvalidArgumentError(
      `socketMode must be an integer mode, got ${describeValue(socketMode)}`,
      'ERR_INVALID_ARG_TYPE',
    );
  if (socketMode < 0 || socketMode > 0o777)
    throw new InvalidArgumentError(
      `socketMode must be in 0..0o777, got 0o${socketMode.toString(8)}`,
      'ERR_OUT_OF_RANGE',
    );
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > 2 ** 31 - 1) {
    throw new InvalidArgumentError(
      `timeoutMs must be a positive number of milliseconds, got ${describeValue(timeoutMs)}`,
      'ERR_OUT_OF_RANGE',
    );
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
    throw new InvalidArgumentError('signal must be an AbortSignal', 'ERR_INVALID_ARG_TYPE');
  if (o.criuPath !== undefined) checkPath(o.criuPath, 'criuPath');
  return {
    address,
    socketMode,
    timeoutMs,
    ...(o.criuPath !== undefined ? { criuPath: o.criuPath } : {}),
    ...(o.signal !== undefined ? { signal: o.signal } : {}),
  };
}

function exists(file: string): boolean {
  try {
    fs.lstatSync(file);
    return true;
  } catch {
    return false;
  }
}

/** Signals the service's process group (it and the CRIUs it forked per connection). */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/**
 * Starts `criu service --address <address>` (spawned from the located binary with an argument
 * array, no shell) and resolves once it accepts connections, its socket chmod'ed to `socketMode`.
 *
 * Socket permissions: whatever mode CRIU binds the socket with, it is chmod'ed to `socketMode`
 * (default 0600) before this resolves. Missing parent
 * directories are created 0700, so no other user can reach the socket while it is being set up;
 * an existing parent keeps its mode. A socket connect needs write permission on the file: with
 * 0600 only the owner (root) can talk to the service; another uid gets EACCES.
 *
 * The service runs in its own process group and is stopped with the calling process (an 'exit'
 * hook) if close() was not called. Rejects with InvalidArgumentError (bad options, nothing
 * started), CriuConnectionError ('ERR_CRIU_SERVICE_ADDRESS_IN_USE' if the address exists,
 * 'ERR_CRIU_NOT_FOUND', 'ERR_CRIU_EXITED' with CRIU's output if it stopped before it was ready),
 * CriuTimeoutError or CriuAbortError; on any rejection no process and no socket file is left.
 */
export async function startCriuService(options: CriuServiceOptions): Promise<CriuService> {
  const o = checkServiceOptions(options);
  if (o.signal?.aborted) throw new CriuAbortError('criu service: aborted before it started', o.signal.reason);
  if (exists(o.address)) {
    // Never remove a file we did not create: a stale socket is the caller's to delete.
    throw new CriuConnectionError(`criu service: ${o.address} already exists`, {
      code: 'ERR_CRIU_SERVICE_ADDRESS_IN_USE',
    });
  }
  const command = locateCriu(o.criuPath !== undefined ? { criuPath: o.criuPath } : {});
  fs.mkdirSync(path.dirname(o.address), { recursive: true, mode: 0o700 });

  // fd 3: CRIU's --status-fd, written ("\0") and closed once the socket listens.
  const child: ChildProcess = spawn(command.path, ['service', '--address', o.address, '--status-fd', '3'], {
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-4096);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
  });
  const spawned = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });

  const removeSocket = (): void => {
    try {
      if (fs.lstatSync(o.address).isSocket()) fs.unlinkSync(o.address);
    } catch {
      // gone already
    }
  };
  const stop = async (): Promise<void> => {
    if (child.pid !== undefined && !hasExited) {
      signalGroup(child.pid, 'SIGTERM');
      const timer = setTimeout(() => signalGroup(child.pid as number, 'SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
      // Per-connection CRIUs it forked may outlive it by a moment: the group goes too.
      signalGroup(child.pid, 'SIGKILL');
    }
    child.stdout?.destroy();
    child.stderr?.destroy();
    (child.stdio[3] as (NodeJS.ReadableStream & { destroy?: () => void }) | null)?.destroy?.();
    removeSocket();
  };
  const onProcessExit = (): void => {
    if (child.pid !== undefined) signalGroup(child.pid, 'SIGKILL');
    removeSocket();
  };
  process.once('exit', onProcessExit);

  try {
    await spawned.catch((error: NodeJS.ErrnoException) => {
      throw new CriuConnectionError(`criu service: cannot start ${command.path}: ${error.message}`, {
        code: error.code === 'ENOENT' ? 'ERR_CRIU_NOT_FOUND' : (error.code ?? 'ERR_CRIU_EXITED'),
        syscall: 'spawn',
        cause: error,
      });
    });
    await waitReady(child, exited, o, () => output);
    // lstat: chmod follows symlinks, so make sure what is there is CRIU's socket.
    if (!fs.lstatSync(o.address).isSocket()) {
      throw new CriuConnectionError(`criu service: ${o.address} is not a socket`, { code: 'ERR_CRIU_PROTOCOL' });
    }
    fs.chmodSync(o.address, o.socketMode);
  } catch (error) {
    process.off('exit', onProcessExit);
    await stop();
    throw error;
  }

  let closing: Promise<void> | undefined;
  const pid = child.pid as number;
  return {
    address: o.address,
    pid,
    get closed(): boolean {
      return closing !== undefined || hasExited;
    },
    exited,
    close(): Promise<void> {
      closing ??= (async () => {
        process.off('exit', onProcessExit);
        await stop();
      })();
      return closing;
    },
  };
}

/** Resolves when CRIU closes its status fd with the ready byte; rejects on exit, timeout, abort. */
function waitReady(
  child: ChildProcess,
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
  o: { address: string; timeoutMs: number; signal?: AbortSignal },
  output: () => string,
): Promise<void> {
  const status = child.stdio[3] as NodeJS.ReadableStream;
  return new Promise<void>((resolve, reject) => {
    let ready = false;
    const cleanup = (): void => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = (): void => {
      cleanup();
      reject(new CriuAbortError('criu service: aborted before it was ready', o.signal?.reason));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new CriuTimeoutError(`criu service: not ready after ${o.timeoutMs} ms`, o.timeoutMs));
    }, o.timeoutMs);
    if (o.signal?.aborted) {
      onAbort();
      return;
    }
    o.signal?.addEventListener('abort', onAbort, { once: true });
    status.on('data', (chunk: Buffer) => {
      if (chunk.includes(0)) ready = true;
    });
    status.once('end', () => {
      if (!ready) return; // exit (below) reports why
      cleanup();
      resolve();
    });
    void exited.then(({ code, signal }) => {
      if (ready) return;
      cleanup();
      const text = output().trim();
      reject(
        new CriuConnectionError(
          `criu service exited before it was ready (${signal ?? `code ${String(code)}`})${text ? `: ${text}` : ''}`,
          {
            code: 'ERR_CRIU_EXITED',
            exitCode: code,
            signal,
          },
        ),
      );
    });
  });
}
