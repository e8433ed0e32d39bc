/**
 * Validates the public CRIU options (lib/criu/option-types.ts) and maps them to criu_opts, both
 * from one table. Validation happens before any I/O: a bad option throws InvalidArgumentError
 * with a code while nothing is open yet.
 */
import { InvalidArgumentError } from '../errors';
import { CriuCgMode, CriuImageIoMode, CriuNetworkLockMethod, CriuPreDumpMode, type CriuOptsMessage } from './messages';
import {
  checkArray,
  checkBool,
  checkEnum,
  checkFd,
  checkInt,
  checkRecord,
  checkResolvedFd,
  checkText,
  fail,
  INT32_MAX,
  UINT32_MAX,
  type Check,
} from './option-checks';
import type {
  CriuCgroupsMode,
  CriuImageIoModeName,
  CriuNetworkLock,
  CriuOptions,
  CriuPreDumpModeName,
  ResolvedCriuFds,
} from './option-types';

export type {
  CriuCgroupsMode,
  CriuImageIoModeName,
  CriuNetworkLock,
  CriuOptions,
  CriuPreDumpModeName,
  ResolvedCriuFds,
} from './option-types';

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

/** Options that are arrays of records of text fields (`required` must be there, the rest of `allowed` may be). */
type TextRecordsField = 'veths' | 'extMnt' | 'cgRoot' | 'joinNs';

/** Each record checked field by field and copied with only its known fields, so no stray key reaches the wire. */
function textRecords<K extends TextRecordsField>(
  field: K,
  allowed: readonly string[],
  required: readonly string[],
): { check: Check; toWire: ToWire<K> } {
  return {
    check: (value, where) =>
      checkArray(value, where, (item, itemWhere) => {
        const record = checkRecord(item, itemWhere, allowed, required);
        for (const key of allowed) if (record[key] !== undefined) checkText(record[key], `${itemWhere}.${key}`);
      }),
    toWire: (value, message) => {
      const records = (value as readonly Record<string, unknown>[]).map((item) =>
        Object.fromEntries(allowed.filter((key) => item[key] !== undefined).map((key) => [key, item[key]])),
      );
      (message as Record<string, unknown>)[field] = records;
    },
  };
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
  veths: textRecords('veths', ['ifIn', 'ifOut'], ['ifIn', 'ifOut']),
  cpuCap: uint32,
  forceIrmap: bool,
  execCmd: texts,
  extMnt: textRecords('extMnt', ['key', 'val'], ['key', 'val']),
  manageCgroups: bool,
  manageCgroupsMode: {
    check: enumCheck(CGROUPS_MODE),
    toWire: (value, message) => {
      message.manageCgroupsMode = CGROUPS_MODE[value];
    },
  },
  cgRoot: textRecords('cgRoot', ['ctrl', 'path'], ['path']),
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
  joinNs: textRecords('joinNs', ['ns', 'nsFile', 'extraOpt'], ['ns', 'nsFile']),
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
