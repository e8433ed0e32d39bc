// SOCK_SEQPACKET transport for CRIU-RPC: a non-blocking socket driven by one
// uv_poll_t on the environment's loop, whole-message reads with SCM_RIGHTS fds, queued sends.
#include "seqpacket.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>


#include "addon.h"
#include "boundary.h"

namespace nodecriu {

namespace {

// CRIU sends at most one fd per message (orphan-pts-master); room for more costs nothing.
constexpr size_t kMaxFdsPerMessage = 64;
// Messages handled per poll callback before yielding back to the loop (poll is level-triggered).
constexpr int kMaxReadsPerWakeup = 64;

void CloseFds(const std::vector<int>& fds) {
  for (int fd : fds) close(fd);
}

}  // namespace

// Allocated apart from the ObjectWrap because libuv owns it until the uv_close callback, which can
// run after the JS object was collected.
struct SeqpacketPoller {
  uv_poll_t handle;
  SeqpacketSocket* owner = nullptr;
  napi_env env = nullptr;
  // Our registration; cleared once removed or once the environment started running it.
  napi_async_cleanup_hook_handle cleanup_hook = nullptr;
  // Set when the environment is tearing down and waits for our uv_close to finish.
  napi_async_cleanup_hook_handle finishing = nullptr;
};

static void OnPollEvent(uv_poll_t* handle, int status, int events) {
  auto* poller = static_cast<SeqpacketPoller*>(handle->data);
  if (poller->owner != nullptr) poller->owner->OnPoll(status, events);
}

static void OnPollClosed(uv_handle_t* handle) {
  auto* poller = static_cast<SeqpacketPoller*>(handle->data);
  if (poller->finishing != nullptr) napi_remove_async_cleanup_hook(poller->finishing);
  delete poller;
}

// Environment teardown (worker exit, jest module registry reset): close whatever is still open.
static void OnEnvCleanup(napi_async_cleanup_hook_handle handle, void* arg) {
  auto* poller = static_cast<SeqpacketPoller*>(arg);
  poller->finishing = handle;
  poller->cleanup_hook = nullptr;
  if (poller->owner != nullptr) poller->owner->CloseNow(false);
}

void SeqpacketSocket::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(
      env, "SeqpacketSocket",
      {
          InstanceMethod<&SeqpacketSocket::Send>("send"),
          InstanceMethod<&SeqpacketSocket::Close>("close"),
          InstanceMethod<&SeqpacketSocket::Ref>("ref"),
          InstanceMethod<&SeqpacketSocket::Unref>("unref"),
          InstanceAccessor<&SeqpacketSocket::GetFd>("fd"),
          InstanceAccessor<&SeqpacketSocket::GetClosed>("closed"),
      });
  GetAddonData(env).constructors["SeqpacketSocket"] = Napi::Persistent(ctor);
  exports.Set("SeqpacketSocket", ctor);
}

// new SeqpacketSocket(fd, onMessage(data, fds), onEnd(error | null)): takes ownership of fd once
// the constructor returns; on a throw the caller still owns it.
SeqpacketSocket::SeqpacketSocket(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<SeqpacketSocket>(info), env_(info.Env()) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  ArgFunction(info, 1, "onMessage");
  ArgFunction(info, 2, "onEnd");

  int type = 0;
  socklen_t type_len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) < 0) ThrowErrno(env, errno, "getsockopt");
  if (type != SOCK_SEQPACKET) ThrowErrno(env, EPROTOTYPE, "getsockopt", "not a SOCK_SEQPACKET socket");
  int accepting = 0;
  socklen_t accepting_len = sizeof(accepting);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &accepting_len) < 0) ThrowErrno(env, errno, "getsockopt");
  listening_ = accepting != 0;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) ThrowErrno(env, errno, "fcntl");

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr)
    ThrowErrno(env, EINVAL, "napi_get_uv_event_loop");
  auto* poller = new SeqpacketPoller();
  int rc = uv_poll_init(loop, &poller->handle, fd);
  if (rc < 0) {
    delete poller;
    ThrowErrno(env, -rc, "uv_poll_init");
  }
  poller->handle.data = poller;
  poller->owner = this;
  poller->env = env;
  poller_ = poller;
  fd_ = fd;
  napi_add_async_cleanup_hook(env, OnEnvCleanup, poller, &poller->cleanup_hook);

  // The callbacks usually close over the JS object that owns this socket. Strong references to
  // them would be GC roots and keep that whole cycle alive forever; instead the wrapper object
  // holds them as (hidden) properties and we keep only weak references.
  Napi::Object self = info.This().As<Napi::Object>();
  self.DefineProperties({
      Napi::PropertyDescriptor::Value("__onMessage", info[1], napi_default),
      Napi::PropertyDescriptor::Value("__onEnd", info[2], napi_default),
  });
  on_message_ = Napi::Weak(info[1].As<Napi::Function>());
  on_end_ = Napi::Weak(info[2].As<Napi::Function>());
  SetStrong(true);
  UpdatePoll();
}

SeqpacketSocket::~SeqpacketSocket() { CloseNow(false); }

void SeqpacketSocket::SetStrong(bool strong) {
  if (strong == strong_) return;
  strong_ = strong;
  if (strong) {
    ObjectWrap::Ref();
  } else {
    ObjectWrap::Unref();
  }
}

void SeqpacketSocket::CloseNow(bool from_js) {
  if (closed_) return;
  closed_ = true;
  SeqpacketPoller* poller = poller_;
  poller_ = nullptr;
  if (poller != nullptr) {
    if (poller->cleanup_hook != nullptr) {
      napi_remove_async_cleanup_hook(poller->cleanup_hook);
      poller->cleanup_hook = nullptr;
    }
    poller->owner = nullptr;
    uv_poll_stop(&poller->handle);
    uv_close(reinterpret_cast<uv_handle_t*>(&poller->handle), OnPollClosed);
  }
  if (fd_ >= 0) close(fd_);  // after uv_poll_stop: epoll must forget the fd before it is reused
  fd_ = -1;
  DropPendingSends();
  if (from_js) SetStrong(false);
}

void SeqpacketSocket::DropPendingSends() {
  for (PendingSend& pending : pending_) CloseFds(pending.fds);
  pending_.clear();
}

void SeqpacketSocket::UpdatePoll() {
  if (closed_ || poller_ == nullptr) return;
  int events = 0;
  if (!ended_) events |= UV_READABLE | UV_DISCONNECT;
  if (!ended_ && !pending_.empty()) events |= UV_WRITABLE;
  if (events == 0) {
    uv_poll_stop(&poller_->handle);
    return;
  }
  int rc = uv_poll_start(&poller_->handle, events, OnPollEvent);
  if (rc < 0) ReportEnd(-rc, "uv_poll_start", nullptr);
  if (loop_ref_) {
    uv_ref(reinterpret_cast<uv_handle_t*>(&poller_->handle));
  } else {
    uv_unref(reinterpret_cast<uv_handle_t*>(&poller_->handle));
  }
}

void SeqpacketSocket::OnPoll(int status, int events) {
  // While the environment tears down (worker exit) Node still runs the loop once, and no handle
  // scope can be opened: then stop polling and touch nothing JS (the cleanup hook closes us next).
  napi_handle_scope raw_scope;
  if (napi_open_handle_scope(env_, &raw_scope) != napi_ok) {
    ended_ = true;
    UpdatePoll();
    return;
  }
  // The GC may have collected the (unref'd, unreachable) JS object while its finalizer, which
  // closes us, has not run yet: nobody is left to tell anything, so just stop.
  if (Value().IsEmpty()) {
    ended_ = true;
    UpdatePoll();
    napi_close_handle_scope(env_, raw_scope);
    return;
  }
  // A C++ exception must never unwind into libuv. The JS callbacks' own exceptions are handled
  // where they are called; anything else node-addon-api throws here ends this socket's reads.
  try {
    if (status < 0) {
      ReportEnd(-status, "uv_poll", nullptr);
    } else {
      if ((events & UV_WRITABLE) != 0) FlushSends();
      if (!closed_ && !ended_ && (events & (UV_READABLE | UV_DISCONNECT)) != 0) ReadAvailable(false);
    }
  } catch (...) {
    ended_ = true;
    UpdatePoll();
  }
  napi_close_handle_scope(env_, raw_scope);
}

// A listening socket: each pending connection is accepted and delivered as an empty message
// carrying its fd (non-blocking, close-on-exec), which the receiver owns.
void SeqpacketSocket::AcceptAvailable() {
  for (int i = 0; i < kMaxReadsPerWakeup && !closed_ && !ended_; ++i) {
    int fd = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // Anything else ends the listener (onEnd), out of fds included: the poll is level-triggered,
      // so waiting here would spin on the connection we cannot take.
      ReportEnd(errno, "accept4", nullptr);
      return;
    }
    Deliver(Napi::Buffer<uint8_t>::New(env_, 0), std::vector<int>{fd});
  }
}

void SeqpacketSocket::ReadAvailable(bool) {
  if (listening_) {
    AcceptAvailable();
    return;
  }
  for (int i = 0; i < kMaxReadsPerWakeup && !closed_ && !ended_; ++i) {
    // The next message's full length, whatever its size (MSG_TRUNC makes recv report it).
    ssize_t size = recv(fd_, nullptr, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
    if (size < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      ReportEnd(errno, "recv", nullptr);
      return;
    }
    Napi::Buffer<uint8_t> data = Napi::Buffer<uint8_t>::New(env_, static_cast<size_t>(size));
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    struct iovec iov = {data.Data(), static_cast<size_t>(size)};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t got;
    do {
      got = recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      ReportEnd(errno, "recvmsg", nullptr);
      return;
    }
    std::vector<int> fds;
    for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
      if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const unsigned char* bytes = CMSG_DATA(cmsg);
      for (size_t k = 0; k < count; ++k) {
        int received;
        memcpy(&received, bytes + k * sizeof(int), sizeof(int));
        fds.push_back(received);
      }
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0) {
      CloseFds(fds);
      ReportEnd(EMSGSIZE, "recvmsg", "ancillary data truncated: more fds than expected");
      return;
    }
    if ((msg.msg_flags & MSG_TRUNC) != 0 || got != size) {
      CloseFds(fds);
      ReportEnd(EMSGSIZE, "recvmsg", "message truncated");
      return;
    }
    // recv() returns 0 both at EOF and for an empty message; CRIU never sends empty messages and
    // send() refuses them, so 0 bytes without fds is the peer's EOF.
    if (got == 0 && fds.empty()) {
      ReportEnd(0, nullptr, nullptr);
      return;
    }
    Deliver(data, fds);
  }
}

void SeqpacketSocket::Deliver(Napi::Buffer<uint8_t> data, const std::vector<int>& fds) {
  Napi::Array fd_array = Napi::Array::New(env_, fds.size());
  for (size_t k = 0; k < fds.size(); ++k) fd_array.Set(static_cast<uint32_t>(k), Napi::Number::New(env_, fds[k]));
  if (on_message_.IsEmpty() || on_message_.Value().IsEmpty()) {
    CloseFds(fds);
    return;
  }
  try {
    on_message_.Value().MakeCallback(Value(), {data, fd_array});
  } catch (const Napi::Error& error) {
    // The JS layer never throws from this callback; if it does, surface it like any uncaught error.
    napi_fatal_exception(env_, error.Value());
  }
}

void SeqpacketSocket::ReportEnd(int err, const char* syscall, const char* detail) {
  if (ended_ || closed_) return;
  ended_ = true;
  DropPendingSends();
  UpdatePoll();
  Napi::Value reason = env_.Null();
  if (err != 0) reason = ErrnoError(env_, err, syscall, detail).Value();
  // Nothing more will arrive: the JS object no longer needs pinning for the loop's sake.
  Napi::Object self = Value();
  SetStrong(false);
  if (on_end_.IsEmpty() || on_end_.Value().IsEmpty()) return;
  try {
    on_end_.Value().MakeCallback(self, {reason});
  } catch (const Napi::Error& error) {
    napi_fatal_exception(env_, error.Value());
  }
}

void SeqpacketSocket::FlushSends() {
  while (!pending_.empty() && !closed_ && !ended_) {
    PendingSend& pending = pending_.front();
    struct iovec iov = {pending.data.data(), pending.data.size()};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control;
    if (!pending.fds.empty()) {
      control.resize(CMSG_SPACE(sizeof(int) * pending.fds.size()));
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * pending.fds.size());
      memcpy(CMSG_DATA(cmsg), pending.fds.data(), sizeof(int) * pending.fds.size());
    }
    ssize_t sent;
    do {
      sent = sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      ReportEnd(errno, "sendmsg", nullptr);
      return;
    }
    CloseFds(pending.fds);
    pending_.pop_front();
  }
  UpdatePoll();
}

// send(data: Uint8Array, fds?: number[]): true when sent now, false when queued until writable.
// The caller keeps ownership of `fds` (queued sends hold dup'd copies).
Napi::Value SeqpacketSocket::Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Uint8Array data = ArgTypedArray<uint8_t>(info, 0, "data");
  if (data.ByteLength() == 0) ThrowInvalidArg(env, "an empty message cannot be told apart from EOF");
  std::vector<int> fds;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    Napi::Array list = ArgArray(info, 1, "fds");
    // The receiving end (ReadAvailable) has control-message room for this many.
    if (list.Length() > kMaxFdsPerMessage) ThrowInvalidArg(env, "too many fds for one message");
    for (uint32_t k = 0; k < list.Length(); ++k) {
      Napi::Value item = list.Get(k);
      if (!item.IsNumber()) ThrowArgType(env, "fds", "an array of fd numbers");
      fds.push_back(item.As<Napi::Number>().Int32Value());
    }
  }
  if (closed_) ThrowErrno(env, EBADF, "sendmsg", "socket is closed");
  if (ended_) ThrowErrno(env, EPIPE, "sendmsg", "socket has ended");

  if (pending_.empty()) {
    struct iovec iov = {data.Data(), data.ByteLength()};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control;
    if (!fds.empty()) {
      control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
      msg.msg_control = control.data();
      msg.msg_controllen = control.size();
      struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t sent;
    do {
      sent = sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (sent < 0 && errno == EINTR);
    if (sent >= 0) return Napi::Boolean::New(env, true);
    if (errno != EAGAIN && errno != EWOULDBLOCK) ThrowErrno(env, errno, "sendmsg");
  }

  PendingSend pending;
  pending.data.assign(data.Data(), data.Data() + data.ByteLength());
  for (int fd : fds) {
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
      int err = errno;
      CloseFds(pending.fds);
      ThrowErrno(env, err, "fcntl", "F_DUPFD_CLOEXEC");
    }
    pending.fds.push_back(copy);
  }
  pending_.push_back(std::move(pending));
  UpdatePoll();
  return Napi::Boolean::New(env, false);
}

Napi::Value SeqpacketSocket::Close(const Napi::CallbackInfo& info) {
  CloseNow(true);
  return info.Env().Undefined();
}

// ref()/unref(): like net.Socket, whether an open socket keeps the process alive. An unref'd socket
// is also not pinned, so dropping it lets the GC close its fd.
Napi::Value SeqpacketSocket::Ref(const Napi::CallbackInfo& info) {
  loop_ref_ = true;
  if (!closed_ && !ended_) {
    SetStrong(true);
    UpdatePoll();
  }
  return info.Env().Undefined();
}

Napi::Value SeqpacketSocket::Unref(const Napi::CallbackInfo& info) {
  loop_ref_ = false;
  SetStrong(false);
  UpdatePoll();
  return info.Env().Undefined();
}

Napi::Value SeqpacketSocket::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

Napi::Value SeqpacketSocket::GetClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), closed_);
}

}  // namespace nodecriu
