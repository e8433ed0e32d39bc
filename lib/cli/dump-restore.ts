/** `node-criu dump` and `node-criu restore`: one CRIU dump or restore, optionally inside a network namespace. */
import * as fs from 'node:fs';
import * as path from 'node:path';

import type { CriuNetworkLock, CriuOptions } from '../criu';
import { checkNetns, checkTaskNetns, criuInNetns } from '../migration/process-criu';
import { checkPid } from '../migration/process-options';
import { startTimeOf } from '../sys/proc';
import { checkPrivateDirectory, ensurePrivateDirectory } from '../security';
import {
  CliError,
  COMMON_OPTIONS,
  EXIT,
  parse,
  positiveInteger,
  printResult,
  requireRoot,
  resolveCriu,
  UsageError,
  type Output,
} from './common';
import { checkOriginal, writeDumpRecord } from './dump-record';

export const DUMP_HELP = `Usage: node-criu dump --pid PID --images-dir DIR [options]

Checkpoints the process tree rooted at PID into DIR with CRIU, TCP connections included
(--tcp-established, locked with nftables). By default the tree is killed after the dump (restore
it with 'node-criu restore'); --leave-running keeps it running. A process left running still owns
its connections: 'node-criu restore' refuses these images until it has stopped (a restored copy
beside it would reset every connection). To move a running process, use 'node-criu migrate'.

Options:
  --pid PID              root of the tree to dump (required)
  --images-dir DIR       where the images go (required; created 0700 if missing)
  --netns PATH           the network namespace the tree runs in (e.g. /run/netns/NAME);
                         CRIU runs inside it (default: ours)
  --leave-running        keep the tree running after the dump
  --network-lock METHOD  nftables (default), iptables or skip
  --shell-job            the tree is a shell job (has a controlling terminal)
  --criu-path PATH       the criu executable to use
  --json                 print one JSON document on stdout
  -q, --quiet            no progress on stderr
  -h, --help             this help

Exit codes: 0 dumped, 1 CRIU failed (see its log), 2 usage, 3 not root / no CRIU, 4 no such pid or namespace.`;

export const RESTORE_HELP = `Usage: node-criu restore --images-dir DIR [options]

Restores a process tree CRIU dumped into DIR (with its TCP connections), detached, and prints
its pid.

Options:
  --images-dir DIR       the images (required)
  --netns PATH           the network namespace to restore into (e.g. /run/netns/NAME;
                         default: ours); it must own the addresses the connections used
  --network-lock METHOD  must match the dump: nftables (default), iptables or skip
  --shell-job            the tree was dumped as a shell job
  --criu-path PATH       the criu executable to use
  --json                 print one JSON document on stdout
  -q, --quiet            no progress on stderr
  -h, --help             this help

Refused (exit 8, ERR_ORIGINAL_RUNNING) while the process dumped into DIR with --leave-running
still runs: it owns the connections, and a restored copy beside it would reset them all. Once it
has stopped, the restore runs with a warning: such a dump's connections are stale.

Exit codes: 0 restored, 1 CRIU failed (see its log), 2 usage, 3 not root / no CRIU, 4 no such
directory or namespace, 8 the dumped process still runs (stop it first).`;

const LOCKS: readonly CriuNetworkLock[] = ['nftables', 'iptables', 'skip'];

function networkLock(value: string | undefined): CriuNetworkLock {
  if (value === undefined) return 'nftables';
  if (!(LOCKS as readonly string[]).includes(value))
    throw new UsageError(`--network-lock must be one of ${LOCKS.join(', ')}, got '${value}'`);
  return value as CriuNetworkLock;
}

const SHARED = {
  ...COMMON_OPTIONS,
  'images-dir': { type: 'string' },
  netns: { type: 'string' },
  'network-lock': { type: 'string' },
  'shell-job': { type: 'boolean' },
} as const;

function criuOptions(values: { 'network-lock'?: string; 'shell-job'?: boolean }): CriuOptions {
  return {
    tcpEstablished: true,
    networkLock: networkLock(values['network-lock']),
    ...(values['shell-job'] ? { shellJob: true } : {}),
  };
}

export async function dumpCommand(args: string[], out: Output): Promise<number> {
  const values = parse(args, { ...SHARED, pid: { type: 'string' }, 'leave-running': { type: 'boolean' } });
  const pid = positiveInteger(values.pid, '--pid');
  if (pid === undefined) throw new UsageError('--pid is required');
  if (values['images-dir'] === undefined) throw new UsageError('--images-dir is required');
  const options = criuOptions(values);
  requireRoot();
  checkPid(pid);
  if (values.netns !== undefined) checkNetns(values.netns, '--netns');
  checkTaskNetns(pid, values.netns, '--netns');
  const { command, version } = await resolveCriu(values['criu-path'], false, out);
  // 0700 if created; an existing group/world-writable or foreign directory is refused.
  const imagesDir = ensurePrivateDirectory(values['images-dir'], '--images-dir');
  const startTime = startTimeOf(pid);
  const runner = criuInNetns(command.path, values.netns);
  try {
    out.progress(`dumping process ${pid} into ${imagesDir} with CRIU ${version.text}`);
    const started = performance.now();
    const result = await runner.criu.dump({
      ...options,
      pid,
      imagesDir,
      ...(values['leave-running'] ? { leaveRunning: true } : {}),
    });
    const ms = Math.round(performance.now() - started);
    const leftRunning = values['leave-running'] === true;
    if (startTime !== undefined)
      writeDumpRecord(imagesDir, { pid, startTime, leftRunning, tcpEstablished: options.tcpEstablished === true });
    out.progress(`dumped in ${ms} ms`);
    if (leftRunning)
      out.progress(
        `process ${pid} keeps running and owns its TCP connections: 'node-criu restore' of these images is refused until it has stopped`,
      );
    printResult(
      out,
      {
        command: 'dump',
        pid,
        imagesDir,
        ms,
        leftRunning,
        ...(result.logFile ? { logFile: result.logFile } : {}),
      },
      [`dumped process ${pid} into ${imagesDir} (${ms} ms)${leftRunning ? '; it keeps running' : ''}`],
    );
    return EXIT.OK;
  } finally {
    await runner.close();
  }
}

export async function restoreCommand(args: string[], out: Output): Promise<number> {
  const values = parse(args, SHARED);
  if (values['images-dir'] === undefined) throw new UsageError('--images-dir is required');
  const options = criuOptions(values);
  requireRoot();
  const imagesDir = path.resolve(values['images-dir']);
  if (!fs.existsSync(path.join(imagesDir, 'inventory.img'))) {
    throw new CliError(`${imagesDir} holds no CRIU dump (no inventory.img)`, EXIT.NOT_FOUND, 'ERR_IMAGES_NOT_FOUND');
  }
  // A restore runs as root what the images say: the directory gets the dump's checks (never created).
  checkPrivateDirectory(imagesDir, '--images-dir');
  const staleConnections = await checkOriginal(imagesDir);
  if (staleConnections !== undefined) out.progress(`warning: ${staleConnections}`);
  if (values.netns !== undefined) checkNetns(values.netns, '--netns');
  const { command, version } = await resolveCriu(values['criu-path'], false, out);
  const runner = criuInNetns(command.path, values.netns);
  try {
    out.progress(`restoring from ${imagesDir} with CRIU ${version.text}`);
    const started = performance.now();
    const result = await runner.criu.restore({ ...options, imagesDir });
    const ms = Math.round(performance.now() - started);
    printResult(
      out,
      {
        command: 'restore',
        pid: result.pid,
        imagesDir,
        ms,
        ...(staleConnections !== undefined ? { warning: staleConnections } : {}),
        ...(result.logFile ? { logFile: result.logFile } : {}),
      },
      [`restored process ${result.pid} from ${imagesDir} (${ms} ms)`],
    );
    return EXIT.OK;
  } finally {
    await runner.close();
  }
}
