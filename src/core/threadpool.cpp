// Fixed-size thread pool. Workers wait on a generation counter: they spin briefly (decode issues
// ~150 parallel regions per token, so wake-up latency matters) and then sleep with
// std::atomic::wait (futex), so an idle pool costs no CPU.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>

#include "lmpress/core.h"

namespace lmpress {

// Spin this many times (the last kYield with sched_yield, which lets a descheduled peer run on
// an oversubscribed machine) before sleeping on the futex.
constexpr int kSpin = 20000, kYield = 0;

struct ThreadPool::Impl {
  std::vector<std::thread> threads;
  std::atomic<uint64_t> generation{0};
  std::atomic<int> pending{0};
  std::atomic<bool> stop{false};
  const std::function<void(int, int)>* job = nullptr;
  int n = 1;

  void worker(int idx) {
    uint64_t seen = 0;
    for (;;) {
      uint64_t g = generation.load(std::memory_order_acquire);
      for (int spin = 0; g == seen && spin < kSpin; ++spin) {
        if (spin < kSpin - kYield) __builtin_ia32_pause(); else std::this_thread::yield();
        g = generation.load(std::memory_order_acquire);
      }
      while (g == seen) {
        generation.wait(seen, std::memory_order_acquire);
        g = generation.load(std::memory_order_acquire);
      }
      seen = g;
      if (stop.load(std::memory_order_acquire)) return;
      (*job)(idx, n);
      if (pending.fetch_sub(1, std::memory_order_acq_rel) == 1) pending.notify_one();
    }
  }
};

ThreadPool::ThreadPool(int n_threads) : impl_(std::make_unique<Impl>()) {
  if (n_threads <= 0) n_threads = default_threads();
  if (n_threads > kMaxThreads)
    fail("threads", std::to_string(n_threads) + " worker threads requested, at most " +
                        std::to_string(kMaxThreads) + " are supported");
  n_threads_ = n_threads;
  impl_->n = n_threads;
  try {
    impl_->threads.reserve(size_t(n_threads));
    for (int i = 1; i < n_threads; ++i) impl_->threads.emplace_back([this, i] { impl_->worker(i); });
  } catch (const std::exception& e) {
    // Out of memory or a thread limit: stop the workers already started (a std::thread destroyed
    // while joinable would terminate the process) and report it as an error.
    const size_t started = impl_->threads.size();
    shutdown();
    fail("threads", "cannot start " + std::to_string(n_threads) + " worker threads (" +
                        std::to_string(started + 1) + " started): " + e.what() +
                        "; use fewer with -t");
  }
}

void ThreadPool::shutdown() {
  impl_->stop.store(true, std::memory_order_release);
  impl_->generation.fetch_add(1, std::memory_order_acq_rel);
  impl_->generation.notify_all();
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
  impl_->threads.clear();
}

ThreadPool::~ThreadPool() { shutdown(); }

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  impl_->job = &fn;
  impl_->pending.store(n_threads_ - 1, std::memory_order_release);
  impl_->generation.fetch_add(1, std::memory_order_acq_rel);
  impl_->generation.notify_all();
  fn(0, n_threads_);
  int p = impl_->pending.load(std::memory_order_acquire);
  for (int spin = 0; p != 0 && spin < kSpin; ++spin) {
    if (spin < kSpin - kYield) __builtin_ia32_pause(); else std::this_thread::yield();
    p = impl_->pending.load(std::memory_order_acquire);
  }
  while (p != 0) {
    impl_->pending.wait(p, std::memory_order_acquire);
    p = impl_->pending.load(std::memory_order_acquire);
  }
  impl_->job = nullptr;
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int, int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int nt = int(std::min<int64_t>(n_threads_, n));
  if (nt == 1) {
    fn(0, 0, n);
    return;
  }
  run([&](int ti, int nth) {
    const int64_t per = (n + nt - 1) / nt;
    const int64_t b = int64_t(ti) * per, e = std::min<int64_t>(n, b + per);
    if (ti < nt && b < e) fn(ti, b, e);
  });
}

void ThreadPool::parallel_for_dynamic(int64_t n, int64_t grain, const std::function<void(int, int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t nchunks = (n + grain - 1) / grain;
  if (n_threads_ == 1 || nchunks == 1) {
    fn(0, 0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  run([&](int ti, int) {
    for (;;) {
      const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= nchunks) return;
      fn(ti, c * grain, std::min(n, (c + 1) * grain));
    }
  });
}

int hardware_threads() {
  const unsigned hc = std::thread::hardware_concurrency();
  return hc ? int(std::min<unsigned>(hc, unsigned(ThreadPool::kMaxThreads))) : 1;
}

int default_threads() {
  if (const char* e = std::getenv("LMPRESS_THREADS")) {
    const long v = std::strtol(e, nullptr, 10);
    if (v > 0) return int(std::min<long>(v, ThreadPool::kMaxThreads));
  }
  return hardware_threads();
}

void parallel_for_checked(ThreadPool& pool, int64_t n, const std::function<void(int, int64_t, int64_t)>& fn) {
  std::exception_ptr first;
  std::mutex mu;
  pool.parallel_for(n, [&](int ti, int64_t b, int64_t e) {
    try {
      fn(ti, b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!first) first = std::current_exception();
    }
  });
  if (first) std::rethrow_exception(first);
}

}  // namespace lmpress
