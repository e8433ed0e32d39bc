// Socket addresses as 8 uint32 words: how addresses cross the boundary without objects, and how
// the soccr core (no Node-API) reads and writes them.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

namespace nodecriu {

constexpr size_t kAddrWords = 8;

// The packed form (8 uint32 words, no allocation): [family 4|6, port, a0, a1, a2, a3, scopeId,
// flowinfo], address bytes as big-endian words (IPv4: a0 only). Returns false for other families.
bool SockaddrToWords(const sockaddr* sa, uint32_t* words);
// Returns the sockaddr length, or 0 when the words are not a valid address.
socklen_t SockaddrFromWords(const uint32_t* words, sockaddr_storage* out);

}  // namespace nodecriu
