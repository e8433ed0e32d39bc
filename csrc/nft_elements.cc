// nftables over netlink for the lock tables: the 4-tuples of a batch go into (or out of) the lock
// table's sets as one nf_tables transaction, without spawning nft, whose per-element parsing
// dominates large batches; and a table is deleted at process exit, where no child process can be
// waited for. Tables, sets and chains are otherwise made and deleted by nft (lib/sys/nft.ts).
//
// Wire format (linux/netfilter/nfnetlink.h, nf_tables.h): one sendmsg carries
//   NFNL_MSG_BATCH_BEGIN, NFT_MSG_{NEW,DEL}SETELEM x n, NFNL_MSG_BATCH_END
// and the kernel applies all of it or none of it, answering (one ack per message with
// NLM_F_ACK, errors for failed ones) before sendmsg returns. Each SETELEM message names table
// and set and holds a nested list of elements, each {NFTA_SET_ELEM_KEY {NFTA_DATA_VALUE key}}; an
// attribute's length is 16 bits, so a large batch is spread over several messages.
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "boundary.h"
#include "nfnl_batch.h"
#include "socket_ops.h"

namespace nodecriu {

namespace {

enum class ElementOp { kAdd = 0, kDelete = 1 };

// Key sizes of the lock's sets: remote addr . remote port . local addr . local port, each field
// padded to a 32-bit register as nftables concatenations are (ports: 2 bytes + 2 zero bytes).
constexpr size_t kV4KeyBytes = 4 + 4 + 4 + 4;
constexpr size_t kV6KeyBytes = 16 + 4 + 16 + 4;
// Room for the element list of one message: nla_len is 16 bits.
constexpr size_t kMaxElementListBytes = 60000;

// Appends the SETELEM messages of one set: `count` (> 0) keys of `key_bytes` each.
// Returns the number of messages, each with NLM_F_ACK.
size_t AppendSetMessages(BatchWriter* batch, ElementOp op, const std::string& table, const char* set, const uint8_t* keys, size_t key_bytes, size_t count) {
  uint16_t type = (NFNL_SUBSYS_NFTABLES << 8) | (op == ElementOp::kAdd ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM);
  // NLM_F_CREATE without NLM_F_EXCL: adding an element that is already there is not an error.
  uint16_t flags = NLM_F_REQUEST | NLM_F_ACK | (op == ElementOp::kAdd ? NLM_F_CREATE : 0);
  std::string set_name(set);
  size_t per_element = 3 * NLA_HDRLEN + NLA_ALIGN(key_bytes);
  size_t per_message = kMaxElementListBytes / per_element;
  size_t messages = 0;
  for (size_t first = 0; first < count; first += per_message) {
    size_t last = std::min(count, first + per_message);
    size_t message = batch->Begin(type, flags, NFPROTO_INET, 0);
    batch->String(NFTA_SET_ELEM_LIST_TABLE, table);
    batch->String(NFTA_SET_ELEM_LIST_SET, set_name);
    size_t list = batch->Nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    for (size_t i = first; i < last; i++) {
      size_t element = batch->Nest(NFTA_LIST_ELEM);
      size_t key = batch->Nest(NFTA_SET_ELEM_KEY);
      batch->Attr(NFTA_DATA_VALUE, keys + i * key_bytes, key_bytes);
      batch->EndNest(key);
      batch->EndNest(element);
    }
    batch->EndNest(list);
    batch->End(message);
    messages++;
  }
  return messages;
}

// nftSetElements(op: 0 add | 1 delete, table: string, v4Keys: Uint8Array,
//                v6Keys: Uint8Array, netns?: string) -> undefined
// One transaction on the inet table's sets v4 and v6: add or delete the given keys (16 and 40
// bytes each, see above); a set without keys is left out. Throws the kernel's errno: ENOENT for a missing table, set or (delete) element, EPERM
// without CAP_NET_ADMIN; nothing is changed then.
Napi::Value NftSetElements(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t op_number = ArgUint32(info, 0, "op");
  if (op_number > 1) ThrowArgType(env, "op", "0 (add) or 1 (delete)");
  auto op = static_cast<ElementOp>(op_number);
  std::string table = ArgString(info, 1, "table");
  // The name goes into a NUL-terminated netlink string attribute: an inner NUL would name another
  // table, and the kernel's limit keeps the attribute within its 16-bit length.
  if (table.empty() || table.size() >= NFT_TABLE_MAXNAMELEN || table.find('\0') != std::string::npos)
    ThrowArgType(env, "table", "a table name");
  Napi::Uint8Array keys[2] = {ArgTypedArray<uint8_t>(info, 2, "v4Keys"), ArgTypedArray<uint8_t>(info, 3, "v6Keys")};
  if (keys[0].ByteLength() % kV4KeyBytes != 0 || keys[1].ByteLength() % kV6KeyBytes != 0)
    ThrowInvalidArg(env, "keys must be 16 (IPv4) or 40 (IPv6) bytes each");
  std::string netns;
  bool in_netns = OptString(info, 4, &netns);

  BatchWriter batch;
  batch.End(batch.Begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
  size_t acks = 0;
  const char* sets[2] = {"v4", "v6"};
  const size_t key_bytes[2] = {kV4KeyBytes, kV6KeyBytes};
  for (int i = 0; i < 2; i++) {
    size_t count = keys[i].ByteLength() / key_bytes[i];
    if (count == 0) continue;
    acks += AppendSetMessages(&batch, op, table, sets[i], keys[i].Data(), key_bytes[i], count);
  }
  if (acks == 0) return env.Undefined();
  batch.End(batch.Begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));

  int fd = SocketIn(env, in_netns ? &netns : nullptr, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) ThrowErrno(env, errno, "socket", "AF_NETLINK NETLINK_NETFILTER");
  Outcome outcome = SendBatch(fd, batch, acks);
  close(fd);
  if (outcome.err != 0) {
    std::string detail = std::string(op == ElementOp::kAdd ? "add element" : "delete element") + " inet " + table;
    ThrowErrno(env, outcome.err, outcome.call, detail.c_str());
  }
  return env.Undefined();
}

// nftDeleteTable(family: number (NFPROTO_*), table: string, netns?: string) -> undefined
// Deletes one table (with its sets and chains) in one transaction. Throws the kernel's errno:
// ENOENT when there is no such table, EPERM without CAP_NET_ADMIN.
Napi::Value NftDeleteTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t family = ArgUint32(info, 0, "family");
  if (family != NFPROTO_INET && family != NFPROTO_IPV4 && family != NFPROTO_IPV6) ThrowArgType(env, "family", "NFPROTO_INET, NFPROTO_IPV4 or NFPROTO_IPV6");
  std::string table = ArgString(info, 1, "table");
  if (table.empty() || table.size() >= NFT_TABLE_MAXNAMELEN || table.find('\0') != std::string::npos)
    ThrowArgType(env, "table", "a table name");
  std::string netns;
  bool in_netns = OptString(info, 2, &netns);

  BatchWriter batch;
  batch.End(batch.Begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
  size_t message = batch.Begin((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, NLM_F_REQUEST | NLM_F_ACK, static_cast<uint8_t>(family), 0);
  batch.String(NFTA_TABLE_NAME, table);
  batch.End(message);
  batch.End(batch.Begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));

  int fd = SocketIn(env, in_netns ? &netns : nullptr, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) ThrowErrno(env, errno, "socket", "AF_NETLINK NETLINK_NETFILTER");
  Outcome outcome = SendBatch(fd, batch, 1);
  close(fd);
  if (outcome.err != 0) ThrowErrno(env, outcome.err, outcome.call, ("delete table " + table).c_str());
  return env.Undefined();
}

}  // namespace

void InitNftElements(Napi::Env env, Napi::Object exports) {
  exports.Set("nftSetElements", Napi::Function::New(env, NftSetElements, "nftSetElements"));
  exports.Set("nftDeleteTable", Napi::Function::New(env, NftDeleteTable, "nftDeleteTable"));
}

}  // namespace nodecriu
