/**
 * Items that arrive before anyone asks, and askers who come before the items: what every
 * message channel of ours needs on its receiving side. take() honours an AbortSignal (the waiter
 * is removed, nothing is lost); after fail() queued items are still handed out, then the error.
 */
export class WaitQueue<T> {
  private readonly items: T[] = [];
  private readonly waiters: Array<{ resolve: (item: T) => void; reject: (error: Error) => void }> = [];
  private failure: Error | undefined;

  get length(): number {
    return this.items.length;
  }

  /** Takers waiting for an item. */
  get waiting(): number {
    return this.waiters.length;
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  /** Hands the item to the first waiter, or keeps it. Ignored once failed (returns false). */
  push(item: T): boolean {
    if (this.failure) return false;
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve(item);
    else this.items.push(item);
    return true;
  }

  /** Rejects every waiter and every later take() once the queue is empty. Idempotent. */
  fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
  }

  /** Removes and returns what is queued (for a caller that must release it). */
  drain(): T[] {
    return this.items.splice(0);
  }

  /** The next item; rejects with the failure, or with abortError(signal) when `signal` aborts first. */
  take(signal: AbortSignal | undefined, abortError: (signal: AbortSignal) => Error): Promise<T> {
    if (this.items.length > 0) return Promise.resolve(this.items.shift() as T);
    if (this.failure) return Promise.reject(this.failure);
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(abortError(signal as AbortSignal));
      };
      const waiter = {
        resolve: (item: T) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(item);
        },
        reject: (error: Error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }
}
