// A netfilter netlink (nfnetlink) message batch writer and its sender, shared by the nftables
// lock elements (nft_elements.cc) and the packet hold (nfqueue.cc, nfqueue_rule.cc).
#pragma once

#include <arpa/inet.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <string.h>

#include <string>
#include <vector>

namespace nodecriu {

class BatchWriter {
 public:
  // Starts a message; returns its offset (to patch nlmsg_len at End).
  size_t Begin(uint16_t type, uint16_t flags, uint8_t family, uint16_t res_id) {
    size_t at = Reserve(NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg)));
    auto* header = reinterpret_cast<nlmsghdr*>(&buffer_[at]);
    header->nlmsg_type = type;
    header->nlmsg_flags = flags;
    header->nlmsg_seq = ++seq_;
    header->nlmsg_pid = 0;
    auto* gen = reinterpret_cast<nfgenmsg*>(&buffer_[at + NLMSG_HDRLEN]);
    gen->nfgen_family = family;
    gen->version = NFNETLINK_V0;
    gen->res_id = htons(res_id);
    return at;
  }
  void End(size_t at) { reinterpret_cast<nlmsghdr*>(&buffer_[at])->nlmsg_len = static_cast<uint32_t>(buffer_.size() - at); }

  void Attr(uint16_t type, const void* data, size_t length) {
    size_t at = Reserve(NLA_HDRLEN + NLA_ALIGN(length));
    auto* attr = reinterpret_cast<nlattr*>(&buffer_[at]);
    attr->nla_type = type;
    attr->nla_len = static_cast<uint16_t>(NLA_HDRLEN + length);
    memcpy(&buffer_[at + NLA_HDRLEN], data, length);
  }
  void String(uint16_t type, const std::string& value) { Attr(type, value.c_str(), value.size() + 1); }

  size_t Nest(uint16_t type) {
    size_t at = Reserve(NLA_HDRLEN);
    reinterpret_cast<nlattr*>(&buffer_[at])->nla_type = type | NLA_F_NESTED;
    return at;
  }
  void EndNest(size_t at) { reinterpret_cast<nlattr*>(&buffer_[at])->nla_len = static_cast<uint16_t>(buffer_.size() - at); }

  uint32_t seq() const { return seq_; }
  const std::vector<char>& bytes() const { return buffer_; }

 private:
  // Appends zeroed, aligned room.
  size_t Reserve(size_t length) {
    size_t at = buffer_.size();
    buffer_.resize(at + NLMSG_ALIGN(length), 0);
    return at;
  }
  std::vector<char> buffer_;
  uint32_t seq_ = 0;
};

struct Outcome {
  int err = 0;               // 0: committed
  const char* call = nullptr;  // the failing step
};

// Sends the batch on a NETLINK_NETFILTER socket and reads the kernel's answers: committed only
// when every message was acknowledged and none failed.
Outcome SendBatch(int fd, const BatchWriter& batch, size_t acks_expected);

}  // namespace nodecriu
