// One-call dump and restore of a socket, for batches and benchmarks: each call runs a whole
// libsoccr sequence synchronously on the caller's fd and keeps no handle afterwards, so there is
// no object for the GC to track and no dup to own (the fd cannot be closed or reused while the
// call runs). The per-socket ObjectWrap (soccr_handle.cc) remains the API for step-by-step use.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "errors.h"
#include "soccr.h"
#include "soccr_compat.h"
#include "soccr_log.h"
#include "socket_ops.h"

namespace nodecriu {

namespace {

constexpr size_t kSkDataWords = sizeof(libsoccr_sk_data) / sizeof(uint32_t);

Napi::Uint32Array PackedArg(const Napi::CallbackInfo& info, size_t index, size_t min_words) {
  if (index >= info.Length() || !info[index].IsTypedArray() ||
      info[index].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
      info[index].As<Napi::Uint32Array>().ElementLength() < min_words)
    ThrowInvalidArg(info.Env(), "packed data must be a Uint32Array of 17 or 33 words");
  return info[index].As<Napi::Uint32Array>();
}

Napi::Uint8Array BytesArg(const Napi::CallbackInfo& info, size_t index) {
  if (index >= info.Length() || info[index].IsNull() || info[index].IsUndefined()) return Napi::Uint8Array::New(info.Env(), 0);
  if (!info[index].IsTypedArray() || info[index].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    ThrowInvalidArg(info.Env(), "queue bytes must be a Uint8Array");
  return info[index].As<Napi::Uint8Array>();
}

[[noreturn]] void ThrowSoccrCall(Napi::Env env, int err, const char* call, int ret) {
  std::string detail = "returned " + std::to_string(ret);
  const std::string& line = LastSoccrError();
  if (!line.empty()) detail += " (" + line + ")";
  FlushSoccrLog(env);
  ThrowErrno(env, err != 0 ? err : EIO, call, detail.c_str());
}

// The queues of one soccrDump, in JS memory that libsoccr_save peeks into directly
// (libsoccr_set_queue_alloc): no copy, no malloc of libsoccr's own. A small queue goes into the
// caller's pool (a JS Buffer shared by many dumps, as Node pools small Buffers: no ArrayBuffer to
// create, and none to free); a bigger one into a new ArrayBuffer. ArrayBuffers rather than
// Buffers: node's C++ Buffer constructor sets the prototype on a slow path (measured: a third of
// the cost of a 4 KiB queue); JS wraps them in Buffers on its fast path (Buffer.from(ab)). The
// napi_values live in this call's handle scope, which outlasts the libsoccr handle.
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

// One saved queue handed over by the handle (SOCCR_MEM_EXCL): its ArrayBuffer, or undefined when
// it lies in the pool (JS reads the offset from packed); with CRIU's libsoccr (no allocator), a
// copy of libsoccr's buffer.
Napi::Value SavedQueue(Napi::Env env, libsoccr_sk* sk, const DumpQueues& queues, bool peeked_into_js, int queue, uint32_t length) {
  char* bytes = libsoccr_get_queue_bytes(sk, queue, peeked_into_js ? SOCCR_MEM_EXCL : 0);
  bool pooled = queues.pooled_at[queue] != kNotPooled;
  if (bytes == nullptr || (peeked_into_js && !pooled && queues.buffers[queue] == nullptr)) {
    int err = bytes == nullptr ? errno : EFAULT;
    libsoccr_resume(sk);
    ThrowSoccrCall(env, err, "libsoccr_get_queue_bytes", 0);
  }
  if (pooled) return env.Undefined();
  if (peeked_into_js) return Napi::Value(env, queues.buffers[queue]);
  void* data = nullptr;
  napi_value value;
  if (napi_create_arraybuffer(env, length, &data, &value) != napi_ok) {
    libsoccr_resume(sk);
    ThrowErrno(env, ENOMEM, "napi_create_arraybuffer");
  }
  memcpy(data, bytes, length);
  return Napi::Value(env, value);
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
  int32_t fd = ArgInt32(info, 0, "fd must be an integer");
  Napi::Uint32Array packed = PackedArg(info, 1, kSkDataWords);
  bool with_addresses = packed.ElementLength() >= kSkDataWords + 16;
  DumpQueues queues = {env, {nullptr, nullptr, nullptr}, nullptr, 0, 0, {kNotPooled, kNotPooled, kNotPooled}};
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (packed.ElementLength() < kSkDataWords + 18 || !info[2].IsTypedArray() ||
        info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      ThrowInvalidArg(env, "pool must be a Uint8Array, with 35 packed words");
    Napi::Uint8Array pool = info[2].As<Napi::Uint8Array>();
    queues.pool = pool.Data();
    queues.pool_length = static_cast<uint32_t>(pool.ElementLength());
    queues.pool_next = ArgUint32(info, 3, "poolOffset must be a uint32");
  }
  BeginSoccrCall();
  libsoccr_sk* sk = libsoccr_pause(fd);
  if (sk == nullptr) ThrowSoccrCall(env, errno, "libsoccr_pause", -1);
  const libsoccr_queue_alloc allocator = {AllocDumpQueue, ReleaseDumpQueue, &queues};
  bool peeked_into_js = libsoccr_set_queue_alloc(sk, &allocator) == 0;  // false: CRIU's libsoccr
  libsoccr_sk_data data;
  int ret = libsoccr_save(sk, &data, sizeof(data));
  if (ret != static_cast<int>(sizeof(data))) {
    int err = errno;
    libsoccr_resume(sk);
    ThrowSoccrCall(env, err, "libsoccr_save", ret);
  }
  memcpy(packed.Data(), &data, sizeof(data));
  for (int self = 1; with_addresses && self >= 0; self--) {
    union libsoccr_addr addr;
    bool have = SoccrCopyAddr(sk, fd, self, &addr);
    if (!have || !SockaddrToWords(&addr.sa, packed.Data() + kSkDataWords + (self ? 0 : 8))) {
      int err = !have ? errno : EAFNOSUPPORT;
      libsoccr_resume(sk);
      ThrowSoccrCall(env, err, "libsoccr_get_addr", 0);
    }
  }
  if (queues.pool != nullptr) {
    packed.Data()[kSkDataWords + 16] = data.inq_len != 0 ? queues.pooled_at[TCP_RECV_QUEUE] : kNotPooled;
    packed.Data()[kSkDataWords + 17] = data.outq_len != 0 ? queues.pooled_at[TCP_SEND_QUEUE] : kNotPooled;
  }
  Napi::Value recv = data.inq_len != 0 ? SavedQueue(env, sk, queues, peeked_into_js, TCP_RECV_QUEUE, data.inq_len) : env.Undefined();
  Napi::Value send = data.outq_len != 0 ? SavedQueue(env, sk, queues, peeked_into_js, TCP_SEND_QUEUE, data.outq_len) : env.Undefined();
  Napi::Value result = env.Undefined();
  if (!recv.IsUndefined() && !send.IsUndefined()) {
    Napi::Array both = Napi::Array::New(env, 2);
    both.Set(0u, recv);
    both.Set(1u, send);
    result = both;
  } else if (!recv.IsUndefined()) {
    result = recv;
  } else if (!send.IsUndefined()) {
    result = send;
  }
  libsoccr_release(sk);
  FlushSoccrLog(env);
  return result;
}

void RestoreInto(Napi::Env env, int32_t fd, Napi::Uint32Array packed, Napi::Uint8Array recv, Napi::Uint8Array send);

// After a successful restore, frees the queue memory the caller handed over (soccr.restoreFd's
// `transfer`): detaching an ArrayBuffer drops its backing store at once, so the next dump's
// allocation reuses warm memory instead of waiting for the GC. JS sets the bits only for a
// view that spans its whole, detachable ArrayBuffer; a buffer that cannot be detached is left
// as it is (the restore already succeeded).
void DetachTransferred(Napi::Env env, uint32_t mask, Napi::Uint8Array recv, Napi::Uint8Array send) {
  Napi::Uint8Array* queues[2] = {&recv, &send};
  for (int i = 0; i < 2; i++) {
    if ((mask & (1u << i)) == 0 || queues[i]->ByteLength() == 0) continue;
    napi_value buffer = queues[i]->ArrayBuffer();
    napi_detach_arraybuffer(env, buffer);
  }
}

// soccrRestore(fd, packed: Uint32Array(33), recv, send, netns?, transfer?): pause + set_addr x2 +
// set_queue_bytes x2 + restore + resume on a fresh socket. On failure the socket is left paused
// and disconnected (close it: nothing reaches the peer) and the error is thrown.
// With fd -1 it first creates the socket (the own address's family; in the network namespace at
// netns, argument 5, if given), returns its fd, and closes it again on any failure.
// transfer (argument 6, bits: 1 recv, 2 send): on success, detach those queues' ArrayBuffers.
Napi::Value SoccrRestore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t fd = ArgInt32(info, 0, "fd must be an integer");
  Napi::Uint32Array packed = PackedArg(info, 1, kSkDataWords + 16);
  Napi::Uint8Array recv = BytesArg(info, 2);
  Napi::Uint8Array send = BytesArg(info, 3);
  uint32_t transfer = info.Length() > 5 && info[5].IsNumber() ? info[5].As<Napi::Number>().Uint32Value() : 0;
  if (fd < 0) {
    uint8_t family = static_cast<uint8_t>(packed.Data()[kSkDataWords]);
    if (family != 4 && family != 6) ThrowInvalidArg(env, "packed addresses are invalid");
    std::string netns;
    bool in_netns = info.Length() > 4 && info[4].IsString();
    if (in_netns) netns = info[4].As<Napi::String>().Utf8Value();
    int32_t created = -1;
    if (CreateTcpSockets(env, &family, 1, in_netns ? &netns : nullptr, &created) < 0) ThrowErrno(env, errno, "socket");
    try {
      RestoreInto(env, created, packed, recv, send);
    } catch (...) {
      close(created);  // repair on (or never connected): nothing reaches the peer
      throw;
    }
    if (transfer != 0) DetachTransferred(env, transfer, recv, send);
    return Napi::Number::New(env, created);
  }
  RestoreInto(env, fd, packed, recv, send);
  if (transfer != 0) DetachTransferred(env, transfer, recv, send);
  return env.Undefined();
}

void RestoreInto(Napi::Env env, int32_t fd, Napi::Uint32Array packed, Napi::Uint8Array recv, Napi::Uint8Array send) {
  libsoccr_sk_data data;
  memcpy(&data, packed.Data(), sizeof(data));
  if (recv.ElementLength() != data.inq_len || send.ElementLength() != data.outq_len)
    ThrowInvalidArg(env, "queue lengths must equal inq_len and outq_len");
  // Lent to the handle (flags 0), like the queues: libsoccr reads the addresses only until
  // libsoccr_restore returns, and the handle is resumed or released before this call returns.
  union libsoccr_addr addrs[2];
  for (int i = 0; i < 2; i++) {
    sockaddr_storage ss;
    if (SockaddrFromWords(packed.Data() + kSkDataWords + 8 * i, &ss) == 0) ThrowInvalidArg(env, "packed addresses are invalid");
    memcpy(&addrs[i], &ss, sizeof(libsoccr_addr));
  }
  BeginSoccrCall();
  libsoccr_sk* sk = libsoccr_pause(fd);
  if (sk == nullptr) ThrowSoccrCall(env, errno, "libsoccr_pause", -1);
  libsoccr_set_addr(sk, 1, &addrs[0], 0);
  libsoccr_set_addr(sk, 0, &addrs[1], 0);
  // The queues are lent without a copy (flags 0): they only have to stay valid until
  // libsoccr_restore returns, and this call does not return to JS before that.
  if (recv.ElementLength() > 0) libsoccr_set_queue_bytes(sk, TCP_RECV_QUEUE, reinterpret_cast<char*>(recv.Data()), 0);
  if (send.ElementLength() > 0) libsoccr_set_queue_bytes(sk, TCP_SEND_QUEUE, reinterpret_cast<char*>(send.Data()), 0);
  int ret = libsoccr_restore(sk, &data, sizeof(data));
  if (ret < 0) {
    int err = errno;
    libsoccr_release(sk);
    ThrowSoccrCall(env, err, "libsoccr_restore", ret);
  }
  libsoccr_resume(sk);
  FlushSoccrLog(env);
}

}  // namespace

void InitSoccrBatch(Napi::Env env, Napi::Object exports);  // soccr_batch.cc

void InitSoccrOneshot(Napi::Env env, Napi::Object exports) {
  exports.Set("soccrDump", Napi::Function::New(env, SoccrDump, "soccrDump"));
  exports.Set("soccrRestore", Napi::Function::New(env, SoccrRestore, "soccrRestore"));
  InitSoccrBatch(env, exports);
}

}  // namespace nodecriu
