/**
 * Input checks for values that reach native code or another program (fds, paths, socket paths),
 * and the private-directory rule for images. Internal: lib/ uses these before any native call.
 *
 * Why here and not in C++: the addon does not validate beyond types (docs/ARCHITECTURE.md), and
 * C reads strings up to the first NUL byte, so an unchecked "/run/netns/a\0b" would silently open
 * "/run/netns/a", and a socket path starting with NUL would name an abstract socket instead of a
 * file. Every check throws InvalidArgumentError (a code, nothing opened yet).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { describeValue, InvalidArgumentError, NodeCriuError } from './errors';

/** Largest fd the addon accepts (fds are C ints). */
export const MAX_FD = 0x7fffffff;
/** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
export const UNIX_SOCKET_PATH_MAX_BYTES = 107;
/** PATH_MAX (4096) including the terminating NUL. */
export const PATH_MAX_BYTES = 4095;

/** An fd: an integer in 0..2^31-1. Returns it. */
export function checkFd(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new InvalidArgumentError(
      `${name} must be an integer fd, got ${describeValue(value)}`,
      'ERR_INVALID_ARG_TYPE',
    );
  }
  if (value < 0 || value > MAX_FD)
    throw new InvalidArgumentError(`${name} must be in 0..${MAX_FD}, got ${value}`, 'ERR_OUT_OF_RANGE');
  return value;
}

export interface PathRules {
  /** Must be absolute (default false). */
  absolute?: boolean;
  /** Longest allowed length in UTF-8 bytes (default PATH_MAX_BYTES). */
  maxBytes?: number;
}

type PathProblem = { message: string; code: 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE' };

/** What is wrong with `value` as a path under `rules`, or undefined. Never throws. */
export function pathProblem(value: unknown, name: string, rules: PathRules = {}): PathProblem | undefined {
  if (typeof value !== 'string')
    return { message: `${name} must be a path string, got ${describeValue(value)}`, code: 'ERR_INVALID_ARG_TYPE' };
  if (value === '') return { message: `${name} must not be empty`, code: 'ERR_INVALID_ARG_VALUE' };
  if (value.includes('\0')) return { message: `${name} must not contain a NUL byte`, code: 'ERR_INVALID_ARG_VALUE' };
  const maxBytes = rules.maxBytes ?? PATH_MAX_BYTES;
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > maxBytes)
    return { message: `${name} is ${bytes} bytes long; at most ${maxBytes} are allowed`, code: 'ERR_OUT_OF_RANGE' };
  if (rules.absolute === true && !path.isAbsolute(value))
    return { message: `${name} must be an absolute path, got '${value}'`, code: 'ERR_INVALID_ARG_VALUE' };
  return undefined;
}

/** A filesystem path: a non-empty string without NUL, at most maxBytes long, absolute if asked. */
export function checkPath(value: unknown, name: string, rules: PathRules = {}): string {
  const problem = pathProblem(value, name, rules);
  if (problem !== undefined) throw new InvalidArgumentError(problem.message, problem.code);
  return value as string;
}

/** The path of an AF_UNIX socket file: checkPath with the 107-byte sun_path limit. */
export function checkSocketPath(value: unknown, name: string, rules: { absolute?: boolean } = {}): string {
  return checkPath(value, name, { ...rules, maxBytes: UNIX_SOCKET_PATH_MAX_BYTES });
}

/** A network namespace path (e.g. /run/netns/NAME, /proc/PID/ns/net): absolute, no NUL. */
export function checkNetnsPath(value: unknown, name = 'netns'): string {
  return checkPath(value, name, { absolute: true });
}

const warnedReadable = new Set<string>();

function euid(): number {
  return typeof process.geteuid === 'function' ? process.geteuid() : 0;
}

/**
 * Makes `dir` a directory only its owner can use, for CRIU images (process memory, file contents,
 * sockets' queues) and other state this package writes:
 * - missing: created 0700 (with any missing parents, also 0700);
 * - existing, owned by us and not group/world-writable: used as it is (its mode is never changed);
 *   if others can read or search it, a process warning (NODE_CRIU_IMAGES_DIR_READABLE) says so,
 *   because CRIU writes most image files 0644 and only the directory hides them;
 * - existing but group/world-writable, owned by another user, or not a directory: refused with
 *   code 'ERR_UNSAFE_DIRECTORY', because whoever can write there can replace images between a
 *   dump and a restore, and a restore runs as root what the images say.
 * Returns the absolute path.
 */
export function ensurePrivateDirectory(dir: unknown, name = 'imagesDir'): string {
  const absolute = path.resolve(checkPath(dir, name));
  let firstCreated: string | undefined;
  try {
    firstCreated = fs.mkdirSync(absolute, { recursive: true, mode: 0o700 });
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    // EEXIST: something that is not a directory is there (checked below).
    if (e.code !== 'EEXIST')
      throw new NodeCriuError(`${name} ${absolute}: ${e.message}`, {
        code: e.code ?? 'ERR_UNSAFE_DIRECTORY',
        ...(e.syscall ? { syscall: e.syscall } : {}),
        cause: e,
      });
  }
  if (firstCreated !== undefined) {
    // mode is filtered by the umask: make the directories we created exactly 0700.
    for (let d = absolute; d.length >= firstCreated.length; d = path.dirname(d)) {
      fs.chmodSync(d, 0o700);
      if (d === firstCreated) break;
    }
    return absolute;
  }
  const stat = fs.statSync(absolute);
  const problem = !stat.isDirectory()
    ? 'is not a directory'
    : stat.uid !== euid()
      ? `is owned by uid ${stat.uid}, not by us (uid ${euid()})`
      : (stat.mode & 0o022) !== 0
        ? `is writable by ${stat.mode & 0o002 ? 'every user' : 'its group'} (mode ${(stat.mode & 0o7777).toString(8).padStart(4, '0')})`
        : undefined;
  if (problem !== undefined) {
    throw new NodeCriuError(
      `${name} ${absolute} ${problem}: another user could replace images between dump and restore; use a new directory or chmod go-w it`,
      { code: 'ERR_UNSAFE_DIRECTORY' },
    );
  }
  if ((stat.mode & 0o055) !== 0 && !warnedReadable.has(absolute)) {
    // CRIU writes most image files 0644: only the directory keeps them private.
    warnedReadable.add(absolute);
    process.emitWarning(
      `${name} ${absolute} is accessible to other users (mode ${(stat.mode & 0o7777).toString(8).padStart(4, '0')}); CRIU's image files (process memory) are world-readable inside it: chmod 700 it`,
      {
        code: 'NODE_CRIU_IMAGES_DIR_READABLE',
      },
    );
  }
  return absolute;
}
