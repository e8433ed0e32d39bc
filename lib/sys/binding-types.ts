/** The raw addon surface of the system layer (csrc/announce.cc). Internal. */

export interface SysBinding {
  /**
   * A gratuitous ARP request and reply for `address` (4 bytes) from `ifname`'s MAC, to the
   * Ethernet broadcast address; in the network namespace at `netns` when given.
   */
  announceIPv4(ifname: string, address: Uint8Array, netns?: string): void;
  /**
   * An unsolicited Neighbour Advertisement (Override) for `address` (16 bytes) from the address
   * itself to ff02::1 on `ifname`. The address must be on the interface and not tentative.
   */
  announceIPv6(ifname: string, address: Uint8Array, netns?: string): void;
}
