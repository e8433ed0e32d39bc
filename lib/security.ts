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

function modeText(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

function unsafe(name: string, dir: string, problem: string): NodeCriuError {
  return new NodeCriuError(
    `${name} ${dir} ${problem}: another user could replace images between dump and restore; use a directory only root or you can change`,
    { code: 'ERR_UNSAFE_DIRECTORY' },
  );
}

/**
 * What makes the ancestor `stat` unsafe for a private directory below it, or undefined: it must be
 * a directory owned by root or by `uid`, and not writable by group or others, except a sticky
 * directory (like /tmp): there others can add entries but cannot rename or remove ours, so it is
 * safe as long as the entry of ours inside it is owned by root or us (checked as its own step).
 * Pure: unit-tested without root.
 */
export function ancestorProblem(
  stat: { mode: number; uid: number; isDirectory(): boolean },
  uid: number,
): string | undefined {
  if (!stat.isDirectory()) return 'is not a directory';
  if (stat.uid !== 0 && stat.uid !== uid) return `is owned by uid ${stat.uid}, neither root nor us (uid ${uid})`;
  const sticky = (stat.mode & 0o1000) !== 0;
  if ((stat.mode & 0o022) !== 0 && !sticky)
    return `is writable by ${stat.mode & 0o002 ? 'every user' : 'its group'} (mode ${modeText(stat.mode)})`;
  return undefined;
}

/** What makes `stat` (from lstat) unsafe as the private directory itself, or undefined. */
export function directoryProblem(
  stat: { mode: number; uid: number; isDirectory(): boolean; isSymbolicLink(): boolean },
  uid: number,
): string | undefined {
  if (stat.isSymbolicLink()) return 'is a symbolic link';
  if (!stat.isDirectory()) return 'is not a directory';
  if (stat.uid !== uid) return `is owned by uid ${stat.uid}, not by us (uid ${uid})`;
  if ((stat.mode & 0o022) !== 0)
    return `is writable by ${stat.mode & 0o002 ? 'every user' : 'its group'} (mode ${modeText(stat.mode)})`;
  return undefined;
}

/** `dir` and every directory above it, from `dir` up to '/'. */
function chain(dir: string): string[] {
  const dirs = [dir];
  for (let d = dir; path.dirname(d) !== d; d = path.dirname(d)) dirs.push(path.dirname(d));
  return dirs;
}

/**
 * Checks every directory the kernel walks through to reach `parent` (an existing directory):
 * each prefix of the path as written and, where a symlink leads elsewhere, the whole chain of
 * the place it leads to, since whoever can write any of them can swap what is below.
 */
function checkAncestors(parent: string, name: string, dir: string): void {
  const seen = new Set<string>();
  for (const prefix of chain(parent)) {
    for (const real of chain(fs.realpathSync(prefix))) {
      if (seen.has(real)) continue;
      seen.add(real);
      const problem = ancestorProblem(fs.lstatSync(real), euid());
      if (problem !== undefined) throw unsafe(name, dir, `is below ${real}, which ${problem}`);
    }
  }
}

/** The deepest existing directory of `absolute`'s ancestors (itself included). */
function deepestExisting(absolute: string): string {
  for (const d of chain(absolute)) if (fs.existsSync(d)) return d;
  return '/';
}

function checkDirectoryItself(absolute: string, name: string): fs.Stats {
  const stat = fs.lstatSync(absolute);
  const problem = directoryProblem(stat, euid());
  if (problem !== undefined) throw unsafe(name, absolute, problem);
  checkAncestors(path.dirname(absolute), name, absolute);
  return stat;
}

function warnIfReadable(absolute: string, name: string, stat: fs.Stats): void {
  if ((stat.mode & 0o055) !== 0 && !warnedReadable.has(absolute)) {
    // CRIU writes most image files 0644: only the directory keeps them private.
    warnedReadable.add(absolute);
    process.emitWarning(
      `${name} ${absolute} is accessible to other users (mode ${modeText(stat.mode)}); CRIU's image files (process memory) are world-readable inside it: chmod 700 it`,
      { code: 'NODE_CRIU_IMAGES_DIR_READABLE' },
    );
  }
}

/**
 * Makes `dir` a directory only its owner can use, for CRIU images (process memory, file contents,
 * sockets' queues) and other state this package writes:
 * - missing: created 0700 (with any missing parents, also 0700), below an existing chain that
 *   passes the parent rule below;
 * - existing, owned by us, not a symlink and not group/world-writable: used as it is (its mode is
 *   never changed); if others can read or search it, a process warning
 *   (NODE_CRIU_IMAGES_DIR_READABLE) says so, because CRIU writes most image files 0644 and only
 *   the directory hides them;
 * - otherwise refused with code 'ERR_UNSAFE_DIRECTORY', because whoever can write there can
 *   replace images between a dump and a restore, and a restore runs as root what the images say.
 * Parents (every directory up to '/', through symlinks too): owned by root or us and not writable
 * by group or others, except sticky ones like /tmp (see ancestorProblem).
 * Returns the absolute path.
 */
export function ensurePrivateDirectory(dir: unknown, name = 'imagesDir'): string {
  const absolute = path.resolve(checkPath(dir, name));
  const existing = deepestExisting(absolute);
  if (existing === absolute) {
    warnIfReadable(absolute, name, checkDirectoryItself(absolute, name));
    return absolute;
  }
  checkAncestors(existing, name, absolute);
  let firstCreated: string | undefined;
  try {
    firstCreated = fs.mkdirSync(absolute, { recursive: true, mode: 0o700 });
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    // EEXIST: made meanwhile, or something that is not a directory is there (checked below).
    if (e.code !== 'EEXIST')
      throw new NodeCriuError(`${name} ${absolute}: ${e.message}`, {
        code: e.code ?? 'ERR_UNSAFE_DIRECTORY',
        ...(e.syscall ? { syscall: e.syscall } : {}),
        cause: e,
      });
  }
  if (firstCreated === undefined) {
    warnIfReadable(absolute, name, checkDirectoryItself(absolute, name));
    return absolute;
  }
  // mode is filtered by the umask: make the directories we created exactly 0700.
  for (let d = absolute; d.length >= firstCreated.length; d = path.dirname(d)) {
    fs.chmodSync(d, 0o700);
    if (d === firstCreated) break;
  }
  return absolute;
}

/**
 * The restore side of ensurePrivateDirectory: `dir` must exist and pass the same rules (never
 * created, never changed), since a restore runs as root what the images in it say. Throws
 * ERR_UNSAFE_DIRECTORY, or ENOENT (a NodeCriuError) when it is missing. Returns the absolute path.
 */
export function checkPrivateDirectory(dir: unknown, name = 'imagesDir'): string {
  const absolute = path.resolve(checkPath(dir, name));
  try {
    fs.lstatSync(absolute);
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw new NodeCriuError(`${name} ${absolute}: ${e.message}`, {
      code: e.code ?? 'ENOENT',
      ...(e.syscall ? { syscall: e.syscall } : {}),
      cause: e,
    });
  }
  warnIfReadable(absolute, name, checkDirectoryItself(absolute, name));
  return absolute;
}
