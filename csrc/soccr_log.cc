#include "soccr_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "boundary.h"

#include "soccr.h"  // has its own extern "C"

namespace nodecriu {

namespace {

struct Line {
  unsigned level;
  std::string text;
};

thread_local std::vector<Line> pending_lines;
thread_local std::string last_error;

// Per environment: the JS callback and the level it asked for. Guarded because worker threads
// register and unregister concurrently; each entry is only used on its own env's thread.
struct EnvLog {
  Napi::FunctionReference callback;
  unsigned level = 0;
};
std::mutex env_logs_mutex;
std::unordered_map<napi_env, EnvLog*> env_logs;

// The process-global level given to libsoccr: at least ERR (error lines feed error messages),
// DBG once any environment asked for debug output.
unsigned global_level = SOCCR_LOG_ERR;

void Sink(unsigned level, const char* fmt, ...) {
  int saved_errno = errno;
  char buffer[1024];
  va_list args;
  va_start(args, fmt);
  vsnprintf(buffer, sizeof(buffer), fmt, args);
  va_end(args);
  std::string text(buffer);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (level <= SOCCR_LOG_ERR) last_error = text;
  if (pending_lines.size() < 1000) pending_lines.push_back({level, std::move(text)});
  errno = saved_errno;
}

std::once_flag install_once;

void Install() {
  std::call_once(install_once, []() { libsoccr_set_log(global_level, Sink); });
}

// setSoccrLog(level: 0|1|2, callback?: (level, line) => void)
Napi::Value SetSoccrLog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t level = ArgUint32(info, 0, "level");
  if (level > SOCCR_LOG_DBG) ThrowArgType(env, "level", "0, 1 or 2");
  Install();
  std::lock_guard<std::mutex> lock(env_logs_mutex);
  EnvLog*& entry = env_logs[env];
  if (entry == nullptr) {
    entry = new EnvLog();
    napi_env key = env;
    env.AddCleanupHook([key]() {
      std::lock_guard<std::mutex> inner(env_logs_mutex);
      auto it = env_logs.find(key);
      if (it != env_logs.end()) {
        delete it->second;
        env_logs.erase(it);
      }
    });
  }
  entry->level = level;
  if (info.Length() > 1 && info[1].IsFunction()) {
    entry->callback = Napi::Persistent(info[1].As<Napi::Function>());
  } else {
    entry->callback.Reset();
  }
  if (level > global_level) {
    global_level = level;
    libsoccr_set_log(global_level, Sink);
  }
  return env.Undefined();
}

}  // namespace

void BeginSoccrCall() {
  Install();
  last_error.clear();
}

const std::string& LastSoccrError() { return last_error; }

bool SoccrDebugLogging() { return global_level >= SOCCR_LOG_DBG; }

void FlushSoccrLog(Napi::Env env) {
  if (pending_lines.empty()) return;
  std::vector<Line> lines;
  lines.swap(pending_lines);
  Napi::Function callback;
  unsigned level = 0;
  {
    std::lock_guard<std::mutex> lock(env_logs_mutex);
    auto it = env_logs.find(env);
    if (it == env_logs.end() || it->second->callback.IsEmpty()) return;
    callback = it->second->callback.Value();
    level = it->second->level;
  }
  for (const Line& line : lines) {
    if (line.level > level) continue;
    try {
      callback.Call({Napi::Number::New(env, line.level), Napi::String::New(env, line.text)});
    } catch (const Napi::Error&) {
      // Swallowed on purpose (see header).
    }
  }
}

Napi::Error SoccrError(Napi::Env env, const SoccrFailure& failure) {
  std::string detail = "returned " + std::to_string(failure.ret);
  if (!failure.line.empty()) detail += " (" + failure.line + ")";
  return ErrnoError(env, failure.err != 0 ? failure.err : EIO, failure.call, detail.c_str());
}

SoccrLogScope::~SoccrLogScope() {
  try {
    FlushSoccrLog(env_);
  } catch (...) {
    // Runs while an error may be propagating: logging must not replace it.
  }
}

void SoccrLogScope::Throw(SoccrFailure failure) const {
  if (failure.line.empty()) failure.line = LastSoccrError();
  throw SoccrError(env_, failure);
}

void SoccrLogScope::Throw(int err, const char* call, int ret) const {
  SoccrFailure failure;
  failure.err = err;
  failure.call = call;
  failure.ret = ret;
  Throw(std::move(failure));
}

void InitSoccrLog(Napi::Env env, Napi::Object exports) {
  exports.Set("setSoccrLog", Napi::Function::New(env, SetSoccrLog, "setSoccrLog"));
}

}  // namespace nodecriu
