// The JS boundary of every csrc file: argument readers (args.cc) and the errno Error shape
// (errors.cc).
//
// Readers check types, and the lengths native code will read; values are lib/'s job (a bad fd
// reaches the syscall and comes back as EBADF). A wrong type throws a TypeError with code
// ERR_INVALID_ARG_VALUE and the message "<name> must be <what>".
#pragma once

#include <napi.h>

#include <string>

namespace nodecriu {

// An Error shaped like Node's own system errors: message "<syscall> <CODE>[: detail]", errno as a
// negative number (libuv convention, as in Node's fs/net errors), code the errno name, syscall.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* detail = nullptr);

// Throws ErrnoError (C++ exceptions are on: node_addon_api_except).
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall, const char* detail = nullptr);

// A TypeError with code ERR_INVALID_ARG_VALUE and `message` as given.
[[noreturn]] void ThrowInvalidArg(Napi::Env env, const std::string& message);

// ThrowInvalidArg("<name> must be <what>").
[[noreturn]] void ThrowArgType(Napi::Env env, const char* name, const char* what);

inline bool HasArg(const Napi::CallbackInfo& info, size_t index) {
  return index < info.Length() && !info[index].IsUndefined();
}

// A number, converted as JS ToInt32 does.
int32_t ArgInt32(const Napi::CallbackInfo& info, size_t index, const char* name);
// An integer in 0..2^32-1 (no wrapping: these pick sizes and offsets).
uint32_t ArgUint32(const Napi::CallbackInfo& info, size_t index, const char* name);
// An fd number (ArgInt32).
inline int ArgFd(const Napi::CallbackInfo& info, size_t index, const char* name = "fd") {
  return ArgInt32(info, index, name);
}
// A number's ToUint32, or `fallback` when the argument is not a number.
uint32_t OptUint32(const Napi::CallbackInfo& info, size_t index, uint32_t fallback);
// A boolean's value, or `fallback` when the argument is not a boolean.
bool OptBool(const Napi::CallbackInfo& info, size_t index, bool fallback);
// JS truthiness; false when absent.
bool ArgTruthy(const Napi::CallbackInfo& info, size_t index);
std::string ArgString(const Napi::CallbackInfo& info, size_t index, const char* name);
// true and *out set when the argument is a string.
bool OptString(const Napi::CallbackInfo& info, size_t index, std::string* out);
Napi::Array ArgArray(const Napi::CallbackInfo& info, size_t index, const char* name);
Napi::Function ArgFunction(const Napi::CallbackInfo& info, size_t index, const char* name);

template <typename E>
struct TypedArrayKind;
template <>
struct TypedArrayKind<uint8_t> {
  static constexpr napi_typedarray_type kType = napi_uint8_array;
  static constexpr const char* kName = "a Uint8Array";
};
template <>
struct TypedArrayKind<uint32_t> {
  static constexpr napi_typedarray_type kType = napi_uint32_array;
  static constexpr const char* kName = "a Uint32Array";
};
template <>
struct TypedArrayKind<int32_t> {
  static constexpr napi_typedarray_type kType = napi_int32_array;
  static constexpr const char* kName = "an Int32Array";
};

[[noreturn]] void ThrowTypedArrayArg(Napi::Env env, const char* name, const char* kind, size_t min_length);

// A typed array of element type E (Uint8Array, Uint32Array, Int32Array) with at least
// `min_length` elements.
template <typename E>
Napi::TypedArrayOf<E> TypedArrayValue(Napi::Env env, Napi::Value value, const char* name, size_t min_length = 0) {
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != TypedArrayKind<E>::kType)
    ThrowTypedArrayArg(env, name, TypedArrayKind<E>::kName, min_length);
  Napi::TypedArrayOf<E> array = value.As<Napi::TypedArrayOf<E>>();
  if (array.ElementLength() < min_length) ThrowTypedArrayArg(env, name, TypedArrayKind<E>::kName, min_length);
  return array;
}

template <typename E>
Napi::TypedArrayOf<E> ArgTypedArray(const Napi::CallbackInfo& info, size_t index, const char* name,
                                    size_t min_length = 0) {
  Napi::Value value = index < info.Length() ? info[index] : info.Env().Undefined();
  return TypedArrayValue<E>(info.Env(), value, name, min_length);
}

// A typed array's elements, read with one Node-API call: what a hot path needs (Napi::TypedArrayOf
// makes three calls, plus one for the type check). `value` is the array itself.
template <typename E>
struct TypedArrayRef {
  napi_value value = nullptr;
  E* data = nullptr;
  size_t length = 0;  // elements
};

// A typed array of element type E with at least `min_length` elements, as a TypedArrayRef.
template <typename E>
TypedArrayRef<E> TypedArrayRefOf(napi_env env, napi_value value, const char* name, size_t min_length = 0) {
  TypedArrayRef<E> out;
  napi_typedarray_type type;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, value, &type, &out.length, &data, nullptr, nullptr) != napi_ok ||
      type != TypedArrayKind<E>::kType || out.length < min_length)
    ThrowTypedArrayArg(Napi::Env(env), name, TypedArrayKind<E>::kName, min_length);
  out.value = value;
  out.data = static_cast<E*>(data);
  return out;
}

template <typename E>
TypedArrayRef<E> ArgTypedArrayRef(const Napi::CallbackInfo& info, size_t index, const char* name,
                                  size_t min_length = 0) {
  napi_value value = index < info.Length() ? static_cast<napi_value>(info[index]) : info.Env().Undefined();
  return TypedArrayRefOf<E>(info.Env(), value, name, min_length);
}

// ArgTypedArrayRef, or an empty one (no value, no data) when the argument is absent, undefined or
// null.
template <typename E>
TypedArrayRef<E> OptTypedArrayRef(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length()) return TypedArrayRef<E>();
  napi_value value = info[index];
  napi_valuetype type = napi_undefined;
  napi_typeof(info.Env(), value, &type);
  if (type == napi_undefined || type == napi_null) return TypedArrayRef<E>();
  return TypedArrayRefOf<E>(info.Env(), value, name);
}

// ArgTypedArray, or an empty array when the argument is absent, undefined or null.
template <typename E>
Napi::TypedArrayOf<E> OptTypedArray(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (index >= info.Length() || info[index].IsUndefined() || info[index].IsNull())
    return Napi::TypedArrayOf<E>::New(info.Env(), 0);
  return TypedArrayValue<E>(info.Env(), info[index], name);
}

}  // namespace nodecriu
