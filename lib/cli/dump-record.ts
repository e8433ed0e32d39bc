/**
 * What `node-criu dump` notes beside the images (node-criu-dump.json): which process it dumped and
 * whether that process was left running. A process dumped with --leave-running still owns its TCP
 * connections; a copy restored while it runs answers the same 4-tuples, and the peers see their
 * connections reset. `restore` reads the note and refuses while the original runs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

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

/**
 * Throws ERR_ORIGINAL_RUNNING (exit 8) when `imagesDir` holds a --leave-running dump with TCP
 * connections whose process still runs: restoring now would reset every connection. Otherwise
 * returns a warning for a --leave-running dump's connections (stale: the original went on using
 * them after the dump), or undefined.
 */
export function refuseWhileOriginalRuns(imagesDir: string): string | undefined {
  const record = readDumpRecord(imagesDir);
  if (record === undefined || !record.leftRunning || !record.tcpEstablished) return undefined;
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
