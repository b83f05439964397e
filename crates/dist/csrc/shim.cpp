// A C ABI over libtorch's c10d: TCPStore, ProcessGroupGloo (and, with
// PRETEXT_DIST_NCCL, ProcessGroupNCCL). Rust calls only these functions.
//
// Rules kept here (see shared/notes/libtorch.md, "Data-parallel over c10d"):
// - only exported c10d:: functions are called; gloo objects are only held
//   behind the shared_ptr c10d hands out (the gloo headers installed are
//   older than the gloo inside libtorch, so no gloo type is built here);
// - Gloo silently gives wrong results on non-contiguous tensors: they are
//   rejected, as are undefined ones;
// - no C++ exception crosses the boundary: each is caught and returned as a
//   malloc'ed message (`*err`), freed with pd_free.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef PRETEXT_DIST_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

char* dup_message(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

// Enqueueing a collective records it in c10d's process-wide flight recorder,
// whose map insertions race when two groups of one process enqueue at the
// same time (seen as a SIGSEGV in std::_Rb_tree_insert_and_rebalance under
// FlightRecorder::recordWithResetEnabled, with two ranks as threads of one
// test process). Enqueues take this lock; waiting for the work does not, so
// ranks in one process still meet in their collectives. One rank per
// process, as in every real run, never contends for it.
std::mutex& enqueue_lock() {
  static std::mutex m;
  return m;
}

// Runs f, turning any exception into *err and a false return.
template <typename F>
bool guarded(char** err, F&& f) {
  try {
    f();
    return true;
  } catch (const std::exception& e) {
    if (err != nullptr) *err = dup_message(e.what());
  } catch (...) {
    if (err != nullptr) *err = dup_message("unknown C++ exception");
  }
  return false;
}

}  // namespace

struct pd_store {
  c10::intrusive_ptr<c10d::TCPStore> tcp;
};

struct pd_group {
  c10::intrusive_ptr<c10d::Backend> backend;
};

extern "C" {

void pd_free(void* p) { std::free(p); }

pd_store* pd_store_new(const char* host, uint16_t port, int is_server,
                       int64_t timeout_ms, char** err) {
  pd_store* out = nullptr;
  guarded(err, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    // Workers are not counted: ranks may come from the store's counter.
    opts.numWorkers = std::nullopt;
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    out = new pd_store{std::move(tcp)};
  });
  return out;
}

uint16_t pd_store_port(const pd_store* s) { return s->tcp->getPort(); }

void pd_store_free(pd_store* s) { delete s; }

int pd_store_add(pd_store* s, const char* key, int64_t delta, int64_t* out,
                 char** err) {
  return guarded(err, [&] { *out = s->tcp->add(std::string(key), delta); });
}

int pd_store_set(pd_store* s, const char* key, const uint8_t* data, size_t len,
                 char** err) {
  return guarded(err, [&] {
    std::vector<uint8_t> value(data, data + len);
    s->tcp->set(std::string(key), value);
  });
}

// Waits (up to the store's timeout) for `key`; *data is malloc'ed.
int pd_store_get(pd_store* s, const char* key, uint8_t** data, size_t* len,
                 char** err) {
  return guarded(err, [&] {
    std::vector<uint8_t> value = s->tcp->get(std::string(key));
    *len = value.size();
    *data = static_cast<uint8_t*>(std::malloc(value.size() > 0 ? value.size() : 1));
    if (*data == nullptr) throw std::bad_alloc();
    if (!value.empty()) std::memcpy(*data, value.data(), value.size());
  });
}

int pd_store_check(pd_store* s, const char* key, int* present, char** err) {
  return guarded(err, [&] {
    *present = s->tcp->check({std::string(key)}) ? 1 : 0;
  });
}

int pd_store_delete(pd_store* s, const char* key, char** err) {
  return guarded(err, [&] { s->tcp->deleteKey(std::string(key)); });
}

// device_kind: 0 = the default device (this host's name, else loopback),
// 1 = the address `device_name` names, 2 = the network interface it names.
pd_group* pd_gloo_new(pd_store* s, const char* prefix, int rank, int size,
                      int device_kind, const char* device_name,
                      int64_t timeout_ms, int threads, char** err) {
  pd_group* out = nullptr;
  guarded(err, [&] {
    auto store = c10::make_intrusive<c10d::PrefixStore>(
        std::string(prefix), c10::static_intrusive_pointer_cast<c10d::Store>(s->tcp));
    auto opts = c10d::ProcessGroupGloo::Options::create(
        std::chrono::milliseconds(timeout_ms));
    switch (device_kind) {
      case 1:
        opts->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForHostname(std::string(device_name)));
        break;
      case 2:
        opts->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForInterface(std::string(device_name)));
        break;
      default:
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    opts->threads = threads;
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::static_intrusive_pointer_cast<c10d::Store>(store), rank, size, opts);
    out = new pd_group{c10::static_intrusive_pointer_cast<c10d::Backend>(pg)};
  });
  return out;
}

// 1 when this build can make NCCL groups.
int pd_nccl_built() {
#ifdef PRETEXT_DIST_NCCL
  return 1;
#else
  return 0;
#endif
}

pd_group* pd_nccl_new(pd_store* s, const char* prefix, int rank, int size,
                      int64_t timeout_ms, char** err) {
#ifdef PRETEXT_DIST_NCCL
  pd_group* out = nullptr;
  guarded(err, [&] {
    auto store = c10::make_intrusive<c10d::PrefixStore>(
        std::string(prefix), c10::static_intrusive_pointer_cast<c10d::Store>(s->tcp));
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        c10::static_intrusive_pointer_cast<c10d::Store>(store), rank, size, opts);
    out = new pd_group{c10::static_intrusive_pointer_cast<c10d::Backend>(pg)};
  });
  return out;
#else
  (void)s; (void)prefix; (void)rank; (void)size; (void)timeout_ms;
  if (err != nullptr) *err = dup_message("pretext-dist was built without the `nccl` feature");
  return nullptr;
#endif
}

void pd_group_free(pd_group* g) { delete g; }

namespace {

// The tensors behind tch's handles (`Tensor::as_ptr` is an `at::Tensor*`),
// checked: defined and contiguous.
std::vector<at::Tensor> checked(const void* const* tensors, size_t n, const char* op) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& t = *static_cast<const at::Tensor*>(tensors[i]);
    if (!t.defined()) {
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(i) +
                                  " is undefined");
    }
    if (!t.is_contiguous()) {
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(i) +
                                  " is not contiguous (Gloo would reduce the wrong elements)");
    }
    out.push_back(t);
  }
  return out;
}

// Waits for every work item, in order; the first failure is rethrown after
// all have finished (so no work still refers to a tensor when Rust resumes).
void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
  std::exception_ptr first;
  for (auto& w : works) {
    try {
      w->wait();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace

// Sums each tensor over the ranks, in place: one collective per tensor,
// all enqueued before the first wait.
int pd_group_allreduce_sum(pd_group* g, const void* const* tensors, size_t n, char** err) {
  return guarded(err, [&] {
    auto ts = checked(tensors, n, "all_reduce");
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    works.reserve(n);
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      c10d::AllreduceOptions opts;
      opts.reduceOp = c10d::ReduceOp::SUM;
      std::lock_guard<std::mutex> lock(enqueue_lock());
      works.push_back(g->backend->allreduce(one, opts));
    }
    wait_all(works);
  });
}

// Overwrites each tensor with rank `root`'s, in place.
int pd_group_broadcast(pd_group* g, const void* const* tensors, size_t n, int root,
                       char** err) {
  return guarded(err, [&] {
    auto ts = checked(tensors, n, "broadcast");
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    works.reserve(n);
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      c10d::BroadcastOptions opts;
      opts.rootRank = root;
      opts.rootTensor = 0;
      std::lock_guard<std::mutex> lock(enqueue_lock());
      works.push_back(g->backend->broadcast(one, opts));
    }
    wait_all(works);
  });
}

int pd_group_barrier(pd_group* g, char** err) {
  return guarded(err, [&] {
    c10d::BarrierOptions opts;
    c10::intrusive_ptr<c10d::Work> work;
    {
      std::lock_guard<std::mutex> lock(enqueue_lock());
      work = g->backend->barrier(opts);
    }
    work->wait();
  });
}

}  // extern "C"
