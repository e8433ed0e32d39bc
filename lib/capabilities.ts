/**
 * Which Linux capability an operation lacked, decided in one place. When the kernel (or CRIU, or
 * nft) says EPERM/EACCES, the typed error gets `capability` (the first missing one),
 * `missingCapabilities` and a hint in its message saying what to do. "Missing" is read from this
 * process's effective set (/proc/self/status CapEff), so the answer is precise: a process that
 * has the capability and still gets EPERM (a user namespace, an LSM, a sysctl) is told what the
 * operation needs without claiming what is absent.
 *
 * What each operation needs, and how that was established: docs/reliability/security.md,
 * section 5 (CRIU needs CAP_SYS_ADMIN even with CAP_CHECKPOINT_RESTORE, so the hint asks for it).
 */
import { procStatus } from './sys/proc';

const CAPABILITY_BITS = {
  CAP_DAC_OVERRIDE: 1,
  CAP_KILL: 5,
  CAP_SETUID: 7,
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
  CAP_SYS_RESOURCE: 24,
  CAP_CHECKPOINT_RESTORE: 40,
} as const;

export type CapabilityName = keyof typeof CAPABILITY_BITS;

/** The effective capability mask of a process (CapEff), or undefined if /proc cannot say. */
export function effectiveCapabilityMask(pid: number | 'self' = 'self'): bigint | undefined {
  try {
    const capEff = procStatus(pid)?.get('CapEff');
    return capEff !== undefined && /^[0-9a-f]+$/.test(capEff) ? BigInt(`0x${capEff}`) : undefined;
  } catch {
    return undefined;
  }
}

export function hasCapability(name: CapabilityName, mask = effectiveCapabilityMask()): boolean {
  // Unknown (no /proc): assume present, so no hint claims something is missing.
  return mask === undefined || (mask & (1n << BigInt(CAPABILITY_BITS[name]))) !== 0n;
}

/** Which of `names` this process lacks in its effective set. */
export function missingCapabilities(
  names: readonly CapabilityName[],
  mask = effectiveCapabilityMask(),
): CapabilityName[] {
  return names.filter((name) => !hasCapability(name, mask));
}

/** Operations that need a capability, as the hints name them. */
export type PrivilegedOperation =
  'tcp-repair' | 'socket-filter' | 'send-buffer' | 'nftables' | 'netns' | 'fin-rebuild' | 'announce' | 'criu';

interface Requirement {
  /** What the hint calls the operation. */
  what: string;
  /** Every one of these is needed. */
  all: CapabilityName[];
}

const REQUIREMENTS: Record<PrivilegedOperation, Requirement> = {
  'tcp-repair': { what: 'TCP_REPAIR (checkpoint/restore of a TCP connection)', all: ['CAP_NET_ADMIN'] },
  'socket-filter': { what: "a socket filter (the 'filter' lock)", all: ['CAP_NET_ADMIN'] },
  'send-buffer': { what: 'SO_SNDBUFFORCE/SO_RCVBUFFORCE', all: ['CAP_NET_ADMIN'] },
  nftables: { what: "nftables (the 'nftables' lock)", all: ['CAP_NET_ADMIN'] },
  netns: { what: 'entering another network namespace (setns)', all: ['CAP_SYS_ADMIN'] },
  'fin-rebuild': { what: "rebuilding the peer's FIN on restore (a raw socket)", all: ['CAP_NET_RAW'] },
  announce: {
    what: 'announcing an address (gratuitous ARP or Neighbour Advertisement: a raw socket)',
    all: ['CAP_NET_RAW'],
  },
  criu: {
    what: 'CRIU (dump/restore with network state; CAP_CHECKPOINT_RESTORE does not replace CAP_SYS_ADMIN for it)',
    all: ['CAP_SYS_ADMIN', 'CAP_SYS_PTRACE', 'CAP_NET_ADMIN'],
  },
};

export interface CapabilityProblem {
  operation: PrivilegedOperation;
  /** The first missing capability (or the one the operation needs, when none is missing). */
  capability: CapabilityName;
  /** What this process lacks for the operation (empty: it has them; EPERM came from elsewhere). */
  missing: CapabilityName[];
  hint: string;
}

/** What `operation` needs, and what of it this process lacks. */
export function capabilityProblem(operation: PrivilegedOperation, mask = effectiveCapabilityMask()): CapabilityProblem {
  const need = REQUIREMENTS[operation];
  const missing = missingCapabilities(need.all, mask);
  const needed = need.all.join(', ');
  const hint =
    missing.length > 0
      ? `${need.what} needs ${needed}; this process lacks ${missing.join(', ')}: run it as root with full capabilities, or grant them (e.g. systemd AmbientCapabilities=${missing.join(' ')}, or setcap on the node binary)`
      : `${need.what} needs ${needed}; this process has them, so something else refused (a user namespace that does not own the socket's network namespace, an LSM, or a sysctl)`;
  return { operation, capability: missing[0] ?? need.all[0], missing, hint };
}

/** The native-call failure shapes csrc/errors.cc produces, mapped to the operation that needed a capability. */
export function operationOfNativeFailure(
  code: string,
  syscall: string | undefined,
  message: string,
): PrivilegedOperation | undefined {
  if (code !== 'EPERM' && code !== 'EACCES') return undefined;
  if (syscall === 'setns') return 'netns';
  if (syscall === 'setsockopt' && /SO_ATTACH_FILTER/.test(message)) return 'socket-filter';
  if (syscall === 'setsockopt' && /BUFFORCE/.test(message)) return 'send-buffer';
  if (code !== 'EPERM') return undefined;
  // csrc/announce.cc names its raw sockets in the message.
  if (syscall === 'socket' && /gratuitous ARP|Neighbour Advertisement/.test(message)) return 'announce';
  if (
    syscall !== undefined &&
    (syscall.startsWith('libsoccr_') || /TCP_REPAIR/.test(message) || syscall === 'setsockopt')
  ) {
    // libsoccr's EPERM is TCP_REPAIR, except when it says the FIN could not be sent, or when
    // CAP_NET_ADMIN is there and CAP_NET_RAW is not (the FIN rebuild's raw socket).
    if (/peer's FIN/.test(message)) return 'fin-rebuild';
    if (syscall === 'libsoccr_restore' || syscall === 'libsoccr_resume') {
      const mask = effectiveCapabilityMask();
      if (hasCapability('CAP_NET_ADMIN', mask) && !hasCapability('CAP_NET_RAW', mask)) return 'fin-rebuild';
    }
    return 'tcp-repair';
  }
  return undefined;
}

/** The error fields a capability problem adds; see NodeCriuError.capability. */
export interface CapabilityFields {
  capability?: CapabilityName;
  missingCapabilities?: readonly CapabilityName[];
}

/**
 * Adds `capability`, `missingCapabilities` and the hint to `error` (its message gains
 * "; <hint>"). Returns the error.
 */
export function attachCapabilityProblem<E extends Error>(error: E, problem: CapabilityProblem): E & CapabilityFields {
  const target = error as E & { capability?: CapabilityName; missingCapabilities?: readonly CapabilityName[] };
  target.capability = problem.capability;
  target.missingCapabilities = problem.missing;
  if (!error.message.includes(problem.hint)) error.message = `${error.message}; ${problem.hint}`;
  return target;
}

/**
 * For a failed CRIU request: the capability problem when this process (whose capabilities CRIU
 * inherits) lacks what CRIU needs, else undefined (CRIU failed for another reason).
 */
export function criuCapabilityProblem(mask = effectiveCapabilityMask()): CapabilityProblem | undefined {
  const problem = capabilityProblem('criu', mask);
  return problem.missing.length > 0 ? problem : undefined;
}
