// libsoccr's log, routed to JS. libsoccr_set_log() is process-global and libsoccr calls it
// synchronously from inside our own libsoccr calls, on the calling thread. So the sink only
// collects lines in thread-local storage; after each libsoccr call the binding hands them to the
// callback of the environment (main thread or worker) that made the call. The last error line is
// kept for the thrown error's message.
#pragma once

#include <napi.h>

#include <string>

#include "soccr_core.h"

namespace nodecriu {

// Starts a libsoccr call: installs the sink once, forgets the previous call's last error line.
void BeginSoccrCall();

// The last "Error (...)" line libsoccr logged since BeginSoccrCall(), or "".
const std::string& LastSoccrError();

// Whether libsoccr formats debug lines (some environment asked for them). Batch calls then stay
// on the calling thread, so every line reaches FlushSoccrLog.
bool SoccrDebugLogging();

// Delivers the collected lines to this env's callback (if any) and clears them. Exceptions from
// the callback are swallowed: logging must not change the outcome of a checkpoint or restore.
void FlushSoccrLog(Napi::Env env);

// The error a failed libsoccr call becomes: ErrnoError(err, or EIO when libsoccr left errno 0,
// call, "returned <ret> (<line>)").
Napi::Error SoccrError(Napi::Env env, const SoccrFailure& failure);

// One JS call's use of libsoccr: constructed before the first libsoccr call (BeginSoccrCall);
// Throw() turns a failure into SoccrError with this thread's last libsoccr error line; the
// destructor hands the collected lines to the env's callback, on success and failure alike.
class SoccrLogScope {
 public:
  explicit SoccrLogScope(Napi::Env env) : env_(env) { BeginSoccrCall(); }
  ~SoccrLogScope();
  SoccrLogScope(const SoccrLogScope&) = delete;
  SoccrLogScope& operator=(const SoccrLogScope&) = delete;

  [[noreturn]] void Throw(SoccrFailure failure) const;
  [[noreturn]] void Throw(int err, const char* call, int ret) const;

 private:
  Napi::Env env_;
};

void InitSoccrLog(Napi::Env env, Napi::Object exports);

}  // namespace nodecriu
