/**
 * Shared plumbing of the node-criu CLI: exit codes, output (progress on stderr, one JSON document
 * on stdout with --json), turning errors into messages a user can act on, and the checks every
 * command needs (root, a usable CRIU).
 */
import * as path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { criuCapabilityProblem } from '../capabilities';
import { ensureCriu, locateCriu, Criu, type CriuCommand, type CriuVersion } from '../criu';
import { NodeCriuError } from '../errors';
import { describeFailure } from '../migration/process';

export const EXIT = {
  OK: 0,
  /** The operation failed (CRIU said no, a migration failed without a rollback). */
  FAILED: 1,
  /** Bad command line. */
  USAGE: 2,
  /** The environment cannot do it: not root, CRIU missing or too old, nsenter missing. */
  ENVIRONMENT: 3,
  /** What the command names does not exist: pid, network namespace, images directory. */
  NOT_FOUND: 4,
  /** The migration did not happen but the server runs on the source as before (dump failed, rolled back, aborted). */
  NOT_MIGRATED: 5,
  /** The migration failed and so did the rollback: the server is not running; the images are kept. */
  LOST: 6,
  /** Two hosts: the channel to the agent was lost after RESTORE was sent; where the server runs is unknown. */
  UNCERTAIN: 7,
  /** Refused because of what runs now: restore while the process dumped with --leave-running still owns its connections. */
  CONFLICT: 8,
} as const;

/** CRIU 4.2 is the first that dumps inet sockets on Linux >= 6.16 (SO_PASSCRED change). */
export const MIN_CRIU_VERSION = 40200;

export const INSTALL_SCRIPT = path.join(__dirname, '..', '..', 'scripts', 'install-criu.sh');

/** A bad command line (code ERR_USAGE, exit code 2). */
export class UsageError extends NodeCriuError {
  constructor(message: string) {
    super(message, { code: 'ERR_USAGE' });
  }
}

/** A failure with the exit code and hint already decided; `code` as the library's errors have it. */
export class CliError extends NodeCriuError {
  constructor(
    message: string,
    readonly exitCode: number,
    code: string,
    readonly hint?: string,
    readonly details?: Record<string, unknown>,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? { code } : { code, cause });
  }
}

export interface Output {
  json: boolean;
  quiet: boolean;
  progress(line: string): void;
}

export function makeOutput(json: boolean, quiet: boolean): Output {
  return {
    json,
    quiet,
    progress: (line) => {
      if (!quiet) process.stderr.write(`node-criu: ${line}\n`);
    },
  };
}

/** Options every command accepts. */
export const COMMON_OPTIONS = {
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
  'criu-path': { type: 'string' },
} as const;

/** parseArgs (strict) with its errors turned into UsageError. */
export function parse<T extends NonNullable<ParseArgsConfig['options']>>(
  args: string[],
  options: T,
): ReturnType<typeof parseArgs<{ args: string[]; options: T; strict: true; allowPositionals: false }>>['values'] {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

export function positiveInteger(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 1)
    throw new UsageError(`${flag} must be a positive integer, got '${value}'`);
  return Number(value);
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export function requireRoot(): void {
  if (!isRoot()) {
    throw new CliError(
      'node-criu must run as root: CRIU needs CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_NET_ADMIN',
      EXIT.ENVIRONMENT,
      'ERR_NOT_ROOT',
      'run it with sudo',
    );
  }
  // Root without them (a container, systemd CapabilityBoundingSet=, setpriv): say which, before CRIU fails obscurely.
  const problem = criuCapabilityProblem();
  if (problem !== undefined) {
    throw new CliError(
      `running as root but without ${problem.missing.join(', ')}`,
      EXIT.ENVIRONMENT,
      'EPERM',
      problem.hint,
      {
        capability: problem.capability,
        missingCapabilities: problem.missing,
      },
    );
  }
}

const INSTALL_HINT = `install CRIU 4.2+ with 'sudo node-criu check --install' (runs ${INSTALL_SCRIPT}), or pass --criu-path`;

/** Finds CRIU (installing it with --install), checks its version; returns the command and version. */
export async function resolveCriu(
  criuPath: string | undefined,
  install: boolean,
  out: Output,
): Promise<{ command: CriuCommand; version: CriuVersion }> {
  let command: CriuCommand;
  try {
    if (install && criuPath === undefined) {
      out.progress('looking for CRIU (installing it if missing; the first install takes about a minute)');
      command = await ensureCriu({ install: true });
    } else {
      command = locateCriu(criuPath !== undefined ? { criuPath } : {});
    }
  } catch (error) {
    throw new CliError((error as Error).message, EXIT.ENVIRONMENT, 'ERR_CRIU_NOT_FOUND', INSTALL_HINT);
  }
  const criu = new Criu({ criuPath: command.path });
  let version: CriuVersion;
  try {
    version = await criu.version({ timeoutMs: 30000 });
  } catch (error) {
    throw new CliError(
      `${command.path} does not answer as CRIU: ${(error as Error).message}`,
      EXIT.ENVIRONMENT,
      'ERR_CRIU_UNUSABLE',
      INSTALL_HINT,
    );
  } finally {
    await criu.close();
  }
  if (version.number < MIN_CRIU_VERSION) {
    throw new CliError(
      `CRIU ${version.text} at ${command.path} is too old: TCP sockets need CRIU 4.2 or newer on this kernel`,
      EXIT.ENVIRONMENT,
      'ERR_CRIU_TOO_OLD',
      INSTALL_HINT,
    );
  }
  return { command, version };
}

const EXIT_BY_CODE: Record<string, number> = {
  ERR_PID_NOT_FOUND: EXIT.NOT_FOUND,
  ESRCH: EXIT.NOT_FOUND,
  ERR_NETNS_NOT_FOUND: EXIT.NOT_FOUND,
  ERR_NETNS_MISMATCH: EXIT.NOT_FOUND,
  ENOENT: EXIT.NOT_FOUND,
  ERR_CRIU_NOT_FOUND: EXIT.ENVIRONMENT,
  ERR_NSENTER_NOT_FOUND: EXIT.ENVIRONMENT,
  ERR_MIGRATION_DUMP_FAILED: EXIT.NOT_MIGRATED,
  ERR_MIGRATION_ROLLED_BACK: EXIT.NOT_MIGRATED,
  ERR_MIGRATION_ABORTED: EXIT.NOT_MIGRATED,
  ERR_MIGRATION_LOST: EXIT.LOST,
  ERR_MIGRATION_UNCERTAIN: EXIT.UNCERTAIN,
  ERR_MIGRATION_LAZY_UNSUPPORTED: EXIT.NOT_MIGRATED,
  ERR_LAZY_PAGES_PIPE_SIZE: EXIT.NOT_MIGRATED,
  ERR_MIGRATION_PRIVATE_MOUNTS: EXIT.NOT_MIGRATED,
  ERR_MIGRATION_MOUNT_NAMESPACES: EXIT.NOT_MIGRATED,
  ERR_MIGRATION_CRIU_UNREACHABLE: EXIT.ENVIRONMENT,
  ERR_INVALID_ARG_VALUE: EXIT.USAGE,
  ERR_INVALID_ARG_TYPE: EXIT.USAGE,
  ERR_OUT_OF_RANGE: EXIT.USAGE,
  ERR_UNSAFE_DIRECTORY: EXIT.USAGE,
  ERR_CRIU_SERVICE_ADDRESS_IN_USE: EXIT.USAGE,
};

/** Any error → CliError with an exit code (and the library's fields kept for --json). */
export function toCliError(error: unknown): CliError {
  if (error instanceof CliError) return error;
  if (error instanceof UsageError)
    return new CliError(error.message, EXIT.USAGE, 'ERR_USAGE', "see 'node-criu <command> --help'");
  const e = error as {
    code?: string;
    message?: string;
    serverOn?: string;
    pid?: number;
    imagesDir?: string;
    logFile?: string;
    phase?: string;
  };
  const code = typeof e.code === 'string' ? e.code : 'ERR_UNKNOWN';
  const details: Record<string, unknown> = {};
  for (const key of ['serverOn', 'pid', 'imagesDir', 'logFile', 'phase'] as const)
    if (e[key] !== undefined) details[key] = e[key];
  let hint: string | undefined;
  if (code === 'ERR_CRIU_NOT_FOUND') hint = INSTALL_HINT;
  if (code === 'EEXIST')
    hint = 'a process already has the pid the dump recorded (the original, or its zombie): CRIU restores the same pid';
  if (code === 'ESRCH') hint = 'the process is gone';
  if (code === 'ERR_MIGRATION_LOST' && e.imagesDir !== undefined)
    hint = `restore it by hand: node-criu restore --images-dir ${String(e.imagesDir)} --netns <source netns>`;
  if (e.logFile !== undefined) hint = `${hint !== undefined ? `${hint}; ` : ''}CRIU's log: ${e.logFile}`;
  // A CRIU failure reads best as the last errors of its log (its own message quotes the first).
  const message =
    (error as { logTail?: string }).logTail !== undefined
      ? `CRIU failed: ${describeFailure(error)}`
      : (e.message ?? String(error));
  // Two hosts: the agent refused or could not be reached, and the server was never touched.
  const agentSide =
    e.serverOn === 'source' &&
    /^(ERR_AGENT_|ERR_TLS_|ERR_TRANSPORT_|ECONN|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT)/.test(code);
  if (code === 'ERR_MIGRATION_UNCERTAIN')
    hint = `check the target host first; only if the server does not run there: node-criu restore --images-dir ${String(e.imagesDir)}`;
  return new CliError(
    message,
    EXIT_BY_CODE[code] ?? (agentSide ? EXIT.NOT_MIGRATED : EXIT.FAILED),
    code,
    hint,
    details,
  );
}

/** Prints the result: JSON on stdout, or the human lines. */
export function printResult(out: Output, document: Record<string, unknown>, human: string[]): void {
  if (out.json) process.stdout.write(`${JSON.stringify({ ok: true, ...document })}\n`);
  else for (const line of human) process.stdout.write(`${line}\n`);
}

export function printError(json: boolean, error: CliError): void {
  if (json) {
    process.stdout.write(
      `${JSON.stringify({ ok: false, error: { code: error.code, message: error.message, exitCode: error.exitCode, ...(error.hint ? { hint: error.hint } : {}), ...error.details } })}\n`,
    );
  }
  process.stderr.write(`node-criu: error: ${error.message}\n`);
  if (error.hint !== undefined) process.stderr.write(`node-criu: hint: ${error.hint}\n`);
}
