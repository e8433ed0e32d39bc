/**
 * The CRIU-RPC client. `new Criu()` spawns a private `criu swrk` per call (no daemon needed);
 * `new Criu({ mode: 'service', address })` talks to a running `criu service --address`.
 *
 * Each call: validate (InvalidArgumentError, nothing opened yet) → open directories and the
 * connection → request (answering notifications) → on success=false a CriuRequestError carrying
 * cr_errno, cr_errmsg and the tail of CRIU's log → close everything and reap swrk before settling.
 * Logs: unless the caller picks logFile/logLevel (or logToStderr), CRIU logs at level 4 to
 * `criu-<op>.log` in workDir (else imagesDir), and failures quote its last lines.
 */
import { describeValue, InvalidArgumentError } from '../errors';
import { checkSocketPath } from '../security';
import { runCall, type CallScope, type CriuCallOptions } from './call';
import { CriuConnection, type NotifyRecord } from './connection';
import { CriuConnectionError, CriuRequestError } from './errors';
import { locateCriu } from './locate';
import {
  CriuReqType,
  reqTypeName,
  type CriuFeaturesMessage,
  type CriuRequestMessage,
  type CriuResponseMessage,
} from './messages';
import { validateNotifyHandlers, type CriuNotifyHandlers } from './notify';
import type { CriuOptions } from './options';
import { checkOptions, prepareOptions, readLogTail, type CriuMode } from './prepare';
import {
  descendantsOf,
  mayTouch,
  recoverUnfinishedDump,
  recoverUnfinishedRestore,
  signalTree,
  stillThere,
  type SeenTask,
} from './recover';
import {
  PageServerChild,
  runPreDumpLoop,
  killDaemon,
  type CriuPreDumpOptions,
  type CriuPreDumpResult,
} from './sessions';

export interface CriuClientOptions {
  /** 'swrk' (default): spawn `criu swrk` per call. 'service': connect to `address`. */
  mode?: CriuMode;
  /** swrk: the criu executable (else CRIU_PATH, the install-criu.sh cache, PATH). */
  criuPath?: string;
  /** service: the path `criu service --address` listens on. */
  address?: string;
}

export interface CriuVersion {
  major: number;
  minor: number;
  sublevel?: number;
  extra?: number;
  gitid?: string;
  name?: string;
  /** '4.2.1' */
  text: string;
  /** libcriu's number: major*10000 + minor*100 + sublevel (gitid builds round up to the next 100). */
  number: number;
}

export type CriuFeatures = CriuFeaturesMessage;

export interface CriuDumpResult {
  /** True only in a process restored from a self-dump (dump without pid). */
  restored: boolean;
  /** The notifications CRIU sent, in arrival order. */
  notifications: NotifyRecord[];
  logFile?: string;
}

export interface CriuRestoreResult {
  /** pid of the restored tree's root. */
  pid: number;
  notifications: NotifyRecord[];
  logFile?: string;
}

export interface CriuPageServerResult {
  /** The daemon's pid when CRIU reports it (CRIU 4.2.1 sends 0: then absent). */
  pid?: number;
  port: number;
}

export { PageServerChild };
export type { CriuPreDumpOptions, CriuPreDumpResult, NotifyRecord as CriuNotifyRecord };

/** Tracks whether CRIU answered a request, and over which connection (for repairs after a death). */
interface UnansweredGuard {
  answered: boolean;
  /** CRIU answered success=true. */
  succeeded?: boolean;
  connection?: CriuConnection;
  /** The dumped tree was SIGSTOPped before swrk was killed (continued by the repair). */
  stopped?: boolean;
  /**
   * RESTORE: the tasks swrk had forked when we killed it. Before post-restore nothing else names
   * them, and once swrk is gone they are orphans stuck half-restored (seen: a task inside CRIU's
   * restorer, running, never resumed, its connections still behind CRIU's lock).
   */
  forked?: SeenTask[];
}

/**
 * When swrk died (or was killed by an abort or timeout) before answering a DUMP or RESTORE, CRIU
 * could not unwind: undo what it left (recover.ts). Only for a swrk we started and reaped (a
 * `criu service` worker may still be running; a self-dump's swrk is not ours to know).
 */
async function repairAfterUnansweredRequest(
  scope: CallScope,
  type: CriuReqType,
  guard: UnansweredGuard,
  pid: number | undefined,
  logPath: string | undefined,
  notifications: NotifyRecord[],
): Promise<void> {
  const swrk = guard.connection?.swrk;
  if (type === CriuReqType.RESTORE) {
    // A restore that failed between post-restore and pre-resume, answered or not, must not leave
    // its tree behind (CRIU kills it itself when it can; when it was killed meanwhile it cannot).
    if (guard.succeeded || swrk === undefined || swrk.outsideOurTree) return;
    await swrk.exited;
    const scripts = notifications.map((n) => n.script);
    const restoredPid = notifications.find((n) => n.script === 'post-restore')?.pid;
    if (guard.answered && restoredPid === undefined) return;
    let roots: number[] = [];
    if (restoredPid !== undefined) roots = scripts.includes('pre-resume') ? [] : [restoredPid];
    else if (!guard.answered) roots = stillThere(guard.forked ?? []); // a pid reused meanwhile is left alone
    const killed = roots.length > 0 ? await recoverUnfinishedRestore(roots) : { killed: [], problems: [] };
    if (!guard.answered || killed.killed.length > 0) scope.recovery = { request: 'RESTORE', ...killed };
    return;
  }
  if (guard.answered || swrk === undefined || swrk.outsideOurTree) {
    if (guard.stopped && pid !== undefined) signalTree(pid, 'SIGCONT');
    return;
  }
  await swrk.exited;
  if (pid !== undefined) {
    const repaired = await recoverUnfinishedDump(pid, logPath, guard.stopped === true);
    scope.recovery = { request: type === CriuReqType.DUMP ? 'DUMP' : 'SINGLE_PRE_DUMP', ...repaired };
  }
}

export class Criu {
  readonly mode: CriuMode;
  private readonly criuPath?: string;
  private readonly address?: string;
  private closed = false;
  private readonly connections = new Set<CriuConnection>();
  private readonly pageServers = new Set<number>();
  private readonly children = new Set<PageServerChild>();
  /** Calls in flight, so close() can end them. */
  private readonly scopes = new Set<CallScope>();

  constructor(options: CriuClientOptions = {}) {
    if (typeof options !== 'object' || options === null)
      throw new InvalidArgumentError('Criu options must be an object', 'ERR_INVALID_ARG_TYPE');
    for (const key of Object.keys(options)) {
      if (!['mode', 'criuPath', 'address'].includes(key))
        throw new InvalidArgumentError(`Criu options: unknown option '${key}'`);
    }
    const mode = options.mode ?? 'swrk';
    if (mode !== 'swrk' && mode !== 'service')
      throw new InvalidArgumentError(`Criu options.mode must be 'swrk' or 'service', got ${describeValue(mode)}`);
    this.mode = mode;
    if (mode === 'service') {
      if (typeof options.address !== 'string' || options.address === '')
        throw new InvalidArgumentError("mode 'service' needs options.address (a socket path)");
      checkSocketPath(options.address, 'options.address');
      if (options.criuPath !== undefined)
        throw new InvalidArgumentError("options.criuPath applies to mode 'swrk' only");
      this.address = options.address;
    } else {
      if (options.address !== undefined)
        throw new InvalidArgumentError("options.address applies to mode 'service' only");
      if (options.criuPath !== undefined && (typeof options.criuPath !== 'string' || options.criuPath === '')) {
        throw new InvalidArgumentError('options.criuPath must be a non-empty string', 'ERR_INVALID_ARG_TYPE');
      }
      if (options.criuPath !== undefined) this.criuPath = options.criuPath;
    }
  }

  private run<T>(what: string, call: CriuCallOptions | undefined, body: (scope: CallScope) => Promise<T>): Promise<T> {
    if (this.closed)
      return Promise.reject(new CriuConnectionError('this Criu client is closed', { code: 'ERR_CRIU_CLIENT_CLOSED' }));
    return runCall(what, call, body, this.scopes);
  }

  /** Opens a connection bound to `scope` (killed on abort, closed when the call settles). */
  private async connect(
    scope: CallScope,
    extraFds: readonly number[] = [],
    selfDump = false,
  ): Promise<{ connection: CriuConnection; release: () => void }> {
    if (this.closed) throw new CriuConnectionError('this Criu client is closed', { code: 'ERR_CRIU_CLIENT_CLOSED' });
    let connection: CriuConnection;
    if (this.mode === 'swrk') {
      const command = locateCriu(this.criuPath !== undefined ? { criuPath: this.criuPath } : {});
      connection = await CriuConnection.swrk(command.path, extraFds, selfDump);
    } else {
      connection = CriuConnection.service(this.address as string);
    }
    this.connections.add(connection);
    const cleanup = connection.bindTo(scope);
    scope.defer(() => this.connections.delete(connection));
    if (scope.signal.aborted) await connection.destroy();
    // For keep_open sessions: the connection outlives the call; the session owns it from now on.
    const release = (): void => scope.release(cleanup);
    return { connection, release };
  }

  private failure(request: CriuRequestMessage, response: CriuResponseMessage, logPath?: string): CriuRequestError {
    const what = reqTypeName(request.type);
    const logTail = readLogTail(logPath);
    const parts = [
      response.type === CriuReqType.EMPTY ? `CRIU rejected ${what} (EMPTY reply)` : `CRIU ${what} failed`,
      response.crErrno ? `errno ${response.crErrno}` : undefined,
      response.crErrmsg ? response.crErrmsg.trim() : undefined,
      logPath ? `log: ${logPath}` : undefined,
    ].filter(Boolean);
    return new CriuRequestError(parts.join('; '), {
      requestType: what,
      responseType: reqTypeName(response.type),
      ...(response.crErrno ? { crErrno: response.crErrno } : {}),
      ...(response.crErrmsg ? { crErrmsg: response.crErrmsg } : {}),
      ...(logPath ? { logFile: logPath } : {}),
      ...(logTail !== undefined ? { logTail } : {}),
    });
  }

  /** One request on a fresh connection, failures turned into errors. */
  private async simple(
    scope: CallScope,
    request: CriuRequestMessage,
    extra: {
      extraFds?: number[];
      logPath?: string;
      handlers?: CriuNotifyHandlers;
      notifications?: NotifyRecord[];
      selfDump?: boolean;
      guard?: UnansweredGuard;
    } = {},
  ): Promise<CriuResponseMessage> {
    const { connection } = await this.connect(scope, extra.extraFds, extra.selfDump);
    const guard = extra.guard;
    if (guard) {
      guard.connection = connection;
      const dumpedPid = request.type !== CriuReqType.RESTORE ? request.opts?.pid : undefined;
      const swrk = connection.swrk;
      if (dumpedPid !== undefined && mayTouch(dumpedPid) && !extra.selfDump) {
        connection.beforeKill = () => {
          if (guard.answered) return;
          signalTree(dumpedPid, 'SIGSTOP');
          guard.stopped = true;
        };
      } else if (request.type === CriuReqType.RESTORE && swrk !== undefined && !swrk.outsideOurTree) {
        connection.beforeKill = () => {
          if (!guard.answered) guard.forked = descendantsOf(swrk.pid);
        };
      }
    }
    const outcome = await connection.request(request, {
      signal: scope.signal,
      ...(extra.handlers ? { handlers: extra.handlers } : {}),
      ...(extra.notifications ? { notifications: extra.notifications } : {}),
    });
    if (extra.guard) {
      extra.guard.answered = true;
      extra.guard.succeeded = outcome.response.success && outcome.handlerError === undefined;
    }
    if (outcome.handlerError) {
      await connection.close();
      throw outcome.handlerError;
    }
    if (!outcome.response.success) throw this.failure(request, outcome.response, extra.logPath);
    return outcome.response;
  }

  /** CRIU's version (VERSION request). */
  version(call?: CriuCallOptions): Promise<CriuVersion> {
    return this.run('criu VERSION', call, async (scope) => {
      const response = await this.simple(scope, { type: CriuReqType.VERSION });
      const v = response.version;
      if (!v) throw this.failure({ type: CriuReqType.VERSION }, response);
      const sublevel = v.sublevel ?? 0;
      let number = v.majorNumber * 10000 + v.minorNumber * 100 + sublevel;
      if (v.gitid) number = Math.floor(number / 100) * 100 + 100;
      return {
        major: v.majorNumber,
        minor: v.minorNumber,
        ...(v.sublevel !== undefined ? { sublevel: v.sublevel } : {}),
        ...(v.extra !== undefined ? { extra: v.extra } : {}),
        ...(v.gitid !== undefined ? { gitid: v.gitid } : {}),
        ...(v.name !== undefined ? { name: v.name } : {}),
        text: [v.majorNumber, v.minorNumber, ...(v.sublevel !== undefined ? [v.sublevel] : [])].join('.'),
        number,
      };
    });
  }

  /** CHECK: resolves when CRIU's kernel checks pass, rejects with CriuRequestError otherwise. */
  check(call?: CriuCallOptions): Promise<void> {
    return this.run('criu CHECK', call, async (scope) => {
      await this.simple(scope, { type: CriuReqType.CHECK });
    });
  }

  /** FEATURE_CHECK: CRIU's answer for each feature asked (all three by default). */
  async featureCheck(
    features: CriuFeatures = { memTrack: true, lazyPages: true, pidfdStore: true },
    call?: CriuCallOptions,
  ): Promise<CriuFeatures> {
    if (typeof features !== 'object' || features === null)
      throw new InvalidArgumentError('features must be an object', 'ERR_INVALID_ARG_TYPE');
    for (const [key, value] of Object.entries(features)) {
      if (!['memTrack', 'lazyPages', 'pidfdStore'].includes(key))
        throw new InvalidArgumentError(`features.${key}: unknown feature`);
      if (value !== undefined && typeof value !== 'boolean')
        throw new InvalidArgumentError(`features.${key} must be a boolean`, 'ERR_INVALID_ARG_TYPE');
    }
    return this.run('criu FEATURE_CHECK', call, async (scope) => {
      const response = await this.simple(scope, { type: CriuReqType.FEATURE_CHECK, features });
      return { ...response.features };
    });
  }

  private async operation(
    type: CriuReqType,
    op: string,
    options: CriuOptions | undefined,
    handlers: CriuNotifyHandlers | undefined,
    call: CriuCallOptions | undefined,
    requireImagesDir: boolean,
  ): Promise<{ response: CriuResponseMessage; notifications: NotifyRecord[]; logPath?: string }> {
    const checked = checkOptions(options, this.mode, { requireImagesDir });
    validateNotifyHandlers(handlers);
    return this.run(`criu ${reqTypeName(type)}`, call, async (scope) => {
      const prepared = prepareOptions(checked, scope, { logName: `criu-${op}.log`, notify: handlers !== undefined });
      const notifications: NotifyRecord[] = [];
      const guard: UnansweredGuard = { answered: false };
      // Registered before the connection, so it runs after swrk has been killed/reaped.
      if (type === CriuReqType.DUMP || type === CriuReqType.SINGLE_PRE_DUMP || type === CriuReqType.RESTORE) {
        scope.defer(() =>
          repairAfterUnansweredRequest(scope, type, guard, checked.pid, prepared.logPath, notifications),
        );
      }
      const response = await this.simple(
        scope,
        { type, opts: prepared.opts },
        {
          extraFds: prepared.extraFds,
          notifications,
          // DUMP without pid dumps this very process: criu must not be our child.
          selfDump: type === CriuReqType.DUMP && checked.pid === undefined,
          guard,
          ...(prepared.logPath ? { logPath: prepared.logPath } : {}),
          ...(handlers ? { handlers } : {}),
        },
      );
      return { response, notifications, ...(prepared.logPath ? { logPath: prepared.logPath } : {}) };
    });
  }

  /**
   * DUMP. Without options.pid CRIU dumps the calling process itself (swrk is then started outside
   * our process tree, as CRIU requires); in the restored copy this resolves with restored: true.
   */
  async dump(options: CriuOptions, handlers?: CriuNotifyHandlers, call?: CriuCallOptions): Promise<CriuDumpResult> {
    const { response, notifications, logPath } = await this.operation(
      CriuReqType.DUMP,
      'dump',
      options,
      handlers,
      call,
      true,
    );
    return { restored: response.dump?.restored === true, notifications, ...(logPath ? { logFile: logPath } : {}) };
  }

  /** SINGLE_PRE_DUMP: one pre-dump of options.pid into options.imagesDir; the task keeps running. */
  async singlePreDump(
    options: CriuOptions,
    handlers?: CriuNotifyHandlers,
    call?: CriuCallOptions,
  ): Promise<CriuDumpResult> {
    const { notifications, logPath } = await this.operation(
      CriuReqType.SINGLE_PRE_DUMP,
      'pre-dump',
      options,
      handlers,
      call,
      true,
    );
    return { restored: false, notifications, ...(logPath ? { logFile: logPath } : {}) };
  }

  /** RESTORE from options.imagesDir; resolves with the restored root's pid. */
  async restore(
    options: CriuOptions,
    handlers?: CriuNotifyHandlers,
    call?: CriuCallOptions,
  ): Promise<CriuRestoreResult> {
    const { response, notifications, logPath } = await this.operation(
      CriuReqType.RESTORE,
      'restore',
      options,
      handlers,
      call,
      true,
    );
    const pid = response.restore?.pid;
    if (pid === undefined) throw this.failure({ type: CriuReqType.RESTORE }, response, logPath);
    return { pid, notifications, ...(logPath ? { logFile: logPath } : {}) };
  }

  /** CPUINFO_DUMP: writes cpuinfo.img to options.imagesDir. */
  async cpuinfoDump(options: CriuOptions, call?: CriuCallOptions): Promise<void> {
    await this.operation(CriuReqType.CPUINFO_DUMP, 'cpuinfo-dump', options, undefined, call, true);
  }

  /** CPUINFO_CHECK: checks this CPU against options.imagesDir/cpuinfo.img (CriuRequestError if not compatible). */
  async cpuinfoCheck(options: CriuOptions, call?: CriuCallOptions): Promise<void> {
    await this.operation(CriuReqType.CPUINFO_CHECK, 'cpuinfo-check', options, undefined, call, true);
  }

  /**
   * PAGE_SERVER: a daemonized page server writing into options.imagesDir, listening on
   * options.ps.address/port (port 0: CRIU picks). It serves one dump and exits. close() kills it
   * only if CRIU reported its pid (4.2.1 does not); pageServerChld() keeps it under control.
   */
  async pageServer(options: CriuOptions, call?: CriuCallOptions): Promise<CriuPageServerResult> {
    const { response, logPath } = await this.operation(
      CriuReqType.PAGE_SERVER,
      'page-server',
      options,
      undefined,
      call,
      true,
    );
    if (!response.ps?.port) throw this.failure({ type: CriuReqType.PAGE_SERVER }, response, logPath);
    // CRIU 4.2.1 answers pid 0 here (the daemon's pid is not reported), so it may be unknown.
    const pid = response.ps.pid !== undefined && response.ps.pid > 1 ? response.ps.pid : undefined;
    if (pid !== undefined) this.pageServers.add(pid);
    return { ...(pid !== undefined ? { pid } : {}), port: response.ps.port };
  }

  /**
   * PAGE_SERVER_CHLD with keep_open: the page server runs as a child of this call's swrk, which
   * stays connected; PageServerChild.waitPid() sends WAIT_PID (the last request on it).
   */
  async pageServerChld(options: CriuOptions, call?: CriuCallOptions): Promise<PageServerChild> {
    const checked = checkOptions(options, this.mode, { requireImagesDir: true });
    return this.run('criu PAGE_SERVER_CHLD', call, async (scope) => {
      const prepared = prepareOptions(checked, scope, { logName: 'criu-page-server.log' });
      const { connection, release } = await this.connect(scope, prepared.extraFds);
      const request: CriuRequestMessage = { type: CriuReqType.PAGE_SERVER_CHLD, keepOpen: true, opts: prepared.opts };
      const { response } = await connection.request(request, { signal: scope.signal });
      if (!response.success || response.ps?.pid === undefined || response.ps.port === undefined) {
        throw this.failure(request, response, prepared.logPath);
      }
      release();
      const child = new PageServerChild(connection, response.ps.pid, response.ps.port, (c) => {
        this.children.delete(c);
        this.connections.delete(connection);
      });
      this.connections.add(connection);
      this.children.add(child);
      return child;
    });
  }

  /**
   * The PRE_DUMP loop on one connection: pre-dump into imagesDir/pre-1, pre-2, ... (each with
   * parent_img set to the previous one) while options.shouldContinue says so (at most
   * maxIterations), then the final DUMP into imagesDir/dump.
   */
  async preDump(
    options: CriuPreDumpOptions,
    handlers?: CriuNotifyHandlers,
    call?: CriuCallOptions,
  ): Promise<CriuPreDumpResult> {
    if (typeof options !== 'object' || options === null)
      throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
    const { shouldContinue, maxIterations, ...criuOptions } = options;
    if (shouldContinue !== undefined && typeof shouldContinue !== 'function') {
      throw new InvalidArgumentError('options.shouldContinue must be a function', 'ERR_INVALID_ARG_TYPE');
    }
    if (maxIterations !== undefined && (!Number.isInteger(maxIterations) || maxIterations < 1 || maxIterations > 100)) {
      throw new InvalidArgumentError('options.maxIterations must be an integer from 1 to 100', 'ERR_OUT_OF_RANGE');
    }
    const checked = checkOptions(criuOptions, this.mode, { requireImagesDir: true });
    if (checked.parentImg !== undefined) throw new InvalidArgumentError('options.parentImg is set by preDump itself');
    validateNotifyHandlers(handlers);
    return this.run('criu PRE_DUMP loop', call, async (scope) => {
      const first = prepareOptions({ ...checked, imagesDir: undefined }, scope);
      const { connection } = await this.connect(scope, first.extraFds);
      return runPreDumpLoop(connection, scope, checked as CriuOptions & { imagesDir: string }, {
        ...(shouldContinue ? { shouldContinue } : {}),
        maxIterations: maxIterations ?? 8,
        ...(handlers ? { handlers } : {}),
        failure: (request, response, logPath) => this.failure(request, response, logPath),
      });
    });
  }

  /**
   * Idempotent: kills and reaps every swrk this client started (keep_open sessions included),
   * kills page servers it started, and makes later calls fail with ERR_CRIU_CLIENT_CLOSED.
   */
  async close(): Promise<void> {
    this.closed = true;
    const pending: Promise<unknown>[] = [];
    for (const scope of [...this.scopes]) {
      scope.cancel(
        new CriuConnectionError('the Criu client was closed during the call', { code: 'ERR_CRIU_CLIENT_CLOSED' }),
      );
      pending.push(scope.finished);
    }
    for (const child of [...this.children]) pending.push(child.close());
    for (const connection of [...this.connections]) pending.push(connection.destroy());
    for (const pid of [...this.pageServers]) pending.push(killDaemon(pid));
    this.pageServers.clear();
    await Promise.allSettled(pending);
  }
}
