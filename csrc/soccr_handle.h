// SoccrHandle: one libsoccr handle (struct libsoccr_sk) as a JS object.
//
// Ownership: the constructor takes an fd from JS and dup()s it (F_DUPFD_CLOEXEC); libsoccr
// works on the dup only, and the handle owns it. The caller's fd stays the caller's. So a handle
// can never act on an fd number that JS closed and the kernel reused. The dup is closed by
// resume() (repair off first) and by release() (repair left on: if the caller already closed its
// fd, that close is the socket's last reference and the connection vanishes silently, which is
// how a checkpoint closes the original). A handle garbage-collected while still open is resumed
// (repair off on the dup, then the dup is closed): memory is freed and the socket is not left in
// repair mode. Exception, for the package's batch restore only: new SoccrHandle(fd, false)
// borrows fd (no dup, never closed by the handle); its caller always resumes or releases it.
#pragma once

#include <napi.h>

#include "soccr.h"  // has its own extern "C"

namespace nodecriu {

class SoccrHandle : public Napi::ObjectWrap<SoccrHandle> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit SoccrHandle(const Napi::CallbackInfo& info);
  ~SoccrHandle() override;

 private:
  // Throws EBADF (syscall `what`) once resume() or release() ran.
  libsoccr_sk* Open(Napi::Env env, const char* what);
  void CloseDup();

  Napi::Value Fd(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value SaveWithQueues(const Napi::CallbackInfo& info);
  Napi::Value GetQueueBytes(const Napi::CallbackInfo& info);
  Napi::Value GetAddr(const Napi::CallbackInfo& info);
  Napi::Value Restore(const Napi::CallbackInfo& info);
  Napi::Value RestorePacked(const Napi::CallbackInfo& info);
  void RestoreWith(Napi::Env env, libsoccr_sk_data* data, const sockaddr_storage& self, const sockaddr_storage& peer,
                   Napi::Uint8Array recv, Napi::Uint8Array send);
  Napi::Value SetSkDataUnbound(const Napi::CallbackInfo& info);
  Napi::Value SetSkDataNoq(const Napi::CallbackInfo& info);
  Napi::Value RestoreQueue(const Napi::CallbackInfo& info);
  Napi::Value SetSkData(const Napi::CallbackInfo& info);
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);

  libsoccr_sk* sk_ = nullptr;
  int dup_fd_ = -1;
  bool owns_fd_ = true;  // false: borrowed fd (see the constructor), never closed here
  libsoccr_sk_data saved_{};  // from the last save(): queue lengths for getQueueBytes
  bool has_saved_ = false;
};

}  // namespace nodecriu
