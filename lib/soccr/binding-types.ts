/** The raw addon surface of the libsoccr half (csrc/soccr_*.cc, csrc/socket_ops.cc). Internal. */

/** A socket address as native code reads and writes it (network byte order bytes). */
export interface NativeSockaddr {
  family: 4 | 6;
  /** 4 bytes for family 4, 16 for family 6. */
  address: Uint8Array;
  port: number;
  flowinfo?: number;
  scopeId?: number;
}

/** csrc/soccr_handle.cc: one libsoccr handle; owns a dup() of the fd it was made from. */
export interface NativeSoccrHandle {
  /** The handle's own dup of the fd, -1 after resume()/release(). */
  readonly fd: number;
  /** libsoccr_save: the 17 libsoccr_sk_data words. */
  save(): Uint32Array;
  /** libsoccr_save into `out`: 17 words sk_data; with 33 words also own and peer address, packed. */
  save(out: Uint32Array): Uint32Array;
  /** A copy of the saved queue: 1 = receive, 2 = send; null when the queue is empty. */
  getQueueBytes(queue: 1 | 2): Buffer | null;
  /** libsoccr_get_addr: own (true) or peer (false) address. */
  getAddr(self: boolean): NativeSockaddr;
  /** set_addr x2 + set_queue_bytes x2 + libsoccr_restore. */
  restore(data: Uint32Array, self: NativeSockaddr, peer: NativeSockaddr, recv: Uint8Array, send: Uint8Array): void;
  /**
   * save(out) plus a copy of each non-empty queue, in one call: undefined (both empty), the
   * non-empty one alone (which one: out[1] inq_len / out[3] outq_len), or [recv, send].
   */
  saveWithQueues(out: Uint32Array): ArrayBuffer | [ArrayBuffer, ArrayBuffer] | undefined;
  /**
   * restore() with sk_data and both addresses packed as save(out) fills them. transfer (bits:
   * 1 recv, 2 send): after success, detach those queues' ArrayBuffers (frees them now).
   */
  restorePacked(packed: Uint32Array, recv: Uint8Array, send: Uint8Array, transfer?: number): void;
  setSkDataUnbound(data: Uint32Array): void;
  setSkDataNoq(data: Uint32Array): void;
  restoreQueue(data: Uint32Array, queue: 1 | 2, bytes: Uint8Array): void;
  setSkData(data: Uint32Array): void;
  /** Repair off (+ unsent data, deferred FIN), free, close the dup. Idempotent. */
  resume(): void;
  /** Free and close the dup; repair mode stays on. Idempotent. */
  release(): void;
}

export interface NativeSocketInfo {
  /** 4, 6, or -AF_xxx for other families. */
  domain: number;
  type: number;
  protocol: number;
  acceptConn: boolean;
  /** Linux TCP state (1 = ESTABLISHED ...), -1 for non-TCP sockets. */
  tcpState: number;
  /** TCP_REPAIR as getsockopt reports it (0/1), -1 for non-TCP sockets. */
  repair: number;
  pendingError: number;
  /** SO_REUSEADDR (read it before repair mode, which forces reuse). */
  reuseAddr: boolean;
}

/** csrc/socket_ops.cc. Every function throws a NativeErrnoError on failure. */
export interface NativeSocketOps {
  tcpSocket(family: 4 | 6, netnsPath?: string): number;
  closeFd(fd: number): void;
  attachDropFilter(fd: number): void;
  detachFilter(fd: number): void;
  sockName(fd: number): NativeSockaddr;
  peerName(fd: number): NativeSockaddr;
  bind(fd: number, address: NativeSockaddr): void;
  /** true: connected; false: EINPROGRESS. */
  connect(fd: number, address: NativeSockaddr): boolean;
  socketInfo(fd: number): NativeSocketInfo;
  /** One call, no allocation: out[0] TCP state, out[1] SO_REUSEADDR, out[2..9] own, out[10..17] peer address (packed). */
  inspectTcp(fd: number, out: Uint32Array): void;
  /** TCP_REPAIR on/off; turning it off re-applies SO_REUSEADDR when reuseAddr is true. */
  setRepair(fd: number, on: boolean, reuseAddr?: boolean): void;
  /** SO_REUSEADDR on/off. */
  setReuseAddr(fd: number, on: boolean): void;
  setSendBufferForce(fd: number, bytes: number): number;
  sendBufferSize(fd: number): number;
}

export interface SoccrBinding {
  /**
   * libsoccr_pause on a dup of fd (the handle owns and closes the dup). With dupFd false it uses
   * fd itself and never closes it: only for code that owns fd and always resumes or releases.
   * With `check` (1 or 2 words), first verifies fd is TCP in a checkpointable state (TCP_INFO;
   * EINVAL "tcp state" otherwise, nothing changed) and writes check[0] = state, check[1] =
   * SO_REUSEADDR.
   */
  SoccrHandle: new (fd: number, dupFd?: boolean, check?: Uint32Array) => NativeSoccrHandle;
  socketOps: NativeSocketOps;
  /**
   * csrc/soccr_oneshot.cc: pause + save (+ addresses when packed has 33 words) + both queues +
   * release, in one call on the caller's fd; leaves repair on. The queues, each a new
   * ArrayBuffer: undefined when both are empty, the non-empty one alone (which one follows from
   * packed[1] inq_len / packed[3] outq_len), or [recv, send] when both hold bytes. With a pool
   * (packed of 35 words), queues of at most 8 KiB that fit in pool[poolOffset..] are peeked there
   * instead and left out of the result: packed[33] / packed[34] = their offsets, or 0xffffffff.
   */
  soccrDump(
    fd: number,
    packed: Uint32Array,
    pool?: Uint8Array,
    poolOffset?: number,
  ): ArrayBuffer | [ArrayBuffer, ArrayBuffer] | undefined;
  /**
   * pause + set addresses and queues + restore + resume on a fresh fd, in one call. transfer
   * (bits: 1 recv, 2 send): after success, detach those queues' ArrayBuffers (frees them now).
   */
  soccrRestore(
    fd: number,
    packed: Uint32Array,
    recv: Uint8Array,
    send: Uint8Array,
    netns?: undefined,
    transfer?: number,
  ): void;
  /** The same on a socket it creates first (family from packed, in netns if given); returns its fd. */
  soccrRestore(
    fd: -1,
    packed: Uint32Array,
    recv: Uint8Array,
    send: Uint8Array,
    netns?: string,
    transfer?: number,
  ): number;
  /**
   * csrc/soccr_batch.cc: soccrDump for every fd (17 words each into packed), on a few threads;
   * returns [recv, send] per fd, flattened (null: empty). With attachFilter, a drop-all socket
   * filter goes on each socket right before its pause. dumped[i] bit 1: fd i is in repair mode,
   * bit 2: its filter is attached; on failure the failing socket is resumed and the error has
   * `index`.
   */
  /**
   * inspectTcp for every fd (18 words each), on a few threads; a fd whose inspection failed gets
   * state (word 0) 0.
   */
  soccrInspectBatch(fds: Int32Array, words: Uint32Array): void;
  soccrDumpBatch(fds: Int32Array, packed: Uint32Array, dumped: Uint8Array, attachFilter?: boolean): (Buffer | null)[];
  /**
   * Creates the sockets (in netns if given) into fds before returning (the caller owns them, also
   * on failure), then restores connection i (33 packed words, queues[2i], queues[2i+1], copied)
   * into fds[i] off the JS thread, repair left on; no unsent data allowed. Do not use the fds until
   * the promise settles; it rejects with the first failure (`index` set).
   */
  soccrRestoreBatch(packed: Uint32Array, queues: (Uint8Array | null)[], fds: Int32Array, netns?: string): Promise<void>;
  /** TCP_REPAIR off for each fd (libsoccr_resume of a restore without unsent data); returns the failure count. */
  soccrResumeBatch(fds: Int32Array): number;
  /** Closes the sockets behind the fds on a few threads; each number then holds a /dev/null duplicate. */
  soccrDropBatch(fds: Int32Array): void;
  /**
   * csrc/nft_elements.cc: adds (op 0) or deletes (op 1) the keys (16 bytes each for set v4, 40 for
   * v6) in the inet table's sets, one nf_tables transaction over netlink (in netns if given).
   */
  nftSetElements(op: number, table: string, v4Keys: Uint8Array, v6Keys: Uint8Array, netns?: string): void;
  /** csrc/nft_elements.cc: deletes one table (family NFPROTO_*) over netlink, in netns if given. */
  nftDeleteTable(family: number, table: string, netns?: string): void;
  /**
   * csrc/nfqueue.cc: a netlink socket bound to netfilter queue `num` (in netns if given), copy mode
   * META, at most `maxlen` packets held; EBUSY when another socket has the queue.
   */
  nfqueueOpen(num: number, maxlen: number, netns?: string): number;
  /** csrc/nfqueue.cc: the packet messages waiting now: [count, last id, 1 if any]. */
  nfqueueRead(fd: number): [number, number, number];
  /** csrc/nfqueue.cc: accept or drop every held packet up to `lastId`; returns what was read meanwhile. */
  nfqueueVerdict(fd: number, num: number, lastId: number, accept: boolean): [number, number, number];
  /** csrc/nfqueue_rule.cc: appends the NFQUEUE rule (num >= 0) to a chain of an ip/ip6 table, or empties it (-1). */
  nfqueueRule(family: number, table: string, chain: string, num: number, netns?: string): void;
  /** Process-global libsoccr level (max over environments), per-environment callback. */
  setSoccrLog(level: 0 | 1 | 2, callback?: (level: number, line: string) => void): void;
}
