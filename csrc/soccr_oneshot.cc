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

// soccrDump(fd, packed: Uint32Array(17|33)) -> [recv: Buffer|null, send: Buffer|null]
// pause + save (+ both addresses with 33 words) + both queues + release: the socket is left in
// repair mode (close it to drop the connection silently, or setRepair(fd, false) to let it run).
// On failure the socket is resumed (repair off) before the error is thrown.
Napi::Value SoccrDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t fd = ArgInt32(info, 0, "fd must be an integer");
  Napi::Uint32Array packed = PackedArg(info, 1, kSkDataWords);
  bool with_addresses = packed.ElementLength() >= kSkDataWords + 16;
  BeginSoccrCall();
  libsoccr_sk* sk = libsoccr_pause(fd);
  if (sk == nullptr) ThrowSoccrCall(env, errno, "libsoccr_pause", -1);
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
  Napi::Array queues = Napi::Array::New(env, 2);
  const int ids[2] = {TCP_RECV_QUEUE, TCP_SEND_QUEUE};
  const uint32_t lengths[2] = {data.inq_len, data.outq_len};
  for (int i = 0; i < 2; i++) {
    // Copied: measured faster than handing libsoccr's buffer to an external Buffer, whose
    // finalizer only runs once JS yields to the event loop.
    char* bytes = lengths[i] ? libsoccr_get_queue_bytes(sk, ids[i], 0) : nullptr;
    if (lengths[i] && bytes == nullptr) {
      int err = errno;
      libsoccr_resume(sk);
      ThrowSoccrCall(env, err, "libsoccr_get_queue_bytes", 0);
    }
    if (bytes == nullptr) {
      queues.Set(static_cast<uint32_t>(i), env.Null());
      continue;
    }
    queues.Set(static_cast<uint32_t>(i), Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<uint8_t*>(bytes), lengths[i]));
  }
  libsoccr_release(sk);
  FlushSoccrLog(env);
  return queues;
}

void RestoreInto(const Napi::CallbackInfo& info, int32_t fd, Napi::Uint32Array packed, Napi::Uint8Array recv, Napi::Uint8Array send);

// soccrRestore(fd, packed: Uint32Array(33), recv, send): pause + set_addr x2 + set_queue_bytes x2
// + restore + resume on a fresh socket. On failure the socket is left paused and disconnected
// (close it: nothing reaches the peer) and the error is thrown.
// With fd -1 it first creates the socket (the own address's family; in the network namespace at
// netns, argument 5, if given), returns its fd, and closes it again on any failure.
Napi::Value SoccrRestore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t fd = ArgInt32(info, 0, "fd must be an integer");
  Napi::Uint32Array packed = PackedArg(info, 1, kSkDataWords + 16);
  Napi::Uint8Array recv = BytesArg(info, 2);
  Napi::Uint8Array send = BytesArg(info, 3);
  if (fd < 0) {
    uint8_t family = static_cast<uint8_t>(packed.Data()[kSkDataWords]);
    if (family != 4 && family != 6) ThrowInvalidArg(env, "packed addresses are invalid");
    std::string netns;
    bool in_netns = info.Length() > 4 && info[4].IsString();
    if (in_netns) netns = info[4].As<Napi::String>().Utf8Value();
    int32_t created = -1;
    if (CreateTcpSockets(env, &family, 1, in_netns ? &netns : nullptr, &created) < 0) ThrowErrno(env, errno, "socket");
    try {
      RestoreInto(info, created, packed, recv, send);
    } catch (...) {
      close(created);  // repair on (or never connected): nothing reaches the peer
      throw;
    }
    return Napi::Number::New(env, created);
  }
  RestoreInto(info, fd, packed, recv, send);
  return env.Undefined();
}

void RestoreInto(const Napi::CallbackInfo& info, int32_t fd, Napi::Uint32Array packed, Napi::Uint8Array recv, Napi::Uint8Array send) {
  Napi::Env env = info.Env();
  libsoccr_sk_data data;
  memcpy(&data, packed.Data(), sizeof(data));
  if (recv.ElementLength() != data.inq_len || send.ElementLength() != data.outq_len)
    ThrowInvalidArg(env, "queue lengths must equal inq_len and outq_len");
  union libsoccr_addr* addrs[2];
  for (int i = 0; i < 2; i++) {
    sockaddr_storage ss;
    if (SockaddrFromWords(packed.Data() + kSkDataWords + 8 * i, &ss) == 0) ThrowInvalidArg(env, "packed addresses are invalid");
    addrs[i] = static_cast<libsoccr_addr*>(malloc(sizeof(libsoccr_addr)));
    if (addrs[i] == nullptr) {
      if (i == 1) free(addrs[0]);
      ThrowErrno(env, ENOMEM, "malloc");
    }
    memcpy(addrs[i], &ss, sizeof(libsoccr_addr));
  }
  BeginSoccrCall();
  libsoccr_sk* sk = libsoccr_pause(fd);
  if (sk == nullptr) {
    int err = errno;
    free(addrs[0]);
    free(addrs[1]);
    ThrowSoccrCall(env, err, "libsoccr_pause", -1);
  }
  // From here the handle owns the addresses (SOCCR_MEM_EXCL), also on failure. The queues are
  // lent without a copy (flags 0): they only have to stay valid until libsoccr_restore returns,
  // and this call does not return to JS before that.
  libsoccr_set_addr(sk, 1, addrs[0], SOCCR_MEM_EXCL);
  libsoccr_set_addr(sk, 0, addrs[1], SOCCR_MEM_EXCL);
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
