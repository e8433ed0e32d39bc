/** CRIU's replies turned into what the client returns: results, or CriuRequestErrors. No I/O but the log tail. */
import { getSystemErrorMap } from 'node:util';

import { CriuRequestError } from './errors';
import { mostRelevantCriuError } from './log-errors';
import { CriuReqType, reqTypeName, type CriuRequestMessage, type CriuResponseMessage } from './messages';
import { readLogTail } from './prepare';

export interface CriuVersion {
  major: number;
  minor: number;
  sublevel?: number;
  extra?: number;
  gitid?: string;
  name?: string;
  /** '4.2.1' */
  text: string;
  /** libcriu's number: major*10000 + minor*100 + sublevel (gitid builds round up to the next 100). */
  number: number;
}

export type CriuFeatures = NonNullable<CriuRequestMessage['features']>;

export interface CriuNotifyRecord {
  script: string;
  pid?: number;
}

export interface CriuDumpResult {
  /** True only in a process restored from a self-dump (dump without pid). */
  restored: boolean;
  /** The notifications CRIU sent, in arrival order. */
  notifications: CriuNotifyRecord[];
  logFile?: string;
}

export interface CriuRestoreResult {
  /** pid of the restored tree's root. */
  pid: number;
  notifications: CriuNotifyRecord[];
  logFile?: string;
}

export interface CriuPageServerResult {
  /** The daemon's pid when CRIU reports it (CRIU 4.2.1 sends 0: then absent). */
  pid?: number;
  port: number;
}

/** How much of CRIU's log is searched for the line that explains a failure (see log-errors.ts). */
const LOG_SCAN_BYTES = 1 << 20;

function errnoLabel(errno: number): string {
  const name = getSystemErrorMap().get(-errno)?.[0];
  return name !== undefined ? `errno ${errno}, ${name}` : `errno ${errno}`;
}

/**
 * The error for a reply with success=false (or without what the request needs). The message
 * leads with the log line that explains the failure (mostRelevantCriuError), not cr_errmsg, which
 * is CRIU's first error line and often a harmless one; `crErrmsg` and `logTail` keep both.
 */
export function requestFailure(
  request: CriuRequestMessage,
  response: CriuResponseMessage,
  logPath?: string,
): CriuRequestError {
  const what = reqTypeName(request.type);
  const subject = request.type === CriuReqType.WAIT_PID && request.pid !== undefined ? `${what} ${request.pid}` : what;
  const logTail = readLogTail(logPath);
  const log = readLogTail(logPath, Number.MAX_SAFE_INTEGER, LOG_SCAN_BYTES);
  const reason = mostRelevantCriuError({
    ...(log !== undefined ? { log } : {}),
    ...(response.crErrno ? { crErrno: response.crErrno } : {}),
    ...(response.crErrmsg ? { crErrmsg: response.crErrmsg } : {}),
  });
  const head =
    response.type === CriuReqType.EMPTY ? `CRIU rejected ${subject} (EMPTY reply)` : `CRIU ${subject} failed`;
  const parts = [
    reason !== undefined ? `${head}: ${reason}` : head,
    response.crErrno ? errnoLabel(response.crErrno) : undefined,
    logPath ? `log: ${logPath}` : undefined,
  ].filter(Boolean);
  return new CriuRequestError(parts.join('; '), {
    requestType: what,
    responseType: reqTypeName(response.type),
    ...(response.crErrno ? { crErrno: response.crErrno } : {}),
    ...(response.crErrmsg ? { crErrmsg: response.crErrmsg } : {}),
    ...(logPath ? { logFile: logPath } : {}),
    ...(logTail !== undefined ? { logTail } : {}),
  });
}

export function toCriuVersion(v: NonNullable<CriuResponseMessage['version']>): CriuVersion {
  const sublevel = v.sublevel ?? 0;
  let number = v.majorNumber * 10000 + v.minorNumber * 100 + sublevel;
  if (v.gitid) number = Math.floor(number / 100) * 100 + 100;
  return {
    major: v.majorNumber,
    minor: v.minorNumber,
    ...(v.sublevel !== undefined ? { sublevel: v.sublevel } : {}),
    ...(v.extra !== undefined ? { extra: v.extra } : {}),
    ...(v.gitid !== undefined ? { gitid: v.gitid } : {}),
    ...(v.name !== undefined ? { name: v.name } : {}),
    text: [v.majorNumber, v.minorNumber, ...(v.sublevel !== undefined ? [v.sublevel] : [])].join('.'),
    number,
  };
}

/** PAGE_SERVER's reply: the port, and the daemon's pid when CRIU reports one (4.2.1 answers 0). */
export function pageServerResult(
  request: CriuRequestMessage,
  response: CriuResponseMessage,
  logPath?: string,
): CriuPageServerResult {
  if (!response.ps?.port) throw requestFailure(request, response, logPath);
  const pid = response.ps.pid !== undefined && response.ps.pid > 1 ? response.ps.pid : undefined;
  return { ...(pid !== undefined ? { pid } : {}), port: response.ps.port };
}
