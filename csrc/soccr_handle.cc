#include "soccr_handle.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "addon.h"
#include "boundary.h"
#include "soccr_log.h"
#include "socket_ops.h"

namespace nodecriu {

namespace {

void SkDataArg(const Napi::CallbackInfo& info, size_t index, libsoccr_sk_data* out) {
  memcpy(out, ArgTypedArray<uint32_t>(info, index, "sk_data", kSkDataWords).Data(), sizeof(*out));
}

// libsoccr reads inq_len / outq_len bytes from the queues it is given.
void CheckQueueLengths(Napi::Env env, const libsoccr_sk_data& data, const Napi::Uint8Array& recv,
                       const Napi::Uint8Array& send) {
  if (recv.ElementLength() != data.inq_len || send.ElementLength() != data.outq_len)
    ThrowInvalidArg(env, "queue lengths must equal inq_len and outq_len");
}

// A queue id indexes libsoccr's per-queue arrays.
int QueueArg(const Napi::CallbackInfo& info, size_t index) {
  uint32_t queue = ArgUint32(info, index, "queue");
  if (queue != TCP_RECV_QUEUE && queue != TCP_SEND_QUEUE) ThrowArgType(info.Env(), "queue", "1 (recv) or 2 (send)");
  return static_cast<int>(queue);
}

// The `check` of the constructor: whether fd is TCP in a state libsoccr can checkpoint.
void CheckTcpState(Napi::Env env, int fd, Napi::Uint32Array check) {
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
// any other state throws EINVAL (syscall "tcp state") before anything changes. This spares the
// public pause() path a separate inspection call; on a failure, JS asks socketInfo for the
// precise reason.
SoccrHandle::SoccrHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SoccrHandle>(info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  bool borrow = !OptBool(info, 1, true);
  if (HasArg(info, 2)) CheckTcpState(env, fd, ArgTypedArray<uint32_t>(info, 2, "check", 1));
  int dup_fd = borrow ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) ThrowErrno(env, errno, "dup");
  SoccrLogScope log(env);
  libsoccr_sk* sk = libsoccr_pause(dup_fd);
  if (sk == nullptr) {
    int err = errno;
    if (!borrow) close(dup_fd);
    log.Throw(err, "libsoccr_pause", -1);
  }
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
  return sk_;
}

Napi::Value SoccrHandle::Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), dup_fd_); }

// save() -> Uint32Array(17): libsoccr_save; the queues stay in the handle for getQueueBytes.
// save(out: Uint32Array(17 or 33)) fills `out` instead (no allocation): the 17 words, then (33)
// the own and the peer address in the packed form (packed_addr.h).
Napi::Value SoccrHandle::Save(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint32Array packed;
  if (HasArg(info, 0)) packed = ArgTypedArray<uint32_t>(info, 0, "out", kSkDataWords);
  SoccrLogScope log(env);
  libsoccr_sk* sk = Open(env, "libsoccr_save");
  libsoccr_sk_data data;
  int ret = libsoccr_save(sk, &data, sizeof(data));
  if (ret != static_cast<int>(sizeof(data))) log.Throw(errno, "libsoccr_save", ret);
  saved_ = data;
  has_saved_ = true;
  if (packed.IsEmpty()) {
    Napi::Uint32Array out = Napi::Uint32Array::New(env, kSkDataWords);
    memcpy(out.Data(), &data, sizeof(data));
    return out;
  }
  memcpy(packed.Data(), &data, sizeof(data));
  // An address libsoccr cannot give is left as family 0: getAddr() reports why when asked, so
  // save() fails only when libsoccr_save does.
  for (int self = 1; self >= 0 && packed.ElementLength() >= kPackedWords; self--) {
    uint32_t* words = packed.Data() + kSkDataWords + (self ? 0 : kAddrWords);
    SoccrFailure unused;
    if (!AddrWords(sk, dup_fd_, self, words, &unused)) memset(words, 0, kAddrWords * sizeof(uint32_t));
  }
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
  SoccrLogScope log(env);
  Napi::ArrayBuffer queues[2];
  const int ids[2] = {TCP_RECV_QUEUE, TCP_SEND_QUEUE};
  const uint32_t lengths[2] = {saved_.inq_len, saved_.outq_len};
  for (int i = 0; i < 2; i++) {
    if (lengths[i] == 0) continue;
    char* bytes = libsoccr_get_queue_bytes(sk_, ids[i], 0);
    if (bytes == nullptr) log.Throw(errno, "libsoccr_get_queue_bytes", 0);
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
  int queue = QueueArg(info, 0);
  SoccrLogScope log(env);
  libsoccr_sk* sk = Open(env, "libsoccr_get_queue_bytes");
  if (!has_saved_) ThrowErrno(env, ENODATA, "libsoccr_get_queue_bytes", "save() first");
  uint32_t length = queue == TCP_RECV_QUEUE ? saved_.inq_len : saved_.outq_len;
  if (length == 0) return env.Null();  // JS substitutes an empty Buffer (cheaper than making one here)
  char* bytes = libsoccr_get_queue_bytes(sk, queue, 0);
  if (bytes == nullptr) log.Throw(errno, "libsoccr_get_queue_bytes", 0);
  return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<uint8_t*>(bytes), length);
}

// getAddr(self: boolean) -> {family, address, port, ...}: libsoccr_get_addr (the address set for
// a restore, else getsockname/getpeername).
Napi::Value SoccrHandle::GetAddr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool self = ArgTruthy(info, 0);
  SoccrLogScope log(env);
  libsoccr_sk* sk = Open(env, "libsoccr_get_addr");
  union libsoccr_addr addr;
  if (!SoccrCopyAddr(sk, dup_fd_, self ? 1 : 0, &addr)) log.Throw(errno, "libsoccr_get_addr", 0);
  return SockaddrToJs(env, &addr.sa);
}

// restore(skData, self, peer, recvBytes, sendBytes): addresses, queues and libsoccr_restore
// (soccr_core.h). On failure the socket stays paused; release() it.
Napi::Value SoccrHandle::Restore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RestoreInput in;
  SkDataArg(info, 0, &in.data);
  sockaddr_storage ss;
  SockaddrFromJs(env, info[1], &ss);
  memcpy(&in.addr[0], &ss, sizeof(in.addr[0]));
  SockaddrFromJs(env, info[2], &ss);
  memcpy(&in.addr[1], &ss, sizeof(in.addr[1]));
  Napi::Uint8Array recv = OptTypedArray<uint8_t>(info, 3, "recv queue");
  Napi::Uint8Array send = OptTypedArray<uint8_t>(info, 4, "send queue");
  RestoreWith(env, &in, recv, send);
  return env.Undefined();
}

// restorePacked(words: Uint32Array(33) as save(out) fills it, recvBytes, sendBytes, transfer?):
// restore() without reading address objects.
Napi::Value SoccrHandle::RestorePacked(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint32Array packed = ArgTypedArray<uint32_t>(info, 0, "packed", kPackedWords);
  RestoreInput in;
  if (!UnpackRestoreInput(packed.Data(), &in)) ThrowInvalidArg(env, "packed addresses are invalid");
  Napi::Uint8Array recv = OptTypedArray<uint8_t>(info, 1, "recv queue");
  Napi::Uint8Array send = OptTypedArray<uint8_t>(info, 2, "send queue");
  uint32_t transfer = OptUint32(info, 3, 0);
  RestoreWith(env, &in, recv, send);
  // transfer (bits: 1 recv, 2 send): the restore succeeded and the handle keeps no pointer into
  // the queues, so their ArrayBuffers are detached, which frees them now instead of at a later
  // GC. JS sets a bit only for a view spanning its whole buffer.
  Napi::Uint8Array* queues[2] = {&recv, &send};
  for (int i = 0; i < 2; i++) {
    if ((transfer & (1u << i)) != 0 && queues[i]->ByteLength() != 0) napi_detach_arraybuffer(env, queues[i]->ArrayBuffer());
  }
  return env.Undefined();
}

void SoccrHandle::RestoreWith(Napi::Env env, RestoreInput* in, Napi::Uint8Array recv, Napi::Uint8Array send) {
  CheckQueueLengths(env, in->data, recv, send);
  in->queue[0] = recv.ElementLength() != 0 ? reinterpret_cast<char*>(recv.Data()) : nullptr;
  in->queue[1] = send.ElementLength() != 0 ? reinterpret_cast<char*>(send.Data()) : nullptr;
  SoccrLogScope log(env);
  libsoccr_sk* sk = Open(env, "libsoccr_restore");
  SoccrFailure failure;
  // The handle keeps the addresses: getAddr() after a restore reads them.
  if (!RestoreOnHandle(sk, in, true, &failure)) log.Throw(std::move(failure));
}

Napi::Value SoccrHandle::SkDataCall(const Napi::CallbackInfo& info, const char* name,
                                    int (*call)(libsoccr_sk*, libsoccr_sk_data*, unsigned)) {
  Napi::Env env = info.Env();
  libsoccr_sk_data data;
  SkDataArg(info, 0, &data);
  SoccrLogScope log(env);
  libsoccr_sk* sk = Open(env, name);
  int ret = call(sk, &data, sizeof(data));
  if (ret < 0) log.Throw(errno, name, ret);
  return env.Undefined();
}

// Staged restore (the caller binds and connects the fd between setSkDataUnbound and setSkDataNoq).
Napi::Value SoccrHandle::SetSkDataUnbound(const Napi::CallbackInfo& info) {
  return SkDataCall(info, "libsoccr_set_sk_data_unbound", libsoccr_set_sk_data_unbound);
}

Napi::Value SoccrHandle::SetSkDataNoq(const Napi::CallbackInfo& info) {
  return SkDataCall(info, "libsoccr_set_sk_data_noq", libsoccr_set_sk_data_noq);
}

Napi::Value SoccrHandle::SetSkData(const Napi::CallbackInfo& info) {
  return SkDataCall(info, "libsoccr_set_sk_data", libsoccr_set_sk_data);
}

// restoreQueue(skData, queueId, bytes): libsoccr_restore_queue; libsoccr copies what it keeps.
Napi::Value SoccrHandle::RestoreQueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  libsoccr_sk_data data;
  SkDataArg(info, 0, &data);
  int queue = QueueArg(info, 1);
  Napi::Uint8Array bytes = OptTypedArray<uint8_t>(info, 2, "queue bytes");
  if (bytes.ElementLength() != (queue == TCP_RECV_QUEUE ? data.inq_len : data.outq_len))
    ThrowInvalidArg(env, "queue bytes length must equal inq_len/outq_len");
  SoccrLogScope log(env);
  libsoccr_sk* sk = Open(env, "libsoccr_restore_queue");
  char empty = 0;
  char* buf = bytes.ElementLength() == 0 ? &empty : reinterpret_cast<char*>(bytes.Data());
  int ret = libsoccr_restore_queue(sk, &data, sizeof(data), queue, buf);
  if (ret < 0) log.Throw(errno, "libsoccr_restore_queue", ret);
  return env.Undefined();
}

// resume(): libsoccr_resume (repair off, unsent data, deferred FIN, free), then close the dup.
// release(): libsoccr_release (repair stays on), then close the dup.
// Both are idempotent: once either ran, they do nothing.
Napi::Value SoccrHandle::Finish(const Napi::CallbackInfo& info, void (*finish)(libsoccr_sk*)) {
  if (sk_ == nullptr) return info.Env().Undefined();
  SoccrLogScope log(info.Env());
  finish(sk_);
  sk_ = nullptr;
  CloseDup();
  return info.Env().Undefined();
}

Napi::Value SoccrHandle::Resume(const Napi::CallbackInfo& info) { return Finish(info, libsoccr_resume); }

Napi::Value SoccrHandle::Release(const Napi::CallbackInfo& info) { return Finish(info, libsoccr_release); }

void InitSoccrHandle(Napi::Env env, Napi::Object exports) { SoccrHandle::Init(env, exports); }

}  // namespace nodecriu
