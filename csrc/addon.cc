// Module entry: creates the per-environment data and lets each source file register its exports.
#include "addon.h"

namespace nodecriu {

AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());  // freed by node-addon-api's default finalizer
  InitErrors(env, exports);
  InitSeqpacket(env, exports);
  InitSoccrHandle(env, exports);
  InitSoccrLog(env, exports);
  InitSocketOps(env, exports);
  InitSoccrOneshot(env, exports);
  InitNftElements(env, exports);
  InitAnnounce(env, exports);
  InitNfqueue(env, exports);
  InitNfqueueRule(env, exports);
  // Each wrapped class or function group adds its Init call here (declared in addon.h).
  return exports;
}

}  // namespace nodecriu

// NODE_API_MODULE pastes the function name into an identifier, so it cannot be qualified.
static Napi::Object InitNodeCriu(Napi::Env env, Napi::Object exports) {
  return nodecriu::Init(env, exports);
}

NODE_API_MODULE(node_criu, InitNodeCriu)
