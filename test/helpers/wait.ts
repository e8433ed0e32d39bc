/**
 * Waiting on a condition instead of sleeping a fixed time: for what has no event to listen to
 * (an fd count, a counter in a file, a peer's report). Polls with backoff; on timeout it fails
 * naming what it waited for and, if given, the state it last saw.
 */

export interface WaitOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
  /** What is awaited, for the failure message ("the fds to be closed"). */
  what: string;
  /** The state to report on failure ("12 fds open, expected 10"). */
  detail?: () => string;
}

const FIRST_INTERVAL_MS = 2;
const MAX_INTERVAL_MS = 100;

/** Resolves once `predicate` returns (or resolves to) true; rejects after timeoutMs. */
export async function waitUntil(
  predicate: () => boolean | Promise<boolean>,
  { timeoutMs = 10_000, what, detail }: WaitOptions,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let interval = FIRST_INTERVAL_MS;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() >= deadline) {
      const seen = detail === undefined ? '' : ` (last seen: ${detail()})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${seen}`);
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(interval, Math.max(1, deadline - Date.now()))));
    interval = Math.min(interval * 2, MAX_INTERVAL_MS);
  }
}
