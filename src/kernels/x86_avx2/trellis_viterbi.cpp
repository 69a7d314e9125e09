// The Viterbi encoder's L = 16 run at the AVX2 level (8 states per vector, f32, the arithmetic of
// trellis_viterbi_generic: cost = m + (x - v)^2, the lower state on ties), where the generic
// reference took 20-40 ms per tile.
//
// Layout as in x86_avx512/trellis_fp16.cpp with 8 lanes: group minima and state values in chunks of
// 8 N entries (N = 2^k), entry a N + b stored at b * 8 + a, so a block of 8 successive groups reads
// one contiguous vector of predecessor minima and one of state values per l, reduces over l with
// vertical compares (their movemasks are the backpointer bytes, 8 groups each), and the N blocks of
// a chunk go back into the transposed order by k rounds of even / odd shuffles.
#include <immintrin.h>

#include <limits>
#include <vector>

#include "kernels/trellis_rows.h"
#include "kernels/trellis_viterbi_x86.h"

namespace lmpress::kern {

namespace {

inline __m256 even8(__m256 a, __m256 b) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
}
inline __m256 odd8(__m256 a, __m256 b) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}

template <int K>
void step(const float* __restrict mprev, float* __restrict mnext, uint8_t* __restrict bp, const float* __restrict vals,
          float xi) {
  constexpr int64_t G = int64_t(1) << (16 - K);
  constexpr int N = 1 << K;
  const __m256 xv = _mm256_set1_ps(xi);
  for (int64_t c0 = 0; c0 < G; c0 += 8 * N) {
    __m256 out[N];
#pragma GCC unroll 16
    for (int t = 0; t < N; ++t) {
      const int64_t g0 = c0 + 8 * t, s0 = g0 << K;
      const float* mp = mprev + (s0 & (G - 1));
      const float* vp = vals + s0;
      uint8_t* b = bp + (g0 / 8) * (N - 1);
      // the tree over l as a binary counter: partial minima of completed subtrees per level (k + 1
      // registers live, not 2^k); the masks land where the level-by-level tree puts them
      __m256 part[K + 1];
#pragma GCC unroll 16
      for (int l = 0; l < N; ++l) {
        const __m256 d = _mm256_sub_ps(xv, _mm256_loadu_ps(vp + 8 * l));
        __m256 cur = _mm256_add_ps(_mm256_loadu_ps(mp + 8 * l), _mm256_mul_ps(d, d));
        int lev = 0;
#pragma GCC unroll 4
        for (int idx = l; idx & 1; idx >>= 1, ++lev) {
          const __m256 lt = _mm256_cmp_ps(cur, part[lev], _CMP_LT_OQ);
          b[viterbi_mask_offset(N, lev) + (l >> (lev + 1))] = uint8_t(_mm256_movemask_ps(lt));
          cur = _mm256_blendv_ps(part[lev], cur, lt);
        }
        part[lev] = cur;
      }
      out[t] = part[K];
    }
    viterbi_untranspose<K>(out, even8, odd8);
#pragma GCC unroll 16
    for (int r = 0; r < N; ++r) _mm256_storeu_ps(mnext + c0 + 8 * r, out[r]);
  }
}

template <int K>
float run(const float* x, int T, int64_t overlap, uint32_t* states, int code) {
  const float* vals = viterbi_values<K, 8, float>(code, 1.f);
  thread_local ViterbiScratch<float, uint8_t> sc;
  return viterbi_run<K, 8>(T, overlap, states, sc, [&](int i, const float* mprev, float* mnext, uint8_t* bp) {
    step<K>(mprev, mnext, bp, vals, x[i]);
  });
}

}  // namespace

float trellis_viterbi16_avx2(int k, const float* x, int T, int64_t overlap, uint32_t* states, int code) {
  switch (k) {
    case 2: return run<2>(x, T, overlap, states, code);
    case 3: return run<3>(x, T, overlap, states, code);
    default: return run<4>(x, T, overlap, states, code);
  }
}

}  // namespace lmpress::kern
