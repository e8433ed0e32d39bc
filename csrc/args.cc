// Argument readers (boundary.h).
#include "boundary.h"

namespace nodecriu {

int32_t ArgInt32(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsNumber()) ThrowArgType(info.Env(), name, "a number");
  return info[index].As<Napi::Number>().Int32Value();
}

uint32_t ArgUint32(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsNumber()) ThrowArgType(info.Env(), name, "an integer in 0..4294967295");
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (!(value >= 0 && value <= 4294967295.0) || value != static_cast<double>(static_cast<uint32_t>(value)))
    ThrowArgType(info.Env(), name, "an integer in 0..4294967295");
  return static_cast<uint32_t>(value);
}

uint32_t OptUint32(const Napi::CallbackInfo& info, size_t index, uint32_t fallback) {
  if (index >= info.Length() || !info[index].IsNumber()) return fallback;
  return info[index].As<Napi::Number>().Uint32Value();
}

bool OptBool(const Napi::CallbackInfo& info, size_t index, bool fallback) {
  if (index >= info.Length() || !info[index].IsBoolean()) return fallback;
  return info[index].As<Napi::Boolean>().Value();
}

bool ArgTruthy(const Napi::CallbackInfo& info, size_t index) {
  return index < info.Length() && info[index].ToBoolean().Value();
}

std::string ArgString(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsString()) ThrowArgType(info.Env(), name, "a string");
  return info[index].As<Napi::String>().Utf8Value();
}

bool OptString(const Napi::CallbackInfo& info, size_t index, std::string* out) {
  if (index >= info.Length() || !info[index].IsString()) return false;
  *out = info[index].As<Napi::String>().Utf8Value();
  return true;
}

Napi::Array ArgArray(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsArray()) ThrowArgType(info.Env(), name, "an array");
  return info[index].As<Napi::Array>();
}

Napi::Function ArgFunction(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || !info[index].IsFunction()) ThrowArgType(info.Env(), name, "a function");
  return info[index].As<Napi::Function>();
}

}  // namespace nodecriu
