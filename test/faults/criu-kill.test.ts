/**
 * swrk SIGKILLed at every notification CRIU 4.2.1 sends for a TCP dump and restore of a live,
 * streaming Node server (real CRIU, real processes, real sockets, private netns). A notify handler
 * does the kill, so each stage is exact. Every test ends with the peer's streams byte-exact both
 * ways, no RST on the server's port, a typed error, and no swrk, fd or CRIU lock table left.
 *
 * CRIU 4.2.1 sends, for a task in CRIU's own network namespace (per-connection nftables lock):
 * dump: pre-dump, query-ext-files, post-dump; restore: pre-restore, post-restore, pre-resume,
 * post-resume (network-lock/-unlock and setup-namespaces only come when the task has a netns of
 * its own, which its clients could not survive).
 */
import type { CriuNotifyHandlers, CriuRecovery } from '../../lib';
import { DUMP_STAGES, FaultLab, RESTORE_STAGES, TCP, pidAlive, type Pair } from './criu-fault-lab';

interface Failure {
  code?: string;
  signal?: string;
  recovery?: CriuRecovery;
}

describe('swrk SIGKILLed at each notification (CRIU 4.2.1, streaming server)', () => {
  let lab: FaultLab;
  beforeAll(() => {
    lab = new FaultLab();
  });
  afterAll(async () => {
    await lab?.close();
  });
  beforeEach(() => lab.mark());
  afterEach(async () => {
    await lab.killAll();
  });

  /** Handlers that record every stage and SIGKILL swrk at `stage`. */
  function killAt(stage: string): { handlers: CriuNotifyHandlers; seen: string[]; killed: () => number } {
    const seen: string[] = [];
    let killed = 0;
    return {
      seen,
      killed: () => killed,
      handlers: {
        default: async (event) => {
          seen.push(event.script);
          if (event.script === stage) killed = await lab.killSwrk();
        },
      },
    };
  }

  async function dumpFails(pair: Pair, stage: string): Promise<Failure> {
    const plan = killAt(stage);
    const error = (await lab.criu
      .dump({ imagesDir: pair.images, pid: pair.serverPid, ...TCP }, plan.handlers)
      .catch((e: unknown) => e)) as Failure;
    expect(plan.killed()).toBe(1);
    expect(plan.seen[plan.seen.length - 1]).toBe(stage);
    expect(error).toMatchObject({ name: 'CriuConnectionError', code: 'ERR_CRIU_EXITED', signal: 'SIGKILL' });
    return error;
  }

  test.each(DUMP_STAGES)(
    'dump, swrk killed at %s: the server runs on (or its images restore), nothing lost',
    async (stage) => {
      const pair = await lab.startPair();
      const error = await dumpFails(pair, stage);
      expect(error.recovery).toMatchObject({ request: 'DUMP', taskAlive: true });
      expect(pidAlive(pair.serverPid)).toBe(true);
      const recovery = error.recovery as CriuRecovery;
      if (stage === 'post-dump' && (recovery.lockTablesRemoved ?? []).length === 0) {
        // CRIU's death resumed the task with its sockets still in repair mode; the server's next
        // write failed and Node closed the connection (silently: repair mode). The client kept
        // CRIU's lock (unlocking would reset the peer); the complete images are the way back.
        expect(recovery.problems.join('\n')).toMatch(/restore from the images/);
        process.kill(pair.serverPid, 'SIGKILL');
        while (pidAlive(pair.serverPid)) await new Promise((resolve) => setTimeout(resolve, 10));
        const restored = await lab.criu.restore({ imagesDir: pair.images, ...TCP });
        lab.track(restored.pid);
      } else {
        // From query-ext-files on CRIU has a lock table: the client removed it (and turned repair
        // off where CRIU had turned it on). At pre-dump there is none yet.
        expect(recovery.lockTablesRemoved).toHaveLength(stage === 'pre-dump' ? 0 : 1);
        expect(recovery.problems).toEqual([]);
      }
      await pair.expectExact();
      lab.expectNothingLeft();
    },
  );

  let dumped: Pair | undefined;
  /** A fresh server dumped (task killed by CRIU, its lock kept until the restore). */
  async function dumpedServer(): Promise<Pair> {
    const pair = await lab.startPair();
    await lab.criu.dump({ imagesDir: pair.images, pid: pair.serverPid, ...TCP });
    while (pidAlive(pair.serverPid)) await new Promise((resolve) => setTimeout(resolve, 10));
    dumped = pair;
    return pair;
  }

  test.each(RESTORE_STAGES)(
    'restore, swrk killed at %s: the restore completes or the images restore again, nothing lost',
    async (stage) => {
      const pair = await dumpedServer();
      const plan = killAt(stage);
      const error = (await lab.criu
        .restore({ imagesDir: pair.images, ...TCP }, plan.handlers)
        .catch((e: unknown) => e)) as Failure;
      expect(plan.killed()).toBe(1);
      expect(error).toMatchObject({ name: 'CriuConnectionError', code: 'ERR_CRIU_EXITED', signal: 'SIGKILL' });
      expect(error.recovery).toMatchObject({ request: 'RESTORE', problems: [] });
      if (stage === 'pre-restore' || stage === 'post-restore') {
        // Nothing runs: before post-restore the half-made tree dies with CRIU; at post-restore the
        // client killed it (it could never resume). CRIU's lock still drops the peer's packets.
        expect(error.recovery?.killed ?? []).toHaveLength(stage === 'post-restore' ? 1 : 0);
        expect(pidAlive(pair.serverPid)).toBe(false);
        expect(lab.netns.nftTables()).toMatch(/CRIU/);
        const restored = await lab.criu.restore({ imagesDir: pair.images, ...TCP });
        expect(restored.pid).toBe(pair.serverPid);
      } else {
        // From pre-resume on the restore was complete: the tree runs once ptrace lets go of it.
        expect(error.recovery?.killed).toEqual([]);
      }
      lab.track(pair.serverPid);
      expect(pidAlive(pair.serverPid)).toBe(true);
      await pair.expectExact();
      lab.expectNothingLeft();
      dumped = undefined;
    },
  );

  afterAll(() => {
    if (dumped) lab.track(dumped.serverPid);
  });
});
