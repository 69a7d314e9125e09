// AVX-512 sparse-outlier add (qkernels.h SparseArgs): per row, its run of positions by unsigned
// compares of 16 positions at a time, then 16 outliers at a time with masked loads and gathers:
// x[c], the f16 values converted (vcvtph2ps), FMA.
#include <immintrin.h>

#include <algorithm>

#include "kernels/qkernels.h"

namespace lmpress::kern {

void sparse_add_avx512(const SparseArgs& a, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (a.nnz == 0) return;
  const uint32_t* const end = a.idx + a.nnz;
  const uint32_t* k = std::lower_bound(a.idx, end, uint32_t(r0 * a.cols));
  auto lanes = [](int64_t left) { return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1); };
  for (int64_t r = r0; r < r1 && k < end; ++r) {
    const uint32_t base = uint32_t(r * a.cols), stop = uint32_t((r + 1) * a.cols);
    const __m512i vstop = _mm512_set1_epi32(int(stop));
    const uint32_t* k0 = k;
    while (k < end) {
      const __mmask16 m = lanes(end - k);
      const __m512i p = _mm512_maskz_loadu_epi32(m, k);
      const int c = __builtin_popcount(unsigned(_mm512_mask_cmplt_epu32_mask(m, p, vstop)));
      k += c;
      if (c < 16) break;
    }
    const int64_t n = k - k0;
    if (n == 0) continue;
    const uint16_t* v = a.val + (k0 - a.idx);
    if (a.xT) {  // prefill: 16 tokens per vector, contiguous loads of the transposed activations
      for (int64_t t = t0; t < t1; t += 16) {
        const __mmask16 m = lanes(t1 - t);
        __m512 acc = _mm512_setzero_ps();
        for (int64_t j = 0; j < n; ++j)
          acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(v[j])),
                                _mm512_maskz_loadu_ps(m, a.xT + int64_t(k0[j] - base) * a.n_all + t), acc);
        alignas(64) float tmp[16];
        _mm512_store_ps(tmp, acc);
        for (int64_t i = 0; i < std::min<int64_t>(16, t1 - t); ++i) a.y[(t + i) * a.ldy + r] += tmp[i];
      }
      continue;
    }
    const __m512i vbase = _mm512_set1_epi32(int(base));
    for (int64_t t = t0; t < t1; ++t) {
      const float* xt = a.x + t * a.cols;
      __m512 acc = _mm512_setzero_ps();
      for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = lanes(n - j);
        const __m512i c = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, k0 + j), vbase);
        const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, c, xt, 4);
        const __m512 wv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, v + j));
        acc = _mm512_fmadd_ps(wv, xv, acc);
      }
      a.y[t * a.ldy + r] += _mm512_reduce_add_ps(acc);
    }
  }
}

}  // namespace lmpress::kern
