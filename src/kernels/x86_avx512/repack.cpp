// AVX-512 VNNI prefill GEMM over the repacked int-family layout (kernels/qrepack.h).
//
// Micro-kernel: one 16-row tile x T tokens. Per 32-column block the tile's codes are unpacked once
// into 8 zmm (one shift + one mask each, none for 8-bit containers); per token, 8 dpbusd take those
// vectors against 4-byte broadcasts of the token's int8 activations (the broadcast folds into the
// instruction's memory operand), so the 16 lanes hold the 16 rows' integer block dots; then one
// convert, one multiply by the rows' unit scales and one FMA by the token's block scale d. The
// zero-point terms corr_g X[t][g] are added per group after the block loop.
// Activations are first copied into token-tile panels ([tile][block][T][32] bytes, d and X
// likewise) so the micro-kernel addresses every token from one pointer.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/peak_rate.h"
#include "kernels/qrepack.h"
#include "lmpress/core.h"

namespace lmpress::kern {
namespace {

constexpr int kT = 8;                       // tokens per micro-kernel
constexpr int64_t kChunkBytes = 512 << 10;  // activation panel of one token chunk (L2)

struct Panels {
  std::vector<int8_t> qa;  // [tt][nb][kT][32]
  std::vector<float> d;    // [tt][nb][kT]
  std::vector<float> x;    // [tt][groups][kT]
};
Panels& panels() {
  thread_local Panels p;
  return p;
}

template <int CW>
inline void unpack_codes(const uint8_t* c, __m512i (&W)[8]) {
  if constexpr (CW == 8) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) W[j] = _mm512_loadu_si512(c + 64 * j);
  } else {
    const __m512i m = _mm512_set1_epi8(char((1 << CW) - 1));
    __m512i P[CW];
#pragma GCC unroll 4
    for (int p = 0; p < CW; ++p) P[p] = _mm512_loadu_si512(c + 64 * p);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const int p = j % CW, s = (j / CW) * CW;
      W[j] = _mm512_and_si512(s ? _mm512_srli_epi16(P[p], s) : P[p], m);
    }
  }
}

inline __m512i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// acc[t] (16 rows) for one tile x kT tokens of a panel.
template <bool SF32>
inline __m512 load_scales(const uint8_t* sc, int64_t k) {  // scales k .. k+15
  if constexpr (SF32) return _mm512_loadu_ps(reinterpret_cast<const float*>(sc) + k);
  else return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const uint16_t*>(sc) + k)));
}

template <int CW, int UNITS, bool SF32>
inline void micro(const QRepacked& P, const uint8_t* tile, const int8_t* qa, const float* d, const float* X,
                  __m512 (&acc)[kT]) {
  const uint8_t* codes = tile;
  const uint8_t* sc = tile + P.code_bytes;
  const float* corr = reinterpret_cast<const float*>(tile + P.code_bytes + P.scale_bytes);
#pragma GCC unroll 8
  for (int t = 0; t < kT; ++t) acc[t] = _mm512_setzero_ps();
  const int64_t nb = P.nb;
  for (int64_t b = 0; b < nb; ++b) {
    __m512i W[8];
    unpack_codes<CW>(codes + b * CW * 64, W);
    const int8_t* ab = qa + b * kT * 32;
    const float* db = d + b * kT;
    if constexpr (UNITS == 1) {
      const __m512 S = load_scales<SF32>(sc, b * 16);
#pragma GCC unroll 8
      for (int t = 0; t < kT; ++t) {
        const int8_t* at = ab + t * 32;
        __m512i i0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[0], bcast4(at));
        __m512i i1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[1], bcast4(at + 4));
        i0 = _mm512_dpbusd_epi32(i0, W[2], bcast4(at + 8));
        i1 = _mm512_dpbusd_epi32(i1, W[3], bcast4(at + 12));
        i0 = _mm512_dpbusd_epi32(i0, W[4], bcast4(at + 16));
        i1 = _mm512_dpbusd_epi32(i1, W[5], bcast4(at + 20));
        i0 = _mm512_dpbusd_epi32(i0, W[6], bcast4(at + 24));
        i1 = _mm512_dpbusd_epi32(i1, W[7], bcast4(at + 28));
        const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), S);
        acc[t] = _mm512_fmadd_ps(f, _mm512_set1_ps(db[t]), acc[t]);
      }
    } else {
      const __m512 S0 = load_scales<SF32>(sc, b * 32);
      const __m512 S1 = load_scales<SF32>(sc, b * 32 + 16);
#pragma GCC unroll 8
      for (int t = 0; t < kT; ++t) {
        const int8_t* at = ab + t * 32;
        __m512i i0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[0], bcast4(at));
        __m512i i1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[4], bcast4(at + 16));
        i0 = _mm512_dpbusd_epi32(i0, W[1], bcast4(at + 4));
        i1 = _mm512_dpbusd_epi32(i1, W[5], bcast4(at + 20));
        i0 = _mm512_dpbusd_epi32(i0, W[2], bcast4(at + 8));
        i1 = _mm512_dpbusd_epi32(i1, W[6], bcast4(at + 24));
        i0 = _mm512_dpbusd_epi32(i0, W[3], bcast4(at + 12));
        i1 = _mm512_dpbusd_epi32(i1, W[7], bcast4(at + 28));
        const __m512 f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), S0, _mm512_mul_ps(_mm512_cvtepi32_ps(i1), S1));
        acc[t] = _mm512_fmadd_ps(f, _mm512_set1_ps(db[t]), acc[t]);
      }
    }
  }
  for (int64_t g = 0; g < P.groups; ++g) {
    const __m512 C = _mm512_loadu_ps(corr + g * 16);
#pragma GCC unroll 8
    for (int t = 0; t < kT; ++t) acc[t] = _mm512_fmadd_ps(C, _mm512_set1_ps(X[g * kT + t]), acc[t]);
  }
}

template <int CW, int UNITS, bool SF32>
void gemm_t(const QRepacked& P, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1, int64_t t0,
            int64_t t1) {
  const int64_t nb = P.nb, G = P.groups;
  Panels& pn = panels();
  const int64_t tok_bytes = nb * 32;
  const int64_t chunk = std::max<int64_t>(kT, (kChunkBytes / tok_bytes) / kT * kT);
  const int64_t k0 = r0 / kRepackRows, k1 = (r1 + kRepackRows - 1) / kRepackRows;
  for (int64_t tc = t0; tc < t1; tc += chunk) {
    const int64_t tce = std::min(t1, tc + chunk), ntt = (tce - tc + kT - 1) / kT;
    pn.qa.resize(size_t(ntt * nb * kT * 32));
    pn.d.resize(size_t(ntt * nb * kT));
    pn.x.resize(size_t(ntt * G * kT));
    fill_token_panels(P, a, tc, tce, kT, pn.qa.data(), pn.d.data(), pn.x.data());
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t rb = k * kRepackRows;
      const int nr = int(std::min<int64_t>(kRepackRows, r1 - rb));
      const __mmask16 rm = __mmask16((1u << nr) - 1u);
      const uint8_t* tile = P.tile(k);
      for (int64_t tt = 0; tt < ntt; ++tt) {
        __m512 acc[kT];
        micro<CW, UNITS, SF32>(P, tile, pn.qa.data() + tt * nb * kT * 32, pn.d.data() + tt * nb * kT,
                         pn.x.data() + tt * G * kT, acc);
        const int64_t tb = tc + tt * kT;
        const int nt = int(std::min<int64_t>(kT, tce - tb));
        for (int j = 0; j < nt; ++j) _mm512_mask_storeu_ps(y + (tb + j) * ldy + rb, rm, acc[j]);
      }
    }
  }
}

}  // namespace

void repacked_gemm_avx512(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1,
                          int64_t t0, int64_t t1) {
  if (r0 >= r1 || t0 >= t1) return;
  repacked_dispatch(p, [&](auto cw, auto units, auto sf) {
    gemm_t<cw.value, units.value, sf.value>(p, a, y, ldy, r0, r1, t0, t1);
  });
}

namespace {
constexpr int kPeakChains = 12;  // > latency x throughput of vpdpbusd
// r rounds of kPeakChains independent vpdpbusd (no call inside: the chains stay in registers).
__attribute__((noipa)) int peak_rounds(int64_t r, int8_t wv, int8_t av) {
  __m512i acc[kPeakChains];
#pragma GCC unroll 12
  for (int j = 0; j < kPeakChains; ++j) acc[j] = _mm512_setzero_si512();
  __m512i w = _mm512_set1_epi8(wv), a = _mm512_set1_epi8(av);
  for (int64_t i = 0; i < r; ++i) {
    __asm__("" : "+v"(w), "+v"(a));  // opaque each round: the products are not hoisted
#pragma GCC unroll 12
    for (int j = 0; j < kPeakChains; ++j) {
      acc[j] = _mm512_dpbusd_epi32(acc[j], w, a);
      __asm__("" : "+v"(acc[j]));
    }
  }
  int s = 0;
#pragma GCC unroll 12
  for (int j = 0; j < kPeakChains; ++j) s += _mm_cvtsi128_si32(_mm512_castsi512_si128(acc[j]));
  return s;
}
}  // namespace

double int8_peak_gops_avx512(double seconds) {
  volatile int sink = 0;
  return peak_rate(seconds, double(1 << 14) * kPeakChains * 64 * 2,
                   [&] { sink = sink + peak_rounds(1 << 14, 3, -2); });
}

}  // namespace lmpress::kern
