/**
 * Turns the caller's CriuOptions into a criu_opts message and the fds that go with it: opens
 * imagesDir/workDir (O_DIRECTORY; CRIU reads them as /proc/<our pid>/fd/N), lines up inheritFds
 * and ps.fd as swrk's fds 4, 5, ... and picks the log file. Everything opened is closed when the
 * call's scope settles. Validation happens before anything is opened.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { InvalidArgumentError, NodeCriuError } from '../errors';
import { ensurePrivateDirectory } from '../security';
import type { CallScope } from './call';
import type { CriuOptsMessage } from './messages';
import { toCriuOpts, validateCriuOptions, type CriuOptions, type ResolvedCriuFds } from './options';

/** swrk's fd numbers for extra fds: 0-2 stdio, 3 the RPC socket. */
export const SWRK_FIRST_EXTRA_FD = 4;

/** CRIU's most verbose level; failures are explained from the log, so it is the default. */
export const DEFAULT_LOG_LEVEL = 4;

export type CriuMode = 'swrk' | 'service';

export interface PreparedOptions {
  opts: CriuOptsMessage;
  /** Caller's fds to hand to swrk as fds 4, 5, ... (inheritFds first, then ps.fd). */
  extraFds: number[];
  /** Where CRIU writes this call's log, when it writes one to a file. */
  logPath?: string;
}

/** Validates before any I/O; also the rules that depend on the mode and the request. */
export function checkOptions(options: unknown, mode: CriuMode, what: { requireImagesDir: boolean }): CriuOptions {
  if (options === undefined) options = {};
  validateCriuOptions(options);
  const o = options as CriuOptions;
  if (mode === 'service') {
    for (const key of ['inheritFds', 'rstSibling'] as const) {
      if (o[key] !== undefined)
        throw new InvalidArgumentError(
          `options.${key} works only with mode 'swrk' (CRIU reads it in its own fd table)`,
        );
    }
    if (o.ps?.fd !== undefined) throw new InvalidArgumentError("options.ps.fd works only with mode 'swrk'");
  }
  if (what.requireImagesDir && o.imagesDir === undefined) {
    throw new InvalidArgumentError('options.imagesDir is required for this request');
  }
  return o;
}

function openDirectory(dir: string, what: string, scope: CallScope): number {
  let fd: number;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw new NodeCriuError(`cannot open ${what} ${dir}: ${e.code ?? e.message}`, {
      code: e.code ?? 'ERR_CRIU_OPTIONS',
      ...(e.errno !== undefined ? { errno: e.errno } : {}),
      syscall: 'open',
      cause: error,
    });
  }
  scope.defer(() => fs.closeSync(fd));
  return fd;
}

/**
 * Opens what `options` names and builds criu_opts. `logName` is the default log file name
 * (criu-<op>.log) used when the caller set neither logFile nor logToStderr. `createImagesDir`
 * (requests that write images): a missing imagesDir is created 0700, with missing parents
 * (ensurePrivateDirectory's rules); an existing one is used as it is.
 */
export function prepareOptions(
  options: CriuOptions,
  scope: CallScope,
  extra: { logName?: string; notify?: boolean; overrides?: Partial<CriuOptions>; createImagesDir?: boolean } = {},
): PreparedOptions {
  const effective: CriuOptions = { ...options, ...extra.overrides };
  const logDir = effective.workDir ?? effective.imagesDir;
  if (logDir !== undefined && extra.logName !== undefined && !effective.logToStderr) {
    effective.logFile ??= extra.logName;
    effective.logLevel ??= DEFAULT_LOG_LEVEL;
  }
  if (extra.notify) effective.notifyScripts = true;
  validateCriuOptions(effective);

  const resolved: ResolvedCriuFds = {};
  const extraFds: number[] = [];
  if (effective.inheritFds !== undefined) {
    resolved.inheritFdNumbers = effective.inheritFds.map((entry) => {
      extraFds.push(entry.fd);
      return SWRK_FIRST_EXTRA_FD + extraFds.length - 1;
    });
  }
  if (effective.ps?.fd !== undefined) {
    extraFds.push(effective.ps.fd);
    resolved.psFd = SWRK_FIRST_EXTRA_FD + extraFds.length - 1;
  }
  if (extra.createImagesDir && effective.imagesDir !== undefined && !fs.existsSync(effective.imagesDir))
    ensurePrivateDirectory(effective.imagesDir, 'imagesDir');
  if (effective.imagesDir !== undefined) resolved.imagesDirFd = openDirectory(effective.imagesDir, 'imagesDir', scope);
  if (effective.workDir !== undefined) resolved.workDirFd = openDirectory(effective.workDir, 'workDir', scope);

  const opts = toCriuOpts(effective, resolved);
  const prepared: PreparedOptions = { opts, extraFds };
  if (logDir !== undefined && effective.logFile !== undefined) prepared.logPath = path.join(logDir, effective.logFile);
  return prepared;
}

/** The last lines of CRIU's log (what a failure report needs), or undefined if unreadable. */
export function readLogTail(logPath: string | undefined, maxLines = 40, maxBytes = 16384): string | undefined {
  if (logPath === undefined) return undefined;
  let fd: number | undefined;
  try {
    fd = fs.openSync(logPath, 'r');
    const size = fs.fstatSync(fd).size;
    const length = Math.min(size, maxBytes);
    const buffer = Buffer.alloc(length);
    fs.readSync(fd, buffer, 0, length, size - length);
    const lines = buffer.toString('utf8').split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    return lines.slice(-maxLines).join('\n');
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
