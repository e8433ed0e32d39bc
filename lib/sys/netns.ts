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

/**
 * Whether `nsPath` is a namespace file: opens it and compares its device with our own namespace's
 * (nsfs files share one device; a plain file opens too, but setns would refuse it). Throws the
 * open's error for a missing path, and an Error with code 'ERR_NOT_A_NAMESPACE' for another file.
 */
export function assertNamespaceFile(nsPath: string): void {
  const fd = fs.openSync(nsPath, 'r');
  try {
    if (fs.fstatSync(fd).dev !== fs.statSync(OWN_NETNS).dev)
      throw Object.assign(new Error(`${nsPath} is not a namespace file`), { code: 'ERR_NOT_A_NAMESPACE' });
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
