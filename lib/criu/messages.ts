/**
 * TypeScript shapes of CRIU's RPC messages (proto/criu-rpc.proto), as lib/criu/codec.ts encodes
 * and decodes them: camelCase field names, enums as numbers, nested messages as plain objects.
 * An optional field that is absent on the wire is absent (undefined) here; codec.ts never fills
 * in proto2 defaults. The numbers are CRIU's wire values; the codec checks them.
 */

export const CriuReqType = {
  EMPTY: 0,
  DUMP: 1,
  RESTORE: 2,
  CHECK: 3,
  PRE_DUMP: 4,
  PAGE_SERVER: 5,
  NOTIFY: 6,
  CPUINFO_DUMP: 7,
  CPUINFO_CHECK: 8,
  FEATURE_CHECK: 9,
  VERSION: 10,
  WAIT_PID: 11,
  PAGE_SERVER_CHLD: 12,
  SINGLE_PRE_DUMP: 13,
} as const;
export type CriuReqType = (typeof CriuReqType)[keyof typeof CriuReqType];

const reqTypeNames: ReadonlyMap<number, string> = new Map(
  Object.entries(CriuReqType).map(([name, value]) => [value, name]),
);

/** 'DUMP' for 1; 'UNKNOWN(42)' for a number CRIU 4.2 does not define. */
export function reqTypeName(type: number): string {
  return reqTypeNames.get(type) ?? `UNKNOWN(${type})`;
}

export function isCriuReqType(value: unknown): value is CriuReqType {
  return typeof value === 'number' && reqTypeNames.has(value);
}

/** criu_cg_mode: how CRIU manages cgroups (manage_cgroups_mode). */
export const CriuCgMode = { IGNORE: 0, CG_NONE: 1, PROPS: 2, SOFT: 3, FULL: 4, STRICT: 5, DEFAULT: 6 } as const;
export type CriuCgMode = (typeof CriuCgMode)[keyof typeof CriuCgMode];

/** criu_network_lock_method: how CRIU blocks traffic of dumped TCP connections. */
export const CriuNetworkLockMethod = { IPTABLES: 1, NFTABLES: 2, SKIP: 3 } as const;
export type CriuNetworkLockMethod = (typeof CriuNetworkLockMethod)[keyof typeof CriuNetworkLockMethod];

/** criu_pre_dump_mode: how pre-dump reads memory. */
export const CriuPreDumpMode = { SPLICE: 1, VM_READ: 2 } as const;
export type CriuPreDumpMode = (typeof CriuPreDumpMode)[keyof typeof CriuPreDumpMode];

/** criu_image_io_mode (field 72): added to CRIU after 4.2 (PR #3066); CRIU 4.2 ignores it. */
export const CriuImageIoMode = { IMAGE_IO_WRITEBACK: 0, IMAGE_IO_DIRECT: 1 } as const;
export type CriuImageIoMode = (typeof CriuImageIoMode)[keyof typeof CriuImageIoMode];

/** criu_page_server_info. `fd` is a number in criu's own fd table (swrk only). */
export interface CriuPageServerInfoMessage {
  address?: string;
  port?: number;
  pid?: number;
  fd?: number;
}

/** criu_veth_pair (deprecated upstream; use `external` 'veth[IFIN]:OUTNAME'). */
export interface CriuVethPairMessage {
  ifIn: string;
  ifOut: string;
}

/** ext_mount_map (deprecated upstream; use `external` 'mnt[KEY]:VAL'). */
export interface ExtMountMapMessage {
  key: string;
  val: string;
}

export interface JoinNamespaceMessage {
  ns: string;
  nsFile: string;
  extraOpt?: string;
}

/** inherit_fd. `fd` is a number in criu's own fd table (swrk only). */
export interface InheritFdMessage {
  key: string;
  fd: number;
}

export interface CgroupRootMessage {
  ctrl?: string;
  path: string;
}

/** unix_sk (deprecated upstream; use `external` 'unix[INO]'). */
export interface UnixSkMessage {
  inode: number;
}

/** criu_opts, every field of CRIU 4.2 (plus post-4.2 imageIoMode). */
export interface CriuOptsMessage {
  /** Required on the wire; -1 (the proto default) when `imagesDir` is used instead. */
  imagesDirFd: number;
  pid?: number;
  leaveRunning?: boolean;
  extUnixSk?: boolean;
  tcpEstablished?: boolean;
  evasiveDevices?: boolean;
  shellJob?: boolean;
  fileLocks?: boolean;
  logLevel?: number;
  logFile?: string;
  ps?: CriuPageServerInfoMessage;
  notifyScripts?: boolean;
  root?: string;
  parentImg?: string;
  trackMem?: boolean;
  autoDedup?: boolean;
  workDirFd?: number;
  linkRemap?: boolean;
  veths?: CriuVethPairMessage[];
  cpuCap?: number;
  forceIrmap?: boolean;
  execCmd?: string[];
  extMnt?: ExtMountMapMessage[];
  manageCgroups?: boolean;
  cgRoot?: CgroupRootMessage[];
  rstSibling?: boolean;
  inheritFd?: InheritFdMessage[];
  autoExtMnt?: boolean;
  extSharing?: boolean;
  extMasters?: boolean;
  skipMnt?: string[];
  enableFs?: string[];
  unixSkIno?: UnixSkMessage[];
  manageCgroupsMode?: CriuCgMode;
  ghostLimit?: number;
  irmapScanPaths?: string[];
  external?: string[];
  emptyNs?: number;
  joinNs?: JoinNamespaceMessage[];
  cgroupProps?: string;
  cgroupPropsFile?: string;
  cgroupDumpController?: string[];
  freezeCgroup?: string;
  timeout?: number;
  tcpSkipInFlight?: boolean;
  weakSysctls?: boolean;
  lazyPages?: boolean;
  statusFd?: number;
  orphanPtsMaster?: boolean;
  configFile?: string;
  tcpClose?: boolean;
  lsmProfile?: string;
  tlsCacert?: string;
  tlsCacrl?: string;
  tlsCert?: string;
  tlsKey?: string;
  tls?: boolean;
  tlsNoCnVerify?: boolean;
  cgroupYard?: string;
  preDumpMode?: CriuPreDumpMode;
  pidfdStoreSk?: number;
  lsmMountContext?: string;
  networkLock?: CriuNetworkLockMethod;
  mntnsCompatMode?: boolean;
  skipFileRwxCheck?: boolean;
  unprivileged?: boolean;
  imagesDir?: string;
  leaveStopped?: boolean;
  displayStats?: boolean;
  logToStderr?: boolean;
  /** post-4.2 (field 72); CRIU 4.2 ignores it. */
  imageIoMode?: CriuImageIoMode;
}

export interface CriuFeaturesMessage {
  memTrack?: boolean;
  lazyPages?: boolean;
  pidfdStore?: boolean;
}

export interface CriuRequestMessage {
  type: CriuReqType;
  opts?: CriuOptsMessage;
  notifySuccess?: boolean;
  keepOpen?: boolean;
  features?: CriuFeaturesMessage;
  /** WAIT_PID: the pid to wait for (uint32). */
  pid?: number;
}

export interface CriuDumpRespMessage {
  restored?: boolean;
}

export interface CriuRestoreRespMessage {
  pid: number;
}

export interface CriuNotifyMessage {
  script?: string;
  pid?: number;
}

export interface CriuVersionMessage {
  majorNumber: number;
  minorNumber: number;
  gitid?: string;
  sublevel?: number;
  extra?: number;
  name?: string;
}

export interface CriuResponseMessage {
  type: CriuReqType;
  success: boolean;
  dump?: CriuDumpRespMessage;
  restore?: CriuRestoreRespMessage;
  notify?: CriuNotifyMessage;
  ps?: CriuPageServerInfoMessage;
  crErrno?: number;
  features?: CriuFeaturesMessage;
  crErrmsg?: string;
  version?: CriuVersionMessage;
  /** WAIT_PID: the raw wait status. */
  status?: number;
}
