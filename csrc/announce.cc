// Announces that an address now lives on this interface, so neighbours whose cache still holds
// the previous owner's MAC switch at once instead of waiting for their entry to fail (seconds):
//   IPv4: a gratuitous ARP request and reply (sender IP = target IP = the address, as arping -U
//         and -A send them) on an AF_PACKET socket, to the Ethernet broadcast address;
//   IPv6: an unsolicited Neighbour Advertisement (RFC 4861 7.2.6: Override set, Solicited clear,
//         target link-layer address option) from the address itself to ff02::1, hop limit 255.
// Sockets are made in the given network namespace (SocketIn) and the interface is looked up with
// ioctls on that socket, so names resolve there (if_nametoindex would use the caller's).
#include <arpa/inet.h>
#include <errno.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "boundary.h"
#include "socket_ops.h"

namespace nodecriu {

namespace {

constexpr size_t kMacLen = ETH_ALEN;

// Closes the fd on every path out, exceptions included.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { close(fd_); }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

struct Interface {
  int index;
  uint8_t mac[kMacLen];
};

// The interface's index and Ethernet MAC, asked through `fd` so they come from fd's namespace.
Interface LookUpInterface(Napi::Env env, int fd, const std::string& name) {
  ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, name.data(), name.size());
  if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) ThrowErrno(env, errno, "ioctl", ("SIOCGIFINDEX " + name).c_str());
  Interface out;
  out.index = ifr.ifr_ifindex;
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) ThrowErrno(env, errno, "ioctl", ("SIOCGIFHWADDR " + name).c_str());
  // Loopback, tun, ipip...: no Ethernet neighbours to tell.
  if (ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER)
    ThrowErrno(env, ENOTSUP, "ioctl", ("SIOCGIFHWADDR " + name + ": not an Ethernet interface").c_str());
  memcpy(out.mac, ifr.ifr_hwaddr.sa_data, kMacLen);
  return out;
}

// Arguments shared by both families: (ifname, address bytes, netns?).
struct Request {
  std::string ifname;
  Napi::Uint8Array address;
  bool in_netns;
  std::string netns;
};

Request ReadRequest(const Napi::CallbackInfo& info, size_t address_len) {
  Request r;
  r.ifname = ArgString(info, 0, "ifname");
  // The kernel copies at most IFNAMSIZ bytes and needs the NUL: refuse rather than truncate.
  if (r.ifname.empty() || r.ifname.size() >= IFNAMSIZ || r.ifname.find('\0') != std::string::npos)
    ThrowArgType(info.Env(), "ifname", "an interface name of 1 to 15 bytes");
  r.address = ArgTypedArray<uint8_t>(info, 1, "address", address_len);
  if (r.address.ElementLength() != address_len)
    ThrowArgType(info.Env(), "address", address_len == 4 ? "4 bytes" : "16 bytes");
  r.in_netns = OptString(info, 2, &r.netns);
  return r;
}

// ARP payload for Ethernet/IPv4 (struct arphdr plus the four addresses, unpadded: 28 bytes).
struct __attribute__((packed)) ArpPacket {
  arphdr header;
  uint8_t sha[kMacLen];
  uint8_t sip[4];
  uint8_t tha[kMacLen];
  uint8_t tip[4];
};

// announceIPv4(ifname, address: Uint8Array(4), netns?) -> undefined. One request, one reply.
Napi::Value AnnounceIPv4(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Request r = ReadRequest(info, 4);
  // Protocol 0: this socket only sends, so nothing is queued for it to receive.
  int fd = SocketIn(env, r.in_netns ? &r.netns : nullptr, AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket", "AF_PACKET for a gratuitous ARP");
  FdCloser closer(fd);
  Interface iface = LookUpInterface(env, fd, r.ifname);

  sockaddr_ll to;
  memset(&to, 0, sizeof(to));
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_ARP);
  to.sll_ifindex = iface.index;
  to.sll_halen = kMacLen;
  memset(to.sll_addr, 0xff, kMacLen);

  ArpPacket packet;
  memset(&packet, 0, sizeof(packet));
  packet.header.ar_hrd = htons(ARPHRD_ETHER);
  packet.header.ar_pro = htons(ETH_P_IP);
  packet.header.ar_hln = kMacLen;
  packet.header.ar_pln = 4;
  memcpy(packet.sha, iface.mac, kMacLen);
  memcpy(packet.sip, r.address.Data(), 4);
  memcpy(packet.tip, r.address.Data(), 4);
  // Request: target MAC zero (RFC 5227 announcement, as the kernel's own arp_notify sends).
  // Reply: target MAC = sender MAC, which Linux (arp_is_garp) requires to treat a reply as
  // gratuitous and override an entry younger than locktime.
  for (uint16_t op : {ARPOP_REQUEST, ARPOP_REPLY}) {
    packet.header.ar_op = htons(op);
    if (op == ARPOP_REPLY) memcpy(packet.tha, iface.mac, kMacLen);
    if (sendto(fd, &packet, sizeof(packet), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)) < 0)
      ThrowErrno(env, errno, "sendto", ("gratuitous ARP on " + r.ifname).c_str());
  }
  return env.Undefined();
}

void SetOpt(Napi::Env env, int fd, int level, int name, int value, const char* what) {
  if (setsockopt(fd, level, name, &value, sizeof(value)) < 0) ThrowErrno(env, errno, "setsockopt", what);
}

// Neighbour Advertisement with one target link-layer address option (8 bytes for Ethernet).
struct __attribute__((packed)) NaPacket {
  nd_neighbor_advert advert;
  uint8_t option_type;
  uint8_t option_len;  // in units of 8 bytes
  uint8_t mac[kMacLen];
};

// announceIPv6(ifname, address: Uint8Array(16), netns?) -> undefined. The address must be on the
// interface and not tentative (added with nodad, or past DAD): it is the source (bind).
Napi::Value AnnounceIPv6(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Request r = ReadRequest(info, 16);
  int fd = SocketIn(env, r.in_netns ? &r.netns : nullptr, AF_INET6, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    IPPROTO_ICMPV6);
  if (fd < 0) ThrowErrno(env, errno, "socket", "raw ICMPv6 for a Neighbour Advertisement");
  FdCloser closer(fd);
  // Nothing to receive: an ICMPv6 filter that blocks every type keeps the queue empty.
  icmp6_filter filter;
  ICMP6_FILTER_SETBLOCKALL(&filter);
  if (setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof(filter)) < 0)
    ThrowErrno(env, errno, "setsockopt", "ICMP6_FILTER");
  Interface iface = LookUpInterface(env, fd, r.ifname);

  // Receivers drop Neighbour Discovery that a router could have forwarded (RFC 4861 7.1.2).
  SetOpt(env, fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255, "IPV6_MULTICAST_HOPS");
  SetOpt(env, fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 255, "IPV6_UNICAST_HOPS");
  SetOpt(env, fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, iface.index, "IPV6_MULTICAST_IF");
  SetOpt(env, fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 0, "IPV6_MULTICAST_LOOP");

  sockaddr_in6 from;
  memset(&from, 0, sizeof(from));
  from.sin6_family = AF_INET6;
  memcpy(&from.sin6_addr, r.address.Data(), 16);
  from.sin6_scope_id = iface.index;  // needed when the address is link-local, ignored otherwise
  if (bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) < 0)
    ThrowErrno(env, errno, "bind", "the announced address (it must be on the interface and not tentative)");

  sockaddr_in6 to;
  memset(&to, 0, sizeof(to));
  to.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "ff02::1", &to.sin6_addr);
  to.sin6_scope_id = iface.index;

  NaPacket packet;
  memset(&packet, 0, sizeof(packet));
  packet.advert.nd_na_type = ND_NEIGHBOR_ADVERT;
  packet.advert.nd_na_code = 0;
  packet.advert.nd_na_flags_reserved = ND_NA_FLAG_OVERRIDE;  // Solicited and Router clear
  memcpy(&packet.advert.nd_na_target, r.address.Data(), 16);
  packet.option_type = ND_OPT_TARGET_LINKADDR;
  packet.option_len = 1;
  memcpy(packet.mac, iface.mac, kMacLen);
  // The checksum stays 0: the kernel computes it for raw ICMPv6 sockets (RFC 3542 3.1).
  if (sendto(fd, &packet, sizeof(packet), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)) < 0)
    ThrowErrno(env, errno, "sendto", ("Neighbour Advertisement on " + r.ifname).c_str());
  return env.Undefined();
}

}  // namespace

void InitAnnounce(Napi::Env env, Napi::Object exports) {
  exports.Set("announceIPv4", Napi::Function::New(env, AnnounceIPv4, "announceIPv4"));
  exports.Set("announceIPv6", Napi::Function::New(env, AnnounceIPv6, "announceIPv6"));
}

}  // namespace nodecriu
