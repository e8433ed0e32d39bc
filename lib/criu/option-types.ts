/**
 * The public CRIU options: every criu_opts field as a typed camelCase option (fd plumbing aside).
 * lib/criu/options.ts validates them and maps them to the wire.
 *
 * File descriptors: `imagesDir`/`workDir` are paths the client opens; `inheritFds[].fd` and
 * `ps.fd` are fds in the CALLER's table that the client passes to swrk, so on the wire they
 * become criu's own fd numbers (`resolved`). `statusFd` and `pidfdStoreSk` stay the caller's
 * numbers: CRIU takes those from its peer's fd table (/proc/<peer>/fd, pidfd_getfd).
 */
export type CriuNetworkLock = 'iptables' | 'nftables' | 'skip';
/** CRIU's --manage-cgroups modes; 'default' lets CRIU pick (RPC only). */
export type CriuCgroupsMode = 'ignore' | 'none' | 'props' | 'soft' | 'full' | 'strict' | 'default';
/** CRIU's --pre-dump-mode: 'splice' (default) or 'read' (process_vm_readv). */
export type CriuPreDumpModeName = 'splice' | 'read';
/** Post-4.2 --image-io-mode; CRIU 4.2 ignores it. */
export type CriuImageIoModeName = 'writeback' | 'direct';

export interface CriuOptions {
  /**
   * Directory for the images (opened by the client; sent as images_dir when it cannot be). Dumps,
   * pre-dumps, page servers and cpuinfo dumps create it 0700 if missing; restore needs it to exist.
   */
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
