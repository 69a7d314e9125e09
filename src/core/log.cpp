#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "lmpress/core.h"

namespace lmpress {

static LogLevel g_level = LogLevel::Info;
void set_log_level(LogLevel l) { g_level = l; }
LogLevel log_level() { return g_level; }

static void vlog(const char* fmt, va_list ap) {
  std::fputs("lmpress: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
}
void log_info(const char* fmt, ...) {
  if (g_level < LogLevel::Info) return;
  va_list ap;
  va_start(ap, fmt);
  vlog(fmt, ap);
  va_end(ap);
}
void log_debug(const char* fmt, ...) {
  if (g_level < LogLevel::Debug) return;
  va_list ap;
  va_start(ap, fmt);
  vlog(fmt, ap);
  va_end(ap);
}

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

size_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return size_t(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

size_t anon_rss_bytes() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  size_t kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, "RssAnon:", 8) == 0) {
      kb = size_t(std::strtoull(line + 8, nullptr, 10));
      break;
    }
  std::fclose(f);
  return kb * 1024;
}

struct AnonPeakSampler::Impl {
  std::atomic<size_t> peak{0};
  std::atomic<bool> stop{false};
  std::thread th;
};

AnonPeakSampler::AnonPeakSampler(int period_ms) : impl_(std::make_unique<Impl>()) {
  impl_->peak = anon_rss_bytes();
  Impl* im = impl_.get();
  im->th = std::thread([im, period_ms] {
    while (!im->stop.load()) {
      const size_t a = anon_rss_bytes();
      if (a > im->peak.load()) im->peak = a;
      std::this_thread::sleep_for(std::chrono::milliseconds(period_ms));
    }
  });
}

AnonPeakSampler::~AnonPeakSampler() {
  impl_->stop = true;
  if (impl_->th.joinable()) impl_->th.join();
}

size_t AnonPeakSampler::peak() const {
  const size_t a = anon_rss_bytes();
  return a > impl_->peak.load() ? a : impl_->peak.load();
}

namespace {
uint64_t meminfo_field(const char* key) {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return UINT64_MAX;
  char line[256];
  uint64_t v = UINT64_MAX;
  const size_t kl = std::strlen(key);
  while (std::fgets(line, sizeof line, f))
    if (std::strncmp(line, key, kl) == 0 && line[kl] == ':') {
      v = std::strtoull(line + kl + 1, nullptr, 10) * 1024;
      break;
    }
  std::fclose(f);
  return v;
}
uint64_t read_u64_file(const char* path) {
  FILE* f = std::fopen(path, "r");
  if (!f) return UINT64_MAX;
  char buf[64] = {};
  const bool ok = std::fgets(buf, sizeof buf, f) != nullptr;
  std::fclose(f);
  if (!ok || buf[0] < '0' || buf[0] > '9') return UINT64_MAX;  // "max"
  return std::strtoull(buf, nullptr, 10);
}
}  // namespace

size_t available_memory_bytes() {
  uint64_t avail = meminfo_field("MemAvailable");
  const uint64_t cg_max = read_u64_file("/sys/fs/cgroup/memory.max");
  const uint64_t cg_cur = read_u64_file("/sys/fs/cgroup/memory.current");
  if (cg_max != UINT64_MAX && cg_cur != UINT64_MAX)
    avail = std::min(avail, cg_max > cg_cur ? cg_max - cg_cur : 0);
  uint64_t vm = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    unsigned long long pages = 0;
    if (std::fscanf(f, "%llu", &pages) == 1) vm = pages * uint64_t(sysconf(_SC_PAGESIZE));
    std::fclose(f);
  }
  for (int res : {RLIMIT_AS, RLIMIT_DATA}) {
    struct rlimit rl {};
    if (getrlimit(res, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
      avail = std::min<uint64_t>(avail, rl.rlim_cur > vm ? rl.rlim_cur - vm : 0);
  }
  return avail == UINT64_MAX ? SIZE_MAX : size_t(avail);
}

static bool progress_enabled(bool& tty) {
  tty = isatty(STDERR_FILENO);
  if (const char* e = std::getenv("LMPRESS_PROGRESS")) {
    if (std::atoi(e) != 0) tty = true;
    return std::atoi(e) != 0;
  }
  return g_level >= LogLevel::Info;
}

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), t0_(now_seconds()), enabled_(progress_enabled(tty_)) {
  last_ = t0_;
}
Progress::~Progress() { finish(); }

void Progress::update(int64_t done, const std::string& extra) {
  if (!enabled_ || done_) return;
  const double now = now_seconds(), el = now - t0_;
  if (!tty_ && now - last_ < 10.0) return;  // plain lines: one every 10 s at most
  last_ = now;
  const double eta = done > 0 ? el * double(total_ - done) / double(done) : 0.0;
  const double pct = total_ ? 100.0 * double(done) / double(total_) : 100.0;
  if (tty_) {
    const int width = 20, fill = int(pct / 100.0 * width + 0.5);
    std::string bar(size_t(std::clamp(fill, 0, width)), '#');
    bar.resize(size_t(width), '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld (%.0f%%) %.1fs elapsed, eta %.1fs %s\033[K", label_.c_str(),
                 bar.c_str(), (long long)done, (long long)total_, pct, el, eta, extra.c_str());
  } else {
    std::fprintf(stderr, "lmpress: %s %lld/%lld (%.0f%%) %.0fs elapsed, eta %.0fs %s\n", label_.c_str(),
                 (long long)done, (long long)total_, pct, el, eta, extra.c_str());
  }
  printed_ = true;
  std::fflush(stderr);
}
void Progress::finish() {
  if (!enabled_ || done_) return;
  done_ = true;
  if (tty_ && printed_) std::fputc('\n', stderr);
}

}  // namespace lmpress
