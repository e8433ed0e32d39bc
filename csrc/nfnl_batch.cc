#include "nfnl_batch.h"

#include <errno.h>
#include <sys/socket.h>

#include <algorithm>

namespace nodecriu {

Outcome SendBatch(int fd, const BatchWriter& batch, size_t acks_expected) {
  const std::vector<char>& bytes = batch.bytes();
  int one = 1;
  // Errors then echo only the failing message's header, not its (up to 60 KB of) elements.
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  // The whole transaction is one datagram: the send buffer must hold it (nft does the same).
  int size = static_cast<int>(std::min<size_t>(bytes.size() + 65536, 1u << 30));
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  sockaddr_nl kernel = {};
  kernel.nl_family = AF_NETLINK;
  ssize_t sent;
  do {
    sent = sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel));
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return {errno, "sendmsg"};
  if (static_cast<size_t>(sent) != bytes.size()) return {EMSGSIZE, "sendmsg"};
  size_t acks = 0;
  int first_error = 0;
  alignas(nlmsghdr) char reply[8192];
  for (;;) {
    ssize_t got = recv(fd, reply, sizeof(reply), MSG_DONTWAIT);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return {errno, "recvmsg"};
    }
    int remaining = static_cast<int>(got);
    for (auto* header = reinterpret_cast<nlmsghdr*>(reply); NLMSG_OK(header, remaining); header = NLMSG_NEXT(header, remaining)) {
      if (header->nlmsg_type != NLMSG_ERROR) continue;
      const auto* answer = static_cast<const nlmsgerr*>(NLMSG_DATA(header));
      if (answer->error == 0) {
        acks++;
      } else if (first_error == 0) {
        first_error = -answer->error;
      }
    }
  }
  if (first_error != 0) return {first_error, "nftables"};
  if (acks != acks_expected) return {EIO, "nftables"};  // not expected: the kernel answers in sendmsg
  return {};
}

}  // namespace nodecriu
