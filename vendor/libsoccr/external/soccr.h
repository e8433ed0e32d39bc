/*
 * Used only with NODE_CRIU_LIBSOCCR (external-libsoccr.js puts this directory first on the
 * include path): CRIU's soccr.h declares C functions without extern "C", so C++ (the addon)
 * would look them up under mangled names and fail at the first call ("symbol lookup error").
 * This wraps the next soccr.h on the include path, CRIU's, in extern "C". Its system headers
 * are included first, outside the block.
 */
#ifndef NODE_CRIU_EXTERNAL_SOCCR_WRAPPER_H
#define NODE_CRIU_EXTERNAL_SOCCR_WRAPPER_H

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif
#include_next "soccr.h"
#ifdef __cplusplus
}
#endif

#endif
