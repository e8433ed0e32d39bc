// One connection's libsoccr dump and restore, shared by the handle, one-shot and batch paths.
// Plain C++ over fds and libsoccr handles, no Node-API: the batch paths run it on plain threads.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <string>

#include "packed_addr.h"
#include "soccr_compat.h"

namespace nodecriu {

constexpr size_t kSkDataWords = sizeof(libsoccr_sk_data) / sizeof(uint32_t);  // 17
constexpr size_t kPackedWords = kSkDataWords + 2 * kAddrWords;                // + own and peer

// Which call failed and why; the JS error is built from it (soccr_log.h: SoccrError).
struct SoccrFailure {
  int err = 0;
  int ret = 0;
  const char* call = nullptr;
  std::string line;  // libsoccr's last error line, or a detail; empty: taken when thrown
};

// A dumped connection. queue[0] (receive) and queue[1] (send) are nullptr when empty, else the
// caller's: memory from the allocator given to DumpFd, else malloc'd.
struct DumpedConnection {
  libsoccr_sk_data data;
  uint32_t addr_words[2 * kAddrWords];  // own, peer (packed_addr.h); only when asked for
  char* queue[2] = {nullptr, nullptr};
};

// pause + save (+ both addresses) + both queues + release: the socket is left in repair mode.
// With `alloc` the queues are saved into the caller's memory (copied there when the libsoccr in
// use has no allocator). On failure the socket is resumed (repair off), nothing is kept, and
// false is returned.
bool DumpFd(int fd, const libsoccr_queue_alloc* alloc, bool addresses, DumpedConnection* out, SoccrFailure* failure);

// One address of a paused handle (self: own, else peer) into 8 packed words.
bool AddrWords(libsoccr_sk* sk, int fd, int self, uint32_t* words, SoccrFailure* failure);

// What a restore reads. Everything is lent: read only until the call returns.
struct RestoreInput {
  libsoccr_sk_data data;
  union libsoccr_addr addr[2];  // own, peer
  char* queue[2] = {nullptr, nullptr};  // receive, send; nullptr: empty
};

// sk_data and both addresses from packed words (kPackedWords); false for an invalid address.
bool UnpackRestoreInput(const uint32_t* words, RestoreInput* in);

// On a paused handle: both addresses and queues, then libsoccr_restore. The handle keeps no
// pointer into `in` afterwards; with handle_keeps_addresses it owns copies of the addresses
// (libsoccr_get_addr reads them after the restore), else they are only lent.
bool RestoreOnHandle(libsoccr_sk* sk, RestoreInput* in, bool handle_keeps_addresses, SoccrFailure* failure);

// pause + RestoreOnHandle + resume (`resume`) or release (repair stays on). On failure the handle
// is released: the socket stays paused, and libsoccr disconnected it silently.
bool RestoreFd(int fd, RestoreInput* in, bool resume, SoccrFailure* failure);

}  // namespace nodecriu
