// A netfilter queue (nfnetlink_queue) reader that holds packets: the packets a rule sends to queue
// `num` stay in the kernel, and only their ids reach us (copy mode META, no payload) until one
// batch verdict accepts (re-injects where they were queued) or drops all of them. Our own netlink
// code, no libnetfilter_queue. Without a bound reader the kernel drops what the rule queues (the
// rule never sets the bypass flag); past `maxlen` held packets it drops too (no fail-open); when
// the socket closes the kernel drops whatever is still held. So a hold never lets a packet through
// before its verdict.
//
// Wire format (linux/netfilter/nfnetlink_queue.h): NFQNL_MSG_CONFIG {NFQA_CFG_CMD BIND,
// NFQA_CFG_PARAMS META, NFQA_CFG_QUEUE_MAXLEN}; the kernel sends NFQNL_MSG_PACKET
// {NFQA_PACKET_HDR {packet_id, ...}} per queued packet; NFQNL_MSG_VERDICT_BATCH
// {NFQA_VERDICT_HDR {verdict, id}} applies to every held packet with an id up to `id`.
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "addon.h"
#include "boundary.h"
#include "nfnl_batch.h"
#include "socket_ops.h"

namespace nodecriu {

namespace {

constexpr uint16_t kQueueMessage(uint16_t type) { return static_cast<uint16_t>((NFNL_SUBSYS_QUEUE << 8) | type); }

// What one read pass found: queued packets (count, last id) and the first error answer.
struct Drained {
  uint32_t packets = 0;
  uint32_t last_id = 0;
  bool any = false;
  int error = 0;
  uint32_t acks = 0;
};

void ParseMessages(const char* data, int length, Drained* out) {
  for (auto* header = reinterpret_cast<const nlmsghdr*>(data); NLMSG_OK(header, length); header = NLMSG_NEXT(header, length)) {
    if (header->nlmsg_type == NLMSG_ERROR) {
      const auto* answer = static_cast<const nlmsgerr*>(NLMSG_DATA(header));
      if (answer->error == 0) out->acks++;
      else if (out->error == 0) out->error = -answer->error;
      continue;
    }
    if (header->nlmsg_type != kQueueMessage(NFQNL_MSG_PACKET)) continue;
    int attrs_length = static_cast<int>(header->nlmsg_len) - NLMSG_HDRLEN - NLMSG_ALIGN(sizeof(nfgenmsg));
    auto* attr = reinterpret_cast<const nlattr*>(static_cast<const char*>(NLMSG_DATA(header)) + NLMSG_ALIGN(sizeof(nfgenmsg)));
    while (attrs_length >= static_cast<int>(NLA_HDRLEN) && attr->nla_len >= NLA_HDRLEN && attr->nla_len <= attrs_length) {
      if ((attr->nla_type & NLA_TYPE_MASK) == NFQA_PACKET_HDR && attr->nla_len >= NLA_HDRLEN + sizeof(nfqnl_msg_packet_hdr)) {
        nfqnl_msg_packet_hdr packet;
        memcpy(&packet, reinterpret_cast<const char*>(attr) + NLA_HDRLEN, sizeof(packet));
        out->packets++;
        out->last_id = ntohl(packet.packet_id);
        out->any = true;
        break;
      }
      int step = NLA_ALIGN(attr->nla_len);
      attrs_length -= step;
      attr = reinterpret_cast<const nlattr*>(reinterpret_cast<const char*>(attr) + step);
    }
  }
}

// Reads every message waiting on the (non-blocking) socket. ENOBUFS (messages the kernel could not
// queue to us: those packets were dropped) is not an error for a hold.
int Drain(int fd, Drained* out) {
  alignas(nlmsghdr) static thread_local char buffer[65536];
  for (;;) {
    ssize_t got = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (got < 0) {
      if (errno == EINTR || errno == ENOBUFS) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return errno;
    }
    ParseMessages(buffer, static_cast<int>(got), out);
  }
}

// Sends one queue message and collects its acknowledgement (packet messages read meanwhile count).
int Request(int fd, const BatchWriter& message, Drained* drained) {
  sockaddr_nl kernel = {};
  kernel.nl_family = AF_NETLINK;
  const std::vector<char>& bytes = message.bytes();
  ssize_t sent;
  do {
    sent = sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel));
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return errno;
  uint32_t acks_before = drained->acks;
  int err = Drain(fd, drained);
  if (err != 0) return err;
  if (drained->error != 0) return drained->error;
  return drained->acks > acks_before ? 0 : EIO;  // the kernel answers within sendmsg
}

// nfqueueOpen(num: uint16, maxlen: uint32, netns?: string) -> fd
// A NETLINK_NETFILTER socket bound to queue `num` (in netns when given), copy mode META, at most
// `maxlen` packets held. Throws EBUSY when another socket has that queue, EPERM without
// CAP_NET_ADMIN.
Napi::Value NfqueueOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t num = ArgUint32(info, 0, "num");
  if (num > 65535) ThrowArgType(env, "num", "a queue number (0..65535)");
  uint32_t maxlen = ArgUint32(info, 1, "maxlen");
  if (maxlen == 0) ThrowArgType(env, "maxlen", "a positive packet count");
  std::string netns;
  bool in_netns = OptString(info, 2, &netns);
  int fd = SocketIn(env, in_netns ? &netns : nullptr, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER);
  if (fd < 0) ThrowErrno(env, errno, "socket", "AF_NETLINK NETLINK_NETFILTER");
  // Room for every held packet's message (META: ~200 bytes of payload, ~1 KiB of truesize), so
  // none is dropped for want of buffer before the bound. FORCE needs CAP_NET_ADMIN in the
  // initial namespace; otherwise rmem_max caps it and the excess is dropped.
  int rcvbuf = static_cast<int>(std::min<uint64_t>(std::max<uint64_t>(1u << 20, uint64_t{maxlen} * 1024), 1u << 30));
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  sockaddr_nl local = {};
  local.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "bind", "AF_NETLINK");
  }
  BatchWriter message;
  size_t at = message.Begin(kQueueMessage(NFQNL_MSG_CONFIG), NLM_F_REQUEST | NLM_F_ACK, AF_UNSPEC, static_cast<uint16_t>(num));
  nfqnl_msg_config_cmd cmd = {};
  cmd.command = NFQNL_CFG_CMD_BIND;
  message.Attr(NFQA_CFG_CMD, &cmd, sizeof(cmd));
  nfqnl_msg_config_params params = {};
  params.copy_range = htonl(0);
  params.copy_mode = NFQNL_COPY_META;
  message.Attr(NFQA_CFG_PARAMS, &params, sizeof(params));
  uint32_t be_maxlen = htonl(maxlen);
  message.Attr(NFQA_CFG_QUEUE_MAXLEN, &be_maxlen, sizeof(be_maxlen));
  message.End(at);
  Drained drained;
  int err = Request(fd, message, &drained);
  if (err != 0) {
    close(fd);
    ThrowErrno(env, err, "nfqueue", ("bind queue " + std::to_string(num)).c_str());
  }
  return Napi::Number::New(env, fd);
}

// nfqueueRead(fd) -> [packets, lastId, anyPacket (0|1)]: the packet messages waiting now.
Napi::Value NfqueueRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  Drained drained;
  int err = Drain(fd, &drained);
  if (err != 0) ThrowErrno(env, err, "recv", "nfqueue");
  Napi::Array out = Napi::Array::New(env, 3);
  out.Set(0u, Napi::Number::New(env, drained.packets));
  out.Set(1u, Napi::Number::New(env, drained.last_id));
  out.Set(2u, Napi::Number::New(env, drained.any ? 1 : 0));
  return out;
}

// nfqueueVerdict(fd, num, lastId, accept: boolean) -> [packets, lastId, anyPacket]
// NF_ACCEPT (re-inject) or NF_DROP for every held packet with an id up to lastId; returns the
// packet messages read meanwhile (queued after the read that found lastId).
Napi::Value NfqueueVerdict(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint32_t num = ArgUint32(info, 1, "num");
  if (num > 65535) ThrowArgType(env, "num", "a queue number (0..65535)");
  uint32_t last_id = ArgUint32(info, 2, "lastId");
  bool accept = ArgTruthy(info, 3);
  BatchWriter message;
  size_t at = message.Begin(kQueueMessage(NFQNL_MSG_VERDICT_BATCH), NLM_F_REQUEST | NLM_F_ACK, AF_UNSPEC, static_cast<uint16_t>(num));
  nfqnl_msg_verdict_hdr verdict = {htonl(accept ? NF_ACCEPT : NF_DROP), htonl(last_id)};
  message.Attr(NFQA_VERDICT_HDR, &verdict, sizeof(verdict));
  message.End(at);
  Drained drained;
  int err = Request(fd, message, &drained);
  if (err != 0) ThrowErrno(env, err, "nfqueue", accept ? "accept" : "drop");
  Napi::Array out = Napi::Array::New(env, 3);
  out.Set(0u, Napi::Number::New(env, drained.packets));
  out.Set(1u, Napi::Number::New(env, drained.last_id));
  out.Set(2u, Napi::Number::New(env, drained.any ? 1 : 0));
  return out;
}

}  // namespace

void InitNfqueue(Napi::Env env, Napi::Object exports) {
  exports.Set("nfqueueOpen", Napi::Function::New(env, NfqueueOpen, "nfqueueOpen"));
  exports.Set("nfqueueRead", Napi::Function::New(env, NfqueueRead, "nfqueueRead"));
  exports.Set("nfqueueVerdict", Napi::Function::New(env, NfqueueVerdict, "nfqueueVerdict"));
}

}  // namespace nodecriu
