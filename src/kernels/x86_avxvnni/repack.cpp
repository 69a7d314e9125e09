// AVX-VNNI prefill GEMM over the repacked layout (VEX dpbusd on ymm; kernels/repack_x86_avx2.h) and
// its int8 peak loop. Built with -mavxvnni; called only where the CPU has AVX-VNNI.
#include <immintrin.h>

#define LMP_AVXVNNI 1
#define LMP_REPACKED_GEMM_AVX2_NAME repacked_gemm_avxvnni
#include "kernels/repack_x86_avx2.h"
#include "kernels/peak_rate.h"

namespace lmpress::kern {

namespace {
constexpr int kVnniChains = 10;  // > latency (5) x throughput (2 per cycle)
__attribute__((noipa)) int vnni_rounds(int64_t r, int8_t wv, int8_t av) {
  __m256i acc[kVnniChains];
#pragma GCC unroll 10
  for (int j = 0; j < kVnniChains; ++j) acc[j] = _mm256_setzero_si256();
  __m256i w = _mm256_set1_epi8(wv), a = _mm256_set1_epi8(av);
  for (int64_t i = 0; i < r; ++i) {
    pin(w);
    pin(a);
#pragma GCC unroll 10
    for (int j = 0; j < kVnniChains; ++j) {
      acc[j] = _mm256_dpbusd_avx_epi32(acc[j], w, a);
      pin(acc[j]);
    }
  }
  int s = 0;
#pragma GCC unroll 10
  for (int j = 0; j < kVnniChains; ++j) s += _mm256_extract_epi32(acc[j], 0);
  return s;
}
}  // namespace

double int8_peak_gops_avxvnni(double seconds) {
  volatile int sink = 0;
  return peak_rate(seconds, double(1 << 14) * kVnniChains * 32 * 2,
                   [&] { sink = sink + vnni_rounds(1 << 14, 3, -2); });
}

}  // namespace lmpress::kern
