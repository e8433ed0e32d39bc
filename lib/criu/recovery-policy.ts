/**
 * The client's process surgery around a DUMP, SINGLE_PRE_DUMP or RESTORE, for when CRIU dies
 * before answering (killed by our abort or timeout, by someone else, or crashed) and could not
 * unwind. The client calls it at fixed points: before the request, right before it kills an
 * unanswered swrk, when CRIU answers, when a service connection is ended by CRIU's side, and once
 * the call's worker is gone. The repairs are recover.ts's; only a worker known dead is acted on:
 * a swrk we started and reaped, or a `criu service` worker whose connection ended without an
 * answer (it holds that connection until it exits). A service connection we closed ourselves
 * leaves its worker running (it unwinds by itself when it finds the connection gone), and a
 * self-dump's swrk is outside our tree.
 */
import type { CriuRecovery } from './errors';
import { cgroupFrozen } from './freezer';
import { CriuReqType } from './messages';
import * as recover from './recover';
import type { CriuNotifyRecord } from './replies';

/** The process operations the policy uses (recover.ts's; a unit test substitutes its own). */
export interface RecoveryOps {
  mayTouch(pid: number): boolean;
  signalTree(pid: number, signal: NodeJS.Signals): void;
  descendantsOf(root: number): recover.SeenTask[];
  stillThere(tasks: readonly recover.SeenTask[]): number[];
  recoverUnfinishedDump(
    pid: number,
    logPath: string | undefined,
    stopped: boolean,
    more: recover.DumpRepairOptions,
  ): Promise<recover.DumpRecovery>;
  recoverUnfinishedRestore(roots: readonly number[]): Promise<recover.RestoreRecovery>;
  /** Whether a freezer cgroup is frozen (undefined: not readable as one). */
  cgroupFrozen(cgroup: string): boolean | undefined;
}

const processOps: RecoveryOps = {
  mayTouch: recover.mayTouch,
  signalTree: recover.signalTree,
  descendantsOf: recover.descendantsOf,
  stillThere: recover.stillThere,
  recoverUnfinishedDump: recover.recoverUnfinishedDump,
  recoverUnfinishedRestore: recover.recoverUnfinishedRestore,
  cgroupFrozen,
};

/** The swrk a request went to, as far as the policy needs it. */
export interface RecoveryWorker {
  readonly pid: number;
  readonly outsideOurTree: boolean;
  readonly exited: Promise<unknown>;
}

export interface RecoveryPolicy {
  /** The request is about to go to `worker` (undefined: a `criu service`, not ours). */
  beforeRequest(worker: RecoveryWorker | undefined): void;
  /** A service connection (no worker of ours) was ended by CRIU's side before it answered. */
  connectionEnded(): void;
  /** The client is about to SIGKILL the unanswered worker (abort, timeout, client close). */
  beforeKill(): void;
  /** CRIU answered; `succeeded`: success=true and no notify handler failed. */
  answered(succeeded: boolean): void;
  /** The call is over and its worker gone: undoes what it left; what was done, if anything. */
  afterCall(): Promise<CriuRecovery | undefined>;
}

export interface RecoveryContext {
  /** The dumped task (DUMP, SINGLE_PRE_DUMP); undefined for a self-dump. */
  pid?: number;
  /** CRIU's log for this request (the dump repair reads CRIU's run id from it). */
  logPath?: string;
  /** The notifications of the request, filled in as they arrive. */
  notifications: readonly CriuNotifyRecord[];
  /** The request's freezeCgroup: CRIU freezes it for the dump, and a CRIU that dies leaves it frozen. */
  freezeCgroup?: string;
  /** The request's networkLock was 'skip': the caller locks the connections, CRIU makes no table. */
  lockSkipped?: boolean;
}

/** A DUMP or SINGLE_PRE_DUMP: SIGSTOP the tree before the kill, unlock and resume what CRIU left. */
class DumpRecoveryPolicy implements RecoveryPolicy {
  private worker: RecoveryWorker | undefined;
  private isAnswered = false;
  /** The dumped tree was SIGSTOPped before swrk was killed (continued by the repair). */
  private stopped = false;
  private stopBeforeKill = false;
  /** The request went to a `criu service` worker (not our child). */
  private service = false;
  private serviceEnded = false;
  /** The cgroup to thaw after CRIU died: unless it was frozen before the request (CRIU keeps that). */
  private thaw: string | undefined;

  constructor(
    private readonly request: 'DUMP' | 'SINGLE_PRE_DUMP',
    private readonly context: RecoveryContext,
    private readonly ops: RecoveryOps,
  ) {}

  beforeRequest(worker: RecoveryWorker | undefined): void {
    this.worker = worker;
    this.service = worker === undefined;
    const cgroup = this.context.freezeCgroup;
    if (cgroup !== undefined && this.ops.cgroupFrozen(cgroup) !== true) this.thaw = cgroup;
    // Stopped so that CRIU's death does not resume it with sockets in repair mode before the
    // repair can take them out.
    this.stopBeforeKill = this.context.pid !== undefined && this.ops.mayTouch(this.context.pid);
  }

  beforeKill(): void {
    if (this.isAnswered || !this.stopBeforeKill || this.context.pid === undefined) return;
    this.ops.signalTree(this.context.pid, 'SIGSTOP');
    this.stopped = true;
  }

  answered(): void {
    this.isAnswered = true;
  }

  connectionEnded(): void {
    if (this.service) this.serviceEnded = true;
  }

  async afterCall(): Promise<CriuRecovery | undefined> {
    const { pid, logPath } = this.context;
    const worker = this.worker;
    const workerDead = this.service ? this.serviceEnded : worker !== undefined && !worker.outsideOurTree;
    if (this.isAnswered || !workerDead) {
      if (this.stopped && pid !== undefined) this.ops.signalTree(pid, 'SIGCONT');
      return undefined;
    }
    await worker?.exited;
    if (pid === undefined) return undefined;
    const more: recover.DumpRepairOptions = {
      ...(this.thaw !== undefined ? { thawCgroup: this.thaw } : {}),
      ...(this.service ? { service: true } : {}),
      ...(this.context.lockSkipped === true ? { lockSkipped: true } : {}),
    };
    const repaired = await this.ops.recoverUnfinishedDump(pid, logPath, this.stopped, more);
    return { request: this.request, ...repaired };
  }
}

/**
 * A RESTORE: the tasks swrk had forked when we killed it are recorded with their start times
 * (before post-restore nothing else names them, and once swrk is gone they are orphans stuck
 * half-restored); a tree that never got to pre-resume is killed so the images restore again.
 */
class RestoreRecoveryPolicy implements RecoveryPolicy {
  private worker: RecoveryWorker | undefined;
  private isAnswered = false;
  private succeeded = false;
  private forked: recover.SeenTask[] | undefined;

  constructor(
    private readonly context: RecoveryContext,
    private readonly ops: RecoveryOps,
  ) {}

  beforeRequest(worker: RecoveryWorker | undefined): void {
    this.worker = worker;
  }

  connectionEnded(): void {
    // A service worker's half-restored tasks are its own children, invisible to us: nothing to do.
  }

  beforeKill(): void {
    const worker = this.worker;
    if (this.isAnswered || worker === undefined || worker.outsideOurTree) return;
    this.forked = this.ops.descendantsOf(worker.pid);
  }

  answered(succeeded: boolean): void {
    this.isAnswered = true;
    this.succeeded = succeeded;
  }

  async afterCall(): Promise<CriuRecovery | undefined> {
    // A restore that failed between post-restore and pre-resume, answered or not, must not leave
    // its tree behind (CRIU kills it itself when it can; when it was killed meanwhile it cannot).
    const worker = this.worker;
    if (this.succeeded || worker === undefined || worker.outsideOurTree) return undefined;
    await worker.exited;
    const { notifications } = this.context;
    const restoredPid = notifications.find((n) => n.script === 'post-restore')?.pid;
    if (this.isAnswered && restoredPid === undefined) return undefined;
    // From pre-resume on the restore is complete: the tree runs once ptrace detaches. Before
    // post-restore, the tasks seen forked are the roots; a pid reused meanwhile is left alone.
    const roots =
      restoredPid === undefined
        ? this.ops.stillThere(this.forked ?? [])
        : notifications.some((n) => n.script === 'pre-resume')
          ? []
          : [restoredPid];
    const killed = roots.length > 0 ? await this.ops.recoverUnfinishedRestore(roots) : { killed: [], problems: [] };
    if (!this.isAnswered || killed.killed.length > 0) return { request: 'RESTORE', ...killed };
    return undefined;
  }
}

/** The policy for a request of `type`, or undefined when a dead worker leaves nothing to undo. */
export function recoveryPolicyFor(
  type: CriuReqType,
  context: RecoveryContext,
  ops: RecoveryOps = processOps,
): RecoveryPolicy | undefined {
  if (type === CriuReqType.DUMP) return new DumpRecoveryPolicy('DUMP', context, ops);
  if (type === CriuReqType.SINGLE_PRE_DUMP) return new DumpRecoveryPolicy('SINGLE_PRE_DUMP', context, ops);
  if (type === CriuReqType.RESTORE) return new RestoreRecoveryPolicy(context, ops);
  return undefined;
}
