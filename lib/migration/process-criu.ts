/**
 * Running CRIU inside a given network namespace. CRIU must share the task's netns to dump it as a
 * task whose sockets are external to the tree (per-connection lock, no netns image), and must run
 * inside the target netns so the restored task lands there. The Criu client spawns
 * `<criuPath> swrk 3`; for another netns we give it a wrapper that execs
 * `nsenter --net=<netns> -- <criu> swrk 3` (nsenter does not fork for a net namespace, so fds 3+
 * and the pid pass through). The wrapper's text is fixed: the netns and criu paths are symlinks
 * next to it, so no caller string is ever parsed by a shell.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Criu } from '../criu';
import { InvalidArgumentError } from '../errors';
import { findExecutable, run } from '../sys/exec';
import { assertNamespaceFile, namespaceId, OWN_NETNS, pidNetnsId, sameNamespace } from '../sys/netns';
import { copyTableCommands, deleteTables as deleteNftTables, listTable, listTables, nftBatch } from '../sys/nft';
import { OWN_TCP_TABLES, parseTcpTable, processTree, socketFds, tcpStateName, tcpTablesOf } from '../sys/proc';
import { ProcessMigrationError } from './process-errors';
import { inspectTaskMounts, type TaskMounts } from './process-mounts';

const WRAPPER = `#!/bin/sh
# node-criu: run criu inside the network namespace that the 'netns' link next to this file names.
d=$(dirname "$0")
exec nsenter "--net=$d/netns" -- "$d/criu" "$@"
`;

// Inside the task's mount namespace "$d/criu" may not exist (its /tmp is private): nsenter opens
// the namespace files first, then execs criu by its real path, which must exist in both.
const MNT_WRAPPER = `#!/bin/sh
# node-criu: run criu inside the network and mount namespaces that the 'netns' and 'mntns' links next to this file name.
d=$(dirname "$0")
c=$(readlink "$d/criu")
exec nsenter "--net=$d/netns" "--mount=$d/mntns" -- "$c" "$@"
`;

/** Same namespace as our own: no wrapper needed. */
function isOwnNetns(netns: string): boolean {
  return sameNamespace(namespaceId(OWN_NETNS), namespaceId(netns));
}

/**
 * Checks that `netns` names a network namespace (a /run/netns/NAME bind mount or a
 * /proc/PID/ns/net link); throws ERR_NETNS_NOT_FOUND otherwise.
 */
export function checkNetns(netns: string, what: string): void {
  if (typeof netns !== 'string' || netns === '')
    throw new InvalidArgumentError(`${what} must be a non-empty path`, 'ERR_INVALID_ARG_TYPE');
  try {
    assertNamespaceFile(netns);
  } catch (error) {
    throw new ProcessMigrationError(
      `${what} ${netns} is not a network namespace (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); create it with 'ip netns add NAME' and pass /run/netns/NAME`,
      {
        code: 'ERR_NETNS_NOT_FOUND',
        phase: 'check',
        serverOn: 'source',
        cause: error,
      },
    );
  }
}

/**
 * The task must run in the namespace CRIU will run in (`netns`, or ours): otherwise CRIU takes it
 * for a task with a network namespace of its own and dumps that namespace too (and the restore
 * creates a new one), which is not a migration into the target. Throws ERR_NETNS_MISMATCH.
 */
export function checkTaskNetns(pid: number, netns: string | undefined, what: string): void {
  const task = pidNetnsId(pid);
  if (task === undefined) return; // the pid check reports a missing process
  if (!sameNamespace(task, namespaceId(netns ?? OWN_NETNS))) {
    throw new ProcessMigrationError(
      `process ${pid} does not run in ${netns ?? 'our network namespace'} (its namespace is net:[${task.ino}]); pass the namespace it runs in as ${what}`,
      { code: 'ERR_NETNS_MISMATCH', phase: 'check', serverOn: 'source', pid },
    );
  }
}

/** A Criu client whose swrk runs in `netns` (our own when undefined), and its cleanup. */
export interface NetnsCriu {
  criu: Criu;
  /** The executable the client spawns (the wrapper, or criu itself). */
  criuPath: string;
  close(): Promise<void>;
}

/**
 * A Criu client whose swrk runs in `netns` (ours when undefined) and, with `mntns` (a
 * /proc/PID/ns/mnt path), also in that mount namespace; `criuPath` must then resolve to the same
 * file there (see criuForTask, which checks it).
 */
export function criuInNetns(criuPath: string, netns: string | undefined, mntns?: string): NetnsCriu {
  if (mntns === undefined && (netns === undefined || isOwnNetns(netns))) {
    const criu = new Criu({ criuPath });
    return { criu, criuPath, close: () => criu.close() };
  }
  if (findExecutable('nsenter') === undefined) {
    throw new ProcessMigrationError(
      'nsenter (util-linux) is not on PATH; it is needed to run CRIU inside another network namespace',
      {
        code: 'ERR_NSENTER_NOT_FOUND',
        phase: 'check',
        serverOn: 'source',
      },
    );
  }
  let dir: string | undefined;
  const wrapper = (() => {
    try {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-criu-netns-'));
      fs.symlinkSync(path.resolve(netns ?? '/proc/self/ns/net'), path.join(dir, 'netns'));
      fs.symlinkSync(mntns === undefined ? path.resolve(criuPath) : fs.realpathSync(criuPath), path.join(dir, 'criu'));
      if (mntns !== undefined) fs.symlinkSync(mntns, path.join(dir, 'mntns'));
      const file = path.join(dir, 'criu-in-netns');
      fs.writeFileSync(file, mntns === undefined ? WRAPPER : MNT_WRAPPER, { mode: 0o700 });
      return file;
    } catch (error) {
      // A full or read-only temporary directory: nothing half-made stays behind.
      if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
      const e = error as NodeJS.ErrnoException;
      throw new ProcessMigrationError(
        `cannot write the CRIU wrapper for ${netns ?? mntns} in ${os.tmpdir()}: ${e.message}`,
        {
          code: e.code ?? 'ERR_MIGRATION_TMPDIR',
          phase: 'check',
          serverOn: 'source',
          cause: error,
        },
      );
    }
  })();
  const wrapperDir = dir as string;
  const criu = new Criu({ criuPath: wrapper });
  return {
    criu,
    criuPath: wrapper,
    close: async () => {
      await criu.close();
      fs.rmSync(wrapperDir, { recursive: true, force: true });
    },
  };
}

/** A Criu client for dumping one task tree on this host, and what that dump needs (criuForTask). */
export interface TaskCriu extends NetnsCriu {
  /**
   * The tree's mount namespace when it is not ours (CRIU runs inside it), and the files it holds
   * on our mounts: pass `external.map((f) => f.key)` as the dump's `external`, and give each key
   * back at every restore of these images as `inheritFds` (holdExternalFiles on one host; across
   * hosts the target opens `path` itself).
   */
  mounts: TaskMounts;
}

/**
 * The dump side of a migration: a Criu client in `netns` (the task's network namespace; ours when
 * undefined) and, when the tree rooted at `pid` has a mount namespace of its own, inside that one
 * (see process-mounts.ts). Throws before starting anything: ERR_MIGRATION_PRIVATE_MOUNTS,
 * ERR_MIGRATION_MOUNT_NAMESPACES, ERR_MIGRATION_CRIU_UNREACHABLE (criu's real path is not the
 * same file inside the task's mount namespace), ERR_NSENTER_NOT_FOUND. `close()` when done.
 */
export function criuForTask(criuPath: string, task: { netns?: string; pid: number }): TaskCriu {
  const mounts = inspectTaskMounts(task.pid);
  if (mounts.mntns !== undefined) {
    let real: string | undefined;
    let same = false;
    try {
      real = fs.realpathSync(criuPath);
      same = !/[\n\r]/.test(real) && sameFile(fs.statSync(real), fs.statSync(`/proc/${task.pid}/root${real}`));
    } catch {
      // not there
    }
    if (!same) {
      throw new ProcessMigrationError(
        `CRIU runs inside the mount namespace of process ${task.pid} to dump it, but ${real ?? criuPath} is not the same file there; install CRIU on a filesystem the process sees (not in its private mounts)`,
        { code: 'ERR_MIGRATION_CRIU_UNREACHABLE', phase: 'check', serverOn: 'source', pid: task.pid },
      );
    }
  }
  return { ...criuInNetns(criuPath, task.netns, mounts.mntns), mounts };
}

function sameFile(a: fs.Stats, b: fs.Stats): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

const NFT_TIMEOUT_MS = 10_000;

function nftOptions(netns: string | undefined): { netns?: string; timeoutMs: number } {
  return netns === undefined ? { timeoutMs: NFT_TIMEOUT_MS } : { netns, timeoutMs: NFT_TIMEOUT_MS };
}

/** Names of CRIU's lock tables ('inet CRIU-...') in `netns`; [] when nft is missing or fails. */
export async function criuLockTables(netns: string | undefined): Promise<string[]> {
  try {
    return (await listTables(nftOptions(netns)))
      .filter((t) => t.name.startsWith('CRIU-'))
      .map((t) => `${t.family} ${t.name}`);
  } catch {
    return [];
  }
}

/** Deletes the given 'family name' tables in `netns` (best effort); resolves with the ones deleted. */
export async function deleteTables(netns: string | undefined, tables: string[]): Promise<string[]> {
  const deleted: string[] = [];
  for (const table of tables) {
    const [family, name] = table.split(' ');
    try {
      if ((await deleteNftTables([{ family, name }], nftOptions(netns))).length > 0) deleted.push(table);
    } catch {
      // left for the caller's check to report
    }
  }
  return deleted;
}

/**
 * Copies CRIU's lock table `table` ('inet CRIU-...', holding the dumped connections' 4-tuples)
 * from `from` into `to` under the name `name`. Between the address arriving on the target and
 * CRIU's restore creating its own lock there, a peer's retransmission would otherwise meet a
 * namespace that owns the address but no socket, and be answered with RST. Resolves with the new
 * table ('inet NAME') or undefined when it could not be made.
 */
async function copyLockTable(
  from: string | undefined,
  table: string,
  to: string | undefined,
  name: string,
): Promise<string | undefined> {
  const [family, source] = table.split(' ');
  try {
    const objects = await listTable({ family, name: source }, nftOptions(from));
    if (objects.length === 0) return undefined;
    // Input only: the restored server answers at once, and a copied output chain would drop its
    // replies until the copy goes, leaving them to a retransmission timer with no RTT sample (1 s).
    await nftBatch(copyTableCommands(objects, name, { hooks: ['input'] }), nftOptions(to));
    return `${family} ${name}`;
  } catch {
    return undefined;
  }
}

/**
 * After the dump: copies the lock table CRIU made in `source` (one not in `before`) into `target`
 * as `node-criu-hold-<pid>-<random>` (see copyLockTable). `dumpLock` is CRIU's table, `hold` the
 * copy (undefined when there was nothing to copy or it could not be made).
 */
export async function holdInTarget(
  source: string | undefined,
  target: string | undefined,
  before: readonly string[],
  pid: number,
): Promise<{ dumpLock?: string; hold?: string }> {
  const dumpLock = (await criuLockTables(source)).find((t) => !before.includes(t));
  if (dumpLock === undefined) return {};
  const hold = await copyLockTable(source, dumpLock, target, `node-criu-hold-${pid}-${randomBytes(3).toString('hex')}`);
  return hold === undefined ? { dumpLock } : { dumpLock, hold };
}

/** Deletes CRIU's lock tables in `netns` that are not in `before` (best effort). */
export async function deleteNewLockTables(netns: string | undefined, before: readonly string[]): Promise<void> {
  const made = (await criuLockTables(netns)).filter((t) => !before.includes(t));
  if (made.length > 0) await deleteTables(netns, made);
}

/** A TCP row's 4-tuple key: "local-remote" in /proc/net/tcp's hex form. */
function tupleKey(row: { local: string; remote: string }): string {
  return `${row.local}-${row.remote}`;
}

/** The inodes of the sockets the tree rooted at `pid` holds (any kind). */
export function treeSocketInodes(pid: number): Set<string> {
  return new Set(processTree(pid).flatMap((task) => socketFds(task).map((s) => s.inode)));
}

/** What processTcpSockets read: every socket inode of the tree, and the connected TCP ones' 4-tuples. */
export interface TreeSockets {
  inodes: Set<string>;
  tuples: Map<string, string>;
}

/** The tree's sockets and its connected TCP sockets' 4-tuples by inode (see processTcpTuples). */
export function processTcpSockets(pid: number): TreeSockets {
  const inodes = treeSocketInodes(pid);
  const tuples = new Map<string, string>();
  if (inodes.size === 0) return { inodes, tuples };
  for (const row of parseTcpTable(tcpTablesOf(pid))) {
    if (row.state !== '0A' && inodes.has(row.inode)) tuples.set(row.inode, tupleKey(row));
  }
  return { inodes, tuples };
}

/**
 * The 4-tuples ("local-remote" in /proc/net/tcp's hex form) of the connected TCP sockets the tree
 * rooted at `pid` holds (read before the dump, while they are stable).
 */
export function processTcpTuples(pid: number): Set<string> {
  return new Set(processTcpSockets(pid).tuples.values());
}

/**
 * Sockets in `netns` that already have one of `tuples` (any state: a lingering TIME_WAIT or an
 * orphan in FIN_WAIT counts, they have no process). CRIU cannot restore a connection whose
 * 4-tuple exists in the namespace: libsoccr's repair-mode connect fails with EADDRNOTAVAIL
 * ("Can't connect inet socket back: Cannot assign requested address", then "Unable to open
 * fd=N"). Resolves with "STATE xN" summaries ([] when none or when /proc/net/tcp cannot be read).
 */
export async function conflictingSockets(netns: string | undefined, tuples: Set<string>): Promise<string[]> {
  if (tuples.size === 0) return [];
  let text: string;
  if (netns === undefined) text = tcpTablesOf('self');
  else {
    // /proc/self/net shows the namespace of the reader, so the reader runs inside `netns`: one
    // reader for both tables (a process start is most of the cost); without IPv6 there is no
    // tcp6 and what cat read of the rest still counts. A constant script, the paths as arguments.
    text = await run('sh', ['-c', 'cat "$@" 2>/dev/null; exit 0', 'sh', ...OWN_TCP_TABLES], {
      netns,
      timeoutMs: NFT_TIMEOUT_MS,
    }).then(
      (r) => r.stdout,
      () => '',
    );
  }
  const counts = new Map<string, number>();
  for (const row of parseTcpTable(text)) {
    if (!tuples.has(tupleKey(row))) continue;
    const name = tcpStateName(row.state);
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return [...counts].map(([state, n]) => `${state} x${n}`);
}
