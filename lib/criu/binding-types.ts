/** The raw addon surface the CRIU-RPC half uses (csrc/seqpacket*.cc): the transport's, plus pidfd_getfd. */
import type { TransportBinding } from '../transport/binding-types';

export interface SeqpacketBinding extends TransportBinding {
  /** pidfd_open(pid) + pidfd_getfd(fd): a close-on-exec copy of another process's fd (root). */
  pidfdGetfd(pid: number, fd: number): number;
}
