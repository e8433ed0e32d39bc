// The rule that sends a packet to a netfilter queue. This kernel family may lack nftables' own
// `queue` expression (CONFIG_NFT_QUEUE) while it has the xtables NFQUEUE target, which nftables
// runs through nft_compat; nft cannot write such a rule, so it goes over netlink:
//   NFT_MSG_NEWRULE {table, chain, expressions [ target { name "NFQUEUE", rev 3,
//                    info xt_NFQ_info_v3 {queuenum, queues_total 1, flags 0} } ]}
// flags 0: no bypass, so with no reader bound the kernel drops the packet (never accepts it).
// nft_compat takes ip and ip6 tables only.
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_tables_compat.h>
#include <linux/netfilter/xt_NFQUEUE.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "boundary.h"
#include "nfnl_batch.h"
#include "socket_ops.h"

namespace nodecriu {

namespace {

void CheckName(Napi::Env env, const std::string& name, const char* what, size_t max) {
  if (name.empty() || name.size() >= max || name.find('\0') != std::string::npos) ThrowArgType(env, what, "an nftables name");
}

// Ends the batch, sends it in `netns` and reads the one acknowledgement.
Napi::Value SendRuleBatch(Napi::Env env, BatchWriter* batch, const std::string* netns, const std::string& what) {
  batch->End(batch->Begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
  int fd = SocketIn(env, netns, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) ThrowErrno(env, errno, "socket", "AF_NETLINK NETLINK_NETFILTER");
  Outcome outcome = SendBatch(fd, *batch, 1);
  close(fd);
  if (outcome.err != 0) ThrowErrno(env, outcome.err, outcome.call, what.c_str());
  return env.Undefined();
}

// nfqueueRule(family: NFPROTO_IPV4|NFPROTO_IPV6, table, chain, num: uint16 | -1, netns?) -> undefined
// Appends the queue rule to an existing chain (num >= 0), or deletes every rule of the chain
// (num -1: nothing more is queued, while the packets already held stay held; deleting the base
// chain or table instead would drop them). One transaction. Throws the kernel's errno (ENOENT: no
// such table or chain; EPERM without CAP_NET_ADMIN).
Napi::Value NfqueueRule(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t family = ArgUint32(info, 0, "family");
  if (family != NFPROTO_IPV4 && family != NFPROTO_IPV6) ThrowArgType(env, "family", "NFPROTO_IPV4 or NFPROTO_IPV6");
  std::string table = ArgString(info, 1, "table");
  CheckName(env, table, "table", NFT_TABLE_MAXNAMELEN);
  std::string chain = ArgString(info, 2, "chain");
  CheckName(env, chain, "chain", NFT_CHAIN_MAXNAMELEN);
  int32_t num = ArgInt32(info, 3, "num");
  if (num < -1 || num > 65535) ThrowArgType(env, "num", "a queue number (0..65535) or -1");
  std::string netns;
  bool in_netns = OptString(info, 4, &netns);

  BatchWriter batch;
  batch.End(batch.Begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
  bool flush = num < 0;
  size_t message = batch.Begin((NFNL_SUBSYS_NFTABLES << 8) | (flush ? NFT_MSG_DELRULE : NFT_MSG_NEWRULE),
                               NLM_F_REQUEST | NLM_F_ACK | (flush ? 0 : NLM_F_CREATE | NLM_F_APPEND), static_cast<uint8_t>(family), 0);
  batch.String(NFTA_RULE_TABLE, table);
  batch.String(NFTA_RULE_CHAIN, chain);
  if (flush) {
    batch.End(message);
    return SendRuleBatch(env, &batch, in_netns ? &netns : nullptr, "flush " + table + " " + chain);
  }
  size_t exprs = batch.Nest(NFTA_RULE_EXPRESSIONS);
  size_t elem = batch.Nest(NFTA_LIST_ELEM);
  batch.String(NFTA_EXPR_NAME, "target");
  size_t data = batch.Nest(NFTA_EXPR_DATA);
  batch.String(NFTA_TARGET_NAME, "NFQUEUE");
  uint32_t rev = htonl(3);
  batch.Attr(NFTA_TARGET_REV, &rev, sizeof(rev));
  // XT_ALIGN(sizeof(xt_NFQ_info_v3)): xtables checks the aligned size.
  alignas(8) char target_info[8] = {};
  xt_NFQ_info_v3 queue = {};
  queue.queuenum = static_cast<uint16_t>(num);
  queue.queues_total = 1;
  memcpy(target_info, &queue, sizeof(queue));
  batch.Attr(NFTA_TARGET_INFO, target_info, sizeof(target_info));
  batch.EndNest(data);
  batch.EndNest(elem);
  batch.EndNest(exprs);
  batch.End(message);
  return SendRuleBatch(env, &batch, in_netns ? &netns : nullptr, "add queue rule to " + table + " " + chain);
}

}  // namespace

void InitNfqueueRule(Napi::Env env, Napi::Object exports) {
  exports.Set("nfqueueRule", Napi::Function::New(env, NfqueueRule, "nfqueueRule"));
}

}  // namespace nodecriu
