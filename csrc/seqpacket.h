// AF_UNIX SOCK_SEQPACKET socket on the environment's libuv loop, for CRIU-RPC (csrc/seqpacket.cc).
#pragma once

#include <napi.h>
#include <uv.h>

#include <deque>
#include <vector>

namespace nodecriu {

struct SeqpacketPoller;

// Owns one connected SEQPACKET fd. Reads every message as it arrives (sized with
// MSG_PEEK|MSG_TRUNC, so never truncated) and hands it with its SCM_RIGHTS fds to onMessage;
// reports EOF or an error once through onEnd. Sends synchronously; a send that would block is
// queued and flushed when the same uv_poll_t reports the socket writable.
class SeqpacketSocket : public Napi::ObjectWrap<SeqpacketSocket> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit SeqpacketSocket(const Napi::CallbackInfo& info);
  ~SeqpacketSocket() override;

  // Closes the fd and the poll handle. from_js: false when the env or the GC is tearing the object
  // down, where no JS may run and the wrapper's own reference must not be touched.
  void CloseNow(bool from_js);
  void OnPoll(int status, int events);

 private:
  struct PendingSend {
    std::vector<uint8_t> data;
    std::vector<int> fds;  // dup'd copies, closed once sent or dropped
  };

  Napi::Value Send(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);

  void UpdatePoll();
  void ReadAvailable(bool peer_gone);
  void AcceptAvailable();
  void FlushSends();
  void ReportEnd(int err, const char* syscall, const char* detail);
  void Deliver(Napi::Buffer<uint8_t> data, const std::vector<int>& fds);
  void DropPendingSends();
  void SetStrong(bool strong);

  Napi::Env env_;
  int fd_ = -1;
  bool closed_ = false;
  bool listening_ = false;  // a listening socket: readable means connections to accept
  bool ended_ = false;    // onEnd was called (EOF or error); no more reads
  bool strong_ = false;   // the JS object is pinned while the socket keeps the loop alive
  bool loop_ref_ = true;  // whether the poll handle keeps the loop alive
  SeqpacketPoller* poller_ = nullptr;
  std::deque<PendingSend> pending_;
  Napi::FunctionReference on_message_;
  Napi::FunctionReference on_end_;
};

}  // namespace nodecriu
