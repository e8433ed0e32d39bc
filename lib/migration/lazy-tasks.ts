/**
 * The lazy-pages route's process handling: finding the restored tree in the pid namespace CRIU
 * restored into (CRIU reports the pid as seen there) and killing trees.
 */
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';

import { mayTouch } from '../criu/recover';
import { procStatus, processTree } from '../sys/proc';

/** The pid namespace of `pid` ("pid:[inode]"), undefined if it is gone. */
export function pidNamespaceOf(pid: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined;
  }
}

/**
 * The process whose innermost pid is `nsPid` in the pid namespace `ns` (as we see it), with its
 * descendants; [] if there is none. Our own namespace: `nsPid` itself.
 */
export function findInPidNamespace(nsPid: number, ns: string | undefined): number[] {
  if (ns === undefined) return [];
  if (ns === pidNamespaceOf(process.pid)) return pidNamespaceOf(nsPid) === ns ? processTree(nsPid) : [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const nspids = procStatus(pid)?.get('NSpid')?.split(/\s+/).map(Number);
    if (nspids === undefined || nspids[nspids.length - 1] !== nsPid) continue;
    if (pidNamespaceOf(pid) === ns) return processTree(pid);
  }
  return [];
}

/** SIGKILLs each task (never init, us or our ancestors); ignores ones already gone. */
export function killTasks(pids: readonly number[]): void {
  for (const pid of pids) {
    if (!mayTouch(pid)) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** A child's exit (code/signal; both null when it could not be spawned). */
export function daemonExit(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null)
      resolve({ code: child.exitCode, signal: child.signalCode });
    else {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null })); // could not be spawned
    }
  });
}
