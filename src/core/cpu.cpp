// CPU feature detection and the run-time SIMD level.
#include <cblas.h>

#include <atomic>

#include "lmpress/core.h"

extern "C" char* openblas_get_config(void);
extern "C" char* openblas_get_corename(void);
extern "C" int openblas_get_num_threads(void);

namespace lmpress {

static SimdLevel detect() {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
  if (const char* e = std::getenv("LMPRESS_SIMD")) {
    std::string s = e;
    SimdLevel want = s == "scalar" ? SimdLevel::Scalar : s == "avx2" ? SimdLevel::AVX2 : SimdLevel::AVX512;
    SimdLevel have = avx512 ? SimdLevel::AVX512 : avx2 ? SimdLevel::AVX2 : SimdLevel::Scalar;
    return std::min(want, have);
  }
  return avx512 ? SimdLevel::AVX512 : avx2 ? SimdLevel::AVX2 : SimdLevel::Scalar;
}

static SimdLevel cpu_level_raw() {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
  return avx512 ? SimdLevel::AVX512 : avx2 ? SimdLevel::AVX2 : SimdLevel::Scalar;
}

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
  __builtin_cpu_init();
  std::string s;
  auto add = [&](const char* name, bool v) {
    if (v) s += (s.empty() ? "" : " ") + std::string(name);
  };
  add("avx2", __builtin_cpu_supports("avx2"));
  add("fma", __builtin_cpu_supports("fma"));
  add("f16c", __builtin_cpu_supports("f16c"));
  add("avx512f", __builtin_cpu_supports("avx512f"));
  add("avx512bw", __builtin_cpu_supports("avx512bw"));
  add("avx512vnni", __builtin_cpu_supports("avx512vnni"));
  add("avx512bf16", __builtin_cpu_supports("avx512bf16"));
  return s;
}

std::string blas_info() {
  std::string s = "OpenBLAS";
  if (const char* c = openblas_get_config()) s += std::string(" (") + c + ")";
  if (const char* k = openblas_get_corename()) s += std::string(" core=") + k;
  return s;
}

ScopedSimdLevel::ScopedSimdLevel(SimdLevel l) : prev_(active_simd_level()) { force_simd_level(l); }
ScopedSimdLevel::~ScopedSimdLevel() { g_active.store(int(prev_)); }

}  // namespace lmpress
