import { WaitQueue } from '../../../lib/transport/wait-queue';

const aborted = (signal: AbortSignal) =>
  Object.assign(new Error('aborted'), { code: 'ABORT_ERR', reason: signal.reason });

describe('WaitQueue', () => {
  test('items and takers meet in order, whichever comes first', async () => {
    const queue = new WaitQueue<number>();
    queue.push(1);
    const early = queue.take(undefined, aborted);
    const late = queue.take(undefined, aborted);
    queue.push(2);
    await expect(early).resolves.toBe(1);
    await expect(late).resolves.toBe(2);
    expect(queue.length).toBe(0);
  });

  test('after fail, queued items come first, then the error; pushes are refused', async () => {
    const queue = new WaitQueue<string>();
    queue.push('last message');
    const error = new Error('peer closed');
    queue.fail(error);
    queue.fail(new Error('ignored'));
    expect(queue.push('late')).toBe(false);
    await expect(queue.take(undefined, aborted)).resolves.toBe('last message');
    await expect(queue.take(undefined, aborted)).rejects.toBe(error);
    expect(queue.failed).toBe(error);
  });

  test('fail rejects every waiter; an aborted take leaves its place to the next taker', async () => {
    const queue = new WaitQueue<number>();
    const controller = new AbortController();
    const gone = queue.take(controller.signal, aborted);
    const next = queue.take(undefined, aborted);
    controller.abort();
    await expect(gone).rejects.toMatchObject({ code: 'ABORT_ERR' });
    queue.push(7);
    await expect(next).resolves.toBe(7);
    const waiting = queue.take(undefined, aborted);
    queue.fail(new Error('closed'));
    await expect(waiting).rejects.toThrow('closed');
    await expect(queue.take(AbortSignal.abort(), aborted)).rejects.toThrow('closed');
  });

  test('drain hands back what is queued', () => {
    const queue = new WaitQueue<number>();
    queue.push(1);
    queue.push(2);
    expect(queue.drain()).toEqual([1, 2]);
    expect(queue.length).toBe(0);
  });
});
