/**
 * lib/criu/options.ts: every CriuOptions field maps to its criu_opts field, every criu_opts field
 * is reachable, and bad options are rejected with InvalidArgumentError codes before any I/O.
 */
import * as protobuf from 'protobufjs';

import { criuRpcRoot, decodeRequest, encodeRequest } from '../../../lib/criu/codec';
import {
  CriuCgMode,
  CriuNetworkLockMethod,
  CriuPreDumpMode,
  CriuReqType,
  type CriuOptsMessage,
} from '../../../lib/criu/messages';
import { CRIU_OPTION_NAMES, toCriuOpts, validateCriuOptions, type CriuOptions } from '../../../lib/criu/options';
import { InvalidArgumentError } from '../../../lib/errors';

/** Every CriuOptions field set to a non-default value. */
const everyOption: Required<CriuOptions> = {
  imagesDir: '/var/lib/img',
  workDir: '/var/lib/work',
  pid: 4321,
  leaveRunning: true,
  leaveStopped: false,
  extUnixSk: true,
  tcpEstablished: true,
  tcpSkipInFlight: true,
  tcpClose: false,
  evasiveDevices: true,
  shellJob: true,
  fileLocks: true,
  logLevel: 4,
  logFile: 'dump.log',
  logToStderr: true,
  displayStats: true,
  ps: { address: '127.0.0.1', port: 12345, pid: 77, fd: 40 },
  notifyScripts: true,
  root: '/srv/rootfs',
  parentImg: '../pre-1',
  trackMem: true,
  autoDedup: true,
  linkRemap: true,
  veths: [{ ifIn: 'eth0', ifOut: 'veth123' }],
  cpuCap: 0x7,
  forceIrmap: true,
  execCmd: ['/usr/bin/env', 'true'],
  extMnt: [{ key: '/data', val: 'data-vol' }],
  manageCgroups: true,
  manageCgroupsMode: 'soft',
  cgRoot: [{ ctrl: 'memory', path: '/m' }, { path: '/all' }],
  rstSibling: true,
  inheritFds: [
    { key: 'tcp[10.0.0.1:80]', fd: 17 },
    { key: 'pipe:[123]', fd: 18 },
  ],
  autoExtMnt: true,
  extSharing: true,
  extMasters: true,
  skipMnt: ['/proc/sys'],
  enableFs: ['nfs4'],
  unixSkIno: [123456, 4000000000],
  ghostLimit: 2 << 20,
  irmapScanPaths: ['/usr/lib'],
  external: ['unix[999]', 'mnt[/x]:y'],
  emptyNs: 0x40000000,
  joinNs: [
    { ns: 'net', nsFile: '/run/netns/a', extraOpt: 'x' },
    { ns: 'uts', nsFile: '/proc/1/ns/uts' },
  ],
  cgroupProps: 'cpu: {}',
  cgroupPropsFile: '/etc/props.yaml',
  cgroupDumpController: ['cpu', 'memory'],
  freezeCgroup: '/sys/fs/cgroup/freezer/x',
  cgroupYard: '/run/yard',
  timeout: 15,
  weakSysctls: true,
  lazyPages: true,
  statusFd: 21,
  orphanPtsMaster: true,
  configFile: '/etc/criu/rpc.conf',
  lsmProfile: 'apparmor:unconfined',
  lsmMountContext: 'system_u:object_r:container_file_t:s0',
  tls: true,
  tlsCacert: '/tls/ca',
  tlsCacrl: '/tls/crl',
  tlsCert: '/tls/cert',
  tlsKey: '/tls/key',
  tlsNoCnVerify: true,
  preDumpMode: 'read',
  pidfdStoreSk: 22,
  networkLock: 'nftables',
  mntnsCompatMode: true,
  skipFileRwxCheck: true,
  unprivileged: true,
  imageIoMode: 'direct',
};

const resolvedFds = { imagesDirFd: 30, workDirFd: 31, inheritFdNumbers: [3, 4], psFd: 5 };

const expectedMessage: CriuOptsMessage = {
  imagesDirFd: 30,
  workDirFd: 31,
  pid: 4321,
  leaveRunning: true,
  leaveStopped: false,
  extUnixSk: true,
  tcpEstablished: true,
  tcpSkipInFlight: true,
  tcpClose: false,
  evasiveDevices: true,
  shellJob: true,
  fileLocks: true,
  logLevel: 4,
  logFile: 'dump.log',
  logToStderr: true,
  displayStats: true,
  ps: { address: '127.0.0.1', port: 12345, pid: 77, fd: 5 },
  notifyScripts: true,
  root: '/srv/rootfs',
  parentImg: '../pre-1',
  trackMem: true,
  autoDedup: true,
  linkRemap: true,
  veths: [{ ifIn: 'eth0', ifOut: 'veth123' }],
  cpuCap: 7,
  forceIrmap: true,
  execCmd: ['/usr/bin/env', 'true'],
  extMnt: [{ key: '/data', val: 'data-vol' }],
  manageCgroups: true,
  manageCgroupsMode: CriuCgMode.SOFT,
  cgRoot: [{ ctrl: 'memory', path: '/m' }, { path: '/all' }],
  rstSibling: true,
  inheritFd: [
    { key: 'tcp[10.0.0.1:80]', fd: 3 },
    { key: 'pipe:[123]', fd: 4 },
  ],
  autoExtMnt: true,
  extSharing: true,
  extMasters: true,
  skipMnt: ['/proc/sys'],
  enableFs: ['nfs4'],
  unixSkIno: [{ inode: 123456 }, { inode: 4000000000 }],
  ghostLimit: 2 << 20,
  irmapScanPaths: ['/usr/lib'],
  external: ['unix[999]', 'mnt[/x]:y'],
  emptyNs: 0x40000000,
  joinNs: [
    { ns: 'net', nsFile: '/run/netns/a', extraOpt: 'x' },
    { ns: 'uts', nsFile: '/proc/1/ns/uts' },
  ],
  cgroupProps: 'cpu: {}',
  cgroupPropsFile: '/etc/props.yaml',
  cgroupDumpController: ['cpu', 'memory'],
  freezeCgroup: '/sys/fs/cgroup/freezer/x',
  cgroupYard: '/run/yard',
  timeout: 15,
  weakSysctls: true,
  lazyPages: true,
  statusFd: 21,
  orphanPtsMaster: true,
  configFile: '/etc/criu/rpc.conf',
  lsmProfile: 'apparmor:unconfined',
  lsmMountContext: 'system_u:object_r:container_file_t:s0',
  tls: true,
  tlsCacert: '/tls/ca',
  tlsCacrl: '/tls/crl',
  tlsCert: '/tls/cert',
  tlsKey: '/tls/key',
  tlsNoCnVerify: true,
  preDumpMode: CriuPreDumpMode.VM_READ,
  pidfdStoreSk: 22,
  networkLock: CriuNetworkLockMethod.NFTABLES,
  mntnsCompatMode: true,
  skipFileRwxCheck: true,
  unprivileged: true,
  imageIoMode: 1,
};

function expectInvalid(fn: () => unknown, code: string, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(InvalidArgumentError);
  expect({ code: (caught as InvalidArgumentError).code, message: (caught as Error).message }).toEqual({
    code,
    message: expect.stringMatching(message),
  });
}

describe('toCriuOpts mapping', () => {
  it('the fixture sets every CriuOptions field', () => {
    expect(Object.keys(everyOption).sort()).toEqual([...CRIU_OPTION_NAMES].sort());
  });

  it('maps every field to its criu_opts field', () => {
    expect(toCriuOpts(everyOption, resolvedFds)).toEqual(expectedMessage);
  });

  it('reaches every criu_opts field of the schema except images_dir (sent only without an fd)', () => {
    const optsType = criuRpcRoot().lookupType('criu_opts');
    const mapped = toCriuOpts(everyOption, resolvedFds) as unknown as Record<string, unknown>;
    const unreached = optsType.fieldsArray
      .map((f: protobuf.Field) => f.name)
      .filter((name) => mapped[name] === undefined);
    expect(unreached).toEqual(['imagesDir']);
    const pathMode = toCriuOpts({ imagesDir: '/img' }) as unknown as Record<string, unknown>;
    expect(pathMode.imagesDir).toBe('/img');
  });

  it('encodes and decodes unchanged through the codec', () => {
    const opts = toCriuOpts(everyOption, resolvedFds);
    expect(decodeRequest(encodeRequest({ type: CriuReqType.DUMP, opts })).opts).toEqual(opts);
  });

  it('sends images_dir_fd -1 plus the images_dir path when no fd was resolved', () => {
    expect(toCriuOpts({ imagesDir: '/var/img' })).toEqual({ imagesDirFd: -1, imagesDir: '/var/img' });
    expect(toCriuOpts({ imagesDir: '/var/img' }, { imagesDirFd: 9 })).toEqual({ imagesDirFd: 9 });
    expect(toCriuOpts({})).toEqual({ imagesDirFd: -1 });
  });

  it('leaves unset fields absent (CRIU keeps its defaults)', () => {
    const opts = toCriuOpts({ pid: 1, leaveRunning: false });
    expect(opts).toEqual({ imagesDirFd: -1, pid: 1, leaveRunning: false });
    expect(Object.keys(opts).sort()).toEqual(['imagesDirFd', 'leaveRunning', 'pid']);
    // Explicit undefined is the same as absent.
    expect(toCriuOpts({ pid: 1, logLevel: undefined })).toEqual({ imagesDirFd: -1, pid: 1 });
  });

  it('maps every enum name', () => {
    expect(
      (['iptables', 'nftables', 'skip'] as const).map((networkLock) => toCriuOpts({ networkLock }).networkLock),
    ).toEqual([1, 2, 3]);
    expect(
      (['ignore', 'none', 'props', 'soft', 'full', 'strict', 'default'] as const).map(
        (manageCgroupsMode) => toCriuOpts({ manageCgroupsMode }).manageCgroupsMode,
      ),
    ).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect((['splice', 'read'] as const).map((preDumpMode) => toCriuOpts({ preDumpMode }).preDumpMode)).toEqual([1, 2]);
    expect((['writeback', 'direct'] as const).map((imageIoMode) => toCriuOpts({ imageIoMode }).imageIoMode)).toEqual([
      0, 1,
    ]);
  });

  it('copies arrays, so later changes to the options do not change the message', () => {
    const external = ['unix[1]'];
    const opts = toCriuOpts({ external });
    external.push('unix[2]');
    expect(opts.external).toEqual(['unix[1]']);
  });

  it('a page server without fd needs no resolved psFd', () => {
    expect(toCriuOpts({ ps: { address: '::1', port: 0 } }).ps).toEqual({ address: '::1', port: 0 });
    expect(toCriuOpts({ ps: {} }).ps).toEqual({});
  });
});

describe('validation', () => {
  const cases: Array<[string, unknown, string, RegExp]> = [
    ['not an object', 'pid=1', 'ERR_INVALID_ARG_TYPE', /options must be an object/],
    ['null', null, 'ERR_INVALID_ARG_TYPE', /options must be an object/],
    ['an array', [], 'ERR_INVALID_ARG_TYPE', /options must be an object/],
    ['an unknown key', { leaveRuning: true }, 'ERR_INVALID_ARG_VALUE', /options\.leaveRuning is not a known option/],
    ['fd plumbing is not an option', { imagesDirFd: 3 }, 'ERR_INVALID_ARG_VALUE', /imagesDirFd is not a known option/],
    ['a boolean as a string', { tcpEstablished: 'true' }, 'ERR_INVALID_ARG_TYPE', /tcpEstablished must be a boolean/],
    ['pid 0', { pid: 0 }, 'ERR_OUT_OF_RANGE', /pid must be in 1\.\.2147483647/],
    ['pid -1', { pid: -1 }, 'ERR_OUT_OF_RANGE', /pid must be in/],
    ['pid 2^31', { pid: 2 ** 31 }, 'ERR_OUT_OF_RANGE', /pid must be in/],
    ['pid 1.5', { pid: 1.5 }, 'ERR_INVALID_ARG_TYPE', /pid must be an integer/],
    ['pid as a string', { pid: '12' }, 'ERR_INVALID_ARG_TYPE', /pid must be an integer/],
    ['pid NaN', { pid: NaN }, 'ERR_INVALID_ARG_TYPE', /pid must be an integer/],
    ['logLevel 5', { logLevel: 5 }, 'ERR_OUT_OF_RANGE', /logLevel must be in 0\.\.4/],
    [
      'logFile with a slash',
      { logFile: 'logs/dump.log' },
      'ERR_INVALID_ARG_VALUE',
      /logFile must be a file name without '\/'/,
    ],
    ['logFile ..', { logFile: '..' }, 'ERR_INVALID_ARG_VALUE', /logFile must be a file name/],
    ['logFile empty', { logFile: '' }, 'ERR_INVALID_ARG_VALUE', /logFile must not be empty/],
    ['imagesDir with NUL', { imagesDir: '/tmp/a\0b' }, 'ERR_INVALID_ARG_VALUE', /imagesDir must not contain NUL/],
    ['imagesDir as a number', { imagesDir: 3 }, 'ERR_INVALID_ARG_TYPE', /imagesDir must be a string/],
    ['workDir empty', { workDir: '' }, 'ERR_INVALID_ARG_VALUE', /workDir must not be empty/],
    ['root with NUL', { root: '\0' }, 'ERR_INVALID_ARG_VALUE', /root must not contain NUL/],
    ['ps not an object', { ps: 'localhost:1' }, 'ERR_INVALID_ARG_TYPE', /ps must be an object/],
    ['ps unknown key', { ps: { host: 'x' } }, 'ERR_INVALID_ARG_VALUE', /ps\.host is not a known option/],
    ['ps port 65536', { ps: { port: 65536 } }, 'ERR_OUT_OF_RANGE', /ps\.port must be in 0\.\.65535/],
    ['ps fd -1', { ps: { fd: -1 } }, 'ERR_OUT_OF_RANGE', /ps\.fd must be in 0\.\./],
    [
      'networkLock unknown',
      { networkLock: 'ipt' },
      'ERR_INVALID_ARG_VALUE',
      /networkLock must be one of 'iptables', 'nftables', 'skip', got 'ipt'/,
    ],
    ['networkLock as a number', { networkLock: 2 }, 'ERR_INVALID_ARG_TYPE', /networkLock must be a string/],
    [
      'manageCgroupsMode unknown',
      { manageCgroupsMode: 'cg_none' },
      'ERR_INVALID_ARG_VALUE',
      /manageCgroupsMode must be one of/,
    ],
    [
      'preDumpMode vm_read',
      { preDumpMode: 'vm_read' },
      'ERR_INVALID_ARG_VALUE',
      /preDumpMode must be one of 'splice', 'read'/,
    ],
    ['imageIoMode unknown', { imageIoMode: 'sync' }, 'ERR_INVALID_ARG_VALUE', /imageIoMode must be one of/],
    [
      'an inherited prototype key is not an enum name',
      { networkLock: 'toString' },
      'ERR_INVALID_ARG_VALUE',
      /networkLock must be one of/,
    ],
    [
      'inheritFds not an array',
      { inheritFds: { key: 'a', fd: 3 } },
      'ERR_INVALID_ARG_TYPE',
      /inheritFds must be an array/,
    ],
    [
      'inheritFds missing fd',
      { inheritFds: [{ key: 'a' }] },
      'ERR_INVALID_ARG_VALUE',
      /inheritFds\[0\]\.fd is required/,
    ],
    [
      'inheritFds negative fd',
      { inheritFds: [{ key: 'a', fd: -1 }] },
      'ERR_OUT_OF_RANGE',
      /inheritFds\[0\]\.fd must be in/,
    ],
    [
      'inheritFds empty key',
      { inheritFds: [{ key: '', fd: 3 }] },
      'ERR_INVALID_ARG_VALUE',
      /inheritFds\[0\]\.key must not be empty/,
    ],
    [
      'inheritFds duplicate key',
      {
        inheritFds: [
          { key: 'a', fd: 3 },
          { key: 'a', fd: 4 },
        ],
      },
      'ERR_INVALID_ARG_VALUE',
      /inheritFds\[1\]\.key 'a' appears twice/,
    ],
    ['veths missing ifOut', { veths: [{ ifIn: 'a' }] }, 'ERR_INVALID_ARG_VALUE', /veths\[0\]\.ifOut is required/],
    [
      'extMnt unknown key',
      { extMnt: [{ key: 'a', val: 'b', value: 'c' }] },
      'ERR_INVALID_ARG_VALUE',
      /extMnt\[0\]\.value is not a known option/,
    ],
    ['cgRoot without path', { cgRoot: [{ ctrl: 'cpu' }] }, 'ERR_INVALID_ARG_VALUE', /cgRoot\[0\]\.path is required/],
    ['joinNs missing nsFile', { joinNs: [{ ns: 'net' }] }, 'ERR_INVALID_ARG_VALUE', /joinNs\[0\]\.nsFile is required/],
    [
      'joinNs extraOpt not a string',
      { joinNs: [{ ns: 'net', nsFile: '/x', extraOpt: 1 }] },
      'ERR_INVALID_ARG_TYPE',
      /joinNs\[0\]\.extraOpt must be a string/,
    ],
    ['external as a string', { external: 'unix[1]' }, 'ERR_INVALID_ARG_TYPE', /external must be an array/],
    ['external with a number', { external: ['unix[1]', 2] }, 'ERR_INVALID_ARG_TYPE', /external\[1\] must be a string/],
    ['execCmd with an empty string', { execCmd: [''] }, 'ERR_INVALID_ARG_VALUE', /execCmd\[0\] must not be empty/],
    ['unixSkIno negative', { unixSkIno: [-1] }, 'ERR_OUT_OF_RANGE', /unixSkIno\[0\] must be in 0\.\.4294967295/],
    ['cpuCap 2^32', { cpuCap: 2 ** 32 }, 'ERR_OUT_OF_RANGE', /cpuCap must be in 0\.\.4294967295/],
    ['ghostLimit negative', { ghostLimit: -1 }, 'ERR_OUT_OF_RANGE', /ghostLimit must be in/],
    ['timeout negative', { timeout: -5 }, 'ERR_OUT_OF_RANGE', /timeout must be in/],
    [
      'emptyNs other than CLONE_NEWNET',
      { emptyNs: 0x20000000 },
      'ERR_INVALID_ARG_VALUE',
      /emptyNs accepts only CLONE_NEWNET/,
    ],
    ['statusFd negative', { statusFd: -1 }, 'ERR_OUT_OF_RANGE', /statusFd must be in/],
    ['pidfdStoreSk not an integer', { pidfdStoreSk: 3.3 }, 'ERR_INVALID_ARG_TYPE', /pidfdStoreSk must be an integer/],
  ];

  it.each(cases)('rejects %s', (_name, options, code, message) => {
    expectInvalid(() => validateCriuOptions(options), code, message);
    expectInvalid(() => toCriuOpts(options as CriuOptions, resolvedFds), code, message);
  });

  it('accepts every valid option and narrows the type', () => {
    const input: unknown = { ...everyOption };
    validateCriuOptions(input);
    const narrowed: CriuOptions = input; // compiles only because of the assertion signature
    expect(narrowed.networkLock).toBe('nftables');
    expect(() => validateCriuOptions({})).not.toThrow();
    expect(() => validateCriuOptions({ pid: undefined })).not.toThrow();
  });

  it('rejects fd plumbing that was not resolved', () => {
    expectInvalid(() => toCriuOpts({ workDir: '/w' }), 'ERR_INVALID_ARG_VALUE', /workDir needs resolved\.workDirFd/);
    expectInvalid(() => toCriuOpts({ ps: { fd: 7 } }), 'ERR_INVALID_ARG_VALUE', /ps\.fd needs resolved\.psFd/);
    expectInvalid(
      () => toCriuOpts({ inheritFds: [{ key: 'a', fd: 3 }] }),
      'ERR_INVALID_ARG_VALUE',
      /has 0 entries for 1 inheritFds/,
    );
    expectInvalid(
      () => toCriuOpts({ inheritFds: [{ key: 'a', fd: 3 }] }, { inheritFdNumbers: [3, 4] }),
      'ERR_INVALID_ARG_VALUE',
      /has 2 entries for 1 inheritFds/,
    );
    expectInvalid(
      () => toCriuOpts({}, { imagesDirFd: -1 }),
      'ERR_INVALID_ARG_VALUE',
      /resolved\.imagesDirFd must be an fd number/,
    );
    expectInvalid(
      () => toCriuOpts({ inheritFds: [{ key: 'a', fd: 3 }] }, { inheritFdNumbers: [1.5] }),
      'ERR_INVALID_ARG_VALUE',
      /inheritFdNumbers\[0\] must be an fd number/,
    );
  });
});
