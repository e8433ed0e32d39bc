/**
 * The CRIU-RPC client. `new Criu()` spawns a private `criu swrk` per call (no daemon needed);
 * `new Criu({ mode: 'service', address })` talks to a running `criu service --address`.
 *
 * Each call: validate (nothing opened yet) → open directories and the connection → request
 * (answering notifications) → on success=false a CriuRequestError with cr_errno, cr_errmsg and the
 * tail of CRIU's log → close everything and reap swrk before settling. Unless the caller picks
 * logFile/logLevel (or logToStderr), CRIU logs at level 4 to `criu-<op>.log` in workDir (else
 * imagesDir). Requests that write images (dump, pre-dumps, page servers, cpuinfo dump) create a
 * missing imagesDir 0700; restore and cpuinfo check need it to exist.
 */
import { InvalidArgumentError } from '../errors';
import { runCall, type CallScope, type CriuCallOptions } from './call';
import { checkClientOptions, checkFeatures, splitPreDumpOptions, type CriuClientOptions } from './client-options';
import { CriuConnection } from './connection';
import { clientClosedError } from './errors';
import { locateCriu } from './locate';
import { CriuReqType, reqTypeName, type CriuRequestMessage, type CriuResponseMessage } from './messages';
import { validateNotifyHandlers, type CriuNotifyHandlers } from './notify';
import type { CriuOptions } from './options';
import { checkOptions, prepareOptions, type CriuMode } from './prepare';
import { recoveryPolicyFor, type RecoveryPolicy } from './recovery-policy';
import {
  pageServerResult,
  requestFailure,
  toCriuVersion,
  type CriuDumpResult,
  type CriuFeatures,
  type CriuNotifyRecord,
  type CriuPageServerResult,
  type CriuRestoreResult,
  type CriuVersion,
} from './replies';
import {
  PageServerChild,
  runPreDumpLoop,
  killDaemon,
  type CriuPreDumpOptions,
  type CriuPreDumpResult,
} from './sessions';

export { PageServerChild };
export type {
  CriuClientOptions,
  CriuDumpResult,
  CriuFeatures,
  CriuNotifyRecord,
  CriuPageServerResult,
  CriuPreDumpOptions,
  CriuPreDumpResult,
  CriuRestoreResult,
  CriuVersion,
};

/** What one request on a fresh connection needs besides the request itself. */
interface SimpleRequest {
  extraFds?: number[];
  logPath?: string;
  handlers?: CriuNotifyHandlers;
  notifications?: CriuNotifyRecord[];
  selfDump?: boolean;
  policy?: RecoveryPolicy;
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
    const checked = checkClientOptions(options);
    this.mode = checked.mode;
    if (checked.address !== undefined) this.address = checked.address;
    if (checked.criuPath !== undefined) this.criuPath = checked.criuPath;
  }

  private run<T>(what: string, call: CriuCallOptions | undefined, body: (scope: CallScope) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(clientClosedError());
    return runCall(what, call, body, this.scopes);
  }

  /** Opens a connection bound to `scope` (killed on abort, closed when the call settles). */
  private async connect(
    scope: CallScope,
    extraFds: readonly number[] = [],
    selfDump = false,
  ): Promise<{ connection: CriuConnection; release: () => void }> {
    if (this.closed) throw clientClosedError();
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

  /** One request on a fresh connection, failures turned into errors. */
  private async simple(
    scope: CallScope,
    request: CriuRequestMessage,
    extra: SimpleRequest = {},
  ): Promise<CriuResponseMessage> {
    const { connection } = await this.connect(scope, extra.extraFds, extra.selfDump);
    const policy = extra.policy;
    if (policy) {
      policy.beforeRequest(connection.swrk);
      connection.beforeKill = () => policy.beforeKill();
    }
    let outcome;
    try {
      outcome = await connection.request(request, {
        signal: scope.signal,
        ...(extra.handlers ? { handlers: extra.handlers } : {}),
        ...(extra.notifications ? { notifications: extra.notifications } : {}),
      });
    } catch (error) {
      if (connection.endedByPeer) policy?.connectionEnded();
      throw error;
    }
    policy?.answered(outcome.response.success && outcome.handlerError === undefined);
    if (outcome.handlerError) {
      await connection.close();
      throw outcome.handlerError;
    }
    if (!outcome.response.success) throw requestFailure(request, outcome.response, extra.logPath);
    return outcome.response;
  }

  /** CRIU's version (VERSION request). */
  version(call?: CriuCallOptions): Promise<CriuVersion> {
    return this.run('criu VERSION', call, async (scope) => {
      const request = { type: CriuReqType.VERSION };
      const response = await this.simple(scope, request);
      if (!response.version) throw requestFailure(request, response);
      return toCriuVersion(response.version);
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
    checkFeatures(features);
    return this.run('criu FEATURE_CHECK', call, async (scope) => {
      const response = await this.simple(scope, { type: CriuReqType.FEATURE_CHECK, features });
      return { ...response.features };
    });
  }

  /** A request with CriuOptions on its own connection (swrk), with the recovery policy its type has. */
  private async operation(
    type: CriuReqType,
    op: string,
    options: CriuOptions | undefined,
    handlers: CriuNotifyHandlers | undefined,
    call: CriuCallOptions | undefined,
  ): Promise<{ response: CriuResponseMessage; notifications: CriuNotifyRecord[]; logPath?: string }> {
    const checked = checkOptions(options, this.mode, { requireImagesDir: true });
    validateNotifyHandlers(handlers);
    return this.run(`criu ${reqTypeName(type)}`, call, async (scope) => {
      const prepared = prepareOptions(checked, scope, {
        logName: `criu-${op}.log`,
        notify: handlers !== undefined,
        // Requests that write images create a missing imagesDir; a restore or check needs it there.
        createImagesDir: type !== CriuReqType.RESTORE && type !== CriuReqType.CPUINFO_CHECK,
      });
      const notifications: CriuNotifyRecord[] = [];
      const policy = recoveryPolicyFor(type, {
        ...(type !== CriuReqType.RESTORE && checked.pid !== undefined ? { pid: checked.pid } : {}),
        ...(prepared.logPath ? { logPath: prepared.logPath } : {}),
        ...(checked.freezeCgroup !== undefined ? { freezeCgroup: checked.freezeCgroup } : {}),
        ...(checked.networkLock === 'skip' ? { lockSkipped: true } : {}),
        notifications,
      });
      // Registered before the connection, so it runs after swrk has been killed/reaped.
      if (policy) {
        scope.defer(async () => {
          const recovery = await policy.afterCall();
          if (recovery) scope.recovery = recovery;
        });
      }
      const response = await this.simple(
        scope,
        { type, opts: prepared.opts },
        {
          extraFds: prepared.extraFds,
          notifications,
          // DUMP without pid dumps this very process: criu must not be our child.
          selfDump: type === CriuReqType.DUMP && checked.pid === undefined,
          ...(policy ? { policy } : {}),
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
    );
    return { restored: response.dump?.restored === true, notifications, ...(logPath ? { logFile: logPath } : {}) };
  }

  /** SINGLE_PRE_DUMP: one pre-dump of options.pid into options.imagesDir; the task keeps running. */
  async singlePreDump(
    options: CriuOptions,
    handlers?: CriuNotifyHandlers,
    call?: CriuCallOptions,
  ): Promise<CriuDumpResult> {
    const type = CriuReqType.SINGLE_PRE_DUMP;
    const { notifications, logPath } = await this.operation(type, 'pre-dump', options, handlers, call);
    return { restored: false, notifications, ...(logPath ? { logFile: logPath } : {}) };
  }

  /** RESTORE from options.imagesDir; resolves with the restored root's pid. */
  async restore(
    options: CriuOptions,
    handlers?: CriuNotifyHandlers,
    call?: CriuCallOptions,
  ): Promise<CriuRestoreResult> {
    const type = CriuReqType.RESTORE;
    const { response, notifications, logPath } = await this.operation(type, 'restore', options, handlers, call);
    const pid = response.restore?.pid;
    if (pid === undefined) throw requestFailure({ type }, response, logPath);
    return { pid, notifications, ...(logPath ? { logFile: logPath } : {}) };
  }

  /** CPUINFO_DUMP: writes cpuinfo.img to options.imagesDir. */
  async cpuinfoDump(options: CriuOptions, call?: CriuCallOptions): Promise<void> {
    await this.operation(CriuReqType.CPUINFO_DUMP, 'cpuinfo-dump', options, undefined, call);
  }

  /** CPUINFO_CHECK: checks this CPU against options.imagesDir/cpuinfo.img (CriuRequestError if not compatible). */
  async cpuinfoCheck(options: CriuOptions, call?: CriuCallOptions): Promise<void> {
    await this.operation(CriuReqType.CPUINFO_CHECK, 'cpuinfo-check', options, undefined, call);
  }

  /**
   * PAGE_SERVER: a daemonized page server writing into options.imagesDir, listening on
   * options.ps.address/port (port 0: CRIU picks). It serves one dump and exits. close() kills it
   * only if CRIU reported its pid (4.2.1 does not); pageServerChld() keeps it under control.
   */
  async pageServer(options: CriuOptions, call?: CriuCallOptions): Promise<CriuPageServerResult> {
    const type = CriuReqType.PAGE_SERVER;
    const { response, logPath } = await this.operation(type, 'page-server', options, undefined, call);
    const result = pageServerResult({ type }, response, logPath);
    if (result.pid !== undefined) this.pageServers.add(result.pid);
    return result;
  }

  /**
   * PAGE_SERVER_CHLD with keep_open: the page server runs as a child of this call's swrk, which
   * stays connected; PageServerChild.waitPid() sends WAIT_PID (the last request on it).
   */
  async pageServerChld(options: CriuOptions, call?: CriuCallOptions): Promise<PageServerChild> {
    const checked = checkOptions(options, this.mode, { requireImagesDir: true });
    return this.run('criu PAGE_SERVER_CHLD', call, async (scope) => {
      const prepared = prepareOptions(checked, scope, { logName: 'criu-page-server.log', createImagesDir: true });
      const { connection, release } = await this.connect(scope, prepared.extraFds);
      const request: CriuRequestMessage = { type: CriuReqType.PAGE_SERVER_CHLD, keepOpen: true, opts: prepared.opts };
      const { response } = await connection.request(request, { signal: scope.signal });
      if (!response.success || response.ps?.pid === undefined || response.ps.port === undefined) {
        throw requestFailure(request, response, prepared.logPath);
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
    const { shouldContinue, maxIterations, criuOptions } = splitPreDumpOptions(options);
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
      scope.cancel(clientClosedError('the Criu client was closed during the call'));
      pending.push(scope.finished);
    }
    for (const child of [...this.children]) pending.push(child.close());
    for (const connection of [...this.connections]) pending.push(connection.destroy());
    for (const pid of [...this.pageServers]) pending.push(killDaemon(pid));
    this.pageServers.clear();
    await Promise.allSettled(pending);
  }
}
