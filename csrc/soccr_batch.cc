// Batch dump and restore for checkpointConnections / restoreConnections: one native call per
// phase instead of several per connection, and the libsoccr work of a large batch split over a
// few threads (each connection's calls are independent: libsoccr keeps no shared mutable state
// besides its log settings, and its log buffer is per thread); each connection goes through
// soccr_core.h like a one-shot call. The dump runs while the calling thread waits, so the JS
// arrays it fills and the fds stay untouched. The restore runs off the JS thread (a libuv pool thread plus its helpers) on copies of everything it reads, while JS
// builds the net.Sockets; the caller does not use the fds until its promise settles. With
// libsoccr debug logging on, everything runs on the calling thread so that every log line
// reaches the JS logger.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/bpf.h>
#include <linux/filter.h>
#include <netinet/tcp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "boundary.h"
#include "soccr_core.h"
#include "soccr_log.h"
#include "socket_ops.h"

namespace nodecriu {

namespace {

// Below this many connections per thread a thread costs more than it saves.
constexpr size_t kMinPerThread = 256;

// Runs fn(i, failure) for i in [0, count) on up to a few threads; returns the lowest failing
// index (or count). fn returns false on failure after filling `failure`.
template <typename Fn>
size_t RunBatch(size_t count, Fn fn, SoccrFailure* first_failure) {
  size_t threads = 1;
  if (!SoccrDebugLogging()) {
    size_t cores = std::max<size_t>(1, std::thread::hardware_concurrency());
    threads = std::min<size_t>({cores, 4, std::max<size_t>(1, count / kMinPerThread)});
  }
  std::vector<SoccrFailure> failures(threads);
  std::vector<size_t> failed_at(threads, count);
  std::atomic<bool> stop{false};
  auto work = [&](size_t t) {
    size_t begin = count * t / threads, end = count * (t + 1) / threads;
    for (size_t i = begin; i < end && !stop.load(std::memory_order_relaxed); i++) {
      BeginSoccrCall();
      if (!fn(i, &failures[t])) {
        if (failures[t].line.empty()) failures[t].line = LastSoccrError();
        failed_at[t] = i;
        stop.store(true, std::memory_order_relaxed);
        return;
      }
    }
  };
  std::vector<std::thread> workers;
  bool spawn_failed = false;
  for (size_t t = 1; t < threads; t++) {
    try {
      workers.emplace_back(work, t);
    } catch (const std::system_error&) {
      spawn_failed = true;  // run the rest on this thread
      break;
    }
  }
  work(0);
  for (auto& w : workers) w.join();
  if (spawn_failed) {
    for (size_t t = workers.size() + 1; t < threads; t++) work(t);
  }
  size_t lowest = count;
  for (size_t t = 0; t < threads; t++) {
    if (failed_at[t] < lowest) {
      lowest = failed_at[t];
      *first_failure = failures[t];
    }
  }
  return lowest;
}

// The 'filter' lock's drop-everything program as one eBPF socket filter, loaded once per batch
// and attached to each socket by fd (SO_ATTACH_BPF): a socket only takes a reference, where a
// classic filter (SO_ATTACH_FILTER) is converted and JIT-compiled again for every socket (0.1-0.2
// ms each). The fd is closed after the batch (the sockets keep the program). Small batches, and
// kernels that refuse bpf(), use the classic filter.
constexpr size_t kMinForSharedFilter = 4;

class DropAllProgram {
 public:
  explicit DropAllProgram(bool wanted) {
    if (!wanted) return;
    struct bpf_insn insns[] = {
        {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},  // r0 = 0: keep no byte of the packet
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    union bpf_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insn_cnt = sizeof(insns) / sizeof(insns[0]);
    attr.insns = reinterpret_cast<uint64_t>(insns);
    attr.license = reinterpret_cast<uint64_t>("GPL");
    fd_ = static_cast<int>(syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof(attr)));  // O_CLOEXEC
  }
  ~DropAllProgram() {
    if (fd_ >= 0) close(fd_);
  }
  DropAllProgram(const DropAllProgram&) = delete;
  DropAllProgram& operator=(const DropAllProgram&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// Attaches the drop-all filter to fd: the shared eBPF program, else a classic one.
bool AttachDropAll(int fd, int program, SoccrFailure* f) {
  if (program >= 0 && setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &program, sizeof(program)) == 0) return true;
  sock_filter drop_all[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
  sock_fprog classic = {1, drop_all};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &classic, sizeof(classic)) == 0) return true;
  *f = {errno, -1, "setsockopt", "SO_ATTACH_FILTER"};
  return false;
}

// What inspectTcp reads, for one fd, into 18 words (see soccrInspectBatch). False on a failed call.
bool InspectOne(int fd, uint32_t* out) {
  tcp_info ti;
  socklen_t len = sizeof(ti);
  memset(&ti, 0, sizeof(ti));
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) return false;
  int reuse = 0;
  len = sizeof(reuse);
  if (getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, &len) < 0) return false;
  sockaddr_storage ss;
  len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return false;
  if (!SockaddrToWords(reinterpret_cast<sockaddr*>(&ss), out + 2)) return false;
  len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return false;
  if (!SockaddrToWords(reinterpret_cast<sockaddr*>(&ss), out + 2 + kAddrWords)) return false;
  out[0] = ti.tcpi_state;
  out[1] = reuse != 0;
  return true;
}

// soccrInspectBatch(fds: Int32Array(n), words: Uint32Array(18n)) -> undefined
// inspectTcp for every fd, spread over a few threads for large batches: words[18i] the TCP state,
// [18i+1] SO_REUSEADDR, then own and peer address (packed form). A fd whose inspection fails gets
// state 0 (no TCP state is 0); the caller asks inspectTcp about it for the precise error.
Napi::Value SoccrInspectBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  constexpr size_t kWords = 2 + 2 * kAddrWords;
  Napi::Int32Array fds = ArgTypedArray<int32_t>(info, 0, "fds");
  size_t n = fds.ElementLength();
  uint32_t* words = ArgTypedArray<uint32_t>(info, 1, "words", n * kWords).Data();
  const int32_t* fd = fds.Data();
  SoccrFailure unused;
  RunBatch(
      n,
      [&](size_t i, SoccrFailure*) {
        if (!InspectOne(fd[i], words + i * kWords)) words[i * kWords] = 0;
        return true;
      },
      &unused);
  return env.Undefined();
}

// A batch failure: SoccrError plus `index`, the connection that failed.
Napi::Error BatchError(Napi::Env env, const SoccrFailure& f, size_t index) {
  Napi::Error error = SoccrError(env, f);
  error.Set("index", Napi::Number::New(env, static_cast<double>(index)));
  return error;
}

// soccrDumpBatch(fds: Int32Array(n), packed: Uint32Array(17n), dumped: Uint8Array(n),
//                attachFilter?: boolean) -> Array(2n) of Buffer | null: each connection's queues.
// Per fd: with attachFilter, a drop-all socket filter first (the 'filter' lock, attached right
// before that socket's pause, on the batch threads); then pause +
// save + both queues + release (repair stays on), as soccrDump. dumped[i] bit 1: connection i is
// in repair mode; bit 2: its filter is attached. On a failure the failing socket is resumed
// (repair off; its filter, if attached, stays and is marked), the others keep their dumped[]
// state for the caller to undo, and the lowest failing index's error is thrown with `index` set.
Napi::Value SoccrDumpBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Int32Array fds = ArgTypedArray<int32_t>(info, 0, "fds");
  size_t n = fds.ElementLength();
  Napi::Uint32Array packed = ArgTypedArray<uint32_t>(info, 1, "packed", n * kSkDataWords);
  Napi::Uint8Array dumped = ArgTypedArray<uint8_t>(info, 2, "dumped", n);
  const int32_t* fd = fds.Data();
  uint32_t* words = packed.Data();
  uint8_t* done = dumped.Data();
  bool attach_filter = OptBool(info, 3, false);
  memset(done, 0, n);
  DropAllProgram shared(attach_filter && n >= kMinForSharedFilter);
  int program = shared.fd();
  std::vector<char*> queues(2 * n, nullptr);
  SoccrFailure failure;
  SoccrLogScope log(env);
  size_t failed = RunBatch(
      n,
      [&](size_t i, SoccrFailure* f) {
        if (attach_filter) {
          if (!AttachDropAll(fd[i], program, f)) return false;
          done[i] = 2;
        }
        DumpedConnection one;
        if (!DumpFd(fd[i], nullptr, false, &one, f)) return false;
        memcpy(words + i * kSkDataWords, &one.data, sizeof(one.data));
        queues[2 * i] = one.queue[0];
        queues[2 * i + 1] = one.queue[1];
        done[i] |= 1;
        return true;
      },
      &failure);
  if (failed < n) {
    for (char* q : queues) free(q);
    // Only the failing connection was resumed; the caller undoes the ones marked dumped.
    throw BatchError(env, failure, failed);
  }
  Napi::Array out = Napi::Array::New(env, 2 * n);
  for (size_t i = 0; i < n; i++) {
    for (int q = 0; q < 2; q++) {
      char* bytes = queues[2 * i + q];
      if (bytes == nullptr) {
        out.Set(static_cast<uint32_t>(2 * i + q), env.Null());
        continue;
      }
      uint32_t length = q == 0 ? words[i * kSkDataWords + 1] : words[i * kSkDataWords + 3];  // inq_len, outq_len
      Napi::Buffer<uint8_t> copy;
      try {
        copy = Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<uint8_t*>(bytes), length);
      } catch (...) {
        for (size_t j = 2 * i + q; j < queues.size(); j++) free(queues[j]);
        throw;
      }
      free(bytes);
      queues[2 * i + q] = nullptr;
      out.Set(static_cast<uint32_t>(2 * i + q), copy);
    }
  }
  return out;
}

// One connection to restore, read from JS before any socket exists. The queue bytes are copied:
// the restore runs while JS runs on (soccrRestoreBatch), so it must not read JS memory.
struct RestoreItem {
  RestoreInput in;
  std::vector<char> queue[2];
};

// Restores the items into their fds off the JS thread; the promise settles on the JS thread.
class RestoreWorker : public Napi::AsyncWorker {
 public:
  RestoreWorker(Napi::Env env, std::vector<RestoreItem>&& items, std::vector<int>&& fds)
      : Napi::AsyncWorker(env, "soccrRestoreBatch"), deferred_(Napi::Promise::Deferred::New(env)), items_(std::move(items)), fds_(std::move(fds)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    failed_ = RunBatch(
        items_.size(),
        [this](size_t i, SoccrFailure* f) {
          RestoreItem& item = items_[i];
          for (int q = 0; q < 2; q++) item.in.queue[q] = item.queue[q].empty() ? nullptr : item.queue[q].data();
          return RestoreFd(fds_[i], &item.in, false, f);
        },
        &failure_);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (failed_ >= items_.size()) {
      deferred_.Resolve(env.Undefined());
      return;
    }
    deferred_.Reject(BatchError(env, failure_, failed_).Value());
  }

  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<RestoreItem> items_;
  std::vector<int> fds_;
  SoccrFailure failure_;
  size_t failed_ = 0;
};

// CreateTcpSockets in this namespace, spread over the batch threads (a namespace is entered by
// one thread, so CreateTcpSockets does that case). 0, or -1 with errno set and every fd -1.
int CreateSocketsHere(const uint8_t* families, size_t n, int32_t* fds) {
  std::fill(fds, fds + n, -1);
  SoccrFailure failure;
  size_t failed = RunBatch(
      n,
      [&](size_t i, SoccrFailure* f) {
        fds[i] = socket(families[i] == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fds[i] >= 0) return true;
        f->err = errno;
        return false;
      },
      &failure);
  if (failed >= n) return 0;
  for (size_t i = 0; i < n; i++) {
    if (fds[i] >= 0) close(fds[i]);
    fds[i] = -1;
  }
  errno = failure.err;
  return -1;
}

// soccrRestoreBatch(packed: Uint32Array(33n), queues: Array(2n) of Uint8Array|null,
//                   fds: Int32Array(n), netns?: string) -> Promise<void>
// Synchronously reads and checks everything, then creates n TCP sockets (families from packed:
// the own address's family), in the namespace at netns when given, into fds (the caller owns
// them from here, also on failure). Then, off the JS thread (split over a few threads for large
// batches), restores connection i into fds[i]: pause + set addresses and queues +
// libsoccr_restore + release. Repair mode stays on: the caller turns it off (soccrResumeBatch)
// once its locks are gone; only for connections without unsent data, which need
// libsoccr_resume. The caller must not use the fds until the promise settles. It rejects with
// the lowest failing index's error (`index` set); a failed socket is disconnected silently by
// libsoccr, the others are restored and in repair mode: closing them all is silent. With
// libsoccr debug logging on, the restore runs before the call returns (its log lines need this
// thread).
Napi::Value SoccrRestoreBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Int32Array fds = ArgTypedArray<int32_t>(info, 2, "fds");
  size_t n = fds.ElementLength();
  Napi::Uint32Array packed = ArgTypedArray<uint32_t>(info, 0, "packed", n * kPackedWords);
  Napi::Array queue_array = ArgArray(info, 1, "queues");
  if (queue_array.Length() < 2 * n) ThrowInvalidArg(env, "queues needs two entries per connection");
  std::string netns_path;
  bool in_netns = OptString(info, 3, &netns_path);

  std::vector<RestoreItem> items(n);
  std::vector<uint8_t> families(n);
  const uint32_t* words = packed.Data();
  for (size_t i = 0; i < n; i++) {
    RestoreItem& item = items[i];
    const uint32_t* w = words + i * kPackedWords;
    if (!UnpackRestoreInput(w, &item.in)) ThrowInvalidArg(env, "packed addresses are invalid");
    families[i] = static_cast<uint8_t>(w[kSkDataWords]);
    // The batch turns repair off without libsoccr_resume (soccrResumeBatch), which would drop it.
    if (item.in.data.unsq_len != 0) ThrowInvalidArg(env, "connections with unsent data need libsoccr_resume");
    const uint32_t lengths[2] = {item.in.data.inq_len, item.in.data.outq_len};
    for (int q = 0; q < 2; q++) {
      Napi::Value v = queue_array.Get(static_cast<uint32_t>(2 * i + q));
      size_t length = 0;
      if (!v.IsNull() && !v.IsUndefined()) {
        Napi::Uint8Array bytes = TypedArrayValue<uint8_t>(env, v, "queue bytes");
        length = bytes.ElementLength();
        if (length == lengths[q] && length > 0) item.queue[q].assign(bytes.Data(), bytes.Data() + length);
      }
      // libsoccr reads inq_len / outq_len bytes.
      if (length != lengths[q]) ThrowInvalidArg(env, "queue lengths must equal inq_len and outq_len");
    }
  }

  int32_t* fd = fds.Data();
  int created = in_netns ? CreateTcpSockets(env, families.data(), n, &netns_path, fd) : CreateSocketsHere(families.data(), n, fd);
  if (created < 0) ThrowErrno(env, errno, "socket");
  std::vector<int> fd_copy(fd, fd + n);
  auto* worker = new RestoreWorker(env, std::move(items), std::move(fd_copy));
  Napi::Promise promise = worker->Promise();
  if (SoccrDebugLogging()) {
    // Same outcome, on this thread; the promise still settles asynchronously.
    {
      SoccrLogScope log(env);
      worker->Execute();
    }
    worker->OnOK();
    delete worker;
    return promise;
  }
  worker->Queue();
  return promise;
}

// soccrResumeBatch(fds: Int32Array): TCP_REPAIR off on each (what libsoccr_resume does for a
// restored connection without unsent data: the kernel sends its window probe). Like
// libsoccr_resume it does not throw; returns how many sockets failed.
Napi::Value SoccrResumeBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Int32Array fds = ArgTypedArray<int32_t>(info, 0, "fds");
  size_t n = fds.ElementLength();
  const int32_t* fd = fds.Data();
  std::atomic<uint32_t> failures{0};
  SoccrFailure unused;
  RunBatch(
      n,
      [&](size_t i, SoccrFailure*) {
        int off = 0;
        if (fd[i] >= 0 && setsockopt(fd[i], SOL_TCP, TCP_REPAIR, &off, sizeof(off)) < 0) failures++;
        return true;
      },
      &unused);
  return Napi::Number::New(env, failures.load());
}

// soccrDropBatch(fds: Int32Array) -> undefined
// Closes the sockets behind the fds (in repair mode: silently) on a few threads, while the fd
// numbers stay open: each becomes a duplicate of one /dev/null file (dup2 swaps atomically), so
// the net.Socket that owns the number can still be destroyed as usual and then closes only that
// duplicate. The kernel's teardown of the connections then runs in parallel instead of inside
// sequential net.Socket.destroy() calls. The caller destroys the net.Sockets
// right after, before anything else can see the numbers. Throws only when /dev/null cannot be
// opened (nothing was changed); a failing dup2 leaves that socket for destroy() to close.
Napi::Value SoccrDropBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Int32Array fds = ArgTypedArray<int32_t>(info, 0, "fds");
  size_t n = fds.ElementLength();
  const int32_t* fd = fds.Data();
  int placeholder = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (placeholder < 0) ThrowErrno(env, errno, "open", "/dev/null");
  SoccrFailure unused;
  RunBatch(
      n,
      [&](size_t i, SoccrFailure*) {
        // O_CLOEXEC is per fd: dup3 keeps close-on-exec on the number, as libuv set it.
        if (fd[i] >= 0 && fd[i] != placeholder) dup3(placeholder, fd[i], O_CLOEXEC);
        return true;
      },
      &unused);
  close(placeholder);
  return env.Undefined();
}

}  // namespace

void InitSoccrBatch(Napi::Env env, Napi::Object exports) {
  exports.Set("soccrInspectBatch", Napi::Function::New(env, SoccrInspectBatch, "soccrInspectBatch"));
  exports.Set("soccrDumpBatch", Napi::Function::New(env, SoccrDumpBatch, "soccrDumpBatch"));
  exports.Set("soccrRestoreBatch", Napi::Function::New(env, SoccrRestoreBatch, "soccrRestoreBatch"));
  exports.Set("soccrResumeBatch", Napi::Function::New(env, SoccrResumeBatch, "soccrResumeBatch"));
  exports.Set("soccrDropBatch", Napi::Function::New(env, SoccrDropBatch, "soccrDropBatch"));
}

}  // namespace nodecriu
