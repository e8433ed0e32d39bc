/**
 * The public, typed CRIU options (every criu_opts field of CRIU 4.2, plus post-4.2 imageIoMode)
 * and their mapping to the wire message. Validation happens here, before any I/O: a bad option
 * throws InvalidArgumentError with a code and nothing has been opened or spawned yet.
 *
 * File descriptors: `imagesDir`/`workDir` are paths the client opens; `inheritFds[].fd` and
 * `ps.fd` are fds in the CALLER's table that the client passes to swrk, so on the wire they
 * become criu's own fd numbers (`resolved`). `statusFd` and `pidfdStoreSk` stay the caller's
 * numbers: CRIU takes those from its peer's fd table (/proc/<peer>/fd, pidfd_getfd).
 */
import { describeValue, InvalidArgumentError } from '../errors';
import { CriuCgMode, CriuImageIoMode, CriuNetworkLockMethod, CriuPreDumpMode, type CriuOptsMessage } from './messages';

export type CriuNetworkLock = 'iptables' | 'nftables' | 'skip';
/** CRIU's --manage-cgroups modes; 'default' lets CRIU pick (RPC only). */
export type CriuCgroupsMode = 'ignore' | 'none' | 'props' | 'soft' | 'full' | 'strict' | 'default';
/** CRIU's --pre-dump-mode: 'splice' (default) or 'read' (process_vm_readv). */
export type CriuPreDumpModeName = 'splice' | 'read';
/** Post-4.2 --image-io-mode; CRIU 4.2 ignores it. */
export type CriuImageIoModeName = 'writeback' | 'direct';

export interface CriuOptions {
  /** Directory for the images (opened by the client; sent as images_dir when it cannot be). */
  imagesDir?: string;
  /** Directory for logs, pid files and stats (opened by the client; defaults to imagesDir). */
  workDir?: string;
  /** Root of the process tree to dump. */
  pid?: number;
  leaveRunning?: boolean;
  leaveStopped?: boolean;
  extUnixSk?: boolean;
  tcpEstablished?: boolean;
  tcpSkipInFlight?: boolean;
  tcpClose?: boolean;
  evasiveDevices?: boolean;
  shellJob?: boolean;
  fileLocks?: boolean;
  /** 0 (none) .. 4 (debug); CRIU's default is 2. */
  logLevel?: number;
  /** Log file name inside workDir (no '/'). */
  logFile?: string;
  logToStderr?: boolean;
  displayStats?: boolean;
  /** Page server to send pages to (dump) or to start (PAGE_SERVER); fd is in the caller's table. */
  ps?: { address?: string; port?: number; pid?: number; fd?: number };
  /** Ask CRIU for NOTIFY messages (the client sets this when notify handlers are given). */
  notifyScripts?: boolean;
  root?: string;
  /** Parent images directory, relative to imagesDir (pre-dump chains). */
  parentImg?: string;
  trackMem?: boolean;
  autoDedup?: boolean;
  linkRemap?: boolean;
  /** Deprecated upstream: use external 'veth[IFIN]:OUTNAME'. */
  veths?: Array<{ ifIn: string; ifOut: string }>;
  /** CPU capability bitmask (uint32); CRIU's default is all bits. */
  cpuCap?: number;
  forceIrmap?: boolean;
  /** Command to exec after restore (argv). */
  execCmd?: string[];
  /** Deprecated upstream: use external 'mnt[KEY]:VAL'. */
  extMnt?: Array<{ key: string; val: string }>;
  manageCgroups?: boolean;
  manageCgroupsMode?: CriuCgroupsMode;
  cgRoot?: Array<{ ctrl?: string; path: string }>;
  /** Restore the tree as a sibling of criu (swrk only). */
  rstSibling?: boolean;
  /** Fds in the caller's table handed to swrk, keyed as CRIU names the resource (swrk only). */
  inheritFds?: Array<{ key: string; fd: number }>;
  autoExtMnt?: boolean;
  extSharing?: boolean;
  extMasters?: boolean;
  skipMnt?: string[];
  enableFs?: string[];
  /** Deprecated upstream: inodes of external unix sockets; use external 'unix[INO]'. */
  unixSkIno?: number[];
  /** uint32; CRIU's default is 1 MiB. */
  ghostLimit?: number;
  irmapScanPaths?: string[];
  external?: string[];
  /** Namespaces restore creates empty; CRIU accepts only CLONE_NEWNET (0x40000000). */
  emptyNs?: number;
  joinNs?: Array<{ ns: string; nsFile: string; extraOpt?: string }>;
  cgroupProps?: string;
  cgroupPropsFile?: string;
  cgroupDumpController?: string[];
  freezeCgroup?: string;
  cgroupYard?: string;
  /** Seconds (uint32). */
  timeout?: number;
  weakSysctls?: boolean;
  lazyPages?: boolean;
  /** Obsolete upstream (use the status-ready notify); an fd in the caller's table. */
  statusFd?: number;
  orphanPtsMaster?: boolean;
  configFile?: string;
  lsmProfile?: string;
  lsmMountContext?: string;
  tls?: boolean;
  tlsCacert?: string;
  tlsCacrl?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsNoCnVerify?: boolean;
  preDumpMode?: CriuPreDumpModeName;
  /** A unix socket in the caller's table that stores pidfds between pre-dumps. */
  pidfdStoreSk?: number;
  networkLock?: CriuNetworkLock;
  mntnsCompatMode?: boolean;
  skipFileRwxCheck?: boolean;
  unprivileged?: boolean;
  /** Post-4.2 (field 72): CRIU 4.2 ignores it. */
  imageIoMode?: CriuImageIoModeName;
}

/** What the client resolved before building the message: criu-side fd numbers. */
export interface ResolvedCriuFds {
  /** The images directory's fd (in the client; CRIU opens /proc/<peer>/fd/N). */
  imagesDirFd?: number;
  workDirFd?: number;
  /** criu's fd number for each `inheritFds` entry, same order. */
  inheritFdNumbers?: number[];
  /** criu's fd number for `ps.fd`. */
  psFd?: number;
}

const NETWORK_LOCK: Record<CriuNetworkLock, CriuNetworkLockMethod> = {
  iptables: CriuNetworkLockMethod.IPTABLES,
  nftables: CriuNetworkLockMethod.NFTABLES,
  skip: CriuNetworkLockMethod.SKIP,
};
const CGROUPS_MODE: Record<CriuCgroupsMode, CriuCgMode> = {
  ignore: CriuCgMode.IGNORE,
  none: CriuCgMode.CG_NONE,
  props: CriuCgMode.PROPS,
  soft: CriuCgMode.SOFT,
  full: CriuCgMode.FULL,
  strict: CriuCgMode.STRICT,
  default: CriuCgMode.DEFAULT,
};
const PRE_DUMP_MODE: Record<CriuPreDumpModeName, CriuPreDumpMode> = {
  splice: CriuPreDumpMode.SPLICE,
  read: CriuPreDumpMode.VM_READ,
};
const IMAGE_IO_MODE: Record<CriuImageIoModeName, CriuImageIoMode> = {
  writeback: CriuImageIoMode.IMAGE_IO_WRITEBACK,
  direct: CriuImageIoMode.IMAGE_IO_DIRECT,
};

const CLONE_NEWNET = 0x40000000;
const INT32_MAX = 0x7fffffff;
const UINT32_MAX = 0xffffffff;

// ---------------------------------------------------------------------------------------------
// Field checks. Each throws InvalidArgumentError naming the option.

function fail(
  where: string,
  message: string,
  code: 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE',
): never {
  throw new InvalidArgumentError(`${where === '' ? 'options' : `options.${where}`} ${message}`, code);
}

function checkBool(value: unknown, where: string): void {
  if (typeof value !== 'boolean') fail(where, `must be a boolean, got ${typeof value}`, 'ERR_INVALID_ARG_TYPE');
}

/** A C string CRIU will read: non-empty, no NUL. */
function checkText(value: unknown, where: string): void {
  if (typeof value !== 'string') fail(where, `must be a string, got ${typeof value}`, 'ERR_INVALID_ARG_TYPE');
  if (value === '') fail(where, 'must not be empty', 'ERR_INVALID_ARG_VALUE');
  if (value.includes('\0')) fail(where, 'must not contain NUL', 'ERR_INVALID_ARG_VALUE');
}

function checkInt(value: unknown, where: string, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value))
    fail(where, `must be an integer, got ${describeValue(value)}`, 'ERR_INVALID_ARG_TYPE');
  if (value < min || value > max) fail(where, `must be in ${min}..${max}, got ${value}`, 'ERR_OUT_OF_RANGE');
}

function checkFd(value: unknown, where: string): void {
  checkInt(value, where, 0, INT32_MAX);
}

function checkArray(value: unknown, where: string, each: (item: unknown, where: string) => void): void {
  if (!Array.isArray(value)) fail(where, 'must be an array', 'ERR_INVALID_ARG_TYPE');
  // An index loop, not forEach: forEach skips the holes of a sparse array ([, 'x']), which then
  // reached the encoder as undefined (an untyped TypeError, found by test/fuzz/api-args).
  for (let index = 0; index < value.length; index++) each(value[index], `${where}[${index}]`);
}

function checkEnum(value: unknown, where: string, names: Record<string, number>): void {
  if (typeof value !== 'string') fail(where, `must be a string, got ${typeof value}`, 'ERR_INVALID_ARG_TYPE');
  if (!Object.prototype.hasOwnProperty.call(names, value)) {
    fail(
      where,
      `must be one of ${Object.keys(names)
        .map((n) => `'${n}'`)
        .join(', ')}, got '${describeValue(value)}'`,
      'ERR_INVALID_ARG_VALUE',
    );
  }
}

function join(where: string, key: string): string {
  return where === '' ? key : `${where}.${key}`;
}

/** A plain object whose keys are all in `allowed`, with `required` keys present. */
function checkRecord(
  value: unknown,
  where: string,
  allowed: readonly string[],
  required: readonly string[] = [],
): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    fail(where, 'must be an object', 'ERR_INVALID_ARG_TYPE');
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (record[key] !== undefined && !allowed.includes(key))
      fail(join(where, key), 'is not a known option', 'ERR_INVALID_ARG_VALUE');
  }
  for (const key of required)
    if (record[key] === undefined) fail(join(where, key), 'is required', 'ERR_INVALID_ARG_VALUE');
  return record;
}

function checkStrings(value: unknown, where: string): void {
  checkArray(value, where, checkText);
}

const pathChecks = {
  imagesDir: checkText,
  workDir: checkText,
  root: checkText,
  parentImg: checkText,
  configFile: checkText,
  freezeCgroup: checkText,
  cgroupProps: checkText,
  cgroupPropsFile: checkText,
  cgroupYard: checkText,
  lsmProfile: checkText,
  lsmMountContext: checkText,
  tlsCacert: checkText,
  tlsCacrl: checkText,
  tlsCert: checkText,
  tlsKey: checkText,
} as const;

const boolKeys = [
  'leaveRunning',
  'leaveStopped',
  'extUnixSk',
  'tcpEstablished',
  'tcpSkipInFlight',
  'tcpClose',
  'evasiveDevices',
  'shellJob',
  'fileLocks',
  'logToStderr',
  'displayStats',
  'notifyScripts',
  'trackMem',
  'autoDedup',
  'linkRemap',
  'forceIrmap',
  'manageCgroups',
  'rstSibling',
  'autoExtMnt',
  'extSharing',
  'extMasters',
  'weakSysctls',
  'lazyPages',
  'orphanPtsMaster',
  'tls',
  'tlsNoCnVerify',
  'mntnsCompatMode',
  'skipFileRwxCheck',
  'unprivileged',
] as const;

const stringListKeys = [
  'execCmd',
  'skipMnt',
  'enableFs',
  'irmapScanPaths',
  'external',
  'cgroupDumpController',
] as const;

/** Every CriuOptions key with its check. */
const optionChecks: Record<keyof CriuOptions, (value: unknown, where: string) => void> = {
  ...pathChecks,
  ...(Object.fromEntries(boolKeys.map((key) => [key, checkBool])) as Record<
    (typeof boolKeys)[number],
    typeof checkBool
  >),
  ...(Object.fromEntries(stringListKeys.map((key) => [key, checkStrings])) as Record<
    (typeof stringListKeys)[number],
    typeof checkStrings
  >),
  pid: (v, w) => checkInt(v, w, 1, INT32_MAX),
  logLevel: (v, w) => checkInt(v, w, 0, 4),
  logFile: (v, w) => {
    checkText(v, w);
    if ((v as string).includes('/'))
      fail(w, "must be a file name without '/' (it is created in workDir)", 'ERR_INVALID_ARG_VALUE');
    if (v === '.' || v === '..') fail(w, `must be a file name, got '${v}'`, 'ERR_INVALID_ARG_VALUE');
  },
  ps: (v, w) => {
    const ps = checkRecord(v, w, ['address', 'port', 'pid', 'fd']);
    if (ps.address !== undefined) checkText(ps.address, `${w}.address`);
    if (ps.port !== undefined) checkInt(ps.port, `${w}.port`, 0, 65535);
    if (ps.pid !== undefined) checkInt(ps.pid, `${w}.pid`, 1, INT32_MAX);
    if (ps.fd !== undefined) checkFd(ps.fd, `${w}.fd`);
  },
  veths: (v, w) =>
    checkArray(v, w, (item, iw) => {
      const pair = checkRecord(item, iw, ['ifIn', 'ifOut'], ['ifIn', 'ifOut']);
      checkText(pair.ifIn, `${iw}.ifIn`);
      checkText(pair.ifOut, `${iw}.ifOut`);
    }),
  cpuCap: (v, w) => checkInt(v, w, 0, UINT32_MAX),
  extMnt: (v, w) =>
    checkArray(v, w, (item, iw) => {
      const map = checkRecord(item, iw, ['key', 'val'], ['key', 'val']);
      checkText(map.key, `${iw}.key`);
      checkText(map.val, `${iw}.val`);
    }),
  manageCgroupsMode: (v, w) => checkEnum(v, w, CGROUPS_MODE),
  cgRoot: (v, w) =>
    checkArray(v, w, (item, iw) => {
      const root = checkRecord(item, iw, ['ctrl', 'path'], ['path']);
      if (root.ctrl !== undefined) checkText(root.ctrl, `${iw}.ctrl`);
      checkText(root.path, `${iw}.path`);
    }),
  inheritFds: (v, w) => {
    const keys = new Set<string>();
    checkArray(v, w, (item, iw) => {
      const entry = checkRecord(item, iw, ['key', 'fd'], ['key', 'fd']);
      checkText(entry.key, `${iw}.key`);
      checkFd(entry.fd, `${iw}.fd`);
      if (keys.has(entry.key as string))
        fail(`${iw}.key`, `'${String(entry.key)}' appears twice`, 'ERR_INVALID_ARG_VALUE');
      keys.add(entry.key as string);
    });
  },
  unixSkIno: (v, w) => checkArray(v, w, (item, iw) => checkInt(item, iw, 0, UINT32_MAX)),
  ghostLimit: (v, w) => checkInt(v, w, 0, UINT32_MAX),
  emptyNs: (v, w) => {
    checkInt(v, w, 0, UINT32_MAX);
    if (((v as number) & ~CLONE_NEWNET) !== 0)
      fail(w, 'accepts only CLONE_NEWNET (0x40000000)', 'ERR_INVALID_ARG_VALUE');
  },
  joinNs: (v, w) =>
    checkArray(v, w, (item, iw) => {
      const join = checkRecord(item, iw, ['ns', 'nsFile', 'extraOpt'], ['ns', 'nsFile']);
      checkText(join.ns, `${iw}.ns`);
      checkText(join.nsFile, `${iw}.nsFile`);
      if (join.extraOpt !== undefined) checkText(join.extraOpt, `${iw}.extraOpt`);
    }),
  timeout: (v, w) => checkInt(v, w, 0, UINT32_MAX),
  statusFd: checkFd,
  preDumpMode: (v, w) => checkEnum(v, w, PRE_DUMP_MODE),
  pidfdStoreSk: checkFd,
  networkLock: (v, w) => checkEnum(v, w, NETWORK_LOCK),
  imageIoMode: (v, w) => checkEnum(v, w, IMAGE_IO_MODE),
};

/** The option names CriuOptions accepts (every criu_opts field except fd plumbing). */
export const CRIU_OPTION_NAMES: readonly (keyof CriuOptions)[] = Object.keys(optionChecks) as (keyof CriuOptions)[];

/** Validates `options` before any I/O; throws InvalidArgumentError (with a code) on the first problem. */
export function validateCriuOptions(options: unknown): asserts options is CriuOptions {
  const record = checkRecord(options, '', CRIU_OPTION_NAMES as readonly string[]);
  for (const key of CRIU_OPTION_NAMES) {
    const value = record[key];
    if (value !== undefined) optionChecks[key](value, key);
  }
}

// ---------------------------------------------------------------------------------------------
// Mapping

/** Keys whose value goes to the wire message unchanged (same camelCase name). */
const passThroughKeys = [
  ...boolKeys,
  ...stringListKeys,
  'pid',
  'logLevel',
  'logFile',
  'root',
  'parentImg',
  'cpuCap',
  'ghostLimit',
  'emptyNs',
  'timeout',
  'statusFd',
  'pidfdStoreSk',
  'configFile',
  'freezeCgroup',
  'cgroupProps',
  'cgroupPropsFile',
  'cgroupYard',
  'lsmProfile',
  'lsmMountContext',
  'tlsCacert',
  'tlsCacrl',
  'tlsCert',
  'tlsKey',
] as const satisfies readonly (keyof CriuOptions & keyof CriuOptsMessage)[];

function checkResolvedFd(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > INT32_MAX) {
    throw new InvalidArgumentError(
      `resolved.${where} must be an fd number, got ${describeValue(value)}`,
      'ERR_INVALID_ARG_VALUE',
    );
  }
  return value;
}

/**
 * Validates `options` and maps them to criu_opts. Fields not given stay absent (CRIU applies its
 * own defaults). Without `resolved.imagesDirFd`, images_dir_fd is -1 and `imagesDir` travels as a
 * path (works across pid namespaces; CRIU 3.19+).
 */
export function toCriuOpts(options: CriuOptions, resolved: ResolvedCriuFds = {}): CriuOptsMessage {
  validateCriuOptions(options);
  const message: CriuOptsMessage = { imagesDirFd: -1 };
  if (resolved.imagesDirFd !== undefined) message.imagesDirFd = checkResolvedFd(resolved.imagesDirFd, 'imagesDirFd');
  else if (options.imagesDir !== undefined) message.imagesDir = options.imagesDir;

  if (resolved.workDirFd !== undefined) {
    message.workDirFd = checkResolvedFd(resolved.workDirFd, 'workDirFd');
  } else if (options.workDir !== undefined) {
    // criu_opts has no work-dir path field: the client must open the directory.
    throw new InvalidArgumentError(
      'options.workDir needs resolved.workDirFd (criu_opts has no path field for it)',
      'ERR_INVALID_ARG_VALUE',
    );
  }

  const target = message as unknown as Record<string, unknown>;
  const source = options as Record<string, unknown>;
  for (const key of passThroughKeys) {
    const value = source[key];
    if (value !== undefined) target[key] = Array.isArray(value) ? [...(value as unknown[])] : value;
  }

  if (options.ps !== undefined) {
    const { address, port, pid, fd } = options.ps;
    const ps: NonNullable<CriuOptsMessage['ps']> = {};
    if (address !== undefined) ps.address = address;
    if (port !== undefined) ps.port = port;
    if (pid !== undefined) ps.pid = pid;
    if (fd !== undefined) {
      if (resolved.psFd === undefined) {
        throw new InvalidArgumentError(
          'options.ps.fd needs resolved.psFd (criu-side fd number)',
          'ERR_INVALID_ARG_VALUE',
        );
      }
      ps.fd = checkResolvedFd(resolved.psFd, 'psFd');
    }
    message.ps = ps;
  }
  if (options.inheritFds !== undefined) {
    const numbers = resolved.inheritFdNumbers ?? [];
    if (numbers.length !== options.inheritFds.length) {
      throw new InvalidArgumentError(
        `resolved.inheritFdNumbers has ${numbers.length} entries for ${options.inheritFds.length} inheritFds`,
        'ERR_INVALID_ARG_VALUE',
      );
    }
    message.inheritFd = options.inheritFds.map((entry, i) => ({
      key: entry.key,
      fd: checkResolvedFd(numbers[i], `inheritFdNumbers[${i}]`),
    }));
  }
  if (options.veths !== undefined) message.veths = options.veths.map(({ ifIn, ifOut }) => ({ ifIn, ifOut }));
  if (options.extMnt !== undefined) message.extMnt = options.extMnt.map(({ key, val }) => ({ key, val }));
  if (options.cgRoot !== undefined) {
    message.cgRoot = options.cgRoot.map(({ ctrl, path }) => (ctrl === undefined ? { path } : { ctrl, path }));
  }
  if (options.unixSkIno !== undefined) message.unixSkIno = options.unixSkIno.map((inode) => ({ inode }));
  if (options.joinNs !== undefined) {
    message.joinNs = options.joinNs.map(({ ns, nsFile, extraOpt }) =>
      extraOpt === undefined ? { ns, nsFile } : { ns, nsFile, extraOpt },
    );
  }
  if (options.manageCgroupsMode !== undefined) message.manageCgroupsMode = CGROUPS_MODE[options.manageCgroupsMode];
  if (options.preDumpMode !== undefined) message.preDumpMode = PRE_DUMP_MODE[options.preDumpMode];
  if (options.networkLock !== undefined) message.networkLock = NETWORK_LOCK[options.networkLock];
  if (options.imageIoMode !== undefined) message.imageIoMode = IMAGE_IO_MODE[options.imageIoMode];
  return message;
}
