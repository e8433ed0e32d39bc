/**
 * What `node-criu dump` notes beside the images (node-criu-dump.json): which process it dumped and
 * whether that process was left running. A process dumped with --leave-running still owns its TCP
 * connections; a copy restored while it runs answers the same 4-tuples, and the peers see their
 * connections reset. `restore` reads the note and refuses while the original runs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { waitForPidFree } from '../migration/process-errors';
import { procStat } from '../sys/proc';
import { CliError, EXIT } from './common';

export const DUMP_RECORD = 'node-criu-dump.json';

export interface DumpRecord {
  pid: number;
  /** /proc/PID/stat starttime: tells the dumped process from a later one that reuses its pid. */
  startTime: string;
  leftRunning: boolean;
  tcpEstablished: boolean;
}

export function writeDumpRecord(imagesDir: string, record: DumpRecord): void {
  fs.writeFileSync(path.join(imagesDir, DUMP_RECORD), `${JSON.stringify(record)}\n`, { mode: 0o600 });
}

/** The note in `imagesDir`, or undefined (none, e.g. a dump by CRIU itself, or not readable as one). */
export function readDumpRecord(imagesDir: string): DumpRecord | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(path.join(imagesDir, DUMP_RECORD), 'utf8'));
  } catch {
    return undefined;
  }
  const r = parsed as Partial<DumpRecord> | null;
  if (
    typeof r !== 'object' ||
    r === null ||
    !Number.isInteger(r.pid) ||
    (r.pid as number) < 1 ||
    typeof r.startTime !== 'string' ||
    typeof r.leftRunning !== 'boolean' ||
    typeof r.tcpEstablished !== 'boolean'
  )
    return undefined;
  return { pid: r.pid as number, startTime: r.startTime, leftRunning: r.leftRunning, tcpEstablished: r.tcpEstablished };
}

/** Whether the process the record names still runs (same pid and start time, not a zombie). */
export function originalRunning(record: DumpRecord): boolean {
  const stat = procStat(record.pid);
  return stat !== undefined && stat.startTime === record.startTime && stat.state !== 'Z';
}

/** How long restore waits for the parent of a process the dump killed to reap it (CRIU needs its pid). */
const REAP_WAIT_MS = 10_000;

/**
 * Before a restore from `imagesDir`. Throws ERR_ORIGINAL_RUNNING (exit 8) when it holds a
 * --leave-running dump with TCP connections whose process still runs: restoring now would reset
 * every connection. Returns a warning for such a dump once its process has stopped (the original
 * went on using the connections after the dump, so they are stale), else undefined. When the dump
 * killed the process and its parent has not reaped it yet, waits for that (CRIU restores the same
 * pid and would fail with EEXIST meanwhile).
 */
export async function checkOriginal(imagesDir: string): Promise<string | undefined> {
  const record = readDumpRecord(imagesDir);
  if (record === undefined) return undefined;
  if (!record.leftRunning) {
    if (procStat(record.pid)?.startTime === record.startTime) await waitForPidFree(record.pid, REAP_WAIT_MS);
    return undefined;
  }
  if (!record.tcpEstablished) return undefined;
  if (!originalRunning(record))
    return `these images come from a --leave-running dump of process ${record.pid}: it went on using its TCP connections after the dump, so their peers will reset the restored ones`;
  throw new CliError(
    `process ${record.pid}, dumped into ${imagesDir} with --leave-running, still runs and owns its TCP connections: a restored copy would answer the same connections and their peers would see them reset`,
    EXIT.CONFLICT,
    'ERR_ORIGINAL_RUNNING',
    `to move a process with its connections, dump it without --leave-running or use 'node-criu migrate'; to restore this snapshot anyway, stop process ${record.pid} first (its connections will not survive)`,
    { pid: record.pid, imagesDir },
  );
}
