// Vector math shared by the x86 kernel TUs (dense, quantized and table kernels of x86_avx2/ and
// x86_avx512/), each compiling its own copy with its own flags (anonymous namespace).
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstddef>

namespace lmpress::kern {
namespace {

// Sum of the 8 lanes.
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// exp(x) for 8 floats, relative error below ~2e-7 on [-87, 88]: x = n ln2 + r with |r| <= ln2/2
// (ln2 split in two parts so n ln2 is exact to ~1e-11), exp(r) by its Taylor polynomial of
// degree 7 (remainder < 0.35^8/8! ~ 5e-9), times 2^n built in the exponent field. Inputs are
// clamped to [-87.3, 88.3] (exp stays a normal float); NaN is returned as NaN.
inline __m256 exp8(__m256 x) {
  const __m256 nan_mask = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440054690583e-4f), r);
  __m256 p = _mm256_set1_ps(1.f / 5040.f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_or_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), nan_mask);
}

// g[i] = silu(g[i]) * u[i] = g / (1 + exp(-g)) * u
inline void silu_mul_f32_x86(float* g, const float* u, size_t n) {
  size_t i = 0;
  const __m256 one = _mm256_set1_ps(1.f);
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 den = _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x)));
    _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(x, den), _mm256_loadu_ps(u + i)));
  }
  if (i < n) {  // tail through a padded vector
    alignas(32) float tg[8] = {}, tu[8] = {};
    for (size_t j = i; j < n; ++j) tg[j - i] = g[j], tu[j - i] = u[j];
    silu_mul_f32_x86(tg, tu, 8);
    for (size_t j = i; j < n; ++j) g[j] = tg[j - i];
  }
}

// x[i] = exp(x[i] - max_j x[j]) for i < n (n >= 1); returns the sum of the new x (the caller
// divides by it: an exact softmax, max-subtracted, f32). Lanes past n are never read or written.
inline float softmax_unnorm_f32_x86(float* x, size_t n) {
  size_t i = 0;
  __m256 m = _mm256_set1_ps(-INFINITY);
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float mx = lanes[0];
  for (int j = 1; j < 8; ++j) mx = lanes[j] > mx ? lanes[j] : mx;
  for (; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
  const __m256 vm = _mm256_set1_ps(mx);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    const __m256 e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm));
    _mm256_storeu_ps(x + i, e0);
    _mm256_storeu_ps(x + i + 8, e1);
    s0 = _mm256_add_ps(s0, e0);
    s1 = _mm256_add_ps(s1, e1);
  }
  if (i < n) {  // tail through a padded vector (padding lanes: exp(-inf) -> excluded from the sum)
    alignas(32) float t[16];
    const size_t r = n - i;
    for (size_t j = 0; j < 16; ++j) t[j] = j < r ? x[i + j] - mx : -100.f;
    const __m256 e0 = exp8(_mm256_load_ps(t)), e1 = exp8(_mm256_load_ps(t + 8));
    _mm256_store_ps(t, e0);
    _mm256_store_ps(t + 8, e1);
    for (size_t j = 0; j < r; ++j) x[i + j] = t[j];
    float tail = 0.f;
    for (size_t j = 0; j < r; ++j) tail += t[j];
    s0 = _mm256_add_ps(s0, _mm256_setr_ps(tail, 0, 0, 0, 0, 0, 0, 0));
  }
  return hsum(_mm256_add_ps(s0, s1));
}

}  // namespace
}  // namespace lmpress::kern
