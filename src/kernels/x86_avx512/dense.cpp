// AVX-512 dense kernels (same structure as x86_avx2/dense.cpp, 16 lanes). gemv processes 4 rows per pass so each x load feeds 4 FMAs
// (decode is memory-bound: the goal is to keep the weight stream saturated).
#include <immintrin.h>

#include "kernels/kernels.h"
#include "kernels/x86_math.h"

namespace lmpress::kern {
namespace {

inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

struct LF32 {
  using T = float;
  static __m512 load(const float* p) { return _mm512_loadu_ps(p); }
  static float scalar(float v) { return v; }
};
struct LF16 {
  using T = uint16_t;
  static __m512 load(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static float scalar(uint16_t v) { return lmpress::f16_to_f32(v); }
};
struct LBF16 {
  using T = uint16_t;
  static __m512 load(const uint16_t* p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static float scalar(uint16_t v) { return lmpress::bf16_to_f32(v); }
};

template <class L>
void gemv(const typename L::T* W, size_t ld, const float* x, size_t k, float* y, size_t nrows) {
  using T = typename L::T;
  size_t r = 0;
  for (; r + 4 <= nrows; r += 4) {
    const T* w0 = W + r * ld;
    const T* w1 = w0 + ld;
    const T* w2 = w1 + ld;
    const T* w3 = w2 + ld;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    size_t j = 0;
    for (; j + 32 <= k; j += 32) {
      const __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
      a0 = _mm512_fmadd_ps(L::load(w0 + j), x0, a0);
      b0 = _mm512_fmadd_ps(L::load(w0 + j + 16), x1, b0);
      a1 = _mm512_fmadd_ps(L::load(w1 + j), x0, a1);
      b1 = _mm512_fmadd_ps(L::load(w1 + j + 16), x1, b1);
      a2 = _mm512_fmadd_ps(L::load(w2 + j), x0, a2);
      b2 = _mm512_fmadd_ps(L::load(w2 + j + 16), x1, b2);
      a3 = _mm512_fmadd_ps(L::load(w3 + j), x0, a3);
      b3 = _mm512_fmadd_ps(L::load(w3 + j + 16), x1, b3);
    }
    for (; j + 16 <= k; j += 16) {
      const __m512 x0 = _mm512_loadu_ps(x + j);
      a0 = _mm512_fmadd_ps(L::load(w0 + j), x0, a0);
      a1 = _mm512_fmadd_ps(L::load(w1 + j), x0, a1);
      a2 = _mm512_fmadd_ps(L::load(w2 + j), x0, a2);
      a3 = _mm512_fmadd_ps(L::load(w3 + j), x0, a3);
    }
    float s0 = hsum(_mm512_add_ps(a0, b0)), s1 = hsum(_mm512_add_ps(a1, b1));
    float s2 = hsum(_mm512_add_ps(a2, b2)), s3 = hsum(_mm512_add_ps(a3, b3));
    for (; j < k; ++j) {
      s0 += L::scalar(w0[j]) * x[j];
      s1 += L::scalar(w1[j]) * x[j];
      s2 += L::scalar(w2[j]) * x[j];
      s3 += L::scalar(w3[j]) * x[j];
    }
    y[r] = s0;
    y[r + 1] = s1;
    y[r + 2] = s2;
    y[r + 3] = s3;
  }
  for (; r < nrows; ++r) {
    const T* w = W + r * ld;
    __m512 a = _mm512_setzero_ps();
    size_t j = 0;
    for (; j + 16 <= k; j += 16) a = _mm512_fmadd_ps(L::load(w + j), _mm512_loadu_ps(x + j), a);
    float s = hsum(a);
    for (; j < k; ++j) s += L::scalar(w[j]) * x[j];
    y[r] = s;
  }
}

void f16_to_f32(const uint16_t* s, float* d, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, LF16::load(s + i));
  for (; i < n; ++i) d[i] = lmpress::f16_to_f32(s[i]);
}
void bf16_to_f32(const uint16_t* s, float* d, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, LBF16::load(s + i));
  for (; i < n; ++i) d[i] = lmpress::bf16_to_f32(s[i]);
}
float dot_f32(const float* a, const float* b, size_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i + 16 <= n; i += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  float s = hsum(_mm512_add_ps(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}
void axpy_f32(float a, const float* x, float* y, size_t n) {
  const __m512 av = _mm512_set1_ps(a);
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

const Ops ops_avx512 = {SimdLevel::AVX512, f16_to_f32, bf16_to_f32, gemv<LF32>, gemv<LF16>,
                      gemv<LBF16>, dot_f32, axpy_f32, silu_mul_f32_x86};

}  // namespace lmpress::kern
