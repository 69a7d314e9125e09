// AVX2 prefill GEMM over the repacked layout (kernels/qrepack.h): the same bytes the AVX-512 VNNI
// kernel reads, taken as two 256-bit halves (rows 0-7 in bytes 0-31 of each 64-byte column-quad
// vector, rows 8-15 in bytes 32-63).
//
// Without dpbusd the u8 x s8 products go through maddubs (pairs summed into saturating i16) and
// madd by ones (i16 pairs into i32). How far i16 may accumulate depends on the largest code:
//  - codes <= 15 (2-, 3-, 4-bit containers): a unit's (up to 8) quads accumulate in i16
//    (8 x 2 x 15 x 127 < 2^15), one madd per unit;
//  - codes <= 63 (5-, 6-bit; ggml Q5_*, Q6_K): quads in pairs (2 x 2 x 63 x 127 < 2^15);
//  - larger codes (8-bit; ggml types with offset 128): the sign trick on v = u - 128, maddubs(|v|,
//    sign(a, v)) (pairs <= 2 x 128 x 127 < 2^15), and 128 x (sum of the unit's a) added back in
//    i32 (per-token sums precomputed with the activation panels), so the integer dot is exactly
//    dot(u, a) and the rest of the arithmetic is the VNNI kernel's.
// Loop order per 32-column block: column quads outer (each unpacked once per T tokens), tokens
// inner (each 4-byte activation broadcast feeds both 8-row halves).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/qrepack.h"

namespace lmpress::kern {
namespace {

constexpr int kT = 4;                       // tokens per micro-kernel
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

// Integer dots of one unit (quads j0 .. j0+QN-1) for 16 rows x kT tokens: I[h][t] (i32 lanes).
template <int CW, int QN, Codes K>
inline void unit_dots(const uint8_t* c, const int8_t* ab, int j0, __m256i (&I)[2][kT]) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (K == Codes::Small) {
    __m256i P[2][kT];
#pragma GCC unroll 4
    for (int t = 0; t < kT; ++t) P[0][t] = P[1][t] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int j = j0; j < j0 + QN; ++j) {
      const __m256i w0 = quad<CW>(c, j, 0), w1 = quad<CW>(c, j, 1);
#pragma GCC unroll 4
      for (int t = 0; t < kT; ++t) {
        const __m256i a = bcast4(ab + t * 32 + 4 * j);
        P[0][t] = _mm256_add_epi16(P[0][t], _mm256_maddubs_epi16(w0, a));
        P[1][t] = _mm256_add_epi16(P[1][t], _mm256_maddubs_epi16(w1, a));
      }
    }
#pragma GCC unroll 4
    for (int t = 0; t < kT; ++t) {
      I[0][t] = _mm256_madd_epi16(P[0][t], ones);
      I[1][t] = _mm256_madd_epi16(P[1][t], ones);
    }
  } else if constexpr (K == Codes::Mid) {
#pragma GCC unroll 4
    for (int t = 0; t < kT; ++t) I[0][t] = I[1][t] = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int j = j0; j < j0 + QN; j += 2) {
      const __m256i w00 = quad<CW>(c, j, 0), w01 = quad<CW>(c, j + 1, 0);
      const __m256i w10 = quad<CW>(c, j, 1), w11 = quad<CW>(c, j + 1, 1);
#pragma GCC unroll 4
      for (int t = 0; t < kT; ++t) {
        const __m256i a0 = bcast4(ab + t * 32 + 4 * j), a1 = bcast4(ab + t * 32 + 4 * j + 4);
        const __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(w00, a0), _mm256_maddubs_epi16(w01, a1));
        const __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(w10, a0), _mm256_maddubs_epi16(w11, a1));
        I[0][t] = _mm256_add_epi32(I[0][t], _mm256_madd_epi16(p0, ones));
        I[1][t] = _mm256_add_epi32(I[1][t], _mm256_madd_epi16(p1, ones));
      }
    }
  } else {
    const __m256i flip = _mm256_set1_epi8(char(0x80));
#pragma GCC unroll 4
    for (int t = 0; t < kT; ++t) I[0][t] = I[1][t] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int j = j0; j < j0 + QN; ++j) {
      const __m256i v0 = _mm256_xor_si256(quad<CW>(c, j, 0), flip), v1 = _mm256_xor_si256(quad<CW>(c, j, 1), flip);
      const __m256i m0 = _mm256_abs_epi8(v0), m1 = _mm256_abs_epi8(v1);
#pragma GCC unroll 4
      for (int t = 0; t < kT; ++t) {
        const __m256i a = bcast4(ab + t * 32 + 4 * j);
        I[0][t] = _mm256_add_epi32(I[0][t], _mm256_madd_epi16(_mm256_maddubs_epi16(m0, _mm256_sign_epi8(a, v0)), ones));
        I[1][t] = _mm256_add_epi32(I[1][t], _mm256_madd_epi16(_mm256_maddubs_epi16(m1, _mm256_sign_epi8(a, v1)), ones));
      }
    }
  }
}

// acc[h][t] (8 rows each) for one tile x kT tokens of a panel.
template <int CW, int UNITS, bool SF32, Codes K>
inline void micro(const QRepacked& P, const uint8_t* tile, const int8_t* qa, const float* d, const float* X,
                  const int32_t* S128, __m256 (&acc)[2][kT]) {
  const uint8_t* codes = tile;
  const uint8_t* sc = tile + P.code_bytes;
  const float* corr = reinterpret_cast<const float*>(tile + P.code_bytes + P.scale_bytes);
#pragma GCC unroll 4
  for (int t = 0; t < kT; ++t) acc[0][t] = acc[1][t] = _mm256_setzero_ps();
  const int64_t nb = P.nb;
  constexpr int QN = 8 / UNITS;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* cb = codes + b * CW * 64;
    const int8_t* ab = qa + b * kT * 32;
    const float* db = d + b * kT;
#pragma GCC unroll 2
    for (int u = 0; u < UNITS; ++u) {
      __m256i I[2][kT];
      unit_dots<CW, QN, K>(cb, ab, u * QN, I);
      const __m256 S0 = load_scales8<SF32>(sc, (b * UNITS + u) * 16);
      const __m256 S1 = load_scales8<SF32>(sc, (b * UNITS + u) * 16 + 8);
#pragma GCC unroll 4
      for (int t = 0; t < kT; ++t) {
        __m256i i0 = I[0][t], i1 = I[1][t];
        if constexpr (K == Codes::Big) {
          const __m256i s = _mm256_set1_epi32(S128[(b * UNITS + u) * kT + t]);
          i0 = _mm256_add_epi32(i0, s);
          i1 = _mm256_add_epi32(i1, s);
        }
        const __m256 dt = _mm256_set1_ps(db[t]);
        acc[0][t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i0), S0), dt, acc[0][t]);
        acc[1][t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i1), S1), dt, acc[1][t]);
      }
    }
  }
  for (int64_t g = 0; g < P.groups; ++g) {
    const __m256 C0 = _mm256_loadu_ps(corr + g * 16), C1 = _mm256_loadu_ps(corr + g * 16 + 8);
#pragma GCC unroll 4
    for (int t = 0; t < kT; ++t) {
      const __m256 xt = _mm256_set1_ps(X[g * kT + t]);
      acc[0][t] = _mm256_fmadd_ps(C0, xt, acc[0][t]);
      acc[1][t] = _mm256_fmadd_ps(C1, xt, acc[1][t]);
    }
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
  const int64_t nb = P.nb, G = P.groups, n = a.n;
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
    // Panels: tokens past the chunk repeat its last token (their results are not stored).
    for (int64_t tt = 0; tt < ntt; ++tt) {
      for (int j = 0; j < kT; ++j) {
        const int64_t t = std::min(tce - 1, tc + tt * kT + j);
        const int8_t* src = a.qa + t * a.a_stride;
        int8_t* dst = pn.qa.data() + tt * nb * kT * 32 + j * 32;
        for (int64_t b = 0; b < nb; ++b) std::memcpy(dst + b * kT * 32, src + b * 32, 32);
        float* dd = pn.d.data() + tt * nb * kT + j;
        for (int64_t b = 0; b < nb; ++b) dd[b * kT] = a.d[b * n + t];
        float* xd = pn.x.data() + tt * G * kT + j;
        if (P.xsum == 2) {
          for (int64_t g = 0; g < G; ++g) xd[g * kT] = a.x[(t * G + g) * 2] + a.x[(t * G + g) * 2 + 1];
        } else {
          for (int64_t g = 0; g < G; ++g) xd[g * kT] = a.x[t * G + g];
        }
        if constexpr (K == Codes::Big) {
          int32_t* sd = pn.s.data() + tt * nb * UNITS * kT + j;
          for (int64_t b = 0; b < nb; ++b)
            for (int u = 0; u < UNITS; ++u) {
              int32_t s = 0;
              for (int c = u * ulen; c < (u + 1) * ulen; ++c) s += src[b * 32 + c];
              sd[(b * UNITS + u) * kT] = 128 * s;
            }
        }
      }
    }
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t rb = k * kRepackRows;
      const int nr = int(std::min<int64_t>(kRepackRows, r1 - rb));
      const uint8_t* tile = P.tile(k);
      for (int64_t tt = 0; tt < ntt; ++tt) {
        __m256 acc[2][kT];
        micro<CW, UNITS, SF32, K>(P, tile, pn.qa.data() + tt * nb * kT * 32, pn.d.data() + tt * nb * kT,
                                  pn.x.data() + tt * G * kT,
                                  K == Codes::Big ? pn.s.data() + tt * nb * UNITS * kT : nullptr, acc);
        const int64_t tb = tc + tt * kT;
        const int nt = int(std::min<int64_t>(kT, tce - tb));
        for (int j = 0; j < nt; ++j) {
          float* yr = y + (tb + j) * ldy + rb;
          store_rows(yr, acc[0][j], std::min(nr, 8));
          store_rows(yr + 8, acc[1][j], nr - 8);
        }
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

void repacked_gemm_avx2(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1,
                        int64_t t0, int64_t t1) {
  if (r0 >= r1 || t0 >= t1) return;
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
}

}  // namespace lmpress::kern
