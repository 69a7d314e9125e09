// Dense kernels shared by the AVX2 and AVX-512 translation units, written once over a vector
// policy V (8 or 16 f32 lanes; see x86_avx2/dense.cpp and x86_avx512/dense.cpp for the policies).
// gemv processes 4 rows per pass so each x load feeds 4 FMAs (decode is memory-bound: the goal is
// to keep the weight stream saturated); two accumulators per row hide the FMA latency.
// Include only from a TU compiled with the ISA flags of its policy.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>
#include <algorithm>

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

  // ---- GEMM for f16 / bf16 weights (prefill where no AMX tile path runs; issue 9) ----
  // y[t * ldy + r] = sum_k W[r][k] x[t][k] for rows [r0, r1) and tokens [0, n). Per row panel of
  // NR = 2W rows and KC columns, the weights are converted (F16C / a shift for bf16) and transposed
  // once into an f32 panel P[k][NR] (8 x 8 in-register transposes) that stays in L1; a micro-kernel
  // of MR tokens x NR rows keeps 2 MR accumulators in registers: per column two panel loads, MR
  // broadcasts of x and 2 MR FMAs (the classic register-blocked outer product). The panel's
  // conversion is paid once for all n tokens, instead of converting whole panels to f32 in memory
  // and letting sgemm pack them again. Accumulation in f32 per KC chunk, chunks added in order.
  static constexpr int NR = int(2 * W);
  static constexpr int MR = W == 8 ? 6 : 12;
  static constexpr int64_t KC = 256;

  template <class L>
  static __m256 load8(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (std::is_same_v<L, LF16>) return _mm256_cvtph_ps(h);
    else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  // P[k * NR + i] = W row i (of nr valid rows), columns [0, kl); rows >= nr are 0.
  template <class L>
  static void pack_panel(const uint16_t* w, int64_t ld, int nr, int64_t kl, float* P) {
    int64_t k = 0;
    for (; k + 8 <= kl; k += 8) {
      for (int rb = 0; rb < NR; rb += 8) {
        __m256 r[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) r[i] = rb + i < nr ? load8<L>(w + (rb + i) * ld + k) : _mm256_setzero_ps();
        const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
        const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
        const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        float* d = P + k * NR + rb;
        _mm256_storeu_ps(d + 0 * NR, _mm256_permute2f128_ps(s0, s4, 0x20));
        _mm256_storeu_ps(d + 1 * NR, _mm256_permute2f128_ps(s1, s5, 0x20));
        _mm256_storeu_ps(d + 2 * NR, _mm256_permute2f128_ps(s2, s6, 0x20));
        _mm256_storeu_ps(d + 3 * NR, _mm256_permute2f128_ps(s3, s7, 0x20));
        _mm256_storeu_ps(d + 4 * NR, _mm256_permute2f128_ps(s0, s4, 0x31));
        _mm256_storeu_ps(d + 5 * NR, _mm256_permute2f128_ps(s1, s5, 0x31));
        _mm256_storeu_ps(d + 6 * NR, _mm256_permute2f128_ps(s2, s6, 0x31));
        _mm256_storeu_ps(d + 7 * NR, _mm256_permute2f128_ps(s3, s7, 0x31));
      }
    }
    for (; k < kl; ++k)
      for (int i = 0; i < NR; ++i) P[k * NR + i] = i < nr ? L::scalar(w[i * ld + k]) : 0.f;
  }
  // c[t * ldc + 0 .. NR) (+)= sum_k P[k][.] X[k][t], t < MT (X: the token tile's packed chunk, MR per k).
  template <int MT>
  static void micro(const float* P, const float* X, int64_t kl, float* c, int64_t ldc, bool add) {
    R a0[MT], a1[MT];
#pragma GCC unroll 12
    for (int t = 0; t < MT; ++t) a0[t] = a1[t] = V::zero();
    for (int64_t k = 0; k < kl; ++k) {
      const R w0 = V::load(P + k * NR), w1 = V::load(P + k * NR + W);
#pragma GCC unroll 12
      for (int t = 0; t < MT; ++t) {
        const R xb = V::set1(X[k * MR + t]);
        a0[t] = V::fma(w0, xb, a0[t]);
        a1[t] = V::fma(w1, xb, a1[t]);
      }
    }
#pragma GCC unroll 12
    for (int t = 0; t < MT; ++t) {
      if (add) {
        a0[t] = V::add(a0[t], V::load(c + t * ldc));
        a1[t] = V::add(a1[t], V::load(c + t * ldc + W));
      }
      V::store(c + t * ldc, a0[t]);
      V::store(c + t * ldc + W, a1[t]);
    }
  }
  template <int MT>
  static void micro_n(int mt, const float* P, const float* X, int64_t kl, float* c, int64_t ldc, bool add) {
    if constexpr (MT > 1) {
      if (mt < MT) return micro_n<MT - 1>(mt, P, X, kl, c, ldc, add);
    }
    micro<MT>(P, X, kl, c, ldc, add);
  }
  // Blocking: tokens in blocks of at most NB, of equal size (a multiple of MR: 128 tokens are one
  // block, 512 three; every block converts the weights once more); rows in blocks of MC (the block's
  // outputs, NB x MC f32 <= 256 KB, stay in L2 across the column chunks); per KC-column chunk the
  // activations' chunk is packed ([token tile][k][MR], <= 192 KB, L2) and each row panel's weights
  // are converted into P (L1), then every token tile runs the micro-kernel, adding into y after the
  // first chunk (a partial last panel goes through a scratch of NB x NR).
  static constexpr int64_t NB = 192;
  static_assert(NB % MR == 0);
  template <class L>
  static void gemm16(const uint16_t* Wm, int64_t cols, const float* x, int64_t n, float* y, int64_t ldy, int64_t r0,
                     int64_t r1) {
    thread_local std::vector<float> panel, xp, part;
    panel.resize(size_t(KC * NR));
    xp.resize(size_t(NB * KC));
    part.resize(size_t(NB * NR));
    const int64_t nblk = (n + NB - 1) / NB;
    const int64_t NBn = std::min(NB, ((n + nblk - 1) / std::max<int64_t>(1, nblk) + MR - 1) / MR * MR);
    for (int64_t tb = 0; tb < n; tb += NBn) {
      const int64_t nb = std::min(NBn, n - tb), ntt = (nb + MR - 1) / MR;
      const int64_t MC = std::max<int64_t>(NR, (int64_t(65536) / nb) / NR * NR);
      for (int64_t m0 = r0; m0 < r1; m0 += MC) {
        const int64_t m1 = std::min(r1, m0 + MC);
        for (int64_t kc = 0; kc < cols; kc += KC) {
          const int64_t kl = std::min(KC, cols - kc);
          for (int64_t tt = 0; tt < ntt; ++tt) {
            float* d = xp.data() + tt * KC * MR;
            const int mt = int(std::min<int64_t>(MR, nb - tt * MR));
            for (int t = 0; t < mt; ++t) {
              const float* s = x + (tb + tt * MR + t) * cols + kc;
              for (int64_t k = 0; k < kl; ++k) d[k * MR + t] = s[k];
            }
          }
          for (int64_t p0 = m0; p0 < m1; p0 += NR) {
            const int nr = int(std::min<int64_t>(NR, m1 - p0));
            float* c = nr < NR ? part.data() : y + tb * ldy + p0;
            const int64_t ldc = nr < NR ? NR : ldy;
            pack_panel<L>(Wm + p0 * cols + kc, cols, nr, kl, panel.data());
            for (int64_t tt = 0; tt < ntt; ++tt) {
              const int mt = int(std::min<int64_t>(MR, nb - tt * MR));
              micro_n<MR>(mt, panel.data(), xp.data() + tt * KC * MR, kl, c + tt * MR * ldc, ldc, kc > 0);
            }
            if (nr < NR && kc + KC >= cols)
              for (int64_t t = 0; t < nb; ++t)
                std::memcpy(y + (tb + t) * ldy + p0, part.data() + t * NR, size_t(nr) * sizeof(float));
          }
        }
      }
    }
  }
  static void gemm_f16(const uint16_t* Wm, int64_t cols, const float* x, int64_t n, float* y, int64_t ldy, int64_t r0,
                       int64_t r1) {
    gemm16<LF16>(Wm, cols, x, n, y, ldy, r0, r1);
  }
  static void gemm_bf16(const uint16_t* Wm, int64_t cols, const float* x, int64_t n, float* y, int64_t ldy,
                        int64_t r0, int64_t r1) {
    gemm16<LBF16>(Wm, cols, x, n, y, ldy, r0, r1);
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
