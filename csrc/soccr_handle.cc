#include "soccr_handle.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "errors.h"
#include "soccr_compat.h"
#include "soccr_log.h"
#include "socket_ops.h"

namespace nodecriu {

namespace {

constexpr size_t kSkDataWords = sizeof(libsoccr_sk_data) / sizeof(uint32_t);  // 17

// Reads a Uint32Array of 17 words (the libsoccr_sk_data ABI, native endian) into `out`.
void SkDataFromJs(const Napi::CallbackInfo& info, size_t index, libsoccr_sk_data* out) {
  if (index >= info.Length() || !info[index].IsTypedArray() ||
      info[index].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    ThrowInvalidArg(info.Env(), "sk_data must be a Uint32Array");
  Napi::Uint32Array words = info[index].As<Napi::Uint32Array>();
  if (words.ElementLength() != kSkDataWords) ThrowInvalidArg(info.Env(), "sk_data must have 17 fields");
  memcpy(out, words.Data(), sizeof(*out));
}

// Reads a Uint8Array argument (may be absent/undefined: empty).
Napi::Uint8Array BytesArg(const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (index >= info.Length() || info[index].IsUndefined() || info[index].IsNull())
    return Napi::Uint8Array::New(info.Env(), 0);
  if (!info[index].IsTypedArray() || info[index].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    ThrowInvalidArg(info.Env(), what);
  return info[index].As<Napi::Uint8Array>();
}

// A malloc'd copy handed to libsoccr with SOCCR_MEM_EXCL (libsoccr frees it).
char* MallocCopy(Napi::Env env, const void* data, size_t length) {
  char* copy = static_cast<char*>(malloc(length == 0 ? 1 : length));
  if (copy == nullptr) ThrowErrno(env, ENOMEM, "malloc");
  memcpy(copy, data, length);
  return copy;
}

// libsoccr reports failures as small negative numbers with errno set; the thrown error carries
// errno, the libsoccr function as `syscall`, and its return code plus its last log line.
[[noreturn]] void ThrowSoccr(Napi::Env env, int err, const char* call, int ret) {
  std::string detail = "returned " + std::to_string(ret);
  const std::string& line = LastSoccrError();
  if (!line.empty()) detail += " (" + line + ")";
  FlushSoccrLog(env);
  ThrowErrno(env, err != 0 ? err : EIO, call, detail.c_str());
}

}  // namespace

void SoccrHandle::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(
      env, "SoccrHandle",
      {
          InstanceAccessor<&SoccrHandle::Fd>("fd"),
          InstanceMethod<&SoccrHandle::Save>("save"),
          InstanceMethod<&SoccrHandle::SaveWithQueues>("saveWithQueues"),
          InstanceMethod<&SoccrHandle::GetQueueBytes>("getQueueBytes"),
          InstanceMethod<&SoccrHandle::GetAddr>("getAddr"),
          InstanceMethod<&SoccrHandle::Restore>("restore"),
          InstanceMethod<&SoccrHandle::RestorePacked>("restorePacked"),
          InstanceMethod<&SoccrHandle::SetSkDataUnbound>("setSkDataUnbound"),
          InstanceMethod<&SoccrHandle::SetSkDataNoq>("setSkDataNoq"),
          InstanceMethod<&SoccrHandle::RestoreQueue>("restoreQueue"),
          InstanceMethod<&SoccrHandle::SetSkData>("setSkData"),
          InstanceMethod<&SoccrHandle::Resume>("resume"),
          InstanceMethod<&SoccrHandle::Release>("release"),
      });
  GetAddonData(env).constructors["SoccrHandle"] = Napi::Persistent(ctor);
  exports.Set("SoccrHandle", ctor);
}

// new SoccrHandle(fd): dup(fd), then libsoccr_pause(dup) (TCP_REPAIR on).
// new SoccrHandle(fd, false): borrows fd without a dup and never closes it (for callers that own
// the fd and always resume or release the handle before letting go of it: the package's batch
// restore, which would otherwise need two fds per connection).
// new SoccrHandle(fd, dupFd, check: Uint32Array(1 or 2)): first checks, in the same call, that fd
// is a TCP socket in a state libsoccr can checkpoint (TCP_INFO: ESTABLISHED, FIN_WAIT1/2,
// CLOSE_WAIT, LAST_ACK, CLOSING), writing check[0] = state and (2 words) check[1] = SO_REUSEADDR;
// any other state throws EINVAL (syscall "tcp state") before anything changes. This replaces a
// separate inspection call (4 syscalls) on the public pause() path; on a failure, JS asks
// socketInfo for the precise reason.
SoccrHandle::SoccrHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SoccrHandle>(info) {
  Napi::Env env = info.Env();
  int32_t fd = ArgInt32(info, 0, "fd must be an integer");
  if (fd < 0) ThrowInvalidArg(env, "fd must be >= 0");
  bool borrow = info.Length() > 1 && info[1].IsBoolean() && !info[1].As<Napi::Boolean>().Value();
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
        info[2].As<Napi::Uint32Array>().ElementLength() < 1)
      ThrowInvalidArg(env, "check must be a Uint32Array");
    Napi::Uint32Array check = info[2].As<Napi::Uint32Array>();
    tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) ThrowErrno(env, errno, "getsockopt", "TCP_INFO");
    check[0] = ti.tcpi_state;
    switch (ti.tcpi_state) {
      case TCP_ESTABLISHED:
      case TCP_FIN_WAIT1:
      case TCP_FIN_WAIT2:
      case TCP_CLOSE_WAIT:
      case TCP_LAST_ACK:
      case TCP_CLOSING:
        break;
      default:
        ThrowErrno(env, EINVAL, "tcp state", "not a state libsoccr can checkpoint");
    }
    if (check.ElementLength() > 1) {
      int reuse = 0;
      len = sizeof(reuse);
      if (getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, &len) < 0) ThrowErrno(env, errno, "getsockopt", "SO_REUSEADDR");
      check[1] = reuse != 0;
    }
  }
  int dup_fd = borrow ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) ThrowErrno(env, errno, "dup");
  BeginSoccrCall();
  libsoccr_sk* sk = libsoccr_pause(dup_fd);
  if (sk == nullptr) {
    int err = errno;
    if (!borrow) close(dup_fd);
    ThrowSoccr(env, err, "libsoccr_pause", -1);
  }
  FlushSoccrLog(env);
  sk_ = sk;
  dup_fd_ = dup_fd;
  owns_fd_ = !borrow;
}

SoccrHandle::~SoccrHandle() {
  // Collected while open: do what resume() does, so the socket is not left in repair mode.
  if (sk_ != nullptr) {
    libsoccr_resume(sk_);
    sk_ = nullptr;
  }
  CloseDup();
}

void SoccrHandle::CloseDup() {
  if (dup_fd_ >= 0 && owns_fd_) close(dup_fd_);
  dup_fd_ = -1;
}

libsoccr_sk* SoccrHandle::Open(Napi::Env env, const char* what) {
  if (sk_ == nullptr) ThrowErrno(env, EBADF, what, "handle already resumed or released");
  BeginSoccrCall();
  return sk_;
}

Napi::Value SoccrHandle::Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), dup_fd_); }

// save() -> Uint32Array(17): libsoccr_save; the queues stay in the handle for getQueueBytes.
// save(out: Uint32Array(17 or 33)) fills `out` instead (no allocation): the 17 words, then (33)
// the own and the peer address in the packed form of socket_ops.h (libsoccr_get_addr).
Napi::Value SoccrHandle::Save(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint32Array packed;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
        info[0].As<Napi::Uint32Array>().ElementLength() < kSkDataWords)
      ThrowInvalidArg(env, "out must be a Uint32Array of 17 or 33 words");
    packed = info[0].As<Napi::Uint32Array>();
  }
  libsoccr_sk* sk = Open(env, "libsoccr_save");
  libsoccr_sk_data data;
  int ret = libsoccr_save(sk, &data, sizeof(data));
  if (ret != static_cast<int>(sizeof(data))) ThrowSoccr(env, errno, "libsoccr_save", ret);
  saved_ = data;
  has_saved_ = true;
  if (packed.IsEmpty()) {
    FlushSoccrLog(env);
    Napi::Uint32Array out = Napi::Uint32Array::New(env, kSkDataWords);
    memcpy(out.Data(), &data, sizeof(data));
    return out;
  }
  memcpy(packed.Data(), &data, sizeof(data));
  // 17 words: sk_data only; 33: the addresses too. An address libsoccr cannot give is left as
  // family 0 (not an error here: getAddr() reports it when asked), so save() fails only when
  // libsoccr_save does.
  for (int self = 1; self >= 0 && packed.ElementLength() >= kSkDataWords + 16; self--) {
    union libsoccr_addr addr;
    uint32_t* words = packed.Data() + kSkDataWords + (self ? 0 : 8);
    if (!SoccrCopyAddr(sk, dup_fd_, self, &addr) || !SockaddrToWords(&addr.sa, words)) memset(words, 0, 8 * sizeof(uint32_t));
  }
  FlushSoccrLog(env);
  return packed;
}

// saveWithQueues(out: Uint32Array(33)) -> undefined | ArrayBuffer | [ArrayBuffer, ArrayBuffer]:
// save(out), and in the same call a copy of each non-empty saved queue as a new ArrayBuffer
// (soccrDump's convention: undefined when both are empty, the non-empty one alone, which one
// following from out[1] inq_len / out[3] outq_len, else [recv, send]). The handle keeps its own
// copies, so getQueueBytes() still works. ArrayBuffers rather than Buffers: node's C++ Buffer
// constructor sets the prototype on a slow path; JS wraps them with Buffer.from(ab).
Napi::Value SoccrHandle::SaveWithQueues(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Save(info);
  libsoccr_sk* sk = sk_;
  Napi::ArrayBuffer queues[2];
  const int ids[2] = {TCP_RECV_QUEUE, TCP_SEND_QUEUE};
  const uint32_t lengths[2] = {saved_.inq_len, saved_.outq_len};
  for (int i = 0; i < 2; i++) {
    if (lengths[i] == 0) continue;
    char* bytes = libsoccr_get_queue_bytes(sk, ids[i], 0);
    if (bytes == nullptr) ThrowSoccr(env, errno, "libsoccr_get_queue_bytes", 0);
    queues[i] = Napi::ArrayBuffer::New(env, lengths[i]);
    memcpy(queues[i].Data(), bytes, lengths[i]);
  }
  if (lengths[0] != 0 && lengths[1] != 0) {
    Napi::Array both = Napi::Array::New(env, 2);
    both.Set(0u, queues[0]);
    both.Set(1u, queues[1]);
    return both;
  }
  if (lengths[0] != 0) return queues[0];
  if (lengths[1] != 0) return queues[1];
  return env.Undefined();
}

// getQueueBytes(queueId: 1 recv | 2 send) -> Buffer (a copy), or null for an empty queue.
Napi::Value SoccrHandle::GetQueueBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t queue = ArgUint32(info, 0, "queue must be 1 (recv) or 2 (send)");
  if (queue != TCP_RECV_QUEUE && queue != TCP_SEND_QUEUE) ThrowInvalidArg(env, "queue must be 1 (recv) or 2 (send)");
  libsoccr_sk* sk = Open(env, "libsoccr_get_queue_bytes");
  if (!has_saved_) ThrowErrno(env, ENODATA, "libsoccr_get_queue_bytes", "save() first");
  uint32_t length = queue == TCP_RECV_QUEUE ? saved_.inq_len : saved_.outq_len;
  if (length == 0) return env.Null();  // JS substitutes an empty Buffer (cheaper than making one here)
  char* bytes = libsoccr_get_queue_bytes(sk, static_cast<int>(queue), 0);
  if (bytes == nullptr) ThrowSoccr(env, errno, "libsoccr_get_queue_bytes", 0);
  FlushSoccrLog(env);
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<uint8_t*>(bytes), length);
}

// getAddr(self: boolean) -> {family, address, port, ...}: libsoccr_get_addr (the address set for
// a restore, else getsockname/getpeername).
Napi::Value SoccrHandle::GetAddr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool self = info.Length() > 0 && info[0].ToBoolean();
  libsoccr_sk* sk = Open(env, "libsoccr_get_addr");
  union libsoccr_addr addr;
  if (!SoccrCopyAddr(sk, dup_fd_, self ? 1 : 0, &addr)) ThrowSoccr(env, errno, "libsoccr_get_addr", 0);
  FlushSoccrLog(env);
  return SockaddrToJs(env, &addr.sa);
}

// restore(skData, self, peer, recvBytes, sendBytes): set_addr x2 + set_queue_bytes x2 (copies,
// SOCCR_MEM_EXCL) + libsoccr_restore. On failure the socket stays paused; release() it.
Napi::Value SoccrHandle::Restore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  libsoccr_sk_data data;
  SkDataFromJs(info, 0, &data);
  sockaddr_storage self_ss, peer_ss;
  SockaddrFromJs(env, info[1], &self_ss);
  SockaddrFromJs(env, info[2], &peer_ss);
  Napi::Uint8Array recv = BytesArg(info, 3, "recv queue must be a Uint8Array");
  Napi::Uint8Array send = BytesArg(info, 4, "send queue must be a Uint8Array");
  if (recv.ElementLength() != data.inq_len) ThrowInvalidArg(env, "recv queue length must equal inq_len");
  if (send.ElementLength() != data.outq_len) ThrowInvalidArg(env, "send queue length must equal outq_len");
  RestoreWith(env, &data, self_ss, peer_ss, recv, send);
  return env.Undefined();
}

// restorePacked(words: Uint32Array(33) as save(out) fills it, recvBytes, sendBytes, transfer?):
// restore() without reading address objects.
Napi::Value SoccrHandle::RestorePacked(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array ||
      info[0].As<Napi::Uint32Array>().ElementLength() < kSkDataWords + 16)
    ThrowInvalidArg(env, "packed data must be a Uint32Array of 33 words");
  const uint32_t* words = info[0].As<Napi::Uint32Array>().Data();
  libsoccr_sk_data data;
  memcpy(&data, words, sizeof(data));
  sockaddr_storage self_ss, peer_ss;
  if (SockaddrFromWords(words + kSkDataWords, &self_ss) == 0 || SockaddrFromWords(words + kSkDataWords + 8, &peer_ss) == 0)
    ThrowInvalidArg(env, "packed addresses are invalid");
  Napi::Uint8Array recv = BytesArg(info, 1, "recv queue must be a Uint8Array");
  Napi::Uint8Array send = BytesArg(info, 2, "send queue must be a Uint8Array");
  if (recv.ElementLength() != data.inq_len) ThrowInvalidArg(env, "recv queue length must equal inq_len");
  if (send.ElementLength() != data.outq_len) ThrowInvalidArg(env, "send queue length must equal outq_len");
  uint32_t transfer = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Uint32Value() : 0;
  RestoreWith(env, &data, self_ss, peer_ss, recv, send);
  // transfer (bits: 1 recv, 2 send; SoccrHandle.restore's `transfer`): the restore succeeded and
  // the handle keeps no pointer into the queues, so their ArrayBuffers are detached, which frees
  // them now instead of at a later GC. JS sets a bit only for a view spanning its whole buffer.
  Napi::Uint8Array* queues[2] = {&recv, &send};
  for (int i = 0; i < 2; i++) {
    if ((transfer & (1u << i)) != 0 && queues[i]->ByteLength() != 0) napi_detach_arraybuffer(env, queues[i]->ArrayBuffer());
  }
  return env.Undefined();
}

void SoccrHandle::RestoreWith(Napi::Env env, libsoccr_sk_data* data_ptr, const sockaddr_storage& self_ss,
                              const sockaddr_storage& peer_ss, Napi::Uint8Array recv, Napi::Uint8Array send) {
  libsoccr_sk_data& data = *data_ptr;
  libsoccr_sk* sk = Open(env, "libsoccr_restore");

  union libsoccr_addr* self_addr = reinterpret_cast<libsoccr_addr*>(MallocCopy(env, &self_ss, sizeof(libsoccr_addr)));
  if (libsoccr_set_addr(sk, 1, self_addr, SOCCR_MEM_EXCL) < 0) {
    int err = errno;
    free(self_addr);
    ThrowSoccr(env, err, "libsoccr_set_addr", -1);
  }
  union libsoccr_addr* peer_addr = reinterpret_cast<libsoccr_addr*>(MallocCopy(env, &peer_ss, sizeof(libsoccr_addr)));
  if (libsoccr_set_addr(sk, 0, peer_addr, SOCCR_MEM_EXCL) < 0) {
    int err = errno;
    free(peer_addr);
    ThrowSoccr(env, err, "libsoccr_set_addr", -1);
  }
  // The queues are lent (flags 0, no copy): valid until libsoccr_restore returns, which happens
  // before this call returns to JS. The handle must not keep the pointers past that, so they are
  // cleared again right after.
  const int queue_ids[2] = {TCP_RECV_QUEUE, TCP_SEND_QUEUE};
  Napi::Uint8Array* queues[2] = {&recv, &send};
  for (int i = 0; i < 2; i++) {
    if (queues[i]->ElementLength() == 0) continue;
    if (libsoccr_set_queue_bytes(sk, queue_ids[i], reinterpret_cast<char*>(queues[i]->Data()), 0) < 0)
      ThrowSoccr(env, errno, "libsoccr_set_queue_bytes", -1);
  }
  int ret = libsoccr_restore(sk, &data, sizeof(data));
  int err = errno;
  for (int i = 0; i < 2; i++) libsoccr_set_queue_bytes(sk, queue_ids[i], nullptr, 0);
  if (ret < 0) ThrowSoccr(env, err, "libsoccr_restore", ret);
  FlushSoccrLog(env);
}

// Staged restore (the caller binds and connects the fd between setSkDataUnbound and setSkDataNoq).
Napi::Value SoccrHandle::SetSkDataUnbound(const Napi::CallbackInfo& info) {
  libsoccr_sk_data data;
  SkDataFromJs(info, 0, &data);
  libsoccr_sk* sk = Open(info.Env(), "libsoccr_set_sk_data_unbound");
  int ret = libsoccr_set_sk_data_unbound(sk, &data, sizeof(data));
  if (ret < 0) ThrowSoccr(info.Env(), errno, "libsoccr_set_sk_data_unbound", ret);
  FlushSoccrLog(info.Env());
  return info.Env().Undefined();
}

Napi::Value SoccrHandle::SetSkDataNoq(const Napi::CallbackInfo& info) {
  libsoccr_sk_data data;
  SkDataFromJs(info, 0, &data);
  libsoccr_sk* sk = Open(info.Env(), "libsoccr_set_sk_data_noq");
  int ret = libsoccr_set_sk_data_noq(sk, &data, sizeof(data));
  if (ret < 0) ThrowSoccr(info.Env(), errno, "libsoccr_set_sk_data_noq", ret);
  FlushSoccrLog(info.Env());
  return info.Env().Undefined();
}

// restoreQueue(skData, queueId, bytes): libsoccr_restore_queue; libsoccr copies what it keeps.
Napi::Value SoccrHandle::RestoreQueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  libsoccr_sk_data data;
  SkDataFromJs(info, 0, &data);
  uint32_t queue = ArgUint32(info, 1, "queue must be 1 (recv) or 2 (send)");
  if (queue != TCP_RECV_QUEUE && queue != TCP_SEND_QUEUE) ThrowInvalidArg(env, "queue must be 1 (recv) or 2 (send)");
  Napi::Uint8Array bytes = BytesArg(info, 2, "queue bytes must be a Uint8Array");
  uint32_t expected = queue == TCP_RECV_QUEUE ? data.inq_len : data.outq_len;
  if (bytes.ElementLength() != expected) ThrowInvalidArg(env, "queue bytes length must equal inq_len/outq_len");
  libsoccr_sk* sk = Open(env, "libsoccr_restore_queue");
  char empty = 0;
  char* buf = bytes.ElementLength() == 0 ? &empty : reinterpret_cast<char*>(bytes.Data());
  int ret = libsoccr_restore_queue(sk, &data, sizeof(data), static_cast<int>(queue), buf);
  if (ret < 0) ThrowSoccr(env, errno, "libsoccr_restore_queue", ret);
  FlushSoccrLog(env);
  return env.Undefined();
}

Napi::Value SoccrHandle::SetSkData(const Napi::CallbackInfo& info) {
  libsoccr_sk_data data;
  SkDataFromJs(info, 0, &data);
  libsoccr_sk* sk = Open(info.Env(), "libsoccr_set_sk_data");
  int ret = libsoccr_set_sk_data(sk, &data, sizeof(data));
  if (ret < 0) ThrowSoccr(info.Env(), errno, "libsoccr_set_sk_data", ret);
  FlushSoccrLog(info.Env());
  return info.Env().Undefined();
}

// resume(): libsoccr_resume (repair off, unsent data, deferred FIN, free), then close the dup.
// Idempotent: a second resume()/release() does nothing.
Napi::Value SoccrHandle::Resume(const Napi::CallbackInfo& info) {
  if (sk_ == nullptr) return info.Env().Undefined();
  libsoccr_sk* sk = Open(info.Env(), "libsoccr_resume");
  sk_ = nullptr;
  libsoccr_resume(sk);
  CloseDup();
  FlushSoccrLog(info.Env());
  return info.Env().Undefined();
}

// release(): libsoccr_release (repair stays on), then close the dup.
Napi::Value SoccrHandle::Release(const Napi::CallbackInfo& info) {
  if (sk_ == nullptr) return info.Env().Undefined();
  libsoccr_sk* sk = Open(info.Env(), "libsoccr_release");
  sk_ = nullptr;
  libsoccr_release(sk);
  CloseDup();
  FlushSoccrLog(info.Env());
  return info.Env().Undefined();
}

}  // namespace nodecriu

namespace nodecriu {
void InitSoccrHandle(Napi::Env env, Napi::Object exports) { SoccrHandle::Init(env, exports); }
}  // namespace nodecriu
