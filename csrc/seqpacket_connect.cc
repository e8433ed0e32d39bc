// The free functions of the SEQPACKET transport: making a socketpair for swrk, connecting to a
// `criu service` socket and asking who serves it, and the module registration of
// csrc/seqpacket.cc's SeqpacketSocket.
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "boundary.h"
#include "seqpacket.h"

namespace nodecriu {

// seqpacketPair(): [a, b], a connected SOCK_SEQPACKET pair, both close-on-exec (spawn's stdio dup2
// clears it on the child's copy).
static Napi::Value SeqpacketPair(const Napi::CallbackInfo& info) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0) ThrowErrno(info.Env(), errno, "socketpair");
  Napi::Array result = Napi::Array::New(info.Env(), 2);
  result.Set(0u, Napi::Number::New(info.Env(), fds[0]));
  result.Set(1u, Napi::Number::New(info.Env(), fds[1]));
  return result;
}

// seqpacketConnect(path): a connected, non-blocking, close-on-exec fd. Unix-socket connect never
// waits for the peer: a full backlog fails with EAGAIN instead of blocking the loop.
static Napi::Value SeqpacketConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) ThrowErrno(env, ENAMETOOLONG, "connect", path.c_str());
  memcpy(addr.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  int rc;
  do {
    rc = connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr));
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "connect", path.c_str());
  }
  return Napi::Number::New(env, fd);
}

// seqpacketListen(path, mode): a bound, listening, non-blocking, close-on-exec fd at path, whose
// file gets `mode` (fchmod before bind would not reach the socket file; umask could widen it, so
// the caller's mode is applied right after bind, before listen lets anyone connect).
static Napi::Value SeqpacketListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  int32_t mode = ArgInt32(info, 1, "mode");
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) ThrowErrno(env, ENAMETOOLONG, "bind", path.c_str());
  if (mode < 0 || mode > 0777) ThrowErrno(env, EINVAL, "chmod", "mode");
  memcpy(addr.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  const char* failed = nullptr;
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) < 0) {
    failed = "bind";
  } else if (chmod(path.c_str(), static_cast<mode_t>(mode)) < 0) {
    failed = "chmod";
  } else if (listen(fd, 16) < 0) {
    failed = "listen";
  }
  if (failed != nullptr) {
    int err = errno;
    if (strcmp(failed, "bind") != 0) unlink(path.c_str());
    close(fd);
    ThrowErrno(env, err, failed, path.c_str());
  }
  return Napi::Number::New(env, fd);
}

// peerCredentials(fd): {pid, uid, gid} of the process that made the other end of a connected
// AF_UNIX socket (SO_PEERCRED, recorded by the kernel at connect/listen time, not claimed by the peer).
static Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  struct ucred cred = {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) ThrowErrno(env, errno, "getsockopt", "SO_PEERCRED");
  Napi::Object result = Napi::Object::New(env);
  result.Set("pid", Napi::Number::New(env, cred.pid));
  result.Set("uid", Napi::Number::New(env, cred.uid));
  result.Set("gid", Napi::Number::New(env, cred.gid));
  return result;
}

// pidfdGetfd(pid, fd): a close-on-exec duplicate of another process's fd (pidfd_open +
// pidfd_getfd; needs ptrace access to it, i.e. root). After a swrk was killed mid-dump, the client
// uses it to take the dumped task's TCP sockets out of the repair mode CRIU left them in.
static Napi::Value PidfdGetfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t pid = ArgInt32(info, 0, "pid");
  int target = ArgFd(info, 1);
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) ThrowErrno(env, errno, "pidfd_open");
  int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, target, 0));
  int err = errno;
  close(pidfd);
  if (fd < 0) ThrowErrno(env, err, "pidfd_getfd");
  return Napi::Number::New(env, fd);
}

void InitSeqpacket(Napi::Env env, Napi::Object exports) {
  SeqpacketSocket::Init(env, exports);
  exports.Set("seqpacketPair", Napi::Function::New(env, SeqpacketPair, "seqpacketPair"));
  exports.Set("seqpacketConnect", Napi::Function::New(env, SeqpacketConnect, "seqpacketConnect"));
  exports.Set("seqpacketListen", Napi::Function::New(env, SeqpacketListen, "seqpacketListen"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("pidfdGetfd", Napi::Function::New(env, PidfdGetfd, "pidfdGetfd"));
}

}  // namespace nodecriu
