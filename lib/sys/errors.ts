/** The error of an external command that could not run, failed, timed out or was aborted. */
import { NodeCriuError } from '../errors';

/**
 * code: 'ERR_COMMAND_NOT_FOUND' (no such executable), 'ERR_COMMAND_FAILED' (a non-zero exit or
 * a signal; `exitCode` or `signal` says which), 'ERR_COMMAND_TIMEOUT' (`timeoutMs` passed and the
 * command was killed), 'ABORT_ERR' (the caller's signal fired and the command was killed), or the
 * errno name spawn reported ('EACCES', 'EAGAIN', ...).
 */
export class CommandError extends NodeCriuError {
  /** The executable that ran (nsenter when the command ran in a network namespace). */
  readonly command: string;
  readonly args: readonly string[];
  /** The exit status, when the command exited. */
  readonly exitCode?: number;
  /** The signal that ended it, when one did. */
  readonly signal?: NodeJS.Signals;
  /** The end of what it wrote on stderr. */
  readonly stderr: string;

  constructor(
    message: string,
    details: {
      code: string;
      command: string;
      args: readonly string[];
      exitCode?: number | null;
      signal?: NodeJS.Signals | null;
      stderr?: string;
      cause?: unknown;
    },
  ) {
    super(message, { code: details.code, cause: details.cause });
    this.command = details.command;
    this.args = details.args;
    if (details.exitCode !== undefined && details.exitCode !== null) this.exitCode = details.exitCode;
    if (details.signal !== undefined && details.signal !== null) this.signal = details.signal;
    this.stderr = details.stderr ?? '';
  }
}

/**
 * An address could not be announced (or its namespace not entered). code: the kernel's errno name
 * ('ENODEV' no such interface, 'ENETDOWN' interface down, 'EADDRNOTAVAIL' an IPv6 address that is
 * not on the interface or still tentative, 'ENOTSUP' not an Ethernet interface, 'EPERM'
 * without CAP_NET_RAW, 'ENOENT' no such namespace file), 'ERR_INVALID_NETNS' (a path that is not
 * a network namespace), 'ERR_ANNOUNCE_TIMEOUT' (`timeoutMs` passed) or 'ABORT_ERR'.
 */
export class AddressError extends NodeCriuError {}
