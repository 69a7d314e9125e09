// AVX2 prefill GEMM over the repacked layout (maddubs; kernels/repack_x86_avx2.h) and the level's
// int8 peak loop.
#define LMP_AVXVNNI 0
#define LMP_REPACKED_GEMM_AVX2_NAME repacked_gemm_avx2
#include "kernels/repack_x86_avx2.h"
#include "kernels/peak_rate.h"

namespace lmpress::kern {

namespace {
constexpr int kPeakChains = 12;  // > latency (maddubs + add) x throughput
// r rounds of kPeakChains independent maddubs + add (no call inside: the chains stay in registers).
__attribute__((noipa)) int peak_rounds(int64_t r, int8_t wv, int8_t av) {
  __m256i acc[kPeakChains];
#pragma GCC unroll 12
  for (int j = 0; j < kPeakChains; ++j) acc[j] = _mm256_setzero_si256();
  __m256i w = _mm256_set1_epi8(wv), a = _mm256_set1_epi8(av);
  for (int64_t i = 0; i < r; ++i) {
    pin(w);
    pin(a);  // opaque each round: the products are not hoisted
#pragma GCC unroll 12
    for (int j = 0; j < kPeakChains; ++j) {
      pin(w);  // (one product per chain: not CSE'd into one)
      acc[j] = _mm256_add_epi16(acc[j], _mm256_maddubs_epi16(w, a));
      pin(acc[j]);
    }
  }
  int s = 0;
#pragma GCC unroll 12
  for (int j = 0; j < kPeakChains; ++j) s += _mm256_extract_epi16(acc[j], 0);
  return s;
}
}  // namespace

double int8_peak_gops_avx2(double seconds) {
  volatile int sink = 0;
  return peak_rate(seconds, double(1 << 14) * kPeakChains * 32 * 2,
                   [&] { sink = sink + peak_rounds(1 << 14, 3, -2); });
}

}  // namespace lmpress::kern
