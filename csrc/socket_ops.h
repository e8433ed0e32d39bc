// Socket system calls the TypeScript restore/checkpoint code needs and Node's net module does not
// offer: raw TCP sockets (optionally in another network namespace), bind/connect in repair mode,
// the per-socket drop filter used as a lock, and socket introspection. Every failure throws
// ThrowErrno; fds returned to JS are owned by JS (closeFd).
#pragma once

#include <napi.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <string>

#include "packed_addr.h"

namespace nodecriu {

// Reads {family: 4|6, address: Uint8Array(4|16), port, flowinfo?, scopeId?} into a sockaddr.
// Returns the sockaddr length. Throws ThrowInvalidArg on a malformed object.
socklen_t SockaddrFromJs(Napi::Env env, Napi::Value value, sockaddr_storage* out);

// The inverse: a JS object of the shape above.
Napi::Object SockaddrToJs(Napi::Env env, const sockaddr* sa);

// Creates `count` non-blocking, close-on-exec TCP sockets (families[i]: 4 or 6) into fds, inside
// the network namespace at *netns when given (entered once for all). Returns 0, or -1 with errno
// set and nothing left open (fds all -1). Throws only when the namespace cannot be entered.
int CreateTcpSockets(Napi::Env env, const uint8_t* families, size_t count, const std::string* netns, int32_t* fds);

// socket(domain, type, protocol) inside the network namespace at *netns when given. Returns the
// fd, or -1 with errno set. Throws only when the namespace cannot be entered.
int SocketIn(Napi::Env env, const std::string* netns, int domain, int type, int protocol);

void InitSocketOps(Napi::Env env, Napi::Object exports);

}  // namespace nodecriu
