// libsoccr's log, routed to JS. libsoccr_set_log() is process-global and libsoccr calls it
// synchronously from inside our own libsoccr calls, on the calling thread. So the sink only
// collects lines in thread-local storage; after each libsoccr call the binding hands them to the
// callback of the environment (main thread or worker) that made the call. The last error line is
// kept for the thrown error's message.
#pragma once

#include <napi.h>

#include <string>

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

void InitSoccrLog(Napi::Env env, Napi::Object exports);

}  // namespace nodecriu
