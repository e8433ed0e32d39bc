/**
 * The one runner for external commands (nft, ip, nsenter, true): an argument array, never a
 * shell; `LC_ALL=C`, so what a command prints does not depend on the caller's locale; bounded
 * output; `{ signal, timeoutMs }`; failures as CommandError with a code. `netns` runs the command
 * inside a network namespace through `nsenter --net=PATH --`.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { CommandError } from './errors';
import { nsenterArgs } from './netns';

export interface RunOptions {
  /** Written to the command's stdin (then closed); without it stdin is /dev/null. */
  input?: string | Uint8Array;
  /** An fd the command gets as its stdin instead (shares our open file description). */
  stdinFd?: number;
  /** Run it inside this network namespace (a path such as /run/netns/NAME). */
  netns?: string;
  signal?: AbortSignal;
  /** Kill it (SIGKILL) after this long: ERR_COMMAND_TIMEOUT. */
  timeoutMs?: number;
  /** At most this many bytes of stdout are kept (default 16 MiB; the rest is read and dropped). */
  maxOutputBytes?: number;
  /** Added to the environment (which is ours, with LC_ALL=C). */
  env?: Record<string, string>;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

const DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024;
/** What CommandError keeps of stderr: its end says why a command failed. */
const STDERR_TAIL = 4096;

/** The executable and arguments that run `command args` (inside `netns` when given). */
export function commandLine(
  command: string,
  args: readonly string[],
  netns?: string,
): { command: string; args: string[] } {
  return netns === undefined
    ? { command, args: [...args] }
    : { command: 'nsenter', args: nsenterArgs(netns, command, args) };
}

/** The environment every command runs with: ours, the additions, and LC_ALL=C over both. */
export function commandEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...process.env, ...extra, LC_ALL: 'C' };
}

/** Keeps the last `limit` characters of `text`. */
export function tail(text: string, limit = STDERR_TAIL): string {
  return text.length <= limit ? text : text.slice(text.length - limit);
}

/** An executable file named `name` in PATH's directories, then `extraDirs`; undefined if none. */
export function findExecutable(name: string, extraDirs: readonly string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':'), ...extraDirs];
  for (const dir of dirs) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The command line for a message: long arguments (an nft JSON batch) shortened. */
export function describeCommand(command: string, args: readonly string[]): string {
  return [command, ...args].map((arg) => (arg.length > 120 ? `${arg.slice(0, 117)}...` : arg)).join(' ');
}

/** Runs `command args`; resolves with its output when it exits 0, else rejects with CommandError. */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const line = commandLine(command, args, options.netns);
  const maxOutput = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const fail = (message: string, code: string, extra: Partial<ConstructorParameters<typeof CommandError>[1]> = {}) =>
    new CommandError(message, { code, command: line.command, args: line.args, ...extra });
  if (options.signal?.aborted)
    return Promise.reject(
      fail(`${describeCommand(command, args)}: aborted`, 'ABORT_ERR', { cause: options.signal.reason }),
    );
  return new Promise((resolve, reject) => {
    const stdin = options.input !== undefined ? 'pipe' : (options.stdinFd ?? 'ignore');
    const child = spawn(line.command, line.args, { stdio: [stdin, 'pipe', 'pipe'], env: commandEnv(options.env) });
    let stdout = '';
    let stdoutBytes = 0;
    let stderr = '';
    let ended: 'timeout' | 'abort' | undefined;
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      if (stdoutBytes >= maxOutput) return;
      stdoutBytes += Buffer.byteLength(chunk);
      stdout += chunk;
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      stderr = tail(stderr + chunk);
    });
    const kill = (why: 'timeout' | 'abort'): void => {
      ended ??= why;
      child.kill('SIGKILL');
    };
    const timer = options.timeoutMs !== undefined ? setTimeout(() => kill('timeout'), options.timeoutMs) : undefined;
    const onAbort = (): void => kill('abort');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const done = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
    };
    child.once('error', (error: NodeJS.ErrnoException) => {
      done();
      const code = error.code === 'ENOENT' ? 'ERR_COMMAND_NOT_FOUND' : (error.code ?? 'ERR_COMMAND_FAILED');
      reject(fail(`cannot run ${line.command}: ${error.message}`, code, { cause: error }));
    });
    child.once('close', (exitCode: number | null, signal: NodeJS.Signals | null) => {
      done();
      if (ended === 'timeout')
        return reject(
          fail(`${describeCommand(command, args)}: timed out after ${options.timeoutMs} ms`, 'ERR_COMMAND_TIMEOUT', {
            stderr,
          }),
        );
      if (ended === 'abort')
        return reject(
          fail(`${describeCommand(command, args)}: aborted`, 'ABORT_ERR', { stderr, cause: options.signal?.reason }),
        );
      if (exitCode === 0) return resolve({ stdout, stderr });
      const how = signal !== null ? `killed by ${signal}` : `exit ${String(exitCode)}`;
      const why = stderr.trim() === '' ? '' : `: ${stderr.trim()}`;
      reject(
        fail(`${describeCommand(command, args)} failed (${how})${why}`, 'ERR_COMMAND_FAILED', {
          exitCode,
          signal,
          stderr,
        }),
      );
    });
    if (child.stdin) {
      // A command that exits before reading its input closes the pipe; its exit status says why.
      child.stdin.on('error', () => undefined);
      child.stdin.end(options.input);
    }
  });
}
