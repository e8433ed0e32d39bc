#include "soccr_core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

namespace nodecriu {

namespace {

bool Fail(SoccrFailure* failure, int err, const char* call, int ret) {
  failure->err = err;
  failure->ret = ret;
  failure->call = call;
  return false;
}

constexpr int kQueueIds[2] = {TCP_RECV_QUEUE, TCP_SEND_QUEUE};

void DropQueue(const libsoccr_queue_alloc* alloc, int q, char* buffer) {
  if (buffer == nullptr) return;
  if (alloc != nullptr) {
    alloc->release(alloc->arg, kQueueIds[q], buffer);
  } else {
    free(buffer);
  }
}

// The saved queues, handed over (SOCCR_MEM_EXCL). A libsoccr without the allocator extension
// saved them into its own buffers: they are copied into the allocator's memory then.
bool TakeQueues(libsoccr_sk* sk, const libsoccr_queue_alloc* alloc, bool alloc_in_libsoccr, DumpedConnection* out,
                SoccrFailure* failure) {
  const uint32_t lengths[2] = {out->data.inq_len, out->data.outq_len};
  for (int q = 0; q < 2; q++) {
    if (lengths[q] == 0) continue;
    bool copy = alloc != nullptr && !alloc_in_libsoccr;
    char* bytes = libsoccr_get_queue_bytes(sk, kQueueIds[q], copy ? 0 : SOCCR_MEM_EXCL);
    if (bytes == nullptr) return Fail(failure, errno, "libsoccr_get_queue_bytes", 0);
    if (copy) {
      char* mine = alloc->alloc(alloc->arg, kQueueIds[q], lengths[q]);
      if (mine == nullptr) return Fail(failure, ENOMEM, "libsoccr_get_queue_bytes", 0);
      memcpy(mine, bytes, lengths[q]);
      bytes = mine;
    }
    out->queue[q] = bytes;
  }
  return true;
}

}  // namespace

bool AddrWords(libsoccr_sk* sk, int fd, int self, uint32_t* words, SoccrFailure* failure) {
  union libsoccr_addr addr;
  if (!SoccrCopyAddr(sk, fd, self, &addr)) return Fail(failure, errno, "libsoccr_get_addr", 0);
  if (!SockaddrToWords(&addr.sa, words)) return Fail(failure, EAFNOSUPPORT, "libsoccr_get_addr", 0);
  return true;
}

bool DumpFd(int fd, const libsoccr_queue_alloc* alloc, bool addresses, DumpedConnection* out, SoccrFailure* failure) {
  out->queue[0] = out->queue[1] = nullptr;
  libsoccr_sk* sk = libsoccr_pause(fd);
  if (sk == nullptr) return Fail(failure, errno, "libsoccr_pause", -1);
  bool alloc_in_libsoccr = alloc != nullptr && libsoccr_set_queue_alloc(sk, alloc) == 0;
  int ret = libsoccr_save(sk, &out->data, sizeof(out->data));
  bool ok = ret == static_cast<int>(sizeof(out->data));
  if (!ok) Fail(failure, errno, "libsoccr_save", ret);
  for (int self = 1; ok && addresses && self >= 0; self--)
    ok = AddrWords(sk, fd, self, out->addr_words + (self ? 0 : kAddrWords), failure);
  if (ok) ok = TakeQueues(sk, alloc, alloc_in_libsoccr, out, failure);
  if (ok) {
    libsoccr_release(sk);
    return true;
  }
  for (int q = 0; q < 2; q++) {
    DropQueue(alloc, q, out->queue[q]);
    out->queue[q] = nullptr;
  }
  libsoccr_resume(sk);
  return false;
}

bool UnpackRestoreInput(const uint32_t* words, RestoreInput* in) {
  memcpy(&in->data, words, sizeof(in->data));
  for (int a = 0; a < 2; a++) {
    sockaddr_storage ss;
    if (SockaddrFromWords(words + kSkDataWords + kAddrWords * a, &ss) == 0) return false;
    memcpy(&in->addr[a], &ss, sizeof(in->addr[a]));
  }
  return true;
}

bool RestoreOnHandle(libsoccr_sk* sk, RestoreInput* in, bool handle_keeps_addresses, SoccrFailure* failure) {
  for (int a = 0; a < 2; a++) {
    union libsoccr_addr* addr = &in->addr[a];
    if (handle_keeps_addresses) {
      addr = static_cast<union libsoccr_addr*>(malloc(sizeof(*addr)));
      if (addr == nullptr) return Fail(failure, ENOMEM, "malloc", -1);
      *addr = in->addr[a];
    }
    if (libsoccr_set_addr(sk, a == 0 ? 1 : 0, addr, handle_keeps_addresses ? SOCCR_MEM_EXCL : 0) < 0) {
      int err = errno;
      if (handle_keeps_addresses) free(addr);
      return Fail(failure, err, "libsoccr_set_addr", -1);
    }
  }
  // Lent (flags 0): valid until libsoccr_restore returns; cleared again below.
  for (int q = 0; q < 2; q++) {
    if (in->queue[q] != nullptr && libsoccr_set_queue_bytes(sk, kQueueIds[q], in->queue[q], 0) < 0)
      return Fail(failure, errno, "libsoccr_set_queue_bytes", -1);
  }
  int ret = libsoccr_restore(sk, &in->data, sizeof(in->data));
  int err = errno;
  for (int q = 0; q < 2; q++) {
    if (in->queue[q] != nullptr) libsoccr_set_queue_bytes(sk, kQueueIds[q], nullptr, 0);
  }
  if (ret < 0) return Fail(failure, err, "libsoccr_restore", ret);
  return true;
}

bool RestoreFd(int fd, RestoreInput* in, bool resume, SoccrFailure* failure) {
  libsoccr_sk* sk = libsoccr_pause(fd);
  if (sk == nullptr) return Fail(failure, errno, "libsoccr_pause", -1);
  bool ok = RestoreOnHandle(sk, in, false, failure);
  if (ok && resume) {
    libsoccr_resume(sk);
  } else {
    libsoccr_release(sk);
  }
  return ok;
}

}  // namespace nodecriu
