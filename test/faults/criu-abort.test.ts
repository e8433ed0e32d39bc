/**
 * Aborts and timeouts at every stage of a TCP dump and restore of a live, streaming Node server
 * (real CRIU 4.2.1, private netns): before the call starts, while swrk starts, after the request
 * reached CRIU but before any notification, at each notification (CRIU is told "failed" and
 * unwinds), while CRIU is busy right after each notification (swrk SIGKILLed; the client SIGSTOPs a
 * dumped task first and repairs what CRIU left), and after the reply. Every test ends with the
 * peer's streams byte-exact both ways, no RST on the server's port, a typed error, and no swrk, fd
 * or CRIU lock table left.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import type { CriuNotifyEvent, CriuNotifyHandlers, CriuRecovery } from '../../lib';
import { DUMP_STAGES, FaultLab, RESTORE_STAGES, TCP, pidAlive, sleep, type Pair } from './criu-fault-lab';

interface Failure {
  name?: string;
  code?: string;
  cause?: unknown;
  recovery?: CriuRecovery;
}

describe('aborts and timeouts at every stage (CRIU 4.2.1, streaming server)', () => {
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

  /** Until the pid is free again: dead and reaped (orphans are reaped by init, here within seconds). */
  async function waitGone(pid: number): Promise<void> {
    for (let i = 0; i < 3000 && fs.existsSync(`/proc/${pid}`); i++) await sleep(10);
  }

  /** A fresh server dumped (task killed by CRIU; its lock stays until the restore). */
  async function dumpedServer(): Promise<Pair> {
    const pair = await lab.startPair();
    await lab.criu.dump({ imagesDir: pair.images, pid: pair.serverPid, ...TCP });
    await waitGone(pair.serverPid);
    return pair;
  }

  /** If the server is not running (dumped, or never restored), restore it from its images. */
  async function ensureRunning(pair: Pair): Promise<void> {
    if (process.env.DEBUG_FAULTS) {
      let st = 'gone';
      try {
        st =
          fs
            .readFileSync(`/proc/${pair.serverPid}/status`, 'utf8')
            .match(/(State|PPid):.*/g)
            ?.join(' ') ?? '';
      } catch {
        /* gone */
      }
      let tail = '';
      try {
        tail = fs
          .readFileSync(path.join(pair.images, 'criu-restore.log'), 'utf8')
          .split('\n')
          .filter((l) => /Error|FAIL|script|Unlock|finished|resum/i.test(l))
          .slice(-12)
          .join('\n');
      } catch {
        /* none */
      }
      console.log('ensureRunning', pair.serverPid, st, lab.netns.nftTables().replace(/\n/g, ' '), '\n', tail);
    }
    if (!pidAlive(pair.serverPid)) {
      await waitGone(pair.serverPid);
      const restored = await lab.criu.restore({ imagesDir: pair.images, ...TCP });
      expect(restored.pid).toBe(pair.serverPid);
    }
    lab.track(pair.serverPid);
  }

  /** The end of every test: streams exact both ways, no RST, nothing left. */
  async function finish(pair: Pair): Promise<void> {
    await ensureRunning(pair);
    await pair.expectExact();
    lab.expectNothingLeft();
  }

  describe('dump', () => {
    it('aborted before the call: rejected at once, nothing started', async () => {
      const pair = await lab.startPair();
      const reason = new Error('not now');
      const error = await lab.criu
        .dump({ imagesDir: pair.images, pid: pair.serverPid, ...TCP }, undefined, { signal: AbortSignal.abort(reason) })
        .catch((e: unknown) => e);
      expect(error).toMatchObject({ name: 'CriuAbortError', code: 'ABORT_ERR', cause: reason });
      expect(fs.readdirSync(pair.images)).toEqual([]);
      expect(pidAlive(pair.serverPid)).toBe(true);
      await finish(pair);
    });

    it('timeout while swrk starts (1 ms): ERR_CRIU_TIMEOUT, the server runs on', async () => {
      const pair = await lab.startPair();
      const error = (await lab.criu
        .dump({ imagesDir: pair.images, pid: pair.serverPid, ...TCP }, undefined, { timeoutMs: 1 })
        .catch((e: unknown) => e)) as Failure;
      expect(error).toMatchObject({ name: 'CriuTimeoutError', code: 'ERR_CRIU_TIMEOUT' });
      expect(pidAlive(pair.serverPid)).toBe(true);
      await finish(pair);
    });

    it('aborted after CRIU got the request, before any notification: swrk killed, the task repaired', async () => {
      const pair = await lab.startPair();
      const controller = new AbortController();
      const seen: string[] = [];
      // CRIU creates its log as soon as it handles the request; pre-dump comes tens of ms later.
      const log = path.join(pair.images, 'criu-dump.log');
      const watcher = setInterval(() => {
        if (fs.existsSync(log)) controller.abort(new Error('log seen'));
      }, 1);
      const error = (await lab.criu
        .dump(
          { imagesDir: pair.images, pid: pair.serverPid, ...TCP },
          { default: (event) => void seen.push(event.script) },
          { signal: controller.signal },
        )
        .catch((e: unknown) => e)
        .finally(() => clearInterval(watcher))) as Failure;
      expect(error).toMatchObject({ name: 'CriuAbortError', code: 'ABORT_ERR' });
      expect(fs.existsSync(path.join(pair.images, 'criu-dump.log'))).toBe(true);
      if (seen.length === 0) expect(error.recovery).toMatchObject({ request: 'DUMP', taskAlive: true, problems: [] });
      expect(pidAlive(pair.serverPid)).toBe(true);
      await finish(pair);
    });

    test.each(DUMP_STAGES)('aborted at %s: CRIU told "failed" unwinds, the server runs on', async (stage) => {
      const pair = await lab.startPair();
      const controller = new AbortController();
      const handlers: CriuNotifyHandlers = {
        [stage]: () => controller.abort(new Error(`abort at ${stage}`)),
      };
      const error = (await lab.criu
        .dump({ imagesDir: pair.images, pid: pair.serverPid, ...TCP }, handlers, { signal: controller.signal })
        .catch((e: unknown) => e)) as Failure;
      expect(error).toMatchObject({ name: 'CriuAbortError', code: 'ABORT_ERR' });
      // CRIU answered (with failure): nothing for the client to repair.
      expect(error.recovery).toBeUndefined();
      expect(pidAlive(pair.serverPid)).toBe(true);
      await finish(pair);
    });

    test.each(DUMP_STAGES)(
      'timeout at %s (handler hangs): ERR_CRIU_TIMEOUT, CRIU unwinds, the server runs on',
      async (stage) => {
        const pair = await lab.startPair();
        let reached = false;
        const handlers: CriuNotifyHandlers = {
          [stage]: (event: CriuNotifyEvent) =>
            new Promise<void>((resolve) => {
              reached = true;
              event.signal.addEventListener('abort', () => resolve());
            }),
        };
        // Long enough for CRIU to reach the stage on a loaded machine: the timeout must fire while the
        // handler hangs there (a timeout while CRIU is busy is the "aborted while busy" case below).
        const error = (await lab.criu
          .dump({ imagesDir: pair.images, pid: pair.serverPid, ...TCP }, handlers, { timeoutMs: 5000 })
          .catch((e: unknown) => e)) as Failure;
        expect(error).toMatchObject({ name: 'CriuTimeoutError', code: 'ERR_CRIU_TIMEOUT' });
        expect(reached).toBe(true);
        // At the stage CRIU is told "failed" and unwinds itself: nothing for the client to repair.
        expect(error.recovery).toBeUndefined();
        expect(pidAlive(pair.serverPid)).toBe(true);
        await finish(pair);
      },
    );

    test.each(DUMP_STAGES)(
      'aborted while CRIU is busy right after %s: task stopped, swrk killed, lock and repair undone',
      async (stage) => {
        const pair = await lab.startPair();
        const controller = new AbortController();
        const handlers: CriuNotifyHandlers = {
          // The ack goes out when the handler settles; the abort lands just after it, mid-work.
          [stage]: () => void setImmediate(() => controller.abort(new Error(`abort after ${stage}`))),
        };
        const error = (await lab.criu
          .dump({ imagesDir: pair.images, pid: pair.serverPid, ...TCP }, handlers, { signal: controller.signal })
          .catch((e: unknown) => e)) as Failure;
        if (!(error instanceof Error)) {
          // CRIU finished before the abort landed: the dump is complete.
          expect(stage).toBe('post-dump');
        } else {
          expect(error).toMatchObject({ name: 'CriuAbortError', code: 'ABORT_ERR' });
          const recovery = (error as Failure).recovery as CriuRecovery;
          expect(recovery).toMatchObject({ request: 'DUMP', problems: [] });
          if (recovery.taskAlive) {
            expect(pidAlive(pair.serverPid)).toBe(true);
            // Not left stopped by the client's SIGSTOP.
            expect(fs.readFileSync(`/proc/${pair.serverPid}/status`, 'utf8')).not.toMatch(/^State:\s+T/m);
          } else {
            // After the post-dump ack CRIU had killed the task: the dump completed, the lock stays
            // for the restore (ensureRunning below).
            expect(stage).toBe('post-dump');
            expect(lab.netns.nftTables()).toMatch(/CRIU/);
          }
        }
        await finish(pair);
      },
    );

    it('aborted after the reply: no effect, the dump stands and restores', async () => {
      const pair = await lab.startPair();
      const controller = new AbortController();
      const result = await lab.criu.dump({ imagesDir: pair.images, pid: pair.serverPid, ...TCP }, undefined, {
        signal: controller.signal,
      });
      controller.abort(new Error('too late'));
      expect(result.restored).toBe(false);
      await waitGone(pair.serverPid);
      await finish(pair);
    });
  });

  describe('restore', () => {
    it('aborted before the call: rejected at once, the images restore afterwards', async () => {
      const pair = await dumpedServer();
      const error = await lab.criu
        .restore({ imagesDir: pair.images, ...TCP }, undefined, { signal: AbortSignal.abort() })
        .catch((e: unknown) => e);
      expect(error).toMatchObject({ name: 'CriuAbortError', code: 'ABORT_ERR' });
      expect(pidAlive(pair.serverPid)).toBe(false);
      await finish(pair);
    });

    test.each(RESTORE_STAGES)(
      'aborted at %s: typed error; the tree runs or the images restore again',
      async (stage) => {
        const pair = await dumpedServer();
        const controller = new AbortController();
        const handlers: CriuNotifyHandlers = { [stage]: () => controller.abort(new Error(`abort at ${stage}`)) };
        const error = (await lab.criu
          .restore({ imagesDir: pair.images, ...TCP }, handlers, { signal: controller.signal })
          .catch((e: unknown) => e)) as Failure;
        expect(error).toMatchObject({ name: 'CriuAbortError', code: 'ABORT_ERR' });
        await finish(pair);
      },
    );

    test.each(RESTORE_STAGES)(
      'timeout at %s (handler hangs): ERR_CRIU_TIMEOUT; the tree runs or the images restore again',
      async (stage) => {
        const pair = await dumpedServer();
        const handlers: CriuNotifyHandlers = {
          [stage]: (event: CriuNotifyEvent) =>
            new Promise<void>((resolve) => event.signal.addEventListener('abort', () => resolve())),
        };
        const error = (await lab.criu
          .restore({ imagesDir: pair.images, ...TCP }, handlers, { timeoutMs: 1500 })
          .catch((e: unknown) => e)) as Failure;
        expect(error).toMatchObject({ name: 'CriuTimeoutError', code: 'ERR_CRIU_TIMEOUT' });
        await finish(pair);
      },
    );

    test.each(RESTORE_STAGES)(
      'aborted while CRIU is busy right after %s: typed error; the tree runs or the images restore again',
      async (stage) => {
        const pair = await dumpedServer();
        const controller = new AbortController();
        const handlers: CriuNotifyHandlers = {
          [stage]: () => void setImmediate(() => controller.abort(new Error(`abort after ${stage}`))),
        };
        const outcome = await lab.criu
          .restore({ imagesDir: pair.images, ...TCP }, handlers, { signal: controller.signal })
          .catch((e: unknown) => e);
        // After pre-resume CRIU may answer before the abort lands: the restore then simply succeeds.
        if (outcome instanceof Error) expect(outcome).toMatchObject({ name: 'CriuAbortError', code: 'ABORT_ERR' });
        else expect(['pre-resume', 'post-resume']).toContain(stage);
        await finish(pair);
      },
    );
  });
});
