/**
 * Multi-request conversations on one connection: the PRE_DUMP loop that ends in a DUMP, and the
 * PAGE_SERVER_CHLD (keep_open) → WAIT_PID pair; and killing a daemonized page server.
 */
import { constants as osConstants } from 'node:os';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { runCall, type CallScope, type CriuCallOptions } from './call';
import type { CriuConnection } from './connection';
import { clientClosedError } from './errors';
import { CriuReqType, type CriuRequestMessage } from './messages';
import type { CriuNotifyHandlers } from './notify';
import type { CriuOptions } from './options';
import { prepareOptions, type PreparedOptions } from './prepare';
import { requestFailure, type CriuNotifyRecord } from './replies';

export interface CriuPreDumpIteration {
  /** 1 for the first pre-dump. */
  iteration: number;
  /** The directory this pre-dump wrote (imagesDir/pre-N). */
  imagesDir: string;
  /** Total size of its pages-*.img files: how much memory this round copied. */
  pagesBytes: number;
}

export interface CriuPreDumpOptions extends CriuOptions {
  /** Base directory (must exist): pre-dumps go to pre-1, pre-2, ..., the final dump to dump/. */
  imagesDir: string;
  /**
   * Called after each pre-dump; true asks for another one. Default: one pre-dump, then the dump.
   */
  shouldContinue?: (iteration: CriuPreDumpIteration) => boolean | Promise<boolean>;
  /** Upper bound on pre-dumps (default 8). */
  maxIterations?: number;
}

export interface CriuPreDumpResult {
  iterations: CriuPreDumpIteration[];
  /** The final dump's directory (imagesDir/dump); restore from here. */
  imagesDir: string;
  restored: boolean;
  notifications: CriuNotifyRecord[];
}

function pagesBytes(dir: string): number {
  let total = 0;
  for (const name of fs.readdirSync(dir)) {
    if (name.startsWith('pages-') && name.endsWith('.img')) total += fs.statSync(path.join(dir, name)).size;
  }
  return total;
}

export async function runPreDumpLoop(
  connection: CriuConnection,
  scope: CallScope,
  options: CriuOptions & { imagesDir: string },
  plan: {
    shouldContinue?: (iteration: CriuPreDumpIteration) => boolean | Promise<boolean>;
    maxIterations: number;
    handlers?: CriuNotifyHandlers;
  },
): Promise<CriuPreDumpResult> {
  const base = options.imagesDir;
  const iterations: CriuPreDumpIteration[] = [];
  const notifications: CriuNotifyRecord[] = [];
  const requestOptions = {
    signal: scope.signal,
    notifications,
    ...(plan.handlers ? { handlers: plan.handlers } : {}),
  };
  const notify = plan.handlers !== undefined;
  const ask = async (type: CriuReqType, prepared: PreparedOptions) => {
    const request: CriuRequestMessage = { type, opts: prepared.opts };
    const outcome = await connection.request(request, requestOptions);
    if (outcome.handlerError) throw outcome.handlerError;
    if (!outcome.response.success) throw requestFailure(request, outcome.response, prepared.logPath);
    return outcome.response;
  };
  // leave_running and friends belong to the final dump; a pre-dump always leaves the task running.
  const { leaveRunning: _leaveRunning, leaveStopped: _leaveStopped, ...preDumpOptions } = options;
  let parent: string | undefined;
  for (let n = 1; ; n++) {
    const dir = path.join(base, `pre-${n}`);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const prepared = prepareOptions(preDumpOptions, scope, {
      logName: 'criu-pre-dump.log',
      notify,
      overrides: { imagesDir: dir, ...(parent ? { parentImg: parent } : {}) },
    });
    await ask(CriuReqType.PRE_DUMP, prepared);
    const iteration = { iteration: n, imagesDir: dir, pagesBytes: pagesBytes(dir) };
    iterations.push(iteration);
    parent = `../pre-${n}`;
    const more = n < plan.maxIterations && plan.shouldContinue !== undefined && (await plan.shouldContinue(iteration));
    if (!more) break;
  }
  const finalDir = path.join(base, 'dump');
  fs.mkdirSync(finalDir, { recursive: true, mode: 0o700 });
  const prepared = prepareOptions(options, scope, {
    logName: 'criu-dump.log',
    notify,
    overrides: { imagesDir: finalDir, parentImg: parent as string },
  });
  const response = await ask(CriuReqType.DUMP, prepared);
  return { iterations, imagesDir: finalDir, restored: response.dump?.restored === true, notifications };
}

export interface CriuWaitStatus {
  /** The raw wait status WAIT_PID returned. */
  status: number;
  /** Exit code when the page server exited, else null. */
  exitCode: number | null;
  /** Signal name when it was killed, else null. */
  signal: NodeJS.Signals | null;
}

function decodeWaitStatus(status: number): CriuWaitStatus {
  const termSignal = status & 0x7f;
  if (termSignal === 0) return { status, exitCode: (status >> 8) & 0xff, signal: null };
  const name = Object.entries(osConstants.signals).find(([, value]) => value === termSignal)?.[0] as
    NodeJS.Signals | undefined;
  return { status, exitCode: null, signal: name ?? (`SIG${termSignal}` as NodeJS.Signals) };
}

/** A page server started with PAGE_SERVER_CHLD; its swrk stays connected until waitPid() or close(). */
export class PageServerChild {
  private done = false;

  constructor(
    private readonly connection: CriuConnection,
    readonly pid: number,
    readonly port: number,
    private readonly onDone: (child: PageServerChild) => void,
  ) {}

  /**
   * WAIT_PID: waits (inside swrk) until the page server exits, typically after a dump sent it
   * its pages. The last request on this connection: swrk exits afterwards.
   */
  waitPid(call?: CriuCallOptions): Promise<CriuWaitStatus> {
    if (this.done) {
      return Promise.reject(clientClosedError('this page server session is closed'));
    }
    this.done = true;
    return runCall('criu WAIT_PID', call, async (scope) => {
      scope.signal.addEventListener('abort', () => void this.connection.destroy(), { once: true });
      scope.defer(() => this.finish());
      const request: CriuRequestMessage = { type: CriuReqType.WAIT_PID, pid: this.pid };
      const { response } = await this.connection.request(request, { signal: scope.signal });
      if (!response.success || response.status === undefined) throw requestFailure(request, response);
      return decodeWaitStatus(response.status);
    });
  }

  private async finish(): Promise<void> {
    await this.connection.close();
    this.onDone(this);
  }

  /** Idempotent: kills the page server and its swrk (reaped) unless waitPid() already ran. */
  async close(): Promise<void> {
    if (!this.done) {
      this.done = true;
      sigkill(this.pid);
    }
    await this.connection.destroy();
    this.onDone(this);
  }
}

/** SIGKILLs `pid`; false if there is no such process. Never 0, 1 or negative (a process group, ours included). */
function sigkill(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

/**
 * SIGKILLs a daemonized page server (not our child: init reaps it) and waits, bounded, until
 * its pid is gone.
 */
export async function killDaemon(pid: number): Promise<void> {
  if (!sigkill(pid)) return;
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
