// CPU feature detection and the run-time SIMD level.
#include <cblas.h>

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <string>

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
  bool avxvnni = false;  // AVX-VNNI: VEX-encoded dpbusd / dpwssd on xmm / ymm
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;  // CPU and OS (XCR0), not yet permission
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
    const bool tiles_ok = (xcr0 & 0x60000) == 0x60000;  // XTILECFG (17) and XTILEDATA (18)
    f.amx_tile = tiles_ok && (d & (1u << 24));
    f.amx_int8 = f.amx_tile && (d & (1u << 25));
    f.amx_bf16 = f.amx_tile && (d & (1u << 22));
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
    f.avx512bf16 = zmm_ok && (a & (1u << 5));
    f.avxvnni = ymm_ok && (a & (1u << 4));
  }
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

// Linux keeps the AMX tile data state off for a process until it asks (kernel 5.16+).
bool request_amx_permission() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

bool amx_usable() {
  static const bool ok = [] {
    const Features& f = features();
    return f.amx_tile && f.amx_int8 && cpu_level_raw() == SimdLevel::AVX512 && request_amx_permission();
  }();
  return ok;
}

SimdLevel detect() {
  const SimdLevel have = cpu_level_raw();
  if (const char* e = std::getenv("LMPRESS_SIMD")) {
    const std::string s = e;
    const SimdLevel want = s == "scalar"                    ? SimdLevel::Scalar
                           : s == "avx2" || s == "avxvnni" ? SimdLevel::AVX2
                                                            : SimdLevel::AVX512;
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
static std::atomic<int> g_amx{-1};  // -1: not decided (LMPRESS_SIMD), 0 off, 1 on

bool cpu_has_amx() { return amx_usable(); }

bool amx_active() {
  int v = g_amx.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* e = std::getenv("LMPRESS_SIMD");
    v = (e && std::string(e) != "amx") ? 0 : 1;
    g_amx.store(v, std::memory_order_relaxed);
  }
  return v == 1 && active_simd_level() == SimdLevel::AVX512 && amx_usable();
}

void force_amx(bool on) { g_amx.store(on ? 1 : 0); }

static std::atomic<int> g_vnni{-1};  // -1: not decided (LMPRESS_SIMD), 0 off, 1 on

bool cpu_has_avxvnni() { return features().avxvnni && cpu_level_raw() >= SimdLevel::AVX2; }

bool avxvnni_active() {
  int v = g_vnni.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* e = std::getenv("LMPRESS_SIMD");
    v = (e && std::string(e) == "avx2") ? 0 : 1;
    g_vnni.store(v, std::memory_order_relaxed);
  }
  return v == 1 && active_simd_level() == SimdLevel::AVX2 && cpu_has_avxvnni();
}

void force_avxvnni(bool on) { g_vnni.store(on ? 1 : 0); }

bool amx_bf16_active() { return amx_active() && features().amx_bf16; }

static std::atomic<int> g_f16p{-1};  // -1: LMPRESS_F16_PREFILL decides, 0 int16 limbs, 1 bf16x3

void force_f16_prefill_bf16x3(bool on) { g_f16p.store(on ? 1 : 0); }

bool f16_prefill_int16() {
  if (!amx_active()) return false;
  int v = g_f16p.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* e = std::getenv("LMPRESS_F16_PREFILL");
    v = (e && std::string(e) == "bf16x3") ? 1 : 0;
    g_f16p.store(v, std::memory_order_relaxed);
  }
  return v == 0 || !features().amx_bf16;
}

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
  add("avx-vnni", f.avxvnni);
  add("amx-int8", f.amx_int8);
  add("amx-bf16", f.amx_bf16);
  if (f.amx_int8 && !amx_usable()) s += " (amx: the OS refused the tile state)";
  return s;
}

std::string blas_info() {
  std::string s = "OpenBLAS";
  if (const char* c = openblas_get_config()) s += std::string(" (") + c + ")";
  if (const char* k = openblas_get_corename()) s += std::string(" core=") + k;
  return s;
}

extern "C" void openblas_set_num_threads(int);

void reexec_with_tuned_blas(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") || std::getenv("LMPRESS_BLAS_REEXEC_DONE")) return;
  const char* core = openblas_get_corename();
  if (!core) return;
  std::string c = core;
  for (char& ch : c) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (c != "prescott" && c != "core2" && c != "nehalem" && c != "katmai" && c != "coppermine") return;
  const SimdLevel l = cpu_level_raw();
  const char* want = l == SimdLevel::AVX512 ? "SkylakeX" : l == SimdLevel::AVX2 ? "Haswell" : nullptr;
  if (!want) return;
  setenv("OPENBLAS_CORETYPE", want, 1);
  setenv("LMPRESS_BLAS_REEXEC_DONE", "1", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: go on with the generic kernels
}

ScopedBlasThreads::ScopedBlasThreads(int n_threads, double flops) {
  openblas_set_num_threads(flops >= 5e7 ? std::max(1, n_threads) : 1);
}
ScopedBlasThreads::~ScopedBlasThreads() { openblas_set_num_threads(1); }

ScopedSimdLevel::ScopedSimdLevel(SimdLevel l, bool amx, bool avxvnni)
    : prev_(active_simd_level()), prev_amx_(g_amx.load()), prev_vnni_(g_vnni.load()) {
  force_simd_level(l);
  force_amx(amx);
  force_avxvnni(avxvnni);
}
ScopedSimdLevel::~ScopedSimdLevel() {
  g_active.store(int(prev_));
  g_amx.store(prev_amx_);
  g_vnni.store(prev_vnni_);
}

}  // namespace lmpress
