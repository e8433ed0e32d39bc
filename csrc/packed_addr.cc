#include "packed_addr.h"

#include <netinet/in.h>
#include <string.h>

namespace nodecriu {

bool SockaddrToWords(const sockaddr* sa, uint32_t* words) {
  memset(words, 0, 8 * sizeof(uint32_t));
  if (sa->sa_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(sa);
    words[0] = 4;
    words[1] = ntohs(sin->sin_port);
    words[2] = ntohl(sin->sin_addr.s_addr);
    return true;
  }
  if (sa->sa_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(sa);
    words[0] = 6;
    words[1] = ntohs(sin6->sin6_port);
    for (int i = 0; i < 4; i++) {
      uint32_t w;
      memcpy(&w, sin6->sin6_addr.s6_addr + 4 * i, 4);
      words[2 + i] = ntohl(w);
    }
    words[6] = sin6->sin6_scope_id;
    words[7] = ntohl(sin6->sin6_flowinfo);
    return true;
  }
  return false;
}

socklen_t SockaddrFromWords(const uint32_t* words, sockaddr_storage* out) {
  memset(out, 0, sizeof(*out));
  if (words[1] > 65535) return 0;
  if (words[0] == 4) {
    auto* sin = reinterpret_cast<sockaddr_in*>(out);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(words[1]));
    sin->sin_addr.s_addr = htonl(words[2]);
    return sizeof(sockaddr_in);
  }
  if (words[0] == 6) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(out);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(words[1]));
    for (int i = 0; i < 4; i++) {
      uint32_t w = htonl(words[2 + i]);
      memcpy(sin6->sin6_addr.s6_addr + 4 * i, &w, 4);
    }
    sin6->sin6_scope_id = words[6];
    sin6->sin6_flowinfo = htonl(words[7]);
    return sizeof(sockaddr_in6);
  }
  return 0;
}

}  // namespace nodecriu
