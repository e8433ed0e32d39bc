/** The raw addon surface of the libsoccr half (csrc/soccr_*.cc, csrc/socket_ops.cc). */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface SoccrBinding {}
