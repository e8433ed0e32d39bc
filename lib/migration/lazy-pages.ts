/**
 * Post-copy (lazy pages) with CRIU 4.2.1, the page stream carried over any Duplex (page-relay.ts).
 *
 * Source (startLazyDump): DUMP with lazy_pages. CRIU writes every image but the lazily moved
 * pages (anonymous private memory), runs post-dump, then serves those pages itself from the
 * frozen tree, on demand, until the target's lazy-pages daemon says it has all of them; only then
 * does it kill the tree and answer the DUMP. Over RPC CRIU ignores ps.fd and ps.address when
 * lazy_pages is set (it would listen on every address of the namespace on ps.port), so the relay's
 * socket reaches CRIU as `ps-socket <fd>` in an RPC config file, an fd passed to swrk like ps.fd.
 *
 * Target (startLazyRestore): `criu lazy-pages --page-server --ps-socket 3` (a command, not an RPC
 * request; it reads the images, so they must be there first, and listens on lazy-pages.socket in
 * the images directory), then RESTORE with lazy_pages, which hands the daemon one userfaultfd per
 * task. The daemon fetches faulting pages first, then the rest, and exits 0 with all of them.
 *
 * Safety (see also page-relay.ts): CRIU's lazy page server takes an end of stream between requests
 * for success (and kills the source tree), so the relay never passes an end on: CRIU only ever
 * sees a RST. Until the caller says the target runs (targetStarted), a failure lets the source
 * resume: the tree is SIGSTOPped, CRIU is reset (it resumes the tree, its lock and repair mode
 * still on), and the repair of lib/criu/recover.ts takes them off and continues the tree. Once
 * the target copy may run, the source copy must never run again (its connections are stale):
 * a failure SIGKILLs the source tree before CRIU is reset. On the target, a daemon that dies
 * makes the missing pages read as zeros, so a failure SIGKILLs the restored tree first (its
 * threads wait in page faults meanwhile) and only then stops the daemon. After the target
 * started, a broken stream therefore loses the process (serverOn 'none'), as post-copy must.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';

import { hasCapability } from '../capabilities';
import { locateCriu, type Criu, type CriuNotifyHandlers, type CriuOptions } from '../criu';
import { SWRK_FIRST_EXTRA_FD } from '../criu/prepare';
import { recoverUnfinishedDump, signalTree } from '../criu/recover';
import { InvalidArgumentError } from '../errors';
import { processTree } from '../sys/proc';
import { checkCallOptions, checkDuplex, LazyPagesError, openPageRelay } from './page-relay';
import { daemonExit, findInPidNamespace, killTasks, pidNamespaceOf } from './lazy-tasks';

export { LazyPagesError };

/** CRIU's tee pipe for serving pages: PIPE_MAX_SIZE pages; less makes every larger request fail. */
const CRIU_TEE_PIPE_BYTES = 4 * 1024 * 1024;

const RESERVED = ['pid', 'imagesDir', 'lazyPages', 'ps', 'configFile', 'inheritFds', 'leaveRunning', 'leaveStopped'];

interface Common {
  criu: Criu;
  imagesDir: string;
  stream: Duplex;
  criuOptions?: CriuOptions;
  signal?: AbortSignal;
  timeoutMs?: number;
}

function check(o: Common, kind: string): void {
  if (typeof o !== 'object' || o === null) throw new InvalidArgumentError(`${kind} options must be an object`);
  if (typeof o.criu !== 'object' || o.criu === null || typeof o.criu.dump !== 'function')
    throw new InvalidArgumentError('options.criu must be a Criu client', 'ERR_INVALID_ARG_TYPE');
  if (typeof o.imagesDir !== 'string' || o.imagesDir === '' || /[\0\n]/.test(o.imagesDir))
    throw new InvalidArgumentError('options.imagesDir must be a non-empty path', 'ERR_INVALID_ARG_TYPE');
  checkDuplex(o.stream, 'options.stream');
  checkCallOptions(o);
  if (o.criuOptions !== undefined) {
    if (typeof o.criuOptions !== 'object' || o.criuOptions === null)
      throw new InvalidArgumentError('options.criuOptions must be an object', 'ERR_INVALID_ARG_TYPE');
    // The restore passes no fd of its own to swrk: the files a tree holds from outside may come back.
    for (const key of kind === 'startLazyRestore' ? RESERVED.filter((k) => k !== 'inheritFds') : RESERVED)
      if ((o.criuOptions as Record<string, unknown>)[key] !== undefined)
        throw new InvalidArgumentError(`options.criuOptions.${key} is set by the lazy-pages route itself`);
  }
}

/** CRIU serves lazy pages through a 4 MiB pipe; without CAP_SYS_RESOURCE fs.pipe-max-size must allow it. */
export function checkPipeSize(): void {
  if (hasCapability('CAP_SYS_RESOURCE')) return;
  let max = 0;
  try {
    max = Number(fs.readFileSync('/proc/sys/fs/pipe-max-size', 'utf8').trim());
  } catch {
    // unreadable: treated as too small
  }
  if (max >= CRIU_TEE_PIPE_BYTES) return;
  throw new LazyPagesError(
    `CRIU cannot serve lazy pages here: fs.pipe-max-size is ${max} and this process lacks CAP_SYS_RESOURCE; ` +
      `CRIU needs a ${CRIU_TEE_PIPE_BYTES}-byte pipe (else "page-pipe: tee: 65536" on the first larger request). ` +
      `Raise it: sysctl -w fs.pipe-max-size=${CRIU_TEE_PIPE_BYTES}`,
    { code: 'ERR_LAZY_PAGES_PIPE_SIZE' },
  );
}

function deadline(o: Common): AbortSignal | undefined {
  const signals = [o.signal, o.timeoutMs !== undefined ? AbortSignal.timeout(o.timeoutMs) : undefined].filter(
    (s): s is AbortSignal => s !== undefined,
  );
  return signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
}

/** Where the Criu client has CRIU log the DUMP (the repair reads CRIU's run id there). */
function dumpLogPath(options: Common): string | undefined {
  const o = options.criuOptions ?? {};
  if (o.logToStderr === true) return undefined;
  return path.join(o.workDir ?? options.imagesDir, o.logFile ?? 'criu-dump.log');
}

export interface LazyDumpOptions extends Common {
  /** Root of the tree to move. */
  pid: number;
  /** More of CRIU's notifications for the DUMP (its post-dump is ours). */
  handlers?: Omit<CriuNotifyHandlers, 'post-dump' | 'default'>;
}

export interface LazyTransferResult {
  /** Bytes that crossed the Duplex each way. */
  fromCriu: number;
  toCriu: number;
  ms: number;
}

export interface LazyDump {
  /** The images to carry to the target (complete: everything but the lazy pages). */
  readonly imagesDir: string;
  /** The target copy may run from now on: a failure kills the source tree instead of resuming it. */
  targetStarted(): void;
  /**
   * Resolves when CRIU has served every page, killed the source tree and answered. Rejects with a
   * LazyPagesError whose serverOn says where the process is ('source' before targetStarted).
   */
  readonly finished: Promise<LazyTransferResult>;
  /** Ends it early (as a failure); resolves when the source side is settled. */
  abort(reason?: Error): Promise<void>;
}

/** Source side: resolves at post-dump, with the images ready to carry and the page server running. */
export async function startLazyDump(options: LazyDumpOptions): Promise<LazyDump> {
  check(options, 'startLazyDump');
  if (!Number.isInteger(options.pid) || options.pid < 2)
    throw new InvalidArgumentError('options.pid must be an integer > 1', 'ERR_OUT_OF_RANGE');
  checkPipeSize();
  const started = performance.now();
  const signal = deadline(options);
  const relay = await openPageRelay(options.stream, signal !== undefined ? { signal } : {});
  const conf = path.join(options.imagesDir, 'lazy-dump.conf');
  let committed = false;
  let stopped = false;
  // The DUMP call follows the caller's signal only until post-dump: killing CRIU later would let
  // the client's recovery resume the source tree, which must not run once the target may.
  const calls = new AbortController();
  const abortCall = (): void => calls.abort(signal?.reason);
  if (signal?.aborted) abortCall();
  else signal?.addEventListener('abort', abortCall, { once: true });
  let imagesReady!: () => void;
  const ready = new Promise<void>((resolve) => (imagesReady = resolve));
  let dump: Promise<unknown>;
  let confFd: number | undefined;
  const closeConf = (): void => {
    if (confFd !== undefined) fs.closeSync(confFd);
    confFd = undefined;
  };
  try {
    // ps.fd puts the socket at swrk's first extra fd (no inheritFds here); CRIU reads the number
    // from the config file (RPC settings are overridden by it), named through /proc by an fd of
    // ours: a CRIU inside the tree's mount namespace (criuForTask) cannot see imagesDir's path.
    fs.writeFileSync(conf, `ps-socket ${SWRK_FIRST_EXTRA_FD}\n`, { mode: 0o600 });
    confFd = fs.openSync(conf, 'r');
    dump = options.criu.dump(
      {
        ...options.criuOptions,
        pid: options.pid,
        imagesDir: options.imagesDir,
        lazyPages: true,
        ps: { fd: relay.criuFd },
        configFile: `/proc/${process.pid}/fd/${confFd}`,
      },
      { ...options.handlers, 'post-dump': () => imagesReady() },
      { signal: calls.signal },
    );
  } catch (error) {
    closeConf();
    relay.reset();
    throw error;
  }
  dump.catch(() => {});
  void dump.then(closeConf, closeConf);
  const answered = dump.then(
    () => true,
    () => false,
  );
  // Before post-dump: a failed DUMP leaves the tree running where it was (CRIU's own unwinding).
  const first = await Promise.race([ready.then(() => 'ready' as const), dump.then(() => 'answered' as const)]).catch(
    (error: unknown) => error,
  );
  signal?.removeEventListener('abort', abortCall);
  closeConf(); // read when the request started
  if (first !== 'ready') {
    relay.reset();
    throw new LazyPagesError(
      `the lazy dump of ${options.pid} failed: ${(first as Error)?.message ?? 'answered early'}`,
      {
        code: 'ERR_LAZY_PAGES_DUMP_FAILED',
        cause: first,
      },
    );
  }
  relay.handOver();

  const settleFailure = async (cause: Error): Promise<never> => {
    const tree = processTree(options.pid);
    if (committed) {
      killTasks(tree); // the target copy may run: this one must never run again
    } else {
      signalTree(options.pid, 'SIGSTOP'); // CRIU resumes it with sockets in repair mode: stop it first
      stopped = true;
    }
    relay.reset(cause);
    // A reset CRIU answers at once (it fails the page server and unwinds); bounded all the same.
    const bound = setTimeout(() => calls.abort(new Error('CRIU did not answer after the reset')), 30000);
    await answered;
    clearTimeout(bound);
    let serverOn: 'source' | 'none' = 'none';
    if (!committed) {
      const repaired = await recoverUnfinishedDump(options.pid, dumpLogPath(options), stopped);
      serverOn = repaired.taskAlive ? 'source' : 'none';
    }
    const error = new LazyPagesError(
      `the lazy page transfer failed: ${cause.message}; ${serverOn === 'source' ? 'the process runs on the source again' : 'the process is lost (the source copy was killed; the target copy cannot run without its pages)'}`,
      { code: (cause as { code?: string }).code ?? 'ERR_LAZY_PAGES_TRANSFER_FAILED', cause },
    );
    error.serverOn = serverOn;
    throw error;
  };

  const finished = (async (): Promise<LazyTransferResult> => {
    const outcome = await Promise.race([
      relay.done.then(
        () => undefined,
        (error: Error) => error,
      ),
      dump.then(
        () => undefined,
        (error: Error) => error,
      ),
    ]);
    if (outcome !== undefined) return settleFailure(outcome);
    // One of them ended cleanly: CRIU answered after the relay saw its end, or the reverse.
    try {
      await dump;
    } catch (error) {
      return settleFailure(error as Error);
    }
    const stats = await relay.done.catch(() => relay.stats);
    return { ...stats, ms: performance.now() - started };
  })();
  finished.catch(() => {});
  return {
    imagesDir: options.imagesDir,
    targetStarted: () => {
      committed = true;
    },
    finished,
    abort: async (reason?: Error) => {
      relay.stop(reason ?? new LazyPagesError('the lazy dump was aborted', { code: 'ABORT_ERR' }));
      await finished.catch(() => {});
    },
  };
}

export interface LazyRestoreOptions extends Common {
  /** The command for the lazy-pages daemon: criu, or a wrapper running it where criu's swrk runs. */
  criuPath?: string;
}

export interface LazyRestore {
  /** The restored root's pid, as CRIU reports it (in the pid namespace CRIU restored into). */
  readonly pid: number;
  /** Resolves when the daemon has every page (it exited 0); rejects (serverOn 'none') otherwise. */
  readonly pagesArrived: Promise<LazyTransferResult>;
  abort(reason?: Error): Promise<void>;
}

/** Target side: starts the daemon, restores with lazy pages, resolves once the tree runs. */
export async function startLazyRestore(options: LazyRestoreOptions): Promise<LazyRestore> {
  check(options, 'startLazyRestore');
  if (options.criuPath !== undefined && (typeof options.criuPath !== 'string' || options.criuPath === ''))
    throw new InvalidArgumentError('options.criuPath must be a non-empty string', 'ERR_INVALID_ARG_TYPE');
  const criuPath = options.criuPath ?? locateCriu().path;
  const started = performance.now();
  const signal = deadline(options);
  const relay = await openPageRelay(options.stream, {
    ...(signal !== undefined ? { signal } : {}),
    streamEndGraceMs: 5000,
  });
  let daemon: ChildProcess | undefined;
  let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  const stopDaemon = async (): Promise<void> => {
    if (daemon?.pid === undefined || exited === undefined) return;
    for (const member of processTree(daemon.pid as number).reverse()) killTasks([member]);
    await exited;
  };
  let restoredTasks: number[] = [];
  let restoredNsPid: number | undefined;
  let daemonNs: string | undefined = undefined;
  const fail = async (cause: Error, what: string): Promise<never> => {
    // First, while the daemon lives (their missing pages never read as zeros). A restore that
    // failed late (aborted past pre-resume) still left a running tree: found by post-restore's pid.
    if (restoredTasks.length === 0 && restoredNsPid !== undefined)
      restoredTasks = findInPidNamespace(restoredNsPid, daemonNs);
    killTasks(restoredTasks);
    await stopDaemon();
    relay.reset(cause);
    const error = new LazyPagesError(`${what}: ${cause.message}`, {
      code: (cause as { code?: string }).code ?? 'ERR_LAZY_PAGES_RESTORE_FAILED',
      cause,
    });
    error.serverOn = 'none';
    throw error;
  };
  try {
    daemon = spawn(
      criuPath,
      [
        'lazy-pages',
        '--page-server',
        '--ps-socket',
        '3',
        '--status-fd',
        '4',
        '-D',
        options.imagesDir,
        '-o',
        'criu-lazy-pages.log',
        '-v4',
      ],
      { stdio: ['ignore', 'ignore', 'pipe', relay.criuFd, 'pipe'] },
    );
    exited = daemonExit(daemon);
    daemon.stderr?.resume();
    relay.handOver();
    const status = daemon.stdio[4] as NodeJS.ReadableStream;
    const readyOrExit = await Promise.race([
      new Promise<'ready'>((resolve) => status.once('data', () => resolve('ready'))),
      exited.then((e) => e),
      relay.done.then(
        () => new Error('the page stream ended before the restore'),
        (error: Error) => error,
      ),
    ]);
    if (readyOrExit !== 'ready')
      throw readyOrExit instanceof Error
        ? readyOrExit
        : new LazyPagesError(`criu lazy-pages exited with ${readyOrExit.signal ?? readyOrExit.code}`, {
            code: 'ERR_LAZY_PAGES_DAEMON_FAILED',
          });
  } catch (error) {
    return fail(error as Error, 'the lazy-pages daemon did not start');
  }
  daemonNs = pidNamespaceOf(processTree(daemon.pid as number).pop() as number);
  let pid: number;
  try {
    // By path as well: CRIU reads images_dir_fd as /proc/<client pid>/fd/N, which a CRIU in
    // another pid namespace (a container's, a test host's) cannot see.
    const conf = path.join(options.imagesDir, 'lazy-restore.conf');
    fs.writeFileSync(conf, `images-dir ${path.resolve(options.imagesDir)}\n`, { mode: 0o600 });
    const restored = await options.criu.restore(
      { ...options.criuOptions, imagesDir: options.imagesDir, lazyPages: true, configFile: conf },
      { 'post-restore': (event) => void (restoredNsPid = event.pid) },
      signal !== undefined ? { signal } : undefined,
    );
    pid = restored.pid;
    restoredTasks = findInPidNamespace(pid, daemonNs);
  } catch (error) {
    return fail(error as Error, 'the lazy restore failed');
  }
  const pagesArrived = (async (): Promise<LazyTransferResult> => {
    const outcome = await Promise.race([
      exited as Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
      relay.done.then(
        () => undefined,
        (e: Error) => e,
      ),
    ]);
    if (outcome instanceof Error) return fail(outcome, 'the lazy page transfer failed');
    const exit = outcome ?? (await exited);
    if (exit?.code !== 0)
      return fail(
        new LazyPagesError(`criu lazy-pages exited with ${exit?.signal ?? exit?.code}`, {
          code: 'ERR_LAZY_PAGES_DAEMON_FAILED',
        }),
        'the lazy page transfer failed',
      );
    const stats = await relay.done.catch(() => relay.stats);
    return { ...stats, ms: performance.now() - started };
  })();
  pagesArrived.catch(() => {});
  return {
    pid,
    pagesArrived,
    abort: async (reason?: Error) => {
      relay.stop(reason ?? new LazyPagesError('the lazy restore was aborted', { code: 'ABORT_ERR' }));
      await pagesArrived.catch(() => {});
    },
  };
}
