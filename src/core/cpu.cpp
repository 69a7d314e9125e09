// CPU feature detection and the run-time SIMD level.
#include <cblas.h>

#include <cpuid.h>

#include <atomic>

#include "lmpress/core.h"

extern "C" char* openblas_get_config(void);
extern "C" char* openblas_get_corename(void);
extern "C" int openblas_get_num_threads(void);

namespace lmpress {

namespace {
// CPU features from CPUID + XGETBV (works with gcc and clang alike; __builtin_cpu_supports
// feature names differ between compilers).
struct Features {
  bool avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false,
       avx512bf16 = false;
};

Features read_features() {
  Features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  uint64_t xcr0 = 0;
  if (osxsave) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (uint64_t(hi) << 32) | lo;
  }
  const bool ymm_ok = avx && (xcr0 & 0x6) == 0x6;
  const bool zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = ymm_ok && (b & (1u << 5));
    f.bmi2 = b & (1u << 8);
    f.avx512f = zmm_ok && (b & (1u << 16));
    f.avx512dq = zmm_ok && (b & (1u << 17));
    f.avx512bw = zmm_ok && (b & (1u << 30));
    f.avx512vl = zmm_ok && (b & (1u << 31));
    f.avx512vnni = zmm_ok && (c & (1u << 11));
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512bf16 = zmm_ok && (a & (1u << 5));
  f.fma = f.fma && ymm_ok;
  f.f16c = f.f16c && ymm_ok;
  return f;
}

const Features& features() {
  static const Features f = read_features();
  return f;
}

SimdLevel cpu_level_raw() {
  const Features& f = features();
  const bool avx2 = f.avx2 && f.fma && f.f16c && f.bmi2;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni;
  return avx512 ? SimdLevel::AVX512 : avx2 ? SimdLevel::AVX2 : SimdLevel::Scalar;
}

SimdLevel detect() {
  const SimdLevel have = cpu_level_raw();
  if (const char* e = std::getenv("LMPRESS_SIMD")) {
    const std::string s = e;
    const SimdLevel want = s == "scalar" ? SimdLevel::Scalar : s == "avx2" ? SimdLevel::AVX2 : SimdLevel::AVX512;
    return std::min(want, have);
  }
  return have;
}
}  // namespace

SimdLevel cpu_simd_level() {
  static const SimdLevel l = cpu_level_raw();
  return l;
}

static std::atomic<int> g_active{-1};

SimdLevel active_simd_level() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v < 0) {
    v = int(detect());
    g_active.store(v, std::memory_order_relaxed);
  }
  return SimdLevel(v);
}

void force_simd_level(SimdLevel l) { g_active.store(int(std::min(l, cpu_simd_level()))); }

const char* simd_level_name(SimdLevel l) {
  switch (l) {
    case SimdLevel::Scalar: return "scalar";
    case SimdLevel::AVX2: return "avx2";
    case SimdLevel::AVX512: return "avx512";
  }
  return "?";
}

std::string cpu_feature_string() {
  const Features& f = features();
  std::string s;
  auto add = [&](const char* name, bool v) {
    if (!v) return;
    if (!s.empty()) s += ' ';  // (appends: GCC 12 warns falsely, -Wrestrict, on "x" + std::string)
    s += name;
  };
  add("avx2", f.avx2);
  add("fma", f.fma);
  add("f16c", f.f16c);
  add("avx512f", f.avx512f);
  add("avx512bw", f.avx512bw);
  add("avx512vnni", f.avx512vnni);
  add("avx512bf16", f.avx512bf16);
  return s;
}

std::string blas_info() {
  std::string s = "OpenBLAS";
  if (const char* c = openblas_get_config()) s += std::string(" (") + c + ")";
  if (const char* k = openblas_get_corename()) s += std::string(" core=") + k;
  return s;
}

extern "C" void openblas_set_num_threads(int);

ScopedBlasThreads::ScopedBlasThreads(int n_threads, double flops) {
  openblas_set_num_threads(flops >= 5e7 ? std::max(1, n_threads) : 1);
}
ScopedBlasThreads::~ScopedBlasThreads() { openblas_set_num_threads(1); }

ScopedSimdLevel::ScopedSimdLevel(SimdLevel l) : prev_(active_simd_level()) { force_simd_level(l); }
ScopedSimdLevel::~ScopedSimdLevel() { g_active.store(int(prev_)); }

}  // namespace lmpress
