/**
 * Starting `criu swrk 3`: one end of a SOCK_SEQPACKET socketpair becomes the child's fd 3, the
 * caller's inheritFds / ps.fd its fds 4, 5, ... Our copy of the child's end is closed right after
 * spawn, so the socket reports EOF as soon as swrk exits. `exited` comes from 'exit', not 'close'
 * (a daemonized page server keeps swrk's stderr pipe open). swrk exits 0 after a successful reply,
 * 1 after a failed one, 255 when it drops a request without replying.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync } from 'node:fs';

import { SeqpacketTransport } from '../transport/seqpacket';
import { CriuConnectionError, criuTransportError } from './errors';

const STDERR_TAIL_BYTES = 8192;

export interface SwrkExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SwrkProcess {
  readonly pid: number;
  /** Started outside our process tree (self-dump): `exited` is the launcher's, not swrk's. */
  readonly outsideOurTree: boolean;
  readonly transport: SeqpacketTransport;
  /** Resolves once the child has exited (it is reaped by then). */
  readonly exited: Promise<SwrkExit>;
  /** The exit status once known, else undefined. */
  exitStatus(): SwrkExit | undefined;
  /** The last bytes swrk wrote to stderr (CRIU's early errors land there before its log is open). */
  stderrTail(): string;
  /** SIGKILL unless it has exited already; resolves once reaped. Closes the transport. */
  kill(): Promise<SwrkExit>;
}

/** "exit code 1", "signal SIGKILL" */
export function describeExit(exit: SwrkExit): string {
  return exit.signal ? `signal ${exit.signal}` : `exit code ${String(exit.code)}`;
}

/**
 * Spawns `<criuPath> swrk 3` with `extraFds` (caller's fds) as its fds 4, 5, ... Rejects with
 * CriuConnectionError when the binary cannot be started (code ENOENT/EACCES from spawn).
 */
export function spawnSwrk(
  criuPath: string,
  extraFds: readonly number[] = [],
  options: { cwd?: string; outsideOurTree?: boolean } = {},
): Promise<SwrkProcess> {
  let pair: { transport: SeqpacketTransport; peerFd: number };
  try {
    pair = SeqpacketTransport.pair(`criu swrk (${criuPath})`);
  } catch (error) {
    throw criuTransportError(error, `cannot start ${criuPath} swrk`);
  }
  const { transport, peerFd } = pair;
  let child: ChildProcess;
  try {
    // A self-dump needs criu outside the dumped tree ("criu itself is within dumped tree"): a shell
    // starts it in the background and exits, so swrk is re-parented away from us. Its exit status
    // is then unknowable, and no stderr pipe may link the dumped process to it. It also gets its
    // own session (detached): left in ours, it would keep our pid number in use as its session
    // and group id, and restoring us with that pid would fail with EEXIST until it is reaped.
    child = options.outsideOurTree
      ? spawn('/bin/sh', ['-c', '"$0" swrk 3 </dev/null >/dev/null 2>&1 &', criuPath], {
          stdio: ['ignore', 'ignore', 'ignore', peerFd, ...extraFds],
          detached: true,
          ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
        })
      : spawn(criuPath, ['swrk', '3'], {
          stdio: ['ignore', 'ignore', 'pipe', peerFd, ...extraFds],
          ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
        });
  } catch (error) {
    transport.close();
    closeSync(peerFd);
    const e = error as NodeJS.ErrnoException;
    throw new CriuConnectionError(`cannot start ${criuPath} swrk: ${e.message}`, {
      code: e.code ?? 'ERR_CRIU_SPAWN',
      cause: error,
    });
  }
  // After spawn() returns the child has its own copy (or never will): ours must go, so EOF works.
  closeSync(peerFd);

  let stderr = '';
  let exitStatus: SwrkExit | undefined;
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_TAIL_BYTES);
  });
  child.stderr?.on('error', () => undefined);

  const exited = new Promise<SwrkExit>((resolve) => {
    child.once('exit', (code, signal) => {
      exitStatus = { code, signal };
      // Give stderr a moment to drain what swrk wrote before dying, then stop reading: a daemon it
      // left behind (PAGE_SERVER) may hold the pipe open for a long time.
      const stopReading = setTimeout(() => child.stderr?.destroy(), 50);
      stopReading.unref();
      child.stderr?.once('close', () => clearTimeout(stopReading));
      resolve(exitStatus);
    });
  });

  const swrk = (pid: number): SwrkProcess => ({
    pid,
    outsideOurTree: options.outsideOurTree === true,
    transport,
    exited,
    exitStatus: () => exitStatus,
    stderrTail: () => stderr,
    kill: async () => {
      transport.close();
      if (exitStatus === undefined) child.kill('SIGKILL');
      return exited;
    },
  });

  return new Promise((resolve, reject) => {
    child.on('error', (error: NodeJS.ErrnoException) => {
      transport.close();
      child.stderr?.destroy();
      reject(
        new CriuConnectionError(`cannot start ${criuPath} swrk: ${error.message}`, {
          code: error.code ?? 'ERR_CRIU_SPAWN',
          ...(error.errno !== undefined ? { errno: error.errno } : {}),
          syscall: 'spawn',
          cause: error,
        }),
      );
    });
    child.once('spawn', () => resolve(swrk(child.pid as number)));
  });
}
