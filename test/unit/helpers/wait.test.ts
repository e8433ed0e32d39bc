/** The test helper that replaces fixed sleeps: it waits for the condition, and fails by name. */
import { waitUntil } from '../../helpers/wait';

describe('waitUntil', () => {
  it('resolves as soon as the condition holds, sync or async', async () => {
    let calls = 0;
    await waitUntil(() => ++calls === 3, { what: 'the third call' });
    expect(calls).toBe(3);
    let asyncCalls = 0;
    await waitUntil(async () => ++asyncCalls === 2, { what: 'the second call' });
    expect(asyncCalls).toBe(2);
  });

  it('fails naming what it waited for and the last state seen', async () => {
    await expect(
      waitUntil(() => false, { timeoutMs: 20, what: 'nothing', detail: () => 'still nothing' }),
    ).rejects.toThrow('timed out after 20 ms waiting for nothing (last seen: still nothing)');
  });

  it('passes a rejected predicate through', async () => {
    await expect(
      waitUntil(
        () => {
          throw new Error('broken');
        },
        { what: 'x' },
      ),
    ).rejects.toThrow('broken');
  });
});
