// Per-environment state shared by the wrapped classes, and the init hooks each file provides.
#pragma once

#include <napi.h>

#include <string>
#include <unordered_map>

namespace nodecriu {

// Lives as the environment's instance data, so worker threads and jest's module registry each
// get their own constructors.
struct AddonData {
  std::unordered_map<std::string, Napi::FunctionReference> constructors;
};

AddonData& GetAddonData(Napi::Env env);

// One per source file that exports something; each is called once from addon.cc.
void InitErrors(Napi::Env env, Napi::Object exports);
void InitNfqueue(Napi::Env env, Napi::Object exports);
void InitNfqueueRule(Napi::Env env, Napi::Object exports);
void InitSeqpacket(Napi::Env env, Napi::Object exports);
void InitSoccrHandle(Napi::Env env, Napi::Object exports);
void InitSoccrLog(Napi::Env env, Napi::Object exports);
void InitSocketOps(Napi::Env env, Napi::Object exports);
void InitSoccrOneshot(Napi::Env env, Napi::Object exports);
void InitNftElements(Napi::Env env, Napi::Object exports);
void InitAnnounce(Napi::Env env, Napi::Object exports);

}  // namespace nodecriu
