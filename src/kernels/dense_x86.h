// Dense kernels shared by the AVX2 and AVX-512 translation units, written once over a vector
// policy V (8 or 16 f32 lanes; see x86_avx2/dense.cpp and x86_avx512/dense.cpp for the policies).
// gemv processes 4 rows per pass so each x load feeds 4 FMAs (decode is memory-bound: the goal is
// to keep the weight stream saturated); two accumulators per row hide the FMA latency.
// Include only from a TU compiled with the ISA flags of its policy.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

namespace lmpress::kern::dense_x86 {

// V provides: R (register type), W (lanes), zero(), load(const float*), f16(const uint16_t*),
// bf16(const uint16_t*), fma(a, b, c) = a*b + c, add, set1, store, hsum.
template <class V>
struct Kernels {
  using R = typename V::R;
  static constexpr size_t W = V::W;

  struct LF32 {
    using T = float;
    static R load(const float* p) { return V::load(p); }
    static float scalar(float v) { return v; }
  };
  struct LF16 {
    using T = uint16_t;
    static R load(const uint16_t* p) { return V::f16(p); }
    static float scalar(uint16_t v) { return lmpress::f16_to_f32(v); }
  };
  struct LBF16 {
    using T = uint16_t;
    static R load(const uint16_t* p) { return V::bf16(p); }
    static float scalar(uint16_t v) { return lmpress::bf16_to_f32(v); }
  };

  static constexpr size_t kPf = 512;  // prefetch distance in elements
  template <class L>
  static void gemv(const typename L::T* Wm, size_t ld, const float* x, size_t k, float* y, size_t nrows) {
    using T = typename L::T;
    size_t r = 0;
    for (; r + 4 <= nrows; r += 4) {
      const T* w0 = Wm + r * ld;
      const T* w1 = w0 + ld;
      const T* w2 = w1 + ld;
      const T* w3 = w2 + ld;
      R a0 = V::zero(), a1 = a0, a2 = a0, a3 = a0;
      R b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      size_t j = 0;
      for (; j + 2 * W <= k; j += 2 * W) {
        // Software prefetch kPf elements ahead on each of the four row streams (the hardware
        // prefetchers alone left single-thread f16 decode at ~8 GB/s on the Xeon).
        if ((j * sizeof(T)) % 64 == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(w0 + j + kPf), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(w1 + j + kPf), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(w2 + j + kPf), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(w3 + j + kPf), _MM_HINT_T0);
        }
        const R x0 = V::load(x + j), x1 = V::load(x + j + W);
        a0 = V::fma(L::load(w0 + j), x0, a0);
        b0 = V::fma(L::load(w0 + j + W), x1, b0);
        a1 = V::fma(L::load(w1 + j), x0, a1);
        b1 = V::fma(L::load(w1 + j + W), x1, b1);
        a2 = V::fma(L::load(w2 + j), x0, a2);
        b2 = V::fma(L::load(w2 + j + W), x1, b2);
        a3 = V::fma(L::load(w3 + j), x0, a3);
        b3 = V::fma(L::load(w3 + j + W), x1, b3);
      }
      for (; j + W <= k; j += W) {
        const R x0 = V::load(x + j);
        a0 = V::fma(L::load(w0 + j), x0, a0);
        a1 = V::fma(L::load(w1 + j), x0, a1);
        a2 = V::fma(L::load(w2 + j), x0, a2);
        a3 = V::fma(L::load(w3 + j), x0, a3);
      }
      float s0 = V::hsum(V::add(a0, b0)), s1 = V::hsum(V::add(a1, b1));
      float s2 = V::hsum(V::add(a2, b2)), s3 = V::hsum(V::add(a3, b3));
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
      const T* w = Wm + r * ld;
      R a = V::zero();
      size_t j = 0;
      for (; j + W <= k; j += W) a = V::fma(L::load(w + j), V::load(x + j), a);
      float s = V::hsum(a);
      for (; j < k; ++j) s += L::scalar(w[j]) * x[j];
      y[r] = s;
    }
  }

  static void f16_to_f32(const uint16_t* s, float* d, size_t n) {
    size_t i = 0;
    for (; i + W <= n; i += W) V::store(d + i, V::f16(s + i));
    for (; i < n; ++i) d[i] = lmpress::f16_to_f32(s[i]);
  }
  static void bf16_to_f32(const uint16_t* s, float* d, size_t n) {
    size_t i = 0;
    for (; i + W <= n; i += W) V::store(d + i, V::bf16(s + i));
    for (; i < n; ++i) d[i] = lmpress::bf16_to_f32(s[i]);
  }
  static float dot_f32(const float* a, const float* b, size_t n) {
    R acc0 = V::zero(), acc1 = acc0;
    size_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      acc0 = V::fma(V::load(a + i), V::load(b + i), acc0);
      acc1 = V::fma(V::load(a + i + W), V::load(b + i + W), acc1);
    }
    for (; i + W <= n; i += W) acc0 = V::fma(V::load(a + i), V::load(b + i), acc0);
    float s = V::hsum(V::add(acc0, acc1));
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
  }
  static void axpy_f32(float a, const float* x, float* y, size_t n) {
    const R av = V::set1(a);
    size_t i = 0;
    for (; i + W <= n; i += W) V::store(y + i, V::fma(av, V::load(x + i), V::load(y + i)));
    for (; i < n; ++i) y[i] += a * x[i];
  }
};

}  // namespace lmpress::kern::dense_x86
