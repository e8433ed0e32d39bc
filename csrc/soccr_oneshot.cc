// One-call dump and restore of a socket (soccr.dumpFd / restoreFd): each call runs a whole
// libsoccr sequence (soccr_core.h) synchronously on the caller's fd and keeps no handle
// afterwards, so there is no object for the GC to track and no dup to own (the fd cannot be
// closed or reused while the call runs).
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "boundary.h"
#include "soccr_core.h"
#include "soccr_log.h"
#include "socket_ops.h"

namespace nodecriu {

namespace {

// The queues of one soccrDump, in JS memory that libsoccr_save peeks into directly
// (libsoccr_set_queue_alloc): no copy, no malloc of libsoccr's own. A small queue goes into the
// caller's pool (a JS Buffer shared by many dumps, as Node pools small Buffers: no ArrayBuffer to
// create, and none to free); a bigger one into a new ArrayBuffer. ArrayBuffers rather than
// Buffers: node's C++ Buffer constructor sets the prototype on a slow path; JS wraps them in
// Buffers on its fast path (Buffer.from(ab)). The napi_values live in this call's handle scope,
// which outlasts the libsoccr handle.
constexpr uint32_t kNotPooled = 0xffffffffu;
constexpr uint32_t kMaxPooledQueue = 8192;

struct DumpQueues {
  napi_env env;
  napi_value buffers[TCP_QUEUES_NR];  // by queue id; nullptr: none
  uint8_t* pool;                      // nullptr: no pool
  uint32_t pool_length;
  uint32_t pool_next;                 // first free byte
  uint32_t pooled_at[TCP_QUEUES_NR];  // offset in the pool, or kNotPooled
};

char* AllocDumpQueue(void* arg, int queue, unsigned int len) {
  auto* queues = static_cast<DumpQueues*>(arg);
  if (queues->pool != nullptr && len <= kMaxPooledQueue && queues->pool_next <= queues->pool_length &&
      queues->pool_length - queues->pool_next >= len) {
    queues->pooled_at[queue] = queues->pool_next;
    queues->pool_next += len;
    return reinterpret_cast<char*>(queues->pool + queues->pooled_at[queue]);
  }
  void* data = nullptr;
  napi_value value;
  if (napi_create_arraybuffer(queues->env, len, &data, &value) != napi_ok || data == nullptr) {
    errno = ENOMEM;
    return nullptr;
  }
  queues->buffers[queue] = value;
  return static_cast<char*>(data);
}

// A buffer libsoccr drops (failed save): the GC frees the ArrayBuffer; pool space stays unused.
void ReleaseDumpQueue(void* arg, int queue, char*) {
  auto* queues = static_cast<DumpQueues*>(arg);
  queues->buffers[queue] = nullptr;
  queues->pooled_at[queue] = kNotPooled;
}

// One saved queue: its ArrayBuffer, or undefined when it is empty or lies in the pool (JS reads
// the offset from packed).
Napi::Value SavedQueue(Napi::Env env, const DumpQueues& queues, int queue, uint32_t length) {
  if (length == 0 || queues.buffers[queue] == nullptr) return env.Undefined();
  return Napi::Value(env, queues.buffers[queue]);
}

// soccrDump(fd, packed: Uint32Array(17|33|35), pool?: Uint8Array, poolOffset?: number)
//   -> undefined | ArrayBuffer | [ArrayBuffer, ArrayBuffer]
// pause + save (+ both addresses with 33 words) + both queues + release: the socket is left in
// repair mode (close it to drop the connection silently, or setRepair(fd, false) to let it run).
// With a pool (packed of 35 words), a queue of at most 8 KiB that fits in pool[poolOffset..] is
// peeked there: packed[33] / packed[34] = the receive / send queue's offset in the pool, or
// 0xffffffff. The other non-empty queues come back without an array where possible (JS knows
// which from inq_len, outq_len and the offsets): undefined when there is none, the one queue's
// ArrayBuffer alone, else [recv, send]. On failure the socket is resumed (repair off) before the
// error is thrown.
Napi::Value SoccrDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  TypedArrayRef<uint32_t> packed = ArgTypedArrayRef<uint32_t>(info, 1, "packed", kSkDataWords);
  bool with_addresses = packed.length >= kPackedWords;
  DumpQueues queues = {env, {nullptr, nullptr, nullptr}, nullptr, 0, 0, {kNotPooled, kNotPooled, kNotPooled}};
  if (HasArg(info, 2)) {
    TypedArrayRef<uint8_t> pool = ArgTypedArrayRef<uint8_t>(info, 2, "pool");
    if (packed.length < kPackedWords + 2) ThrowArgType(env, "packed", "35 words long with a pool");
    queues.pool = pool.data;
    queues.pool_length = static_cast<uint32_t>(pool.length);
    queues.pool_next = ArgUint32(info, 3, "poolOffset");
  }
  const libsoccr_queue_alloc allocator = {AllocDumpQueue, ReleaseDumpQueue, &queues};
  DumpedConnection dumped;
  SoccrFailure failure;
  SoccrLogScope log(env);
  if (!DumpFd(fd, &allocator, with_addresses, &dumped, &failure)) log.Throw(std::move(failure));
  uint32_t* words = packed.data;
  memcpy(words, &dumped.data, sizeof(dumped.data));
  if (with_addresses) memcpy(words + kSkDataWords, dumped.addr_words, sizeof(dumped.addr_words));
  if (queues.pool != nullptr) {
    words[kPackedWords] = dumped.data.inq_len != 0 ? queues.pooled_at[TCP_RECV_QUEUE] : kNotPooled;
    words[kPackedWords + 1] = dumped.data.outq_len != 0 ? queues.pooled_at[TCP_SEND_QUEUE] : kNotPooled;
  }
  Napi::Value recv = SavedQueue(env, queues, TCP_RECV_QUEUE, dumped.data.inq_len);
  Napi::Value send = SavedQueue(env, queues, TCP_SEND_QUEUE, dumped.data.outq_len);
  if (!recv.IsUndefined() && !send.IsUndefined()) {
    Napi::Array both = Napi::Array::New(env, 2);
    both.Set(0u, recv);
    both.Set(1u, send);
    return both;
  }
  return recv.IsUndefined() ? send : recv;
}

// After a successful restore, frees the queue memory the caller handed over (soccr.restoreFd's
// `transfer`): detaching an ArrayBuffer drops its backing store at once, so the next dump's
// allocation reuses warm memory instead of waiting for the GC. JS sets the bits only for a
// view that spans its whole, detachable ArrayBuffer; a buffer that cannot be detached is left
// as it is (the restore already succeeded).
void DetachTransferred(napi_env env, uint32_t mask, const TypedArrayRef<uint8_t>& recv,
                       const TypedArrayRef<uint8_t>& send) {
  const TypedArrayRef<uint8_t>* queues[2] = {&recv, &send};
  for (int i = 0; i < 2; i++) {
    if ((mask & (1u << i)) == 0 || queues[i]->length == 0) continue;
    napi_value buffer;
    if (napi_get_typedarray_info(env, queues[i]->value, nullptr, nullptr, nullptr, &buffer, nullptr) == napi_ok)
      napi_detach_arraybuffer(env, buffer);
  }
}

// soccrRestore(fd, packed: Uint32Array(33), recv, send, netns?, transfer?): pause + addresses +
// queues + restore + resume. On failure the socket is left paused and disconnected (close it:
// nothing reaches the peer) and the error is thrown.
// With fd -1 it first creates the socket (the own address's family; in the network namespace at
// netns, argument 5, if given), returns its fd, and closes it again on any failure.
// transfer (argument 6, bits: 1 recv, 2 send): on success, detach those queues' ArrayBuffers.
Napi::Value SoccrRestore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  TypedArrayRef<uint32_t> packed = ArgTypedArrayRef<uint32_t>(info, 1, "packed", kPackedWords);
  TypedArrayRef<uint8_t> recv = OptTypedArrayRef<uint8_t>(info, 2, "recv queue");
  TypedArrayRef<uint8_t> send = OptTypedArrayRef<uint8_t>(info, 3, "send queue");
  uint32_t transfer = OptUint32(info, 5, 0);
  RestoreInput in;
  // The family picks the sockaddr layout; libsoccr reads inq_len / outq_len queue bytes.
  if (!UnpackRestoreInput(packed.data, &in)) ThrowInvalidArg(env, "packed addresses are invalid");
  if (recv.length != in.data.inq_len || send.length != in.data.outq_len)
    ThrowInvalidArg(env, "queue lengths must equal inq_len and outq_len");
  in.queue[0] = recv.length != 0 ? reinterpret_cast<char*>(recv.data) : nullptr;
  in.queue[1] = send.length != 0 ? reinterpret_cast<char*>(send.data) : nullptr;
  bool create = fd < 0;
  if (create) {
    uint8_t family = static_cast<uint8_t>(packed.data[kSkDataWords]);
    std::string netns;
    bool in_netns = OptString(info, 4, &netns);
    int32_t created = -1;
    if (CreateTcpSockets(env, &family, 1, in_netns ? &netns : nullptr, &created) < 0) ThrowErrno(env, errno, "socket");
    fd = created;
  }
  SoccrFailure failure;
  {
    SoccrLogScope log(env);
    if (!RestoreFd(fd, &in, true, &failure)) {
      if (create) close(fd);  // repair on (or never connected): nothing reaches the peer
      log.Throw(std::move(failure));
    }
  }
  if (transfer != 0) DetachTransferred(env, transfer, recv, send);
  return create ? Napi::Number::New(env, fd) : env.Undefined();
}

}  // namespace

void InitSoccrBatch(Napi::Env env, Napi::Object exports);  // soccr_batch.cc

void InitSoccrOneshot(Napi::Env env, Napi::Object exports) {
  exports.Set("soccrDump", Napi::Function::New(env, SoccrDump, "soccrDump"));
  exports.Set("soccrRestore", Napi::Function::New(env, SoccrRestore, "soccrRestore"));
  InitSoccrBatch(env, exports);
}

}  // namespace nodecriu
