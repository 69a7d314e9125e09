#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
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

static bool progress_enabled() {
  if (const char* e = std::getenv("LMPRESS_PROGRESS")) return std::atoi(e) != 0;
  return g_level >= LogLevel::Info && isatty(STDERR_FILENO);
}

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), t0_(now_seconds()), enabled_(progress_enabled()) {}
Progress::~Progress() { finish(); }

void Progress::update(int64_t done, const std::string& extra) {
  if (!enabled_) return;
  const double el = now_seconds() - t0_;
  const double eta = done > 0 ? el * double(total_ - done) / double(done) : 0.0;
  std::fprintf(stderr, "\r%s %lld/%lld (%.0f%%) %.1fs elapsed, eta %.1fs %s\033[K", label_.c_str(),
               (long long)done, (long long)total_, total_ ? 100.0 * double(done) / double(total_) : 100.0,
               el, eta, extra.c_str());
  std::fflush(stderr);
}
void Progress::finish() {
  if (!enabled_ || done_) return;
  done_ = true;
  std::fputc('\n', stderr);
}

}  // namespace lmpress
