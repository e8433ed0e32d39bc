/**
 * Network namespace paths in one place: a process's (/proc/PID/ns/net), ours, a named one
 * (/run/netns/NAME, as `ip netns` makes them), the nsenter arguments that enter one, and the
 * identity (device and inode of the nsfs file) that says whether two paths are one namespace.
 */
import * as fs from 'node:fs';

/** Our own network namespace. */
export const OWN_NETNS = '/proc/self/ns/net';
/** Where `ip netns add NAME` bind-mounts its namespaces. */
const NAMED_NETNS_DIR = '/run/netns';

/** What `ip netns` accepts as a name (it refuses '/', '.' and '..'); kept to a safe set. */
const NETNS_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$/;

/** The path of process `pid`'s namespace of `kind` (default: net). */
export function pidNamespacePath(pid: number | 'self', kind: 'net' | 'pid' | 'time' = 'net'): string {
  return `/proc/${pid}/ns/${kind}`;
}

/** /run/netns/NAME; throws RangeError for a name `ip netns` would not make. */
export function namedNetnsPath(name: string): string {
  if (!NETNS_NAME.test(name) || name === '..') throw new RangeError(`not a network namespace name: ${name}`);
  return `${NAMED_NETNS_DIR}/${name}`;
}

/** nsenter's arguments that run `command args` inside the network namespace at `netns`. */
export function nsenterArgs(netns: string, command: string, args: readonly string[]): string[] {
  return [`--net=${netns}`, '--', command, ...args];
}

export interface NamespaceId {
  dev: number;
  ino: number;
}

/** The identity of the namespace file at `nsPath` (default: ours). Throws like fs.statSync. */
export function namespaceId(nsPath: string = OWN_NETNS): NamespaceId {
  const { dev, ino } = fs.statSync(nsPath);
  return { dev, ino };
}

export function sameNamespace(a: NamespaceId, b: NamespaceId): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/** The network namespace of process `pid`, or undefined when there is no such process. */
export function pidNetnsId(pid: number): NamespaceId | undefined {
  try {
    return namespaceId(pidNamespacePath(pid));
  } catch {
    return undefined;
  }
}

/** statfs f_type of nsfs, the filesystem of every namespace file (linux/magic.h NSFS_MAGIC). */
export const NSFS_MAGIC = 0x6e736673;
/** open(2)'s O_PATH (not in fs.constants): a handle to the file that reads nothing, never blocks. */
const O_PATH = 0o10000000;

/**
 * /proc/<pid|self|thread-self>/ns/net: a procfs magic link, which the kernel resolves only to a
 * namespace. Every other namespace path must name the nsfs file itself, never a symlink.
 */
export function isProcNamespaceLink(nsPath: string): boolean {
  return /^\/proc\/(?:[0-9]+|self|thread-self)\/ns\/net$/.test(nsPath);
}

/**
 * Throws unless `nsPath` is a namespace file. Opened O_PATH and O_NOFOLLOW (except a /proc/PID/ns
 * link), so a FIFO, a device or a symlink there is neither followed nor opened for reading (which
 * could block or have effects), then its filesystem must be nsfs. Throws the open's error for a
 * missing path (ENOENT), and an Error with code 'ERR_INVALID_NETNS' for anything that is not a
 * namespace file (a symlink included). Leaves no fd open.
 */
export function assertNamespaceFile(nsPath: string): void {
  const follow = isProcNamespaceLink(nsPath) ? 0 : fs.constants.O_NOFOLLOW;
  // libuv adds O_CLOEXEC itself.
  const fd = fs.openSync(nsPath, O_PATH | follow);
  try {
    // fstatfs on the O_PATH handle itself, through its /proc/self/fd link: the file just opened.
    if (fs.statfsSync(`/proc/self/fd/${fd}`).type !== NSFS_MAGIC)
      throw Object.assign(new Error(`${nsPath} is not a namespace file`), { code: 'ERR_INVALID_NETNS' });
  } finally {
    fs.closeSync(fd);
  }
}

/** The inode number of our namespace of `kind`, from its link text ("pid:[4026531836]"). */
export function ownNamespaceInode(kind: 'pid' | 'time'): number {
  return parseNamespaceLink(fs.readlinkSync(pidNamespacePath('self', kind)));
}

/** The inode number in a namespace link's text ("net:[4026531840]"); throws RangeError otherwise. */
export function parseNamespaceLink(text: string): number {
  const match = /^[a-z_]+:\[([0-9]+)\]$/.exec(text);
  if (!match) throw new RangeError(`unexpected namespace link ${text}`);
  return Number(match[1]);
}
