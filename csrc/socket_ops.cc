#include "socket_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <string>

#include "addon.h"
#include "boundary.h"

namespace nodecriu {

namespace {

int GetIntOpt(Napi::Env env, int fd, int level, int name, const char* syscall) {
  int value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, level, name, &value, &len) < 0) ThrowErrno(env, errno, syscall);
  return value;
}

void SetIntOpt(Napi::Env env, int fd, int level, int name, int value, const char* syscall) {
  if (setsockopt(fd, level, name, &value, sizeof(value)) < 0) ThrowErrno(env, errno, syscall);
}

// Linux's nsfs superblock magic (linux/magic.h), spelled out for older headers.
constexpr long kNsfsMagic = 0x6e736673;

// /proc/<pid|self|thread-self>/ns/net: procfs's magic link, which the kernel resolves only to a
// namespace; every other path must name the namespace file itself (no symlink).
bool IsProcNetnsLink(const std::string& path) {
  static const char kPrefix[] = "/proc/";
  static const char kSuffix[] = "/ns/net";
  if (path.compare(0, sizeof(kPrefix) - 1, kPrefix) != 0) return false;
  if (path.size() < sizeof(kPrefix) - 1 + sizeof(kSuffix) - 1 + 1) return false;
  std::string middle = path.substr(sizeof(kPrefix) - 1, path.size() - (sizeof(kPrefix) - 1) - (sizeof(kSuffix) - 1));
  if (path.compare(path.size() - (sizeof(kSuffix) - 1), std::string::npos, kSuffix) != 0) return false;
  if (middle == "self" || middle == "thread-self") return true;
  return middle.find_first_not_of("0123456789") == std::string::npos;
}

// The path is first opened O_PATH (which never blocks and has no side effects, whatever the file
// is: a FIFO, a device), checked to be on nsfs, and only then reopened for setns through the
// verified descriptor, so a file swapped in between cannot be the one opened.
int OpenNetns(Napi::Env env, const std::string& path) {
  int flags = O_PATH | O_CLOEXEC | (IsProcNetnsLink(path) ? 0 : O_NOFOLLOW);
  int probe = open(path.c_str(), flags);
  if (probe < 0) ThrowErrno(env, errno, "open", path.c_str());
  struct statfs fs;
  if (fstatfs(probe, &fs) < 0) {
    int err = errno;
    close(probe);
    ThrowErrno(env, err, "fstatfs", path.c_str());
  }
  if (static_cast<long>(fs.f_type) != kNsfsMagic) {
    close(probe);
    Napi::Error error = ErrnoError(env, EINVAL, "open", (path + " is not a namespace file").c_str());
    error.Set("code", Napi::String::New(env, "ERR_INVALID_NETNS"));
    throw error;
  }
  std::string self = "/proc/self/fd/" + std::to_string(probe);
  int fd = open(self.c_str(), O_RDONLY | O_CLOEXEC);
  int err = errno;
  close(probe);
  if (fd < 0) ThrowErrno(env, err, "open", path.c_str());
  return fd;
}

// Runs `fn` with the calling thread switched into the network namespace at `path` (OpenNetns),
// and always switches back. setns() changes only this thread (Node's main thread while the call
// lasts); sockets keep the namespace they were created in for their whole life.
template <typename Fn>
int InNetns(Napi::Env env, const std::string& path, Fn fn) {
  int target = OpenNetns(env, path);
  int original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original < 0) {
    int err = errno;
    close(target);
    ThrowErrno(env, err, "open", "/proc/thread-self/ns/net");
  }
  if (setns(target, CLONE_NEWNET) < 0) {
    int err = errno;
    close(target);
    close(original);
    ThrowErrno(env, err, "setns", path.c_str());
  }
  int result = fn();
  int saved = errno;
  // Failing to return would leave Node's main thread in a foreign namespace: nothing sane can
  // continue after that, so it is fatal rather than an exception.
  if (setns(original, CLONE_NEWNET) < 0) {
    perror("node-criu: setns back to the original network namespace");
    abort();
  }
  close(target);
  close(original);
  errno = saved;
  return result;
}

// tcpSocket(family: 4|6, netnsPath?: string) -> fd. Non-blocking and close-on-exec, as libuv
// and a restore both want.
Napi::Value TcpSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t family = ArgInt32(info, 0, "family");
  if (family != 4 && family != 6) ThrowArgType(env, "family", "4 or 6");
  int domain = family == 4 ? AF_INET : AF_INET6;
  auto create = [domain]() { return socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP); };
  std::string netns;
  int fd = OptString(info, 1, &netns) ? InNetns(env, netns, create) : create();
  if (fd < 0) ThrowErrno(env, errno, "socket");
  return Napi::Number::New(env, fd);
}

}  // namespace

int CreateTcpSockets(Napi::Env env, const uint8_t* families, size_t count, const std::string* netns, int32_t* fds) {
  auto create_all = [&]() -> int {
    for (size_t i = 0; i < count; i++) {
      fds[i] = socket(families[i] == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
      if (fds[i] < 0) {
        int err = errno;
        for (size_t j = 0; j < i; j++) close(fds[j]);
        for (size_t j = 0; j < count; j++) fds[j] = -1;
        errno = err;
        return -1;
      }
    }
    return 0;
  };
  return netns != nullptr ? InNetns(env, *netns, create_all) : create_all();
}

int SocketIn(Napi::Env env, const std::string* netns, int domain, int type, int protocol) {
  auto create = [=]() { return socket(domain, type, protocol); };
  return netns != nullptr ? InNetns(env, *netns, create) : create();
}

namespace {

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  if (close(ArgFd(info, 0)) < 0 && errno != EINTR) ThrowErrno(info.Env(), errno, "close");
  return info.Env().Undefined();
}

// Classic BPF program of one instruction, "return 0": every packet for this socket is dropped
// before TCP sees it, so nothing the peer sends is acknowledged while it is attached.
Napi::Value AttachDropFilter(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  sock_filter drop_all[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
  sock_fprog program = {1, drop_all};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof(program)) < 0)
    ThrowErrno(info.Env(), errno, "setsockopt", "SO_ATTACH_FILTER");
  return info.Env().Undefined();
}

Napi::Value DetachFilter(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  int unused = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof(unused)) < 0)
    ThrowErrno(info.Env(), errno, "setsockopt", "SO_DETACH_FILTER");
  return info.Env().Undefined();
}

// sockName(fd) / peerName(fd) -> {family, address, port, ...}.
template <int (*Name)(int, sockaddr*, socklen_t*)>
Napi::Value SocketName(const Napi::CallbackInfo& info, const char* syscall) {
  int fd = ArgFd(info, 0);
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (Name(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) ThrowErrno(info.Env(), errno, syscall);
  return SockaddrToJs(info.Env(), reinterpret_cast<sockaddr*>(&ss));
}

Napi::Value SockName(const Napi::CallbackInfo& info) { return SocketName<getsockname>(info, "getsockname"); }

Napi::Value PeerName(const Napi::CallbackInfo& info) { return SocketName<getpeername>(info, "getpeername"); }

Napi::Value Bind(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  sockaddr_storage ss;
  socklen_t len = SockaddrFromJs(info.Env(), info[1], &ss);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) < 0) ThrowErrno(info.Env(), errno, "bind");
  return info.Env().Undefined();
}

// connect(fd, addr) -> true when connected now (always in repair mode), false for EINPROGRESS.
Napi::Value Connect(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  sockaddr_storage ss;
  socklen_t len = SockaddrFromJs(info.Env(), info[1], &ss);
  if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) < 0) {
    if (errno == EINPROGRESS) return Napi::Boolean::New(info.Env(), false);
    ThrowErrno(info.Env(), errno, "connect");
  }
  return Napi::Boolean::New(info.Env(), true);
}

// socketInfo(fd) -> {domain, type, protocol, acceptConn, tcpState, repair, pendingError, reuseAddr}.
// tcpState/repair are -1 for non-TCP sockets. ENOTSOCK for anything that is not a socket.
Napi::Value SocketInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  int domain = GetIntOpt(env, fd, SOL_SOCKET, SO_DOMAIN, "getsockopt");
  int type = GetIntOpt(env, fd, SOL_SOCKET, SO_TYPE, "getsockopt");
  int protocol = GetIntOpt(env, fd, SOL_SOCKET, SO_PROTOCOL, "getsockopt");
  int accept_conn = GetIntOpt(env, fd, SOL_SOCKET, SO_ACCEPTCONN, "getsockopt");
  int pending_error = GetIntOpt(env, fd, SOL_SOCKET, SO_ERROR, "getsockopt");
  int reuse_addr = GetIntOpt(env, fd, SOL_SOCKET, SO_REUSEADDR, "getsockopt");
  int tcp_state = -1;
  int repair = -1;
  if ((domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM && protocol == IPPROTO_TCP) {
    tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) ThrowErrno(env, errno, "getsockopt", "TCP_INFO");
    tcp_state = ti.tcpi_state;
    repair = GetIntOpt(env, fd, IPPROTO_TCP, TCP_REPAIR, "getsockopt");
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("domain", domain == AF_INET ? 4 : domain == AF_INET6 ? 6 : -domain);
  out.Set("type", type);
  out.Set("protocol", protocol);
  out.Set("acceptConn", accept_conn != 0);
  out.Set("tcpState", tcp_state);
  out.Set("repair", repair);
  out.Set("pendingError", pending_error);
  out.Set("reuseAddr", reuse_addr != 0);
  return out;
}

// inspectTcp(fd, out: Uint32Array(18)): everything a checkpoint checks and records, in one call
// and without allocating: out[0] TCP state (TCP_INFO), out[1] SO_REUSEADDR, out[2..9] own
// address, out[10..17] peer address (packed form, socket_ops.h). Throws the failing call's errno
// (EOPNOTSUPP/ENOPROTOOPT for a non-TCP socket, ENOTCONN from getpeername when unconnected).
Napi::Value InspectTcp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint32_t* out = ArgTypedArray<uint32_t>(info, 1, "out", 2 + 2 * kAddrWords).Data();
  tcp_info ti;
  socklen_t len = sizeof(ti);
  memset(&ti, 0, sizeof(ti));
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) ThrowErrno(env, errno, "getsockopt", "TCP_INFO");
  out[0] = ti.tcpi_state;
  out[1] = GetIntOpt(env, fd, SOL_SOCKET, SO_REUSEADDR, "getsockopt") != 0;
  sockaddr_storage ss;
  len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) ThrowErrno(env, errno, "getsockname");
  if (!SockaddrToWords(reinterpret_cast<sockaddr*>(&ss), out + 2)) ThrowErrno(env, EAFNOSUPPORT, "getsockname");
  len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) ThrowErrno(env, errno, "getpeername");
  if (!SockaddrToWords(reinterpret_cast<sockaddr*>(&ss), out + 10)) ThrowErrno(env, EAFNOSUPPORT, "getpeername");
  return env.Undefined();
}

// setRepair(fd, on, reuseAddr?): the bare TCP_REPAIR switch, for a socket whose libsoccr handle
// was released. Turning repair off clears SO_REUSEADDR (the kernel resets sk_reuse), so the
// application's setting (read before repair went on) is re-applied, as libsoccr_resume does.
Napi::Value SetRepair(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  bool on = ArgTruthy(info, 1);
  SetIntOpt(info.Env(), fd, IPPROTO_TCP, TCP_REPAIR, on ? 1 : 0, "setsockopt");
  if (!on && ArgTruthy(info, 2)) SetIntOpt(info.Env(), fd, SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt");
  return info.Env().Undefined();
}

// setReuseAddr(fd, on): SO_REUSEADDR. A connection restored from an image starts without it,
// where one accepted from a listener that had it (Node's always do) inherited it; a listener
// bound to the same port later conflicts with sockets that lack it.
Napi::Value SetReuseAddr(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  SetIntOpt(info.Env(), fd, SOL_SOCKET, SO_REUSEADDR, ArgTruthy(info, 1) ? 1 : 0, "setsockopt");
  return info.Env().Undefined();
}

// setSendBufferForce(fd, bytes): SO_SNDBUFFORCE (CAP_NET_ADMIN), lets Node's pending writes
// reach the kernel when the peer is not acknowledging. Returns the resulting SO_SNDBUF.
Napi::Value SetSendBufferForce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  int32_t bytes = ArgInt32(info, 1, "bytes");
  SetIntOpt(env, fd, SOL_SOCKET, SO_SNDBUFFORCE, bytes, "setsockopt");
  return Napi::Number::New(env, GetIntOpt(env, fd, SOL_SOCKET, SO_SNDBUF, "getsockopt"));
}

Napi::Value SendBufferSize(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  return Napi::Number::New(info.Env(), GetIntOpt(info.Env(), fd, SOL_SOCKET, SO_SNDBUF, "getsockopt"));
}

}  // namespace

socklen_t SockaddrFromJs(Napi::Env env, Napi::Value value, sockaddr_storage* out) {
  memset(out, 0, sizeof(*out));
  if (!value.IsObject()) ThrowArgType(env, "address", "an object");
  Napi::Object obj = value.As<Napi::Object>();
  Napi::Value family = obj.Get("family");
  Napi::Value port = obj.Get("port");
  if (!family.IsNumber() || !port.IsNumber()) ThrowArgType(env, "address", "{family, address: Uint8Array, port}");
  Napi::Uint8Array bytes = TypedArrayValue<uint8_t>(env, obj.Get("address"), "address.address");
  // A port is 16 bits: a larger number would be truncated into another port.
  uint32_t port_value = port.As<Napi::Number>().Uint32Value();
  if (port_value > 65535) ThrowArgType(env, "address.port", "an integer in 0..65535");
  int32_t fam = family.As<Napi::Number>().Int32Value();
  if (fam == 4 && bytes.ElementLength() == 4) {
    auto* sin = reinterpret_cast<sockaddr_in*>(out);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port_value));
    memcpy(&sin->sin_addr, bytes.Data(), 4);
    return sizeof(sockaddr_in);
  }
  if (fam == 6 && bytes.ElementLength() == 16) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(out);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port_value));
    memcpy(&sin6->sin6_addr, bytes.Data(), 16);
    Napi::Value scope = obj.Get("scopeId");
    if (scope.IsNumber()) sin6->sin6_scope_id = scope.As<Napi::Number>().Uint32Value();
    Napi::Value flowinfo = obj.Get("flowinfo");
    if (flowinfo.IsNumber()) sin6->sin6_flowinfo = htonl(flowinfo.As<Napi::Number>().Uint32Value());
    return sizeof(sockaddr_in6);
  }
  ThrowArgType(env, "address", "family 4 with 4 address bytes or family 6 with 16");
}

Napi::Object SockaddrToJs(Napi::Env env, const sockaddr* sa) {
  Napi::Object out = Napi::Object::New(env);
  if (sa->sa_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(sa);
    out.Set("family", 4);
    out.Set("address", Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(&sin->sin_addr), 4));
    out.Set("port", ntohs(sin->sin_port));
  } else if (sa->sa_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(sa);
    out.Set("family", 6);
    out.Set("address", Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(&sin6->sin6_addr), 16));
    out.Set("port", ntohs(sin6->sin6_port));
    out.Set("flowinfo", ntohl(sin6->sin6_flowinfo));
    out.Set("scopeId", sin6->sin6_scope_id);
  } else {
    ThrowErrno(env, EAFNOSUPPORT, "getsockname");
  }
  return out;
}

void InitSocketOps(Napi::Env env, Napi::Object exports) {
  Napi::Object ops = Napi::Object::New(env);
  ops.Set("tcpSocket", Napi::Function::New(env, TcpSocket, "tcpSocket"));
  ops.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  ops.Set("attachDropFilter", Napi::Function::New(env, AttachDropFilter, "attachDropFilter"));
  ops.Set("detachFilter", Napi::Function::New(env, DetachFilter, "detachFilter"));
  ops.Set("sockName", Napi::Function::New(env, SockName, "sockName"));
  ops.Set("peerName", Napi::Function::New(env, PeerName, "peerName"));
  ops.Set("bind", Napi::Function::New(env, Bind, "bind"));
  ops.Set("connect", Napi::Function::New(env, Connect, "connect"));
  ops.Set("socketInfo", Napi::Function::New(env, SocketInfo, "socketInfo"));
  ops.Set("setRepair", Napi::Function::New(env, SetRepair, "setRepair"));
  ops.Set("inspectTcp", Napi::Function::New(env, InspectTcp, "inspectTcp"));
  ops.Set("setReuseAddr", Napi::Function::New(env, SetReuseAddr, "setReuseAddr"));
  ops.Set("setSendBufferForce", Napi::Function::New(env, SetSendBufferForce, "setSendBufferForce"));
  ops.Set("sendBufferSize", Napi::Function::New(env, SendBufferSize, "sendBufferSize"));
  exports.Set("socketOps", ops);
}

}  // namespace nodecriu
