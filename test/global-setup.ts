/**
 * The suite runs against the real kernel and real CRIU: TCP_REPAIR needs CAP_NET_ADMIN, CRIU and
 * network namespaces need root. Without root the suite fails loudly instead of skipping.
 */
export default function globalSetup(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new Error('node-criu tests must run as root (TCP_REPAIR, CRIU and network namespaces need it)');
  }
  if (process.platform !== 'linux') throw new Error('node-criu is Linux only');
}
