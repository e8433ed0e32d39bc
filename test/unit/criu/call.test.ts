/** Per-call cancellation (lib/criu/call.ts): aborts, timeouts and cleanups, without CRIU. */
import { runCall, settlesWithin } from '../../../lib/criu/call';

const never = new Promise<never>(() => undefined);

/** A body that ends when its scope is aborted, as a call whose worker was killed does. */
function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('worker killed'))));
}

describe('runCall', () => {
  it('runs every cleanup (last first) before it settles', async () => {
    const order: string[] = [];
    const result = await runCall('test', undefined, async (scope) => {
      scope.defer(() => order.push('first'));
      scope.defer(async () => {
        await Promise.resolve();
        order.push('second');
      });
      return 'done';
    });
    expect(result).toBe('done');
    expect(order).toEqual(['second', 'first']);
  });

  it('an abort rejects with ABORT_ERR (cause: the reason) once cleanups ran; the scope signal fires', async () => {
    const controller = new AbortController();
    const reason = new Error('user gave up');
    const seen: string[] = [];
    const pending = runCall('test', { signal: controller.signal }, async (scope) => {
      scope.signal.addEventListener('abort', () => seen.push('scope aborted'));
      scope.defer(() => seen.push('cleaned'));
      queueMicrotask(() => controller.abort(reason));
      return untilAborted(scope.signal);
    });
    await expect(pending).rejects.toMatchObject({ name: 'CriuAbortError', code: 'ABORT_ERR', cause: reason });
    expect(seen).toEqual(['scope aborted', 'cleaned']);
  });

  it('an already aborted signal rejects before the body runs', async () => {
    const body = jest.fn(async () => 1);
    await expect(runCall('test', { signal: AbortSignal.abort() }, body)).rejects.toMatchObject({ code: 'ABORT_ERR' });
    expect(body).not.toHaveBeenCalled();
  });

  it('timeoutMs rejects with ERR_CRIU_TIMEOUT', async () => {
    await expect(runCall('test', { timeoutMs: 5 }, (scope) => untilAborted(scope.signal))).rejects.toMatchObject({
      name: 'CriuTimeoutError',
      code: 'ERR_CRIU_TIMEOUT',
      timeoutMs: 5,
    });
  });

  it('puts what the scope recovered on the error', async () => {
    const error = await runCall('test', undefined, async (scope) => {
      scope.recovery = { request: 'RESTORE', killed: [], problems: [] };
      throw new Error('failed');
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({ recovery: { request: 'RESTORE', killed: [], problems: [] } });
  });

  it.each([[null], [{ timeoutMs: 0 }], [{ signal: 'x' }], [{ retries: 1 }]])(
    'refuses call options %p',
    async (call) => {
      await expect(runCall('test', call as never, async () => 1)).rejects.toMatchObject({
        code: expect.stringMatching(/^ERR_(INVALID_ARG_TYPE|INVALID_ARG_VALUE|OUT_OF_RANGE)$/),
      });
    },
  );
});

describe('settlesWithin', () => {
  it('true for a promise that settles (either way) in time, false otherwise', async () => {
    expect(await settlesWithin(Promise.resolve(1), 1000)).toBe(true);
    expect(await settlesWithin(Promise.reject(new Error('x')), 1000)).toBe(true);
    expect(await settlesWithin(never, 5)).toBe(false);
  });
});
