// What the binding needs from libsoccr beyond CRIU's own implementation, so the addon also builds
// against CRIU's libsoccr (NODE_CRIU_LIBSOCCR, see binding.gyp): CRIU's libsoccr_get_addr returns
// NULL ("implemented in CRIU") and it has no staged restore, which vendor/libsoccr adds.
#pragma once

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "soccr.h"

namespace nodecriu {

// The socket's own (self != 0) or peer address into *out; false with errno set on failure.
inline bool SoccrCopyAddr(libsoccr_sk* sk, int fd, int self, union libsoccr_addr* out) {
#ifdef NODE_CRIU_EXTERNAL_LIBSOCCR
  (void)sk;
  memset(out, 0, sizeof(*out));
  socklen_t len = sizeof(*out);
  return (self ? getsockname(fd, &out->sa, &len) : getpeername(fd, &out->sa, &len)) == 0;
#else
  (void)fd;
  union libsoccr_addr* addr = libsoccr_get_addr(sk, self, 0);
  if (addr == nullptr) return false;
  *out = *addr;
  return true;
#endif
}

}  // namespace nodecriu

#ifdef NODE_CRIU_EXTERNAL_LIBSOCCR
// CRIU's libsoccr has no queue allocator (vendor/libsoccr's extension): the binding copies.
struct libsoccr_queue_alloc {
  char* (*alloc)(void* arg, int queue_id, unsigned int len);
  void (*release)(void* arg, int queue_id, char* buf);
  void* arg;
};
static inline int libsoccr_set_queue_alloc(libsoccr_sk*, const libsoccr_queue_alloc*) {
  errno = ENOSYS;
  return -1;
}
// CRIU's libsoccr replaced the 2016 staged calls with libsoccr_restore: they fail with ENOSYS.
static inline int libsoccr_set_sk_data_unbound(libsoccr_sk*, libsoccr_sk_data*, unsigned) {
  errno = ENOSYS;
  return -1;
}
static inline int libsoccr_set_sk_data_noq(libsoccr_sk*, libsoccr_sk_data*, unsigned) {
  errno = ENOSYS;
  return -1;
}
static inline int libsoccr_restore_queue(libsoccr_sk*, libsoccr_sk_data*, unsigned, int, char*) {
  errno = ENOSYS;
  return -1;
}
static inline int libsoccr_set_sk_data(libsoccr_sk*, libsoccr_sk_data*, unsigned) {
  errno = ENOSYS;
  return -1;
}
#endif
