/**
 * Running CRIU inside a given network namespace. CRIU must share the task's netns to dump it as a
 * task whose sockets are external to the tree (per-connection lock, no netns image), and must run
 * inside the target netns so the restored task lands there. The Criu client spawns
 * `<criuPath> swrk 3`; for another netns we give it a wrapper that execs
 * `nsenter --net=<netns> -- <criu> swrk 3` (nsenter does not fork for a net namespace, so fds 3+
 * and the pid pass through). The wrapper's text is fixed: the netns and criu paths are symlinks
 * next to it, so no caller string is ever parsed by a shell.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Criu } from '../criu';
import { InvalidArgumentError, NodeCriuError } from '../errors';
import { ProcessMigrationError } from './process-errors';

const WRAPPER = `#!/bin/sh
# node-criu: run criu inside the network namespace that the 'netns' link next to this file names.
d=$(dirname "$0")
exec nsenter "--net=$d/netns" -- "$d/criu" "$@"
`;

/** An executable named `name` on PATH, else undefined. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Same inode as our own netns: no wrapper needed. */
function isOwnNetns(netns: string): boolean {
  const ours = fs.statSync('/proc/self/ns/net');
  const theirs = fs.statSync(netns);
  return ours.dev === theirs.dev && ours.ino === theirs.ino;
}

/**
 * Checks that `netns` names a network namespace (a /run/netns/NAME bind mount or a
 * /proc/PID/ns/net link); throws ERR_NETNS_NOT_FOUND otherwise.
 */
export function checkNetns(netns: string, what: string): void {
  if (typeof netns !== 'string' || netns === '')
    throw new InvalidArgumentError(`${what} must be a non-empty path`, 'ERR_INVALID_ARG_TYPE');
  let fd: number | undefined;
  try {
    fd = fs.openSync(netns, 'r');
    // nsfs files report size 0 and live on the nsfs filesystem; a plain file would be accepted by
    // open() but refused by setns(), so compare the device with our own namespace's.
    const ns = fs.fstatSync(fd);
    const own = fs.statSync('/proc/self/ns/net');
    if (ns.dev !== own.dev) throw new NodeCriuError('not a namespace file', { code: 'ERR_NOT_A_NAMESPACE' });
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
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * The task must run in the namespace CRIU will run in (`netns`, or ours): otherwise CRIU takes it
 * for a task with a network namespace of its own and dumps that namespace too (and the restore
 * creates a new one), which is not a migration into the target. Throws ERR_NETNS_MISMATCH.
 */
export function checkTaskNetns(pid: number, netns: string | undefined, what: string): void {
  let task: fs.Stats;
  try {
    task = fs.statSync(`/proc/${pid}/ns/net`);
  } catch {
    return; // the pid check reports a missing process
  }
  const expected = fs.statSync(netns ?? '/proc/self/ns/net');
  if (task.ino !== expected.ino || task.dev !== expected.dev) {
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

export function criuInNetns(criuPath: string, netns: string | undefined): NetnsCriu {
  if (netns === undefined || isOwnNetns(netns)) {
    const criu = new Criu({ criuPath });
    return { criu, criuPath, close: () => criu.close() };
  }
  if (findOnPath('nsenter') === undefined) {
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
      fs.symlinkSync(path.resolve(netns), path.join(dir, 'netns'));
      fs.symlinkSync(path.resolve(criuPath), path.join(dir, 'criu'));
      const file = path.join(dir, 'criu-in-netns');
      fs.writeFileSync(file, WRAPPER, { mode: 0o700 });
      return file;
    } catch (error) {
      // A full or read-only temporary directory: nothing half-made stays behind.
      if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
      const e = error as NodeJS.ErrnoException;
      throw new ProcessMigrationError(`cannot write the CRIU wrapper for ${netns} in ${os.tmpdir()}: ${e.message}`, {
        code: e.code ?? 'ERR_MIGRATION_TMPDIR',
        phase: 'check',
        serverOn: 'source',
        cause: error,
      });
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

/** Runs `nft` in `netns` (argument array, no shell); undefined when nft is missing or fails. */
export function nftInNetns(netns: string | undefined, args: string[], input?: string): string | undefined {
  const nft = findOnPath('nft');
  if (nft === undefined) return undefined;
  const [command, argv] = netns === undefined ? [nft, args] : ['nsenter', [`--net=${netns}`, '--', nft, ...args]];
  try {
    return execFileSync(command, argv, {
      encoding: 'utf8',
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'ignore'],
      timeout: 10000,
      ...(input !== undefined ? { input } : {}),
    });
  } catch {
    return undefined;
  }
}

/** Names of CRIU's lock tables ('inet CRIU-...') in `netns`. */
export function criuLockTables(netns: string | undefined): string[] {
  const out = nftInNetns(netns, ['list', 'tables']) ?? '';
  return out
    .split('\n')
    .map((line) => /^table (\S+) (CRIU-\S+)$/.exec(line.trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => `${m[1]} ${m[2]}`);
}

/** Deletes the given 'family name' tables in `netns`; returns the ones deleted. */
export function deleteTables(netns: string | undefined, tables: string[]): string[] {
  const deleted: string[] = [];
  for (const table of tables) {
    const [family, name] = table.split(' ');
    if (nftInNetns(netns, ['delete', 'table', family, name]) !== undefined) deleted.push(table);
  }
  return deleted;
}

/**
 * Copies CRIU's lock table `table` ('inet CRIU-...', holding the dumped connections' 4-tuples)
 * from `from` into `to` under the name `name`. Between the address arriving on the target and
 * CRIU's restore creating its own lock there, a peer's retransmission would otherwise meet a
 * namespace that owns the address but no socket, and be answered with RST. Returns the new
 * table ('inet NAME') or undefined when it could not be made.
 */
export function copyLockTable(
  from: string | undefined,
  table: string,
  to: string | undefined,
  name: string,
): string | undefined {
  const [family, source] = table.split(' ');
  const text = nftInNetns(from, ['list', 'table', family, source]);
  if (text === undefined) return undefined;
  const renamed = text.replace(`table ${family} ${source} {`, `table ${family} ${name} {`);
  if (renamed === text) return undefined;
  return nftInNetns(to, ['-f', '-'], renamed) !== undefined ? `${family} ${name}` : undefined;
}

const TCP_STATES = [
  '',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
  'NEW_SYN_RECV',
];

/** Rows of /proc/net/tcp and tcp6 text: [local, remote, state (hex), inode]. */
function tcpRows(text: string): Array<[string, string, string, string]> {
  const rows: Array<[string, string, string, string]> = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !/^\d+:$/.test(f[0])) continue;
    rows.push([f[1], f[2], f[3], f[9]]);
  }
  return rows;
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/**
 * The 4-tuples ("local-remote" in /proc/net/tcp's hex form) of the connected TCP sockets process
 * `pid` holds (its own fds only; read before the dump, while they are stable).
 */
export function processTcpTuples(pid: number): Set<string> {
  const inodes = new Set<string>();
  try {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    return new Set();
  }
  const tuples = new Set<string>();
  for (const [local, remote, state, inode] of tcpRows(
    readOr(`/proc/${pid}/net/tcp`) + readOr(`/proc/${pid}/net/tcp6`),
  )) {
    if (state !== '0A' && inodes.has(inode)) tuples.add(`${local}-${remote}`);
  }
  return tuples;
}

/**
 * Sockets in `netns` that already have one of `tuples` (any state: a lingering TIME_WAIT or an
 * orphan in FIN_WAIT counts, they have no process). CRIU cannot restore a connection whose
 * 4-tuple exists in the namespace: libsoccr's repair-mode connect fails with EADDRNOTAVAIL
 * ("Can't connect inet socket back: Cannot assign requested address", then "Unable to open
 * fd=N"). Returns "STATE xN" summaries ([] when none or when /proc/net/tcp cannot be read).
 */
export function conflictingSockets(netns: string | undefined, tuples: Set<string>): string[] {
  if (tuples.size === 0) return [];
  let text: string;
  try {
    text =
      netns === undefined
        ? readOr('/proc/self/net/tcp') + readOr('/proc/self/net/tcp6')
        : execFileSync('nsenter', [`--net=${netns}`, '--', 'cat', '/proc/self/net/tcp', '/proc/self/net/tcp6'], {
            encoding: 'utf8',
            stdio: ['ignore', 'pipe', 'ignore'],
            timeout: 10000,
          });
  } catch (error) {
    text = String((error as { stdout?: string }).stdout ?? '');
  }
  const counts = new Map<string, number>();
  for (const [local, remote, state] of tcpRows(text)) {
    if (!tuples.has(`${local}-${remote}`)) continue;
    const name = TCP_STATES[parseInt(state, 16)] ?? state;
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return [...counts].map(([state, n]) => `${state} x${n}`);
}
