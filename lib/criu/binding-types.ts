/** The raw addon surface of the CRIU-RPC half (csrc/seqpacket*.cc). */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface SeqpacketBinding {}
