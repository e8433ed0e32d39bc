/**
 * The public, typed CRIU options and their mapping to criu_opts. Validation happens here, before
 * any I/O: a bad option throws InvalidArgumentError with a code while nothing is open yet.
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

/**
 * An option's names for a generated enum. The second check fails typecheck when the enum gains a
 * number that has no name here.
 */
function enumNames<E extends number>() {
  return <const M extends Record<string, E>>(
    names: M & ([Exclude<E, M[keyof M]>] extends [never] ? unknown : { unnamed: Exclude<E, M[keyof M]> }),
  ): M => names;
}

const NETWORK_LOCK = enumNames<CriuNetworkLockMethod>()({
  iptables: CriuNetworkLockMethod.IPTABLES,
  nftables: CriuNetworkLockMethod.NFTABLES,
  skip: CriuNetworkLockMethod.SKIP,
}) satisfies Record<CriuNetworkLock, CriuNetworkLockMethod>;
const CGROUPS_MODE = enumNames<CriuCgMode>()({
  ignore: CriuCgMode.IGNORE,
  none: CriuCgMode.CG_NONE,
  props: CriuCgMode.PROPS,
  soft: CriuCgMode.SOFT,
  full: CriuCgMode.FULL,
  strict: CriuCgMode.STRICT,
  default: CriuCgMode.DEFAULT,
}) satisfies Record<CriuCgroupsMode, CriuCgMode>;
const PRE_DUMP_MODE = enumNames<CriuPreDumpMode>()({
  splice: CriuPreDumpMode.SPLICE,
  read: CriuPreDumpMode.VM_READ,
}) satisfies Record<CriuPreDumpModeName, CriuPreDumpMode>;
const IMAGE_IO_MODE = enumNames<CriuImageIoMode>()({
  writeback: CriuImageIoMode.IMAGE_IO_WRITEBACK,
  direct: CriuImageIoMode.IMAGE_IO_DIRECT,
}) satisfies Record<CriuImageIoModeName, CriuImageIoMode>;

const CLONE_NEWNET = 0x40000000;
const INT32_MAX = 0x7fffffff;
const UINT32_MAX = 0xffffffff;

// ---------------------------------------------------------------------------------------------
// Field checks. Each throws InvalidArgumentError naming the option.

type Check = (value: unknown, where: string) => void;

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

function checkArray(value: unknown, where: string, each: Check): void {
  if (!Array.isArray(value)) fail(where, 'must be an array', 'ERR_INVALID_ARG_TYPE');
  // An index loop: forEach skips the holes of a sparse array ([, 'x']), which would then reach
  // the encoder as undefined.
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

function checkResolvedFd(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > INT32_MAX) {
    throw new InvalidArgumentError(
      `resolved.${where} must be an fd number, got ${describeValue(value)}`,
      'ERR_INVALID_ARG_VALUE',
    );
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// The table: every option's check and where it goes on the wire.

/** Sets the option's criu_opts field(s) from its validated value. */
type ToWire<K extends keyof CriuOptions> = (
  value: NonNullable<CriuOptions[K]>,
  message: CriuOptsMessage,
  resolved: ResolvedCriuFds,
) => void;

/** True when option K can be copied to the criu_opts field of the same name as it is. */
type SameField<K extends keyof CriuOptions> = K extends keyof CriuOptsMessage
  ? NonNullable<CriuOptions[K]> extends NonNullable<CriuOptsMessage[K]>
    ? true
    : false
  : false;

/** Without `toWire` the value goes to the same-named field (arrays copied). */
type OptionSpec<K extends keyof CriuOptions> =
  SameField<K> extends true ? { check: Check; toWire?: ToWire<K> } : { check: Check; toWire: ToWire<K> };

/** criu_opts fields that no same-named option fills: toCriuOpts and the toWire functions set them. */
type FilledOtherwise = 'imagesDirFd' | 'workDirFd' | 'inheritFd';
type AssertNever<T extends never> = T;
// Fails typecheck when proto/criu-rpc.proto gains a criu_opts field that no option maps.
type _EveryFieldMapped = AssertNever<Exclude<keyof CriuOptsMessage, keyof CriuOptions | FilledOtherwise>>;

const bool = { check: checkBool };
const text = { check: checkText };
const texts = { check: (value: unknown, where: string) => checkArray(value, where, checkText) };
const uint32 = { check: (value: unknown, where: string) => checkInt(value, where, 0, UINT32_MAX) };
const fd = { check: checkFd };

function enumCheck(names: Record<string, number>): Check {
  return (value, where) => checkEnum(value, where, names);
}

const OPTIONS: { [K in keyof CriuOptions]-?: OptionSpec<K> } = {
  imagesDir: {
    check: checkText,
    toWire: (value, message, resolved) => {
      if (resolved.imagesDirFd === undefined) message.imagesDir = value;
    },
  },
  workDir: {
    check: checkText,
    toWire: (_value, _message, resolved) => {
      // criu_opts has no work-dir path field: the client must open the directory.
      if (resolved.workDirFd === undefined) {
        throw new InvalidArgumentError(
          'options.workDir needs resolved.workDirFd (criu_opts has no path field for it)',
          'ERR_INVALID_ARG_VALUE',
        );
      }
    },
  },
  pid: { check: (v, w) => checkInt(v, w, 1, INT32_MAX) },
  leaveRunning: bool,
  leaveStopped: bool,
  extUnixSk: bool,
  tcpEstablished: bool,
  tcpSkipInFlight: bool,
  tcpClose: bool,
  evasiveDevices: bool,
  shellJob: bool,
  fileLocks: bool,
  logLevel: { check: (v, w) => checkInt(v, w, 0, 4) },
  logFile: {
    check: (v, w) => {
      checkText(v, w);
      if ((v as string).includes('/'))
        fail(w, "must be a file name without '/' (it is created in workDir)", 'ERR_INVALID_ARG_VALUE');
      if (v === '.' || v === '..') fail(w, `must be a file name, got '${v}'`, 'ERR_INVALID_ARG_VALUE');
    },
  },
  logToStderr: bool,
  displayStats: bool,
  ps: {
    check: (v, w) => {
      const ps = checkRecord(v, w, ['address', 'port', 'pid', 'fd']);
      if (ps.address !== undefined) checkText(ps.address, `${w}.address`);
      if (ps.port !== undefined) checkInt(ps.port, `${w}.port`, 0, 65535);
      if (ps.pid !== undefined) checkInt(ps.pid, `${w}.pid`, 1, INT32_MAX);
      if (ps.fd !== undefined) checkFd(ps.fd, `${w}.fd`);
    },
    toWire: ({ address, port, pid, fd }, message, resolved) => {
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
    },
  },
  notifyScripts: bool,
  root: text,
  parentImg: text,
  trackMem: bool,
  autoDedup: bool,
  linkRemap: bool,
  veths: {
    check: (v, w) =>
      checkArray(v, w, (item, iw) => {
        const pair = checkRecord(item, iw, ['ifIn', 'ifOut'], ['ifIn', 'ifOut']);
        checkText(pair.ifIn, `${iw}.ifIn`);
        checkText(pair.ifOut, `${iw}.ifOut`);
      }),
    toWire: (value, message) => {
      message.veths = value.map(({ ifIn, ifOut }) => ({ ifIn, ifOut }));
    },
  },
  cpuCap: uint32,
  forceIrmap: bool,
  execCmd: texts,
  extMnt: {
    check: (v, w) =>
      checkArray(v, w, (item, iw) => {
        const map = checkRecord(item, iw, ['key', 'val'], ['key', 'val']);
        checkText(map.key, `${iw}.key`);
        checkText(map.val, `${iw}.val`);
      }),
    toWire: (value, message) => {
      message.extMnt = value.map(({ key, val }) => ({ key, val }));
    },
  },
  manageCgroups: bool,
  manageCgroupsMode: {
    check: enumCheck(CGROUPS_MODE),
    toWire: (value, message) => {
      message.manageCgroupsMode = CGROUPS_MODE[value];
    },
  },
  cgRoot: {
    check: (v, w) =>
      checkArray(v, w, (item, iw) => {
        const root = checkRecord(item, iw, ['ctrl', 'path'], ['path']);
        if (root.ctrl !== undefined) checkText(root.ctrl, `${iw}.ctrl`);
        checkText(root.path, `${iw}.path`);
      }),
    toWire: (value, message) => {
      message.cgRoot = value.map(({ ctrl, path }) => (ctrl === undefined ? { path } : { ctrl, path }));
    },
  },
  rstSibling: bool,
  inheritFds: {
    check: (v, w) => {
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
    toWire: (value, message, resolved) => {
      const numbers = resolved.inheritFdNumbers ?? [];
      if (numbers.length !== value.length) {
        throw new InvalidArgumentError(
          `resolved.inheritFdNumbers has ${numbers.length} entries for ${value.length} inheritFds`,
          'ERR_INVALID_ARG_VALUE',
        );
      }
      message.inheritFd = value.map((entry, i) => ({
        key: entry.key,
        fd: checkResolvedFd(numbers[i], `inheritFdNumbers[${i}]`),
      }));
    },
  },
  autoExtMnt: bool,
  extSharing: bool,
  extMasters: bool,
  skipMnt: texts,
  enableFs: texts,
  unixSkIno: {
    check: (v, w) => checkArray(v, w, (item, iw) => checkInt(item, iw, 0, UINT32_MAX)),
    toWire: (value, message) => {
      message.unixSkIno = value.map((inode) => ({ inode }));
    },
  },
  ghostLimit: uint32,
  irmapScanPaths: texts,
  external: texts,
  emptyNs: {
    check: (v, w) => {
      checkInt(v, w, 0, UINT32_MAX);
      if (((v as number) & ~CLONE_NEWNET) !== 0)
        fail(w, 'accepts only CLONE_NEWNET (0x40000000)', 'ERR_INVALID_ARG_VALUE');
    },
  },
  joinNs: {
    check: (v, w) =>
      checkArray(v, w, (item, iw) => {
        const join = checkRecord(item, iw, ['ns', 'nsFile', 'extraOpt'], ['ns', 'nsFile']);
        checkText(join.ns, `${iw}.ns`);
        checkText(join.nsFile, `${iw}.nsFile`);
        if (join.extraOpt !== undefined) checkText(join.extraOpt, `${iw}.extraOpt`);
      }),
    toWire: (value, message) => {
      message.joinNs = value.map(({ ns, nsFile, extraOpt }) =>
        extraOpt === undefined ? { ns, nsFile } : { ns, nsFile, extraOpt },
      );
    },
  },
  cgroupProps: text,
  cgroupPropsFile: text,
  cgroupDumpController: texts,
  freezeCgroup: text,
  cgroupYard: text,
  timeout: uint32,
  weakSysctls: bool,
  lazyPages: bool,
  statusFd: fd,
  orphanPtsMaster: bool,
  configFile: text,
  lsmProfile: text,
  lsmMountContext: text,
  tls: bool,
  tlsCacert: text,
  tlsCacrl: text,
  tlsCert: text,
  tlsKey: text,
  tlsNoCnVerify: bool,
  preDumpMode: {
    check: enumCheck(PRE_DUMP_MODE),
    toWire: (value, message) => {
      message.preDumpMode = PRE_DUMP_MODE[value];
    },
  },
  pidfdStoreSk: fd,
  networkLock: {
    check: enumCheck(NETWORK_LOCK),
    toWire: (value, message) => {
      message.networkLock = NETWORK_LOCK[value];
    },
  },
  mntnsCompatMode: bool,
  skipFileRwxCheck: bool,
  unprivileged: bool,
  imageIoMode: {
    check: enumCheck(IMAGE_IO_MODE),
    toWire: (value, message) => {
      message.imageIoMode = IMAGE_IO_MODE[value];
    },
  },
};

/** The option names CriuOptions accepts (every criu_opts field except fd plumbing). */
export const CRIU_OPTION_NAMES: readonly (keyof CriuOptions)[] = Object.keys(OPTIONS) as (keyof CriuOptions)[];

/** Validates `options` before any I/O; throws InvalidArgumentError (with a code) on the first problem. */
export function validateCriuOptions(options: unknown): asserts options is CriuOptions {
  const record = checkRecord(options, '', CRIU_OPTION_NAMES as readonly string[]);
  for (const key of CRIU_OPTION_NAMES) {
    const value = record[key];
    if (value !== undefined) OPTIONS[key].check(value, key);
  }
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
  if (resolved.workDirFd !== undefined) message.workDirFd = checkResolvedFd(resolved.workDirFd, 'workDirFd');
  const sameNamed = message as Record<string, unknown>;
  for (const key of CRIU_OPTION_NAMES) {
    const value = options[key];
    if (value === undefined) continue;
    const toWire = OPTIONS[key].toWire as ToWire<keyof CriuOptions> | undefined;
    if (toWire !== undefined) toWire(value as never, message, resolved);
    else sameNamed[key] = Array.isArray(value) ? [...(value as unknown[])] : value;
  }
  return message;
}
