// SoccrHandle: one libsoccr handle (struct libsoccr_sk) as a JS object, for step-by-step use.
//
// The handle works on its own dup of the caller's fd (F_DUPFD_CLOEXEC), so it can never act on a
// number JS closed and the kernel reused. resume() closes the dup after repair is off; release()
// closes it with repair still on (if the caller's fd is gone, the connection vanishes silently:
// how a checkpoint closes the original). A handle collected while open is resumed. A caller that
// owns the fd and always resumes or releases the handle may let it borrow the fd instead
// (new SoccrHandle(fd, false)): no dup, never closed by the handle.
#pragma once

#include <napi.h>

#include "soccr_core.h"

namespace nodecriu {

class SoccrHandle : public Napi::ObjectWrap<SoccrHandle> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit SoccrHandle(const Napi::CallbackInfo& info);
  ~SoccrHandle() override;

 private:
  // Throws EBADF (syscall `what`) once resume() or release() ran.
  libsoccr_sk* Open(Napi::Env env, const char* what);
  // The staged restore calls: one sk_data argument, one libsoccr call.
  Napi::Value SkDataCall(const Napi::CallbackInfo& info, const char* name,
                         int (*call)(libsoccr_sk*, libsoccr_sk_data*, unsigned));
  void CloseDup();

  Napi::Value Fd(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value SaveWithQueues(const Napi::CallbackInfo& info);
  Napi::Value GetQueueBytes(const Napi::CallbackInfo& info);
  Napi::Value GetAddr(const Napi::CallbackInfo& info);
  Napi::Value Restore(const Napi::CallbackInfo& info);
  Napi::Value RestorePacked(const Napi::CallbackInfo& info);
  void RestoreWith(Napi::Env env, RestoreInput* in, Napi::Uint8Array recv, Napi::Uint8Array send);
  Napi::Value SetSkDataUnbound(const Napi::CallbackInfo& info);
  Napi::Value SetSkDataNoq(const Napi::CallbackInfo& info);
  Napi::Value RestoreQueue(const Napi::CallbackInfo& info);
  Napi::Value SetSkData(const Napi::CallbackInfo& info);
  Napi::Value Finish(const Napi::CallbackInfo& info, void (*finish)(libsoccr_sk*));
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);

  libsoccr_sk* sk_ = nullptr;
  int dup_fd_ = -1;
  bool owns_fd_ = true;  // false: borrowed fd (see the constructor), never closed here
  libsoccr_sk_data saved_{};  // from the last save(): queue lengths for getQueueBytes
  bool has_saved_ = false;
};

}  // namespace nodecriu
