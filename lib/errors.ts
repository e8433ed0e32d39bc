/**
 * The error base of node-criu. Every error the package throws or rejects with is a NodeCriuError
 * with a string `code`: an errno name ('EPERM', 'ENOTCONN') when the kernel said no, or an
 * 'ERR_...' code for everything else. Native code reports errno and syscall; this file turns that
 * into these classes (never a message-only error).
 */

import { attachCapabilityProblem, capabilityProblem, operationOfNativeFailure } from './capabilities';
import type { CapabilityName } from './capabilities';

export interface NodeCriuErrorOptions {
  code: string;
  errno?: number;
  syscall?: string;
  cause?: unknown;
}

export class NodeCriuError extends Error {
  readonly code: string;
  /** Negative errno, as in Node's own system errors (-1 for EPERM), when the kernel reported one. */
  readonly errno?: number;
  readonly syscall?: string;
  /**
   * Set when the kernel, CRIU or nft refused for lack of a capability (code EPERM or EACCES):
   * the first missing one ('CAP_NET_ADMIN'...); the message ends with what to do (lib/capabilities.ts).
   * (`declare`: absent, not undefined, on errors without one.)
   */
  declare capability?: CapabilityName;
  /** Every capability the operation needs that this process lacks (empty: it has them all). */
  declare missingCapabilities?: readonly CapabilityName[];

  constructor(message: string, options: NodeCriuErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = options.code;
    if (options.errno !== undefined) this.errno = options.errno;
    if (options.syscall !== undefined) this.syscall = options.syscall;
  }
}

/** An argument failed validation before any native call; nothing was touched. */
export class InvalidArgumentError extends NodeCriuError {
  constructor(
    message: string,
    code: 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE' = 'ERR_INVALID_ARG_VALUE',
  ) {
    super(message, { code });
  }
}

/**
 * A value as text for an error message. Never throws: String() does for objects without a
 * prototype or with a non-callable toString, and a validation message must not turn a typed
 * error into an untyped TypeError.
 */
export function describeValue(value: unknown): string {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** The shape of the errors csrc/errors.cc throws. */
export interface NativeErrnoError extends Error {
  errno: number;
  code: string;
  syscall: string;
}

function isNativeErrnoError(value: unknown): value is NativeErrnoError {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.errno === 'number' && typeof v.code === 'string' && typeof v.syscall === 'string';
}

type ErrorClass<E extends NodeCriuError> = new (message: string, options: NodeCriuErrorOptions) => E;

/**
 * Converts whatever a native call threw into `ErrorClass` (keeping errno, code and syscall, and the
 * original as `cause`). Errors that are already NodeCriuErrors pass through unchanged.
 */
export function fromNativeError<E extends NodeCriuError>(
  ErrorClass: ErrorClass<E>,
  error: unknown,
  context?: string,
): NodeCriuError {
  if (error instanceof NodeCriuError) return error;
  const prefix = context ? `${context}: ` : '';
  if (isNativeErrnoError(error)) {
    const typed = new ErrorClass(`${prefix}${error.message}`, {
      code: error.code,
      errno: error.errno,
      syscall: error.syscall,
      cause: error,
    });
    // EPERM/EACCES for lack of a capability: say which one and what to do.
    const operation = operationOfNativeFailure(error.code, error.syscall, error.message);
    if (operation !== undefined) attachCapabilityProblem(typed, capabilityProblem(operation));
    return typed;
  }
  const code =
    typeof error === 'object' && error !== null && typeof (error as { code?: unknown }).code === 'string'
      ? (error as { code: string }).code
      : 'ERR_NATIVE';
  const message = error instanceof Error ? error.message : String(error);
  return new ErrorClass(`${prefix}${message}`, { code, cause: error });
}

/** Runs a native call and rethrows its failure as `ErrorClass`. */
export function callNative<T, E extends NodeCriuError>(ErrorClass: ErrorClass<E>, context: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    throw fromNativeError(ErrorClass, error, context);
  }
}
