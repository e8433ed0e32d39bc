/** One error class per way a CRIU call can fail; callers switch on `code`, not instanceof. */
import { constants as osConstants } from 'node:os';

import { criuCapabilityProblem } from '../capabilities';
import { describeValue, NodeCriuError, type NodeCriuErrorOptions } from '../errors';
import { TransportError } from '../transport/errors';

/**
 * On the error of a DUMP or RESTORE whose CRIU died (or was killed by an abort or timeout) before
 * answering: what the client undid for it (see lib/criu/recover.ts and
 * docs/reliability/criu-faults.md).
 */
export interface CriuRecovery {
  request: 'DUMP' | 'SINGLE_PRE_DUMP' | 'RESTORE';
  /** DUMP: the dumped task was alive when CRIU died (so the dump did not complete). */
  taskAlive?: boolean;
  /** DUMP: TCP sockets of the task taken out of the repair mode CRIU left them in. */
  socketsResumed?: number;
  /** DUMP: CRIU's lock tables removed from the task's network namespace. */
  lockTablesRemoved?: string[];
  /** RESTORE: processes of a half-restored tree (past post-restore, never resumed) SIGKILLed. */
  killed?: number[];
  /** What could not be undone. */
  problems: string[];
}

/** CRIU could not be started (swrk spawn failed, binary missing) or reached (service socket). */
export class CriuConnectionError extends NodeCriuError {
  /** swrk's exit code or signal when it died before answering, if known. */
  readonly exitCode?: number | null;
  readonly signal?: NodeJS.Signals | null;

  constructor(
    message: string,
    options: NodeCriuErrorOptions & { exitCode?: number | null; signal?: NodeJS.Signals | null },
  ) {
    super(message, options);
    if (options.exitCode !== undefined) this.exitCode = options.exitCode;
    if (options.signal !== undefined) this.signal = options.signal;
  }
}

/** The transport's codes in the CRIU half's terms (errno names pass through). */
const TRANSPORT_CODES: Record<string, string> = {
  ERR_TRANSPORT_DISCONNECTED: 'ERR_CRIU_DISCONNECTED',
  ERR_TRANSPORT_CLOSED: 'ERR_CRIU_TRANSPORT_CLOSED',
  ERR_TRANSPORT_UNTRUSTED_PEER: 'ERR_CRIU_UNTRUSTED_SERVICE',
};

/**
 * A failure of the message transport (lib/transport) as the CRIU half reports it: a
 * CriuConnectionError with `context` in front of the message, errno, syscall, capability details
 * and the original as `cause`. Anything that is not a transport error passes through unchanged.
 */
export function criuTransportError(error: unknown, context: string): Error {
  if (!(error instanceof TransportError)) return error as Error;
  const wrapped = new CriuConnectionError(`${context}: ${error.message}`, {
    code: TRANSPORT_CODES[error.code] ?? error.code,
    ...(error.errno !== undefined ? { errno: error.errno } : {}),
    ...(error.syscall !== undefined ? { syscall: error.syscall } : {}),
    cause: error,
  });
  if (error.capability !== undefined) wrapped.capability = error.capability;
  if (error.missingCapabilities !== undefined) wrapped.missingCapabilities = error.missingCapabilities;
  return wrapped;
}

/** A call on a closed Criu client or page server session. code ERR_CRIU_CLIENT_CLOSED. */
export function clientClosedError(message = 'this Criu client is closed'): CriuConnectionError {
  return new CriuConnectionError(message, { code: 'ERR_CRIU_CLIENT_CLOSED' });
}

/** The bytes on the wire were not a valid criu_resp, or arrived out of order. code ERR_CRIU_PROTOCOL. */
export class CriuProtocolError extends NodeCriuError {
  constructor(message: string, options: Partial<NodeCriuErrorOptions> = {}) {
    super(message, { ...options, code: options.code ?? 'ERR_CRIU_PROTOCOL' });
  }
}

export interface CriuRequestErrorDetails {
  /** The request type name that failed ('DUMP', 'RESTORE', ...). */
  requestType: string;
  /** The response type CRIU answered with ('EMPTY' means it rejected the request itself). */
  responseType?: string;
  /** cr_errno as CRIU sent it (positive errno), when it sent one. */
  crErrno?: number;
  /** cr_errmsg: CRIU's first logged error line, when it sent one. */
  crErrmsg?: string;
  /** Path of CRIU's log file for this request, when known. */
  logFile?: string;
  /** The last lines of that log file, read after the failure. */
  logTail?: string;
  cause?: unknown;
}

function errnoName(errno: number): string | undefined {
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === errno) return name;
  return undefined;
}

/**
 * CRIU answered success=false. `code` is cr_errno's name ('ESRCH', 'EEXIST', 'EBADRQC') when CRIU
 * sent one, else 'ERR_CRIU_REQUEST_FAILED' ('ERR_CRIU_UNSUPPORTED' for an EMPTY reply).
 */
export class CriuRequestError extends NodeCriuError {
  readonly requestType: string;
  readonly responseType?: string;
  readonly crErrno?: number;
  readonly crErrmsg?: string;
  readonly logFile?: string;
  readonly logTail?: string;

  constructor(message: string, details: CriuRequestErrorDetails) {
    const name = details.crErrno ? errnoName(details.crErrno) : undefined;
    // CRIU runs with our capabilities: lacking what it needs, that is the reason (lib/capabilities.ts).
    const permission = criuCapabilityProblem();
    const code = permission
      ? 'EPERM'
      : (name ?? (details.responseType === 'EMPTY' ? 'ERR_CRIU_UNSUPPORTED' : 'ERR_CRIU_REQUEST_FAILED'));
    super(permission ? `${message}; ${permission.hint}` : message, {
      code,
      ...(details.crErrno ? { errno: -details.crErrno } : {}),
      cause: details.cause,
    });
    this.requestType = details.requestType;
    if (permission) {
      this.capability = permission.capability;
      this.missingCapabilities = permission.missing;
    }
    if (details.responseType !== undefined) this.responseType = details.responseType;
    if (details.crErrno !== undefined) this.crErrno = details.crErrno;
    if (details.crErrmsg !== undefined) this.crErrmsg = details.crErrmsg;
    if (details.logFile !== undefined) this.logFile = details.logFile;
    if (details.logTail !== undefined) this.logTail = details.logTail;
  }
}

/** A notification handler threw or rejected; CRIU was told the script failed. code ERR_CRIU_NOTIFY_HANDLER. */
export class CriuNotifyHandlerError extends NodeCriuError {
  readonly script: string;

  constructor(script: string, cause: unknown) {
    super(`notify handler for '${script}' failed: ${cause instanceof Error ? cause.message : describeValue(cause)}`, {
      code: 'ERR_CRIU_NOTIFY_HANDLER',
      cause,
    });
    this.script = script;
  }
}

/** The call's timeoutMs elapsed. code ERR_CRIU_TIMEOUT. */
export class CriuTimeoutError extends NodeCriuError {
  readonly timeoutMs: number;

  constructor(message: string, timeoutMs: number, cause?: unknown) {
    super(message, { code: 'ERR_CRIU_TIMEOUT', cause });
    this.timeoutMs = timeoutMs;
  }
}

/** The caller's AbortSignal fired. code ABORT_ERR (Node's own code for aborts); cause = signal.reason. */
export class CriuAbortError extends NodeCriuError {
  constructor(message: string, cause?: unknown) {
    super(message, { code: 'ABORT_ERR', cause });
  }
}
