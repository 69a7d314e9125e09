// AVX2 / AVX-VNNI prefill GEMM over the repacked layout (kernels/qrepack.h): the same bytes the
// AVX-512 VNNI kernel reads, taken as two 256-bit halves (rows 0-7 in bytes 0-31 of each 64-byte
// column-quad vector, rows 8-15 in bytes 32-63). Included by two translation units:
// x86_avx2/repack.cpp (LMP_AVXVNNI 0: repacked_gemm_avx2) and x86_avxvnni/repack.cpp (LMP_AVXVNNI 1,
// built with -mavxvnni: repacked_gemm_avxvnni, for CPUs with AVX2 + AVX-VNNI and no AVX-512, or
// the AVX2 level of those that have both).
//
// With AVX-VNNI, one VEX-encoded dpbusd accumulates the u8 x s8 products of a column quad straight
// into i32: every code width takes the same path, and the integer dot is exactly dot(u, a).
// Without it the u8 x s8 products go through maddubs (pairs summed into saturating i16) and
// madd by ones (i16 pairs into i32). How far i16 may accumulate depends on the largest code:
//  - codes <= 15 (2-, 3-, 4-bit containers): a unit's (up to 8) quads accumulate in i16
//    (8 x 2 x 15 x 127 < 2^15), one madd per unit;
//  - codes <= 63 (5-, 6-bit; ggml Q5_*, Q6_K): quads in pairs (2 x 2 x 63 x 127 < 2^15);
//  - larger codes (8-bit; ggml types with offset 128): the sign trick on v = u - 128, maddubs(|v|,
//    sign(a, v)) (pairs <= 2 x 128 x 127 < 2^15), and 128 x (sum of the unit's a) added back in
//    i32 (per-token sums precomputed with the activation panels), so the integer dot is exactly
//    dot(u, a) and the rest of the arithmetic is the VNNI kernel's.
// Micro-kernel: one 8-row half of a tile x kT tokens (16 ymm registers do not hold 16 rows' worth of
// accumulators); per 32-column block, column quads outer (each unpacked once per kT tokens),
// tokens inner.
#pragma once
#ifndef LMP_AVXVNNI
#error "define LMP_AVXVNNI (0 or 1) before including kernels/repack_x86_avx2.h"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/qrepack.h"
#include "lmpress/core.h"

namespace lmpress::kern {
namespace {

constexpr int kT = 8;                       // tokens per micro-kernel
constexpr int64_t kChunkBytes = 256 << 10;  // activation panel of one token chunk

enum class Codes { Small, Mid, Big };

struct Panels {
  std::vector<int8_t> qa;    // [tt][nb][kT][32]
  std::vector<float> d;      // [tt][nb][kT]
  std::vector<float> x;      // [tt][groups][kT]
  std::vector<int32_t> s;    // Codes::Big: [tt][nb][units][kT] = 128 x sum of the unit's a
};
Panels& panels() {
  thread_local Panels p;
  return p;
}

// Pins v in a register at this point. GCC otherwise re-associates an accumulation chain
// P += maddubs(...) over 8 quads x 4 tokens into a balanced tree, keeping all 32 products alive
// (spilled to the stack); chains of register accumulators are what the loop order is for.
inline void pin(__m256i& v) { __asm__("" : "+x"(v)); }

inline __m256i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Column quad j of one 8-row half (h = 0: rows 0-7, 1: rows 8-15) of a block's packed codes.
template <int CW>
inline __m256i quad(const uint8_t* c, int j, int h) {
  const int p = j % CW, s = (j / CW) * CW;
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 64 * p + 32 * h));
  if constexpr (CW == 8) {
    return v;
  } else {
    const __m256i m = _mm256_set1_epi8(char((1 << CW) - 1));
    return _mm256_and_si256(s ? _mm256_srli_epi16(v, s) : v, m);
  }
}

template <bool SF32>
inline __m256 load_scales8(const uint8_t* sc, int64_t k) {  // scales k .. k+7
  if constexpr (SF32) return _mm256_loadu_ps(reinterpret_cast<const float*>(sc) + k);
  else return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(sc) + k)));
}

// Integer dots of one unit (quads j0 .. j0+QN-1) for the 8 rows of half h x kT tokens: I[t].
template <int CW, int QN, Codes K>
inline void unit_dots(const uint8_t* c, const int8_t* ab, int j0, int h, __m256i (&I)[kT]) {
  const __m256i ones = _mm256_set1_epi16(1);
#if LMP_AVXVNNI
  (void)ones;
#pragma GCC unroll 8
  for (int t = 0; t < kT; ++t) I[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
  for (int j = j0; j < j0 + QN; ++j) {
    const __m256i w = quad<CW>(c, j, h);
#pragma GCC unroll 8
    for (int t = 0; t < kT; ++t) {
      I[t] = _mm256_dpbusd_avx_epi32(I[t], w, bcast4(ab + t * 32 + 4 * j));
      pin(I[t]);
    }
  }
  return;
#endif
  if constexpr (K == Codes::Small) {
    __m256i P[kT];
#pragma GCC unroll 8
    for (int t = 0; t < kT; ++t) P[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int j = j0; j < j0 + QN; ++j) {
      const __m256i w = quad<CW>(c, j, h);
#pragma GCC unroll 8
      for (int t = 0; t < kT; ++t) {
        P[t] = _mm256_add_epi16(P[t], _mm256_maddubs_epi16(w, bcast4(ab + t * 32 + 4 * j)));
        pin(P[t]);
      }
    }
#pragma GCC unroll 8
    for (int t = 0; t < kT; ++t) I[t] = _mm256_madd_epi16(P[t], ones);
  } else if constexpr (K == Codes::Mid) {
#pragma GCC unroll 8
    for (int t = 0; t < kT; ++t) I[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int j = j0; j < j0 + QN; j += 2) {
      const __m256i w0 = quad<CW>(c, j, h), w1 = quad<CW>(c, j + 1, h);
#pragma GCC unroll 8
      for (int t = 0; t < kT; ++t) {
        const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(w0, bcast4(ab + t * 32 + 4 * j)),
                                           _mm256_maddubs_epi16(w1, bcast4(ab + t * 32 + 4 * j + 4)));
        I[t] = _mm256_add_epi32(I[t], _mm256_madd_epi16(p, ones));
        pin(I[t]);
      }
    }
  } else {
    const __m256i flip = _mm256_set1_epi8(char(0x80));
#pragma GCC unroll 8
    for (int t = 0; t < kT; ++t) I[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int j = j0; j < j0 + QN; ++j) {
      const __m256i v = _mm256_xor_si256(quad<CW>(c, j, h), flip), m = _mm256_abs_epi8(v);
#pragma GCC unroll 8
      for (int t = 0; t < kT; ++t) {
        const __m256i a = bcast4(ab + t * 32 + 4 * j);
        I[t] = _mm256_add_epi32(I[t], _mm256_madd_epi16(_mm256_maddubs_epi16(m, _mm256_sign_epi8(a, v)), ones));
        pin(I[t]);
      }
    }
  }
}

// acc[t] (the 8 rows of half h) for one tile x kT tokens of a panel.
template <int CW, int UNITS, bool SF32, Codes K>
inline void micro(const QRepacked& P, const uint8_t* tile, int h, const int8_t* qa, const float* d, const float* X,
                  const int32_t* S128, __m256 (&acc)[kT]) {
  const uint8_t* codes = tile;
  const uint8_t* sc = tile + P.code_bytes;
  const float* corr = reinterpret_cast<const float*>(tile + P.code_bytes + P.scale_bytes);
#pragma GCC unroll 8
  for (int t = 0; t < kT; ++t) acc[t] = _mm256_setzero_ps();
  const int64_t nb = P.nb;
  constexpr int QN = 8 / UNITS;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* cb = codes + b * CW * 64;
    const int8_t* ab = qa + b * kT * 32;
    const float* db = d + b * kT;
#pragma GCC unroll 2
    for (int u = 0; u < UNITS; ++u) {
      __m256i I[kT];
      unit_dots<CW, QN, K>(cb, ab, u * QN, h, I);
      const __m256 S = load_scales8<SF32>(sc, (b * UNITS + u) * 16 + 8 * h);
#pragma GCC unroll 8
      for (int t = 0; t < kT; ++t) {
        __m256i i0 = I[t];
        if constexpr (K == Codes::Big) i0 = _mm256_add_epi32(i0, _mm256_set1_epi32(S128[(b * UNITS + u) * kT + t]));
        acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i0), S), _mm256_set1_ps(db[t]), acc[t]);
      }
    }
  }
  for (int64_t g = 0; g < P.groups; ++g) {
    const __m256 C = _mm256_loadu_ps(corr + g * 16 + 8 * h);
#pragma GCC unroll 8
    for (int t = 0; t < kT; ++t) acc[t] = _mm256_fmadd_ps(C, _mm256_set1_ps(X[g * kT + t]), acc[t]);
  }
}

// Stores the first nr rows of an 8-row half (nr <= 8).
inline void store_rows(float* y, __m256 v, int nr) {
  if (nr >= 8) {
    _mm256_storeu_ps(y, v);
  } else if (nr > 0) {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, v);
    std::memcpy(y, tmp, size_t(nr) * sizeof(float));
  }
}

template <int CW, int UNITS, bool SF32, Codes K>
void gemm_t(const QRepacked& P, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1, int64_t t0,
            int64_t t1) {
  const int64_t nb = P.nb, G = P.groups;
  Panels& pn = panels();
  const int64_t tok_bytes = nb * 32;
  const int64_t chunk = std::max<int64_t>(kT, (kChunkBytes / tok_bytes) / kT * kT);
  const int64_t k0 = r0 / kRepackRows, k1 = (r1 + kRepackRows - 1) / kRepackRows;
  constexpr int ulen = kQBlock / UNITS;
  for (int64_t tc = t0; tc < t1; tc += chunk) {
    const int64_t tce = std::min(t1, tc + chunk), ntt = (tce - tc + kT - 1) / kT;
    pn.qa.resize(size_t(ntt * nb * kT * 32));
    pn.d.resize(size_t(ntt * nb * kT));
    pn.x.resize(size_t(ntt * G * kT));
    if constexpr (K == Codes::Big) pn.s.resize(size_t(ntt * nb * UNITS * kT));
    fill_token_panels(P, a, tc, tce, kT, pn.qa.data(), pn.d.data(), pn.x.data());
    if constexpr (K == Codes::Big) {  // 128 x the sum of each unit's activations (the sign trick's term)
      for (int64_t tt = 0; tt < ntt; ++tt)
        for (int j = 0; j < kT; ++j) {
          const int8_t* src = pn.qa.data() + tt * nb * kT * 32 + j * 32;
          int32_t* sd = pn.s.data() + tt * nb * UNITS * kT + j;
          for (int64_t b = 0; b < nb; ++b)
            for (int u = 0; u < UNITS; ++u) {
              int32_t s = 0;
              for (int c = u * ulen; c < (u + 1) * ulen; ++c) s += src[b * kT * 32 + c];
              sd[(b * UNITS + u) * kT] = 128 * s;
            }
        }
    }
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t rb = k * kRepackRows;
      const int nr = int(std::min<int64_t>(kRepackRows, r1 - rb));
      const uint8_t* tile = P.tile(k);
      for (int h = 0; h < (nr > 8 ? 2 : 1); ++h)
        for (int64_t tt = 0; tt < ntt; ++tt) {
          __m256 acc[kT];
          micro<CW, UNITS, SF32, K>(P, tile, h, pn.qa.data() + tt * nb * kT * 32, pn.d.data() + tt * nb * kT,
                                    pn.x.data() + tt * G * kT,
                                    K == Codes::Big ? pn.s.data() + tt * nb * UNITS * kT : nullptr, acc);
          const int64_t tb = tc + tt * kT;
          const int nt = int(std::min<int64_t>(kT, tce - tb));
          for (int j = 0; j < nt; ++j) store_rows(y + (tb + j) * ldy + rb + 8 * h, acc[j], std::min(8, nr - 8 * h));
        }
    }
  }
}

template <int CW, bool SF32, Codes K>
void run_units(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1, int64_t t0,
               int64_t t1) {
  if (p.units == 2) gemm_t<CW, 2, SF32, K>(p, a, y, ldy, r0, r1, t0, t1);
  else gemm_t<CW, 1, SF32, K>(p, a, y, ldy, r0, r1, t0, t1);
}

}  // namespace

void LMP_REPACKED_GEMM_AVX2_NAME(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1,
                        int64_t t0, int64_t t1) {
  if (r0 >= r1 || t0 >= t1) return;
#if LMP_AVXVNNI
  switch (p.cw) {  // (dpbusd takes every code as it is: one path)
    case 2:
      return p.sf32 ? run_units<2, true, Codes::Small>(p, a, y, ldy, r0, r1, t0, t1)
                    : run_units<2, false, Codes::Small>(p, a, y, ldy, r0, r1, t0, t1);
    case 4:
      return p.sf32 ? run_units<4, true, Codes::Small>(p, a, y, ldy, r0, r1, t0, t1)
                    : run_units<4, false, Codes::Small>(p, a, y, ldy, r0, r1, t0, t1);
    default:
      return p.sf32 ? run_units<8, true, Codes::Small>(p, a, y, ldy, r0, r1, t0, t1)
                    : run_units<8, false, Codes::Small>(p, a, y, ldy, r0, r1, t0, t1);
  }
#else
  switch (p.cw) {
    case 2:
      return p.sf32 ? run_units<2, true, Codes::Small>(p, a, y, ldy, r0, r1, t0, t1)
                    : run_units<2, false, Codes::Small>(p, a, y, ldy, r0, r1, t0, t1);
    case 4:
      return p.sf32 ? run_units<4, true, Codes::Small>(p, a, y, ldy, r0, r1, t0, t1)
                    : run_units<4, false, Codes::Small>(p, a, y, ldy, r0, r1, t0, t1);
    default:
      if (p.code_max <= 63)
        return p.sf32 ? run_units<8, true, Codes::Mid>(p, a, y, ldy, r0, r1, t0, t1)
                      : run_units<8, false, Codes::Mid>(p, a, y, ldy, r0, r1, t0, t1);
      return p.sf32 ? run_units<8, true, Codes::Big>(p, a, y, ldy, r0, r1, t0, t1)
                    : run_units<8, false, Codes::Big>(p, a, y, ldy, r0, r1, t0, t1);
  }
#endif
}

}  // namespace lmpress::kern
