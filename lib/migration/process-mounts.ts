/**
 * Tasks in a mount namespace of their own (`ip netns exec`, systemd's PrivateTmp= and friends).
 * CRIU cannot dump such a namespace from ours ("has unreachable sharing"), so the dump runs CRIU
 * inside the task's mount namespace (process-criu.ts criuForTask): for CRIU that namespace is
 * its own, nothing of it is dumped, and the restore reopens every file by path in the restoring
 * CRIU's namespace. What that needs, checked here before the dump:
 * - every file the tree has open or mapped, and its cwd, must be reachable by the same path in
 *   our namespace (same device and inode); a file on a mount private to the task (its own /tmp)
 *   cannot be: ERR_MIGRATION_PRIVATE_MOUNTS;
 * - fds opened before the task's unshare (stdio inherited from its parent) sit on mounts of OUR
 *   namespace, which CRIU inside the task's cannot look up ("Can't lookup mount=N"): they are
 *   dumped as external files (`file[MNT:INO]`, hex) and handed back on restore with inherit_fd
 *   (an exact copy of the open file, taken with pidfd_getfd);
 * - the whole tree shares one mount namespace: ERR_MIGRATION_MOUNT_NAMESPACES otherwise.
 * inspectTaskMounts checks (criuForTask calls it); externalFilesFor, just before the final dump,
 * makes the dump's `external` and the restores' `inheritFds` (keep the copies until the last restore).
 */
import * as fs from 'node:fs';

import type { CriuOptions } from '../criu';
import { binding } from '../native';
import { processTree } from '../sys/proc';
import { ProcessMigrationError } from './process-errors';

/** A file the tree holds on a mount of our namespace (not of its own): dumped as external. */
export interface ExternalFile {
  /** CRIU's key, `file[<mnt_id hex>:<inode hex>]`: external at dump, inherit_fd key at restore. */
  key: string;
  pid: number;
  fd: number;
  /** The path it was opened by (in our namespace). */
  path: string;
}

export interface TaskMounts {
  /** `/proc/PID/ns/mnt` when the tree's mount namespace is not ours (CRIU must dump from inside it). */
  mntns?: string;
  /** Files to declare external at dump and give back at restore (empty in our namespace). */
  external: ExternalFile[];
}

function mountIds(pid: number | 'self'): Set<number> {
  const ids = new Set<number>();
  for (const line of fs.readFileSync(`/proc/${pid}/mountinfo`, 'latin1').split('\n')) {
    const id = Number(line.split(' ', 1)[0]);
    if (line !== '' && Number.isInteger(id)) ids.add(id);
  }
  return ids;
}

function sameFile(a: fs.BigIntStats, b: fs.BigIntStats): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/** Whether `path`, resolved in our namespace, is the file `stats` describes. */
function reachable(path: string, stats: fs.BigIntStats): boolean {
  try {
    return sameFile(fs.statSync(path, { bigint: true }), stats);
  } catch {
    return false;
  }
}

function readlink(file: string): string | undefined {
  try {
    return fs.readlinkSync(file);
  } catch {
    return undefined;
  }
}

function fdMountId(pid: number, fd: string): number | undefined {
  try {
    const match = /^mnt_id:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'latin1'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** One task's files: private ones go to `privateFiles`, ones on our mounts to `external`. */
function scanTask(pid: number, ours: Set<number>, privateFiles: string[], external: ExternalFile[]): void {
  const own = mountIds(pid);
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return; // gone: CRIU reports what the tree is at dump time
  }
  for (const fd of fds) {
    const target = readlink(`/proc/${pid}/fd/${fd}`);
    // sockets, pipes and anon inodes live on kernel-internal mounts; deleted files CRIU keeps as ghosts
    if (target === undefined || !target.startsWith('/') || target.endsWith(' (deleted)')) continue;
    const mnt = fdMountId(pid, fd);
    let stats: fs.BigIntStats;
    try {
      stats = fs.statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
    } catch {
      continue;
    }
    // Not on a mount of its own namespace (opened before its unshare): external when we can reach it.
    if (mnt !== undefined && !own.has(mnt) && (ours.has(mnt) || reachable(target, stats))) {
      external.push({ key: `file[${mnt.toString(16)}:${stats.ino.toString(16)}]`, pid, fd: Number(fd), path: target });
    } else if (!reachable(target, stats)) privateFiles.push(`${target} (pid ${pid} fd ${fd})`);
  }
  const cwd = readlink(`/proc/${pid}/cwd`);
  try {
    if (cwd !== undefined && !reachable(cwd, fs.statSync(`/proc/${pid}/cwd`, { bigint: true })))
      privateFiles.push(`${cwd} (pid ${pid} working directory)`);
  } catch {
    // gone
  }
  let maps: string;
  try {
    maps = fs.readFileSync(`/proc/${pid}/maps`, 'latin1');
  } catch {
    return;
  }
  const seen = new Set<string>();
  for (const line of maps.split('\n')) {
    const match = /^([0-9a-f]+-[0-9a-f]+) \S+ \S+ \S+ \d+\s+(\/.*)$/.exec(line);
    if (!match || match[2].endsWith(' (deleted)') || seen.has(match[2])) continue;
    seen.add(match[2]);
    try {
      if (!reachable(match[2], fs.statSync(`/proc/${pid}/map_files/${match[1]}`, { bigint: true })))
        privateFiles.push(`${match[2]} (pid ${pid} mapping)`);
    } catch {
      // unmapped meanwhile
    }
  }
}

/**
 * What dumping the tree rooted at `pid` needs about mount namespaces (see the file comment).
 * In our own mount namespace: `{ external: [] }` and nothing else is read. Throws
 * ERR_MIGRATION_PRIVATE_MOUNTS or ERR_MIGRATION_MOUNT_NAMESPACES (phase 'check', server untouched).
 */
export function inspectTaskMounts(pid: number): TaskMounts {
  const ourNs = fs.statSync('/proc/self/ns/mnt');
  const tree = processTree(pid);
  const nsOf = (p: number): fs.Stats | undefined => {
    try {
      return fs.statSync(`/proc/${p}/ns/mnt`);
    } catch {
      return undefined;
    }
  };
  const rootNs = nsOf(pid);
  if (rootNs === undefined || (rootNs.ino === ourNs.ino && rootNs.dev === ourNs.dev)) return { external: [] };
  const others = tree.filter((p) => {
    const ns = nsOf(p);
    return ns !== undefined && (ns.ino !== rootNs.ino || ns.dev !== rootNs.dev);
  });
  if (others.length > 0) {
    throw new ProcessMigrationError(
      `process ${pid} has descendants in other mount namespaces (${others.join(', ')}); CRIU can dump a tree from inside one mount namespace only: start them without their own mount namespace`,
      { code: 'ERR_MIGRATION_MOUNT_NAMESPACES', phase: 'check', serverOn: 'source', pid },
    );
  }
  const ours = mountIds('self');
  const privateFiles: string[] = [];
  const external: ExternalFile[] = [];
  for (const task of tree) scanTask(task, ours, privateFiles, external);
  if (privateFiles.length > 0) {
    const shown =
      privateFiles.slice(0, 8).join(', ') + (privateFiles.length > 8 ? `, and ${privateFiles.length - 8} more` : '');
    throw new ProcessMigrationError(
      `process ${pid} has files open on mounts private to its mount namespace (${shown}); they do not exist where it would be restored: keep them on a shared filesystem (not its private /tmp), or run it without PrivateTmp= / its own mount`,
      { code: 'ERR_MIGRATION_PRIVATE_MOUNTS', phase: 'check', serverOn: 'source', pid },
    );
  }
  return { mntns: `/proc/${pid}/ns/mnt`, external };
}

/** Copies (pidfd_getfd) of the external files, one per key, for inherit_fd at each restore. */
export interface HeldFiles {
  inheritFds: Array<{ key: string; fd: number }>;
  close(): void;
}

export function holdExternalFiles(files: readonly ExternalFile[]): HeldFiles {
  const { pidfdGetfd } = binding();
  const inheritFds: Array<{ key: string; fd: number }> = [];
  const close = (): void => {
    for (const { fd } of inheritFds.splice(0)) fs.closeSync(fd);
  };
  try {
    for (const file of files) {
      if (inheritFds.some((f) => f.key === file.key)) continue;
      inheritFds.push({ key: file.key, fd: pidfdGetfd(file.pid, file.fd) });
    }
  } catch (error) {
    close();
    throw new ProcessMigrationError(
      `cannot take a copy of a file the process holds from our mount namespace: ${(error as Error).message}`,
      {
        code: (error as NodeJS.ErrnoException).code ?? 'ERR_MIGRATION_DUMP_FAILED',
        phase: 'check',
        serverOn: 'source',
        cause: error,
      },
    );
  }
  return { inheritFds, close };
}

/**
 * For the final dump of a task in its own mount namespace (its files are current now): the dump's
 * options (`external` plus base's), the restores' (`inheritFds` plus base's), the held copies
 * (close them when no restore can follow) and the files as text for progress.
 */
export function externalFilesFor(
  pid: number,
  base: CriuOptions,
): { dump: CriuOptions; restore: CriuOptions; held?: HeldFiles; files: string[] } {
  const { external } = inspectTaskMounts(pid);
  if (external.length === 0) return { dump: {}, restore: base, files: [] };
  const held = holdExternalFiles(external);
  return {
    dump: { external: [...(base.external ?? []), ...new Set(external.map((f) => f.key))] },
    restore: { ...base, inheritFds: [...(base.inheritFds ?? []), ...held.inheritFds] },
    held,
    files: external.map((f) => `${f.path} (pid ${f.pid} fd ${f.fd})`),
  };
}
