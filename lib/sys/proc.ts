/**
 * /proc, read one way for everyone: a process's stat fields and status lines, its start time,
 * threads, children and tree, its sockets, and /proc/net/tcp{,6} rows. The parsers are pure (they
 * take the text); the readers return undefined when the process does not exist.
 */
import * as fs from 'node:fs';

function readOrUndefined(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'latin1');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw error;
  }
}

/**
 * The fields of a /proc/<pid>/stat text from field 3 (state) on: field N is `[N - 3]`. The command
 * name (field 2) may hold spaces and parentheses, so the fields are those after its last ')'.
 */
export function parseStatFields(text: string): string[] {
  return text
    .slice(text.lastIndexOf(')') + 2)
    .trimEnd()
    .split(' ');
}

/** Field numbers of /proc/<pid>/stat (proc(5)) that callers read. */
export const STAT = { state: 3, ppid: 4, startTime: 22, exitCode: 52 } as const;

/** Field `n` (numbered as in proc(5)) of parsed stat fields. */
export function statField(fields: readonly string[], n: number): string | undefined {
  return fields[n - 3];
}

/** /proc/<pid>/stat's fields from field 3 on (see parseStatFields); undefined when there is no such process. */
export function procStatFields(pid: number | 'self'): string[] | undefined {
  const text = readOrUndefined(`/proc/${pid}/stat`);
  return text === undefined ? undefined : parseStatFields(text);
}

/** State (field 3) and start time (field 22, clock ticks since boot) of a process; undefined if it does not exist. */
export function procStat(pid: number | 'self'): { state: string; startTime: string } | undefined {
  const fields = procStatFields(pid);
  if (fields === undefined) return undefined;
  const state = statField(fields, STAT.state);
  const startTime = statField(fields, STAT.startTime);
  if (state === undefined || startTime === undefined || !/^[0-9]+$/.test(startTime))
    throw new Error(`unexpected /proc/${pid}/stat`);
  return { state, startTime };
}

/** A process's start time (clock ticks since boot), or undefined when it is gone or unreadable. */
export function startTimeOf(pid: number): string | undefined {
  try {
    return procStat(pid)?.startTime;
  } catch {
    return undefined;
  }
}

/** The "Key:\tvalue" lines of a /proc/<pid>/status text. */
export function parseStatus(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
  }
  return fields;
}

/** /proc/<pid>/status as a map; undefined when there is no such process (other errors thrown). */
export function procStatus(pid: number | 'self'): Map<string, string> | undefined {
  const text = readOrUndefined(`/proc/${pid}/status`);
  return text === undefined ? undefined : parseStatus(text);
}

/** The one-letter state (R, S, D, T, t, Z, X...) of a status map's State line ("S (sleeping)"). */
export function stateLetter(status: Map<string, string>): string | undefined {
  return status.get('State')?.split(' ')[0];
}

/** The state letter of process `pid` from its status; undefined when it does not exist or cannot be read. */
export function procState(pid: number): string | undefined {
  try {
    const status = procStatus(pid);
    return status === undefined ? undefined : stateLetter(status);
  } catch {
    return undefined;
  }
}

/** The thread ids of process `pid` ([] when it is gone). */
export function threadIds(pid: number): number[] {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).map(Number);
  } catch {
    return [];
  }
}

/** The children of every thread of `pid`. */
export function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const tid of threadIds(pid)) {
    try {
      const text = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1').trim();
      if (text) children.push(...text.split(/\s+/).map(Number));
    } catch {
      // thread gone
    }
  }
  return children;
}

/** Whether a process (or thread) with this id exists, zombies included. */
export function processExists(pid: number): boolean {
  return fs.existsSync(`/proc/${pid}`);
}

/** `root` and all its descendants, root first (bounded, so a fork storm cannot make it run forever). */
export function processTree(root: number): number[] {
  const seen = new Set<number>();
  const queue = [root];
  while (queue.length > 0 && seen.size < 100_000) {
    const pid = queue.shift() as number;
    if (seen.has(pid)) continue;
    seen.add(pid);
    if (processExists(pid)) queue.push(...childrenOf(pid));
  }
  return [...seen];
}

/** The socket inode in an fd link's text ("socket:[12345]"), else undefined. */
export function socketInode(link: string): string | undefined {
  return /^socket:\[(\d+)\]$/.exec(link)?.[1];
}

/** Process `pid`'s fds that are sockets, with their inodes ([] when it is gone). */
export function socketFds(pid: number): Array<{ fd: number; inode: string }> {
  let entries: string[];
  try {
    entries = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
  const sockets: Array<{ fd: number; inode: string }> = [];
  for (const entry of entries) {
    try {
      const inode = socketInode(fs.readlinkSync(`/proc/${pid}/fd/${entry}`));
      if (inode !== undefined) sockets.push({ fd: Number(entry), inode });
    } catch {
      // closed meanwhile
    }
  }
  return sockets;
}

/** A row of /proc/net/tcp or tcp6: addresses in its hex form ("0100007F:1F90"), state in hex. */
export interface TcpRow {
  local: string;
  remote: string;
  /** "01" (ESTABLISHED) ... "0A" (LISTEN). */
  state: string;
  inode: string;
}

/** The rows of /proc/net/tcp and tcp6 texts (headers and malformed lines skipped). */
export function parseTcpTable(text: string): TcpRow[] {
  const rows: TcpRow[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !/^\d+:$/.test(f[0])) continue;
    rows.push({ local: f[1], remote: f[2], state: f[3], inode: f[9] });
  }
  return rows;
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

/** The name of a /proc/net/tcp state ("0A" → "LISTEN"); the hex itself when unknown. */
export function tcpStateName(hex: string): string {
  return TCP_STATES[parseInt(hex, 16)] || hex;
}

/** Where a reader finds the TCP sockets of its own network namespace (read from inside another one). */
export const OWN_TCP_TABLES = ['/proc/self/net/tcp', '/proc/self/net/tcp6'] as const;

/** The text of /proc/<pid>/net/tcp and tcp6 (the namespace of that process); '' for what cannot be read. */
export function tcpTablesOf(pid: number | 'self'): string {
  let text = '';
  for (const file of ['tcp', 'tcp6']) {
    try {
      text += fs.readFileSync(`/proc/${pid}/net/${file}`, 'latin1');
    } catch {
      // no IPv6, or the process is gone
    }
  }
  return text;
}

/** The pid /proc calls "self": ours only when /proc was mounted for our pid namespace. */
export function procSelfPid(): number {
  return Number(fs.readlinkSync('/proc/self'));
}

/** Seconds since boot (/proc/uptime's first field). */
export function uptimeSeconds(): number {
  return Number(fs.readFileSync('/proc/uptime', 'latin1').split(' ')[0]);
}

/** Clock ticks per second of /proc's times (USER_HZ, 100 on every Linux architecture Node runs on). */
export const USER_HZ = 100;

/** The pid tracing `pid` (0: none); undefined when `pid` is gone. */
export function tracerPid(pid: number): number | undefined {
  try {
    const value = procStatus(pid)?.get('TracerPid');
    return value === undefined ? undefined : Number(value);
  } catch {
    return undefined;
  }
}

/**
 * A listening socket's accept queue (the rx_queue of its LISTEN row, found by inode) and the
 * handshakes in progress on its port (SYN_RECV rows, local port `port`), from /proc/net/tcp{,6}
 * texts. undefined when no LISTEN row has that inode.
 */
export function listenerBacklog(
  text: string,
  inode: string,
  port: number,
): { queued: number; handshakes: number } | undefined {
  let queued: number | undefined;
  let handshakes = 0;
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !/^\d+:$/.test(f[0])) continue;
    if (f[3] === '0A' && f[9] === inode) queued = parseInt(f[4].split(':')[1] ?? '', 16);
    else if (f[3] === '03' && parseInt(f[1].split(':')[1] ?? '', 16) === port) handshakes++;
  }
  return queued === undefined || Number.isNaN(queued) ? undefined : { queued, handshakes };
}

/** The text of our own namespace's /proc/net/tcp and tcp6, read without blocking the loop. */
export async function ownTcpTables(): Promise<string> {
  const texts = await Promise.all(OWN_TCP_TABLES.map((file) => fs.promises.readFile(file, 'latin1').catch(() => '')));
  return texts.join('');
}
