/**
 * TCP recovery counters of a network namespace, as `nstat` shows them: /proc/net/netstat
 * (TcpExt: TCPTimeouts, TCPLossProbes, TCPSpuriousRTOs, ...) and /proc/net/snmp (Tcp:
 * RetransSegs, ...). /proc/net is the reader's namespace, so another namespace is read by a
 * `cat` run inside it (the system layer's runner, asynchronous); a pid's namespace is read
 * through /proc/PID/net without a child.
 */
import { promises as fsp } from 'node:fs';

import { InvalidArgumentError } from '../errors';
import { run } from './exec';

/** Counters keyed `<Group><Name>` as nstat names them: `TcpExtTCPTimeouts`, `TcpRetransSegs`. */
export type NetCounters = Record<string, number>;

/** The counters that say how a connection recovered after a pause. */
export const RECOVERY_COUNTERS = [
  'TcpExtTCPTimeouts',
  'TcpExtTCPLossProbes',
  'TcpExtTCPSpuriousRTOs',
  'TcpRetransSegs',
  'TcpOutRsts',
  'TcpExtTCPFastRetrans',
] as const;

/**
 * Parses the header/value line pairs of /proc/net/netstat or /proc/net/snmp ("TcpExt: A B" then
 * "TcpExt: 1 2"). Lines of another shape and values that are not integers are skipped.
 */
export function parseNetCounters(text: string): NetCounters {
  const counters: NetCounters = {};
  const lines = text.split('\n');
  for (let i = 0; i + 1 < lines.length; i++) {
    const names = lines[i].trim().split(/\s+/);
    const values = lines[i + 1].trim().split(/\s+/);
    const group = names[0];
    if (!group?.endsWith(':') || values[0] !== group || names.length !== values.length) continue;
    const prefix = group.slice(0, -1);
    for (let k = 1; k < names.length; k++) {
      if (/^-?\d+$/.test(values[k])) counters[`${prefix}${names[k]}`] = Number(values[k]);
    }
    i++;
  }
  return counters;
}

/** `after - before` for every counter in `after` (a counter missing before counts from 0). */
export function counterDelta(before: NetCounters, after: NetCounters): NetCounters {
  const delta: NetCounters = {};
  for (const [name, value] of Object.entries(after)) delta[name] = value - (before[name] ?? 0);
  return delta;
}

export interface ReadNetCountersOptions {
  /** A network namespace path (/run/netns/NAME, /proc/PID/ns/net); ours when neither is given. */
  netns?: string;
  /** A process whose namespace is read (through /proc/PID/net, no child process). */
  pid?: number;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** Reads the TcpExt/Tcp/Ip counters of a namespace (see the options). */
export async function readNetCounters(options: ReadNetCountersOptions = {}): Promise<NetCounters> {
  const { netns, pid } = options;
  if (netns !== undefined && pid !== undefined)
    throw new InvalidArgumentError('pass netns or pid, not both', 'ERR_INVALID_ARG_VALUE');
  if (netns !== undefined && (typeof netns !== 'string' || netns === '' || netns.includes('\0')))
    throw new InvalidArgumentError('netns must be a namespace path', 'ERR_INVALID_ARG_TYPE');
  if (pid !== undefined && (!Number.isInteger(pid) || pid <= 0 || pid > 2 ** 22))
    throw new InvalidArgumentError('pid must be a positive integer', 'ERR_OUT_OF_RANGE');
  if (netns !== undefined) {
    const { stdout } = await run('cat', ['/proc/net/netstat', '/proc/net/snmp'], {
      netns,
      signal: options.signal,
      timeoutMs: options.timeoutMs ?? 10_000,
    });
    return parseNetCounters(stdout);
  }
  const base = `/proc/${pid ?? 'self'}/net`;
  const texts = await Promise.all(
    ['netstat', 'snmp'].map((f) => fsp.readFile(`${base}/${f}`, { encoding: 'utf8', signal: options.signal })),
  );
  return parseNetCounters(texts.join('\n'));
}

/** The recovery counters of a delta (0 where absent), for a benchmark row. */
export function recoveryCounters(delta: NetCounters): Record<(typeof RECOVERY_COUNTERS)[number], number> {
  const out = {} as Record<(typeof RECOVERY_COUNTERS)[number], number>;
  for (const name of RECOVERY_COUNTERS) out[name] = delta[name] ?? 0;
  return out;
}
