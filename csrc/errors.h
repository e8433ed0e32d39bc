// errno-carrying errors: native code reports what failed and why; lib/errors.ts turns these into
// the typed error classes users see.
#pragma once

#include <napi.h>

namespace nodecriu {

// An Error shaped like Node's own system errors: message "<syscall> <CODE>", errno as a negative
// number (libuv convention, as in Node's fs/net errors), code the errno name ("EPERM"), syscall.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* detail = nullptr);

// Throws ErrnoError (C++ exceptions are on: node_addon_api_except).
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall,
                             const char* detail = nullptr);

// Validation errors the JS layer should have caught first; code ERR_INVALID_ARG_VALUE.
[[noreturn]] void ThrowInvalidArg(Napi::Env env, const char* what);

// Argument readers that throw ThrowInvalidArg on the wrong type.
int32_t ArgInt32(const Napi::CallbackInfo& info, size_t index, const char* name);
uint32_t ArgUint32(const Napi::CallbackInfo& info, size_t index, const char* name);

}  // namespace nodecriu
