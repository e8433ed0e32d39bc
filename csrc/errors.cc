// The errno Error shape every csrc file throws (boundary.h).
#include "boundary.h"

#include <uv.h>

#include "addon.h"

namespace nodecriu {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* detail) {
  // uv_err_name takes libuv's negative codes, which on Linux are -errno.
  const char* code = uv_err_name(-err);
  std::string message = std::string(syscall) + " " + code;
  if (detail != nullptr && detail[0] != '\0') message += ": " + std::string(detail);
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("errno", Napi::Number::New(env, -err));
  error.Set("code", Napi::String::New(env, code));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, const char* detail) {
  throw ErrnoError(env, err, syscall, detail);
}

void ThrowInvalidArg(Napi::Env env, const std::string& message) {
  Napi::Error error = Napi::TypeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_VALUE"));
  throw error;
}

void ThrowArgType(Napi::Env env, const char* name, const char* what) {
  ThrowInvalidArg(env, std::string(name) + " must be " + what);
}

void ThrowTypedArrayArg(Napi::Env env, const char* name, const char* kind, size_t min_length) {
  std::string what = kind;
  if (min_length > 0) what += " of at least " + std::to_string(min_length) + " elements";
  ThrowArgType(env, name, what.c_str());
}

// makeErrnoError(errno, syscall?): the error ThrowErrno throws, so tests can check its shape
// without provoking a syscall failure.
static Napi::Value MakeErrnoError(const Napi::CallbackInfo& info) {
  int err = ArgInt32(info, 0, "errno");
  std::string syscall = "test";
  OptString(info, 1, &syscall);
  return ErrnoError(info.Env(), err, syscall.c_str()).Value();
}

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("makeErrnoError", Napi::Function::New(env, MakeErrnoError, "makeErrnoError"));
}

}  // namespace nodecriu
