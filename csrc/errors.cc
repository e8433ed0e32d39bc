#include "errors.h"

#include <uv.h>

#include <string>

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

void ThrowInvalidArg(Napi::Env env, const char* what) {
  Napi::Error error = Napi::TypeError::New(env, what);
  error.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_VALUE"));
  throw error;
}

int32_t ArgInt32(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsNumber()) ThrowInvalidArg(info.Env(), name);
  return info[index].As<Napi::Number>().Int32Value();
}

uint32_t ArgUint32(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsNumber()) ThrowInvalidArg(info.Env(), name);
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (value < 0 || value > 4294967295.0 || value != static_cast<double>(static_cast<uint32_t>(value)))
    ThrowInvalidArg(info.Env(), name);
  return static_cast<uint32_t>(value);
}

// Exposed so tests can check the errno -> error shape without provoking a syscall failure.
static Napi::Value MakeErrnoError(const Napi::CallbackInfo& info) {
  int err = ArgInt32(info, 0, "errno must be a number");
  std::string syscall = info.Length() > 1 && info[1].IsString()
                            ? info[1].As<Napi::String>().Utf8Value()
                            : std::string("test");
  return ErrnoError(info.Env(), err, syscall.c_str()).Value();
}

void InitErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("makeErrnoError", Napi::Function::New(env, MakeErrnoError, "makeErrnoError"));
}

}  // namespace nodecriu
