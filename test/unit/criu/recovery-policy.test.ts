/**
 * The recovery policy's decisions (lib/criu/recovery-policy.ts) with recorded process operations
 * instead of real signals and /proc: what it stops, records, kills and repairs after a worker died
 * unanswered. The real thing, with CRIU killed at every stage: test/faults/criu-*.test.ts.
 */
import { CriuReqType } from '../../../lib/criu/messages';
import type { SeenTask } from '../../../lib/criu/recover';
import { recoveryPolicyFor, type RecoveryOps } from '../../../lib/criu/recovery-policy';

interface Recorded extends RecoveryOps {
  calls: string[];
}

function recordingOps(
  options: { touchable?: boolean; descendants?: SeenTask[]; alive?: number[]; frozen?: boolean } = {},
): Recorded {
  const calls: string[] = [];
  return {
    calls,
    mayTouch: () => options.touchable ?? true,
    signalTree: (pid, signal) => void calls.push(`${signal} ${pid}`),
    descendantsOf: (root) => {
      calls.push(`descendants ${root}`);
      return options.descendants ?? [];
    },
    stillThere: (tasks) => tasks.map((t) => t.pid).filter((pid) => (options.alive ?? []).includes(pid)),
    recoverUnfinishedDump: async (pid, logPath, stopped, more) => {
      const extras = Object.entries(more).map(([key, value]) => ` ${key}=${String(value)}`);
      calls.push(`repair dump ${pid} ${logPath} stopped=${stopped}${extras.join('')}`);
      return { taskAlive: true, socketsResumed: 2, lockTablesRemoved: ['CRIU-x'], problems: [] };
    },
    recoverUnfinishedRestore: async (roots) => {
      calls.push(`kill restore ${roots.join(',')}`);
      return { killed: [...roots], problems: [] };
    },
    cgroupFrozen: (cgroup) => {
      calls.push(`frozen? ${cgroup}`);
      return options.frozen;
    },
  };
}

const worker = { pid: 500, outsideOurTree: false, exited: Promise.resolve() };

describe('recoveryPolicyFor', () => {
  it('applies to DUMP, SINGLE_PRE_DUMP and RESTORE only', () => {
    const context = { notifications: [] };
    expect(recoveryPolicyFor(CriuReqType.DUMP, context)).toBeDefined();
    expect(recoveryPolicyFor(CriuReqType.SINGLE_PRE_DUMP, context)).toBeDefined();
    expect(recoveryPolicyFor(CriuReqType.RESTORE, context)).toBeDefined();
    for (const type of [CriuReqType.CHECK, CriuReqType.PAGE_SERVER, CriuReqType.CPUINFO_DUMP, CriuReqType.PRE_DUMP])
      expect(recoveryPolicyFor(type, context)).toBeUndefined();
  });
});

describe('DUMP policy', () => {
  const context = { pid: 77, logPath: '/tmp/criu-dump.log', notifications: [] };

  it('killed unanswered: stops the tree before the kill, then repairs with stopped=true', async () => {
    const ops = recordingOps();
    const policy = recoveryPolicyFor(CriuReqType.DUMP, context, ops)!;
    policy.beforeRequest(worker);
    policy.beforeKill();
    expect(await policy.afterCall()).toEqual({
      request: 'DUMP',
      taskAlive: true,
      socketsResumed: 2,
      lockTablesRemoved: ['CRIU-x'],
      problems: [],
    });
    expect(ops.calls).toEqual(['SIGSTOP 77', 'repair dump 77 /tmp/criu-dump.log stopped=true']);
  });

  it('died unanswered without our kill: repairs with stopped=false; SINGLE_PRE_DUMP is named as such', async () => {
    const ops = recordingOps();
    const policy = recoveryPolicyFor(CriuReqType.SINGLE_PRE_DUMP, context, ops)!;
    policy.beforeRequest(worker);
    expect(await policy.afterCall()).toMatchObject({ request: 'SINGLE_PRE_DUMP' });
    expect(ops.calls).toEqual(['repair dump 77 /tmp/criu-dump.log stopped=false']);
  });

  it('answered: no stop, no repair', async () => {
    const ops = recordingOps();
    const policy = recoveryPolicyFor(CriuReqType.DUMP, context, ops)!;
    policy.beforeRequest(worker);
    policy.answered(false);
    policy.beforeKill();
    expect(await policy.afterCall()).toBeUndefined();
    expect(ops.calls).toEqual([]);
  });

  it('a pid it may not touch (init, us, an ancestor) is never stopped', async () => {
    const ops = recordingOps({ touchable: false });
    const policy = recoveryPolicyFor(CriuReqType.DUMP, context, ops)!;
    policy.beforeRequest(worker);
    policy.beforeKill();
    expect(ops.calls).not.toContain('SIGSTOP 77');
  });

  it('a criu service worker or a swrk outside our tree: nothing repaired, a stopped tree continued', async () => {
    for (const w of [undefined, { ...worker, outsideOurTree: true }]) {
      const ops = recordingOps();
      const policy = recoveryPolicyFor(CriuReqType.DUMP, context, ops)!;
      policy.beforeRequest(w);
      policy.beforeKill();
      expect(await policy.afterCall()).toBeUndefined();
      expect(ops.calls.filter((c) => c.startsWith('repair'))).toEqual([]);
      if (ops.calls.includes('SIGSTOP 77')) expect(ops.calls).toContain('SIGCONT 77');
    }
  });

  it('a criu service connection ended by the worker unanswered: repaired once nothing traces the tree', async () => {
    const ops = recordingOps();
    const policy = recoveryPolicyFor(CriuReqType.DUMP, context, ops)!;
    policy.beforeRequest(undefined);
    policy.connectionEnded();
    expect(await policy.afterCall()).toMatchObject({ request: 'DUMP', lockTablesRemoved: ['CRIU-x'] });
    expect(ops.calls).toEqual(['repair dump 77 /tmp/criu-dump.log stopped=false service=true']);
  });

  it('a criu service connection that ended after the answer: nothing repaired', async () => {
    const ops = recordingOps();
    const policy = recoveryPolicyFor(CriuReqType.DUMP, context, ops)!;
    policy.beforeRequest(undefined);
    policy.answered(false);
    policy.connectionEnded();
    expect(await policy.afterCall()).toBeUndefined();
    expect(ops.calls).toEqual([]);
  });

  it('freezeCgroup: thawed by the repair unless it was frozen before the request', async () => {
    const cgroup = '/sys/fs/cgroup/freezer/job';
    for (const frozen of [false, true]) {
      const ops = recordingOps({ frozen });
      const policy = recoveryPolicyFor(CriuReqType.DUMP, { ...context, freezeCgroup: cgroup }, ops)!;
      policy.beforeRequest(worker);
      await policy.afterCall();
      expect(ops.calls).toEqual([
        `frozen? ${cgroup}`,
        `repair dump 77 /tmp/criu-dump.log stopped=false${frozen ? '' : ` thawCgroup=${cgroup}`}`,
      ]);
    }
    const answered = recordingOps();
    const policy = recoveryPolicyFor(CriuReqType.DUMP, { ...context, freezeCgroup: cgroup }, answered)!;
    policy.beforeRequest(worker);
    policy.answered(false);
    expect(await policy.afterCall()).toBeUndefined();
    expect(answered.calls).toEqual([`frozen? ${cgroup}`]);
  });

  it('a self-dump (no pid): nothing to stop or repair', async () => {
    const ops = recordingOps();
    const policy = recoveryPolicyFor(CriuReqType.DUMP, { notifications: [] }, ops)!;
    policy.beforeRequest(worker);
    policy.beforeKill();
    expect(await policy.afterCall()).toBeUndefined();
    expect(ops.calls).toEqual([]);
  });
});

describe('RESTORE policy', () => {
  const forked = [
    { pid: 601, start: '100' },
    { pid: 602, start: '101' },
  ];

  it('killed before post-restore: records the forked tasks and kills those still there', async () => {
    const ops = recordingOps({ descendants: forked, alive: [602] });
    const policy = recoveryPolicyFor(CriuReqType.RESTORE, { notifications: [] }, ops)!;
    policy.beforeRequest(worker);
    policy.beforeKill();
    expect(await policy.afterCall()).toEqual({ request: 'RESTORE', killed: [602], problems: [] });
    expect(ops.calls).toEqual(['descendants 500', 'kill restore 602']);
  });

  it('died between post-restore and pre-resume (answered with failure or not): kills the restored tree', async () => {
    for (const answered of [false, true]) {
      const ops = recordingOps();
      const notifications = [{ script: 'post-restore', pid: 700 }];
      const policy = recoveryPolicyFor(CriuReqType.RESTORE, { notifications }, ops)!;
      policy.beforeRequest(worker);
      if (answered) policy.answered(false);
      expect(await policy.afterCall()).toEqual({ request: 'RESTORE', killed: [700], problems: [] });
    }
  });

  it('past pre-resume the tree is left alone; unanswered, an empty recovery says so', async () => {
    const notifications = [{ script: 'post-restore', pid: 700 }, { script: 'pre-resume' }];
    const ops = recordingOps();
    const unanswered = recoveryPolicyFor(CriuReqType.RESTORE, { notifications }, ops)!;
    unanswered.beforeRequest(worker);
    expect(await unanswered.afterCall()).toEqual({ request: 'RESTORE', killed: [], problems: [] });
    const answered = recoveryPolicyFor(CriuReqType.RESTORE, { notifications }, ops)!;
    answered.beforeRequest(worker);
    answered.answered(false);
    expect(await answered.afterCall()).toBeUndefined();
    expect(ops.calls).toEqual([]);
  });

  it('succeeded, answered failure before post-restore, or not our swrk: nothing to do', async () => {
    const ops = recordingOps({ descendants: forked, alive: [601, 602] });
    const succeeded = recoveryPolicyFor(CriuReqType.RESTORE, { notifications: [] }, ops)!;
    succeeded.beforeRequest(worker);
    succeeded.answered(true);
    expect(await succeeded.afterCall()).toBeUndefined();
    const refused = recoveryPolicyFor(CriuReqType.RESTORE, { notifications: [] }, ops)!;
    refused.beforeRequest(worker);
    refused.answered(false);
    expect(await refused.afterCall()).toBeUndefined();
    const service = recoveryPolicyFor(CriuReqType.RESTORE, { notifications: [] }, ops)!;
    service.beforeRequest(undefined);
    service.beforeKill();
    expect(await service.afterCall()).toBeUndefined();
    expect(ops.calls).toEqual([]);
  });
});
