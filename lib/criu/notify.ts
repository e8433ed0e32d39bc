/**
 * CRIU's notifications ("action scripts" over RPC): each NOTIFY goes to the handler for its script
 * (or `default`); a handler that returns acks success, one that throws acks failure, which makes
 * CRIU abort the operation (the call then rejects with CriuNotifyHandlerError).
 */
import { InvalidArgumentError } from '../errors';

/** The scripts CRIU 4.2 announces, in the order it documents them (not the order they arrive). */
export const CRIU_NOTIFY_SCRIPTS = [
  'pre-dump',
  'post-dump',
  'pre-restore',
  'post-restore',
  'network-lock',
  'network-unlock',
  'setup-namespaces',
  'post-setup-namespaces',
  'pre-resume',
  'post-resume',
  'status-ready',
  'orphan-pts-master',
  'query-ext-files',
  'pre-stream',
] as const;

export type CriuNotifyScript = (typeof CRIU_NOTIFY_SCRIPTS)[number];

export interface CriuNotifyEvent {
  /** The script name CRIU sent (a CriuNotifyScript, or a newer one this package does not know). */
  script: string;
  /** The restored root's pid, for post-restore and setup-namespaces. */
  pid?: number;
  /**
   * orphan-pts-master: the pty master CRIU passed with the message (close-on-exec). Valid only
   * until the handler settles; the client closes it then (dup it to keep it).
   */
  fd?: number;
  /** Aborted when the call is aborted or times out. */
  signal: AbortSignal;
}

/** What a handler may give back. `external` (query-ext-files) is sent to CRIU in opts.external. */
export interface CriuNotifyResult {
  external?: string[];
}

export type CriuNotifyHandler = (event: CriuNotifyEvent) => void | CriuNotifyResult | Promise<void | CriuNotifyResult>;

/** One handler per script name; `default` gets every script without its own handler. */
export type CriuNotifyHandlers = { [K in CriuNotifyScript]?: CriuNotifyHandler } & { default?: CriuNotifyHandler };

const handlerKeys = new Set<string>([...CRIU_NOTIFY_SCRIPTS, 'default']);

/** Throws InvalidArgumentError unless `handlers` is undefined or an object of known names → functions. */
export function validateNotifyHandlers(handlers: unknown): asserts handlers is CriuNotifyHandlers | undefined {
  if (handlers === undefined) return;
  if (typeof handlers !== 'object' || handlers === null || Array.isArray(handlers)) {
    throw new InvalidArgumentError('handlers must be an object of notify handlers', 'ERR_INVALID_ARG_TYPE');
  }
  for (const [key, value] of Object.entries(handlers)) {
    if (!handlerKeys.has(key)) {
      throw new InvalidArgumentError(
        `handlers.${key}: not a CRIU notify script (known: ${[...handlerKeys].join(', ')})`,
      );
    }
    if (value !== undefined && typeof value !== 'function') {
      throw new InvalidArgumentError(`handlers.${key} must be a function`, 'ERR_INVALID_ARG_TYPE');
    }
  }
}

export type NotifyOutcome = { ok: true; external?: string[] } | { ok: false; error: unknown };

/** Runs the handler for `event.script` (or `default`; none means success). Never throws. */
async function runNotifyHandler(
  handlers: CriuNotifyHandlers | undefined,
  event: CriuNotifyEvent,
): Promise<NotifyOutcome> {
  const handler = handlers?.[event.script as CriuNotifyScript] ?? handlers?.default;
  if (handler === undefined) return { ok: true };
  try {
    const result = await handler(event);
    if (result && result.external !== undefined) {
      if (!Array.isArray(result.external) || [...result.external].some((item) => typeof item !== 'string')) {
        throw new InvalidArgumentError(`notify handler '${event.script}' returned external that is not a string array`);
      }
      return { ok: true, external: [...result.external] };
    }
    return { ok: true };
  } catch (error) {
    return { ok: false, error };
  }
}

/**
 * runNotifyHandler, settled early with failure (the signal's reason) when `signal` aborts first:
 * CRIU then hears "failed" at once and unwinds, whatever the handler still does.
 */
export async function runNotifyHandlerUntil(
  handlers: CriuNotifyHandlers | undefined,
  event: CriuNotifyEvent,
): Promise<NotifyOutcome> {
  const { signal } = event;
  if (signal.aborted) return { ok: false, error: signal.reason };
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<NotifyOutcome>((resolve) => {
    onAbort = () => resolve({ ok: false, error: signal.reason });
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([runNotifyHandler(handlers, event), aborted]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}
