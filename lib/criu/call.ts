/**
 * Per-call cancellation and cleanup: the caller's AbortSignal and timeoutMs abort `scope.signal`;
 * whatever the call opens registers a cleanup with `scope.defer()`, and every cleanup (kill and
 * reap swrk, close sockets and directory fds) has run before the call settles, either way.
 */
import { describeValue, InvalidArgumentError } from '../errors';
import { CriuAbortError, CriuTimeoutError, type CriuRecovery } from './errors';

export interface CriuCallOptions {
  /**
   * Aborting it ends the call with CriuAbortError (cause: the signal's reason) once everything is
   * cleaned up and swrk reaped. If CRIU is waiting on a notification at that moment, it is told
   * the script failed and gets up to 3 s to unwind (unfreeze the task, unlock its connections).
   * A RESTORE past post-restore is let finish (up to 3 s): it cannot be undone without harm.
   * Otherwise swrk is SIGKILLed at once; a DUMP's task is SIGSTOPped first and the client then
   * undoes what CRIU left (its lock table, repair mode; see error.recovery and
   * docs/reliability/criu-faults.md). In service mode the connection is closed.
   */
  signal?: AbortSignal;
  /** Like an abort, but rejects with CriuTimeoutError when the call takes longer. */
  timeoutMs?: number;
}

/** Waits for `promise` at most `ms`: true if it settled in time (its outcome is not looked at). */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let bound: NodeJS.Timeout | undefined;
  const settled = promise.then(
    () => true,
    () => true,
  );
  try {
    return await Promise.race([
      settled,
      new Promise<boolean>((resolve) => (bound = setTimeout(() => resolve(false), ms))),
    ]);
  } finally {
    clearTimeout(bound);
  }
}

/** How long a cancelled call's body may take to notice, before its cleanups run regardless. */
const CANCELLED_BODY_GRACE_MS = 5000;

function validateCallOptions(call: unknown): asserts call is CriuCallOptions | undefined {
  if (call === undefined) return;
  if (typeof call !== 'object' || call === null)
    throw new InvalidArgumentError('call options must be an object', 'ERR_INVALID_ARG_TYPE');
  const { signal, timeoutMs } = call as Record<string, unknown>;
  for (const key of Object.keys(call)) {
    if (key !== 'signal' && key !== 'timeoutMs')
      throw new InvalidArgumentError(`call options: unknown option '${key}'`);
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError('call options: signal must be an AbortSignal', 'ERR_INVALID_ARG_TYPE');
  }
  if (
    timeoutMs !== undefined &&
    (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > 2 ** 31 - 1)
  ) {
    throw new InvalidArgumentError(
      `call options: timeoutMs must be a positive number of milliseconds, got ${describeValue(timeoutMs)}`,
      'ERR_OUT_OF_RANGE',
    );
  }
}

export class CallScope {
  private readonly controller = new AbortController();
  private readonly cleanups: (() => unknown)[] = [];
  private disposed = false;
  /**
   * What the client repaired after CRIU died without answering (recover.ts); runCall attaches it
   * to the error the call rejects with, as `error.recovery`.
   */
  recovery: CriuRecovery | undefined;
  /** Set by runCall: rejects the call with `error` after aborting the scope. */
  cancelHook: ((error: Error) => void) | undefined;
  private markFinished!: () => void;
  /** Resolves once the call has settled and every cleanup ran. */
  readonly finished = new Promise<void>((resolve) => {
    this.markFinished = resolve;
  });

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Runs `cleanup` when the call settles (last registered runs first). */
  defer(cleanup: () => unknown): void {
    if (this.disposed) {
      void Promise.resolve()
        .then(cleanup)
        .catch(() => undefined);
      return;
    }
    this.cleanups.push(cleanup);
  }

  /** Forgets a cleanup (its resource was handed to someone else, e.g. a keep_open session). */
  release(cleanup: () => unknown): void {
    const index = this.cleanups.indexOf(cleanup);
    if (index >= 0) this.cleanups.splice(index, 1);
  }

  abort(reason: Error): void {
    this.controller.abort(reason);
  }

  /** Ends the call from outside (client close): aborts, cleans up, rejects with `error`. */
  cancel(error: Error): void {
    this.cancelHook?.(error);
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const cleanup of this.cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch {
        // cleanup is best effort; the call's own outcome is what the caller needs
      }
    }
    this.markFinished();
  }
}

/**
 * Runs `body` in a CallScope bounded by `call.signal` and `call.timeoutMs`. On abort or timeout the
 * scope's signal fires (the connection kills its worker), all cleanups run, then the call rejects
 * with CriuAbortError / CriuTimeoutError whose cause is the signal's reason.
 */
export async function runCall<T>(
  what: string,
  call: CriuCallOptions | undefined,
  body: (scope: CallScope) => Promise<T>,
  track?: { add(scope: CallScope): void; delete(scope: CallScope): void },
): Promise<T> {
  validateCallOptions(call);
  const scope = new CallScope();
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  let cancel!: (error: Error) => void;
  const cancelled = new Promise<never>((_, reject) => {
    cancel = (error) => {
      scope.abort(error);
      reject(error);
    };
  });
  cancelled.catch(() => undefined);
  let cancelledWith: Error | undefined;
  scope.cancelHook = (error) => {
    if (cancelledWith) return;
    cancelledWith = error;
    cancel(error);
  };
  const userSignal = call?.signal;
  if (userSignal?.aborted) {
    throw new CriuAbortError(`${what} aborted before it started`, userSignal.reason);
  }
  if (userSignal) {
    onAbort = () => scope.cancel(new CriuAbortError(`${what} aborted`, userSignal.reason));
    userSignal.addEventListener('abort', onAbort, { once: true });
  }
  if (call?.timeoutMs !== undefined) {
    const timeoutMs = call.timeoutMs;
    timer = setTimeout(() => {
      // The same reason AbortSignal.timeout() would give, as the cause.
      const reason = new DOMException(`${what} timed out after ${timeoutMs} ms`, 'TimeoutError');
      scope.cancel(new CriuTimeoutError(`${what} timed out after ${timeoutMs} ms`, timeoutMs, reason));
    }, timeoutMs);
  }
  track?.add(scope);
  const work = body(scope);
  let failure: unknown;
  try {
    return await Promise.race([work, cancelled]);
  } catch (error) {
    // A body that fails because the abort killed its worker may lose the race by a tick: the
    // caller still hears why the call ended.
    failure = cancelledWith ?? error;
    throw failure;
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    if (onAbort !== undefined) userSignal?.removeEventListener('abort', onAbort);
    if (cancelledWith) {
      // The aborted signal has already killed the worker and closed the socket, so the body ends
      // promptly; wait for it (bounded: a notify handler ignoring the signal) so that whatever it
      // was still opening is registered and cleaned up below, before the caller hears of it.
      await settlesWithin(work, CANCELLED_BODY_GRACE_MS);
    }
    await scope.dispose();
    track?.delete(scope);
    if (scope.recovery !== undefined && failure instanceof Error && !('recovery' in failure)) {
      Object.defineProperty(failure, 'recovery', { value: scope.recovery, enumerable: true, configurable: true });
    }
  }
}
