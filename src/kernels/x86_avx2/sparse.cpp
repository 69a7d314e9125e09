// AVX2 sparse-outlier add (qkernels.h SparseArgs): per row, its run of positions, then 8 outliers
// at a time: gather x[c], F16C-convert the values, FMA; the tail scalar.
#include <immintrin.h>

#include "kernels/sparse_rows.h"
#include "kernels/x86_math.h"

namespace lmpress::kern {

void sparse_add_avx2(const SparseArgs& a, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  for_each_sparse_row(a, r0, r1, [&](int64_t r, uint32_t base, const uint32_t* k0, int64_t n) {
    const uint16_t* v = a.val + (k0 - a.idx);
    if (a.xT) {  // prefill: 8 tokens per vector over the transposed activations, tail scalar
      int64_t t = t0;
      for (; t + 8 <= t1; t += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; ++j)
          acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(v[j])), _mm256_loadu_ps(a.xT + int64_t(k0[j] - base) * a.n_all + t), acc);
        alignas(32) float tmp[8];
        _mm256_store_ps(tmp, acc);
        for (int i = 0; i < 8; ++i) a.y[(t + i) * a.ldy + r] += tmp[i];
      }
      for (; t < t1; ++t) {
        float s = 0.f;
        for (int64_t j = 0; j < n; ++j) s += _cvtsh_ss(v[j]) * a.xT[int64_t(k0[j] - base) * a.n_all + t];
        a.y[t * a.ldy + r] += s;
      }
      return;
    }
    const __m256i vbase = _mm256_set1_epi32(int(base));
    for (int64_t t = t0; t < t1; ++t) {
      const float* xt = a.x + t * a.cols;
      __m256 acc = _mm256_setzero_ps();
      int64_t j = 0;
      for (; j + 8 <= n; j += 8) {
        const __m256i c = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k0 + j)), vbase);
        const __m256 xv = _mm256_i32gather_ps(xt, c, 4);
        const __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + j)));
        acc = _mm256_fmadd_ps(wv, xv, acc);
      }
      float s = hsum(acc);
      for (; j < n; ++j) s += _cvtsh_ss(v[j]) * xt[k0[j] - base];
      a.y[t * a.ldy + r] += s;
    }
  });
}

}  // namespace lmpress::kern
