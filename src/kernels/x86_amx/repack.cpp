// AMX int8 prefill GEMM over the repacked int-family layout (kernels/qrepack.h).
//
// The repacked tile's code vectors are already AMX's "VNNI" B-operand layout: for one 32-column
// block, vector j (64 bytes) holds codes 4j..4j+3 of each of the tile's 16 rows, i.e. row j of a
// B tile of 8 rows x 64 bytes (K = 32, N = 16 output rows). So:
//   A = 16 tokens x 32 int8 activations of block b (from QActs::panel, 512 contiguous bytes per
//       16-token block, where the front end built it; else from qa's rows with their stride),
//   B = the block's 8 code rows (unsigned; unpacked from their cw-bit container once per 16-row
//       tile into a scratch copy, or read in place for 8-bit containers),
//   C = TDPBSUD(A signed, B unsigned): the 16 x 16 integer block dots,
// then, exactly as the VNNI kernel: y[t][r] += d[t][b] * S[r][u] * C[t][r] in f32, and the
// zero-point terms corr_g X[t][g] after the block loop. Where the zero-point terms are exactly
// -offset x scale (symmetric formats, ggml types without mins: QRepacked::code_offset), the
// codes are unpacked as signed u - offset and multiplied by TDPBSSD instead, and the zero-point
// pass disappears (the integer dots absorb it exactly; only float rounding differs). Units of 16 columns (group 16, and the
// ggml types whose 32-blocks hold two 16-column sub-blocks with their own scales) use K = 16
// tiles, one product per half. Results equal the scalar reference up to float summation order.
//
// Two blocks (or two halves) per step in tiles 0-2 and 3-5; the products of step i are scaled
// during step i + 1 (software pipeline through two stored-result buffers). Tail tokens (n % 16) are copied into a zero-
// padded 16-token panel: tiles never read past the activations. Each thread loads its tile
// configuration only when it changes (kernels/amx_tiles.h).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/amx_tiles.h"
#include "kernels/qrepack.h"
#include "lmpress/core.h"

namespace lmpress::kern {
namespace {

constexpr int kTok = 16;  // tokens per A tile (the tile's rows)

inline void load_config(int units) { amx::load(units == 1 ? 1 : 2); }

// One block's 8 code vectors from their container into u8 (off = 0) or s8 codes - off.
template <int CW>
inline void unpack_block(const uint8_t* c, uint8_t* dst, __m512i off) {
  if constexpr (CW == 8) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) _mm512_storeu_si512(dst + 64 * j, _mm512_sub_epi8(_mm512_loadu_si512(c + 64 * j), off));
  } else {
    const __m512i m = _mm512_set1_epi8(char((1 << CW) - 1));
    __m512i P[CW];
#pragma GCC unroll 4
    for (int p = 0; p < CW; ++p) P[p] = _mm512_loadu_si512(c + 64 * p);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const int p = j % CW, s = (j / CW) * CW;
      const __m512i u = _mm512_and_si512(s ? _mm512_srli_epi16(P[p], s) : P[p], m);
      _mm512_storeu_si512(dst + 64 * j, _mm512_sub_epi8(u, off));
    }
  }
}

// C += A B: activations (signed) by codes, signed (SG) or unsigned.
#define LMP_AMX_DP(SG, c, a, b) \
  do {                          \
    if constexpr (SG)           \
      _tile_dpbssd(c, a, b);    \
    else                        \
      _tile_dpbsud(c, a, b);    \
  } while (0)

template <bool SF32>
inline __m512 load_scales(const uint8_t* sc, int64_t k) {  // scales k .. k+15
  if constexpr (SF32) return _mm512_loadu_ps(reinterpret_cast<const float*>(sc) + k);
  else
    return _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const uint16_t*>(sc) + k)));
}

struct Scratch {
  std::vector<uint8_t> codes;  // [nb][8][64] unpacked codes of one tile
  std::vector<int8_t> tail;     // [16][nb*32] tail tokens
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

using CTile = int32_t[kTok][16];

// acc[t] += (C0[t] * S0) * d0[t] + (C1[t] * S1) * d1[t]: two stored C tiles (two blocks, or the
// two 16-column halves of one block with d0 = d1).
inline void scale_add2(const CTile& c0, const CTile& c1, __m512 S0, __m512 S1, const float* d0, const float* d1,
                       int64_t dts, __m512 (&acc)[kTok]) {
#pragma GCC unroll 16
  for (int t = 0; t < kTok; ++t) {
    const __m512 f0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c0[t])), S0);
    const __m512 f1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c1[t])), S1);
    acc[t] = _mm512_fmadd_ps(f0, _mm512_set1_ps(d0[t * dts]), acc[t]);
    acc[t] = _mm512_fmadd_ps(f1, _mm512_set1_ps(d1[t * dts]), acc[t]);
  }
}
inline void scale_add1(const CTile& c0, __m512 S0, const float* d0, int64_t dts, __m512 (&acc)[kTok]) {
#pragma GCC unroll 16
  for (int t = 0; t < kTok; ++t) {
    const __m512 f0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c0[t])), S0);
    acc[t] = _mm512_fmadd_ps(f0, _mm512_set1_ps(d0[t * dts]), acc[t]);
  }
}
// UNITS 2: one block, two halves with their own scales: f = C0 S0 + C1 S1, then * d.
inline void scale_add_halves(const CTile& c0, const CTile& c1, __m512 S0, __m512 S1, const float* d, int64_t dts,
                             __m512 (&acc)[kTok]) {
#pragma GCC unroll 16
  for (int t = 0; t < kTok; ++t) {
    const __m512 f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c0[t])), S0,
                                     _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c1[t])), S1));
    acc[t] = _mm512_fmadd_ps(f, _mm512_set1_ps(d[t * dts]), acc[t]);
  }
}

// Two independent tile products into two stored C tiles: o0 = A(a0) B(b0), o1 = A(a1) B(b1) (tiles
// 0-2 and 3-5; the stores wait for the products, the caller scales the previous pair meanwhile).
template <bool SG>
inline void products2(const int8_t* a0, const uint8_t* b0, const int8_t* a1, const uint8_t* b1, int64_t astride,
                      CTile& o0, CTile& o1) {
  _tile_loadd(0, a0, astride);
  _tile_loadd(1, b0, 64);
  _tile_zero(2);
  _tile_loadd(3, a1, astride);
  _tile_loadd(4, b1, 64);
  _tile_zero(5);
  LMP_AMX_DP(SG, 2, 0, 1);
  LMP_AMX_DP(SG, 5, 3, 4);
  _tile_stored(2, o0, 64);
  _tile_stored(5, o1, 64);
}

// One 16-row tile x 16 tokens. a: token 0's block-0 activations, astride between tokens, ablk
// between blocks (32 in QActs::qa's rows, 512 in its A-tile panel); d: token 0's block-0 scale,
// d[b * dbs + t * dts].
// Software pipeline: step i issues the tile products of pair i (blocks 2i, 2i+1, or the halves
// of block i) and stores them into buffer i % 2, then scales pair i - 1's stored results, so the
// vector units work while the tile unit computes (the stores wait for the products, the scaling
// does not).
template <int UNITS, bool SF32, bool SG>
inline void micro(const QRepacked& P, const uint8_t* tile, const uint8_t* codes, const int8_t* a, int64_t astride,
                  int64_t ablk, const float* d, int64_t dbs, int64_t dts, __m512 (&acc)[kTok]) {
  const uint8_t* sc = tile + P.code_bytes;
  alignas(64) int32_t cb[2][2][kTok][16];
#pragma GCC unroll 16
  for (int t = 0; t < kTok; ++t) acc[t] = _mm512_setzero_ps();
  const int64_t nb = P.nb;
  if constexpr (UNITS == 1) {
    const int64_t np = nb / 2;  // full pairs
    for (int64_t i = 0; i <= np; ++i) {
      if (i < np) {
        const int64_t b = 2 * i;
        products2<SG>(a + b * ablk, codes + b * 512, a + (b + 1) * ablk, codes + (b + 1) * 512, astride,
                      cb[i & 1][0], cb[i & 1][1]);
      }
      if (i > 0) {
        const int64_t b = 2 * (i - 1);
        scale_add2(cb[(i - 1) & 1][0], cb[(i - 1) & 1][1], load_scales<SF32>(sc, b * 16),
                   load_scales<SF32>(sc, (b + 1) * 16), d + b * dbs, d + (b + 1) * dbs, dts, acc);
      }
    }
    if (nb & 1) {
      const int64_t b = nb - 1;
      _tile_loadd(0, a + b * ablk, astride);
      _tile_loadd(1, codes + b * 512, 64);
      _tile_zero(2);
      LMP_AMX_DP(SG, 2, 0, 1);
      _tile_stored(2, cb[0][0], 64);
      scale_add1(cb[0][0], load_scales<SF32>(sc, b * 16), d + b * dbs, dts, acc);
    }
  } else {
    for (int64_t i = 0; i <= nb; ++i) {
      if (i < nb) {
        const int64_t b = i;
        products2<SG>(a + b * ablk, codes + b * 512, a + b * ablk + 16, codes + b * 512 + 256, astride,
                      cb[i & 1][0], cb[i & 1][1]);
      }
      if (i > 0) {
        const int64_t b = i - 1;
        scale_add_halves(cb[(i - 1) & 1][0], cb[(i - 1) & 1][1], load_scales<SF32>(sc, b * 32),
                         load_scales<SF32>(sc, b * 32 + 16), d + b * dbs, dts, acc);
      }
    }
  }
}

template <int CW, int UNITS, bool SF32, bool SG>
void gemm_t(const QRepacked& P, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1, int64_t t0,
            int64_t t1) {
  load_config(UNITS);
  Scratch& S = scratch();
  const int64_t nb = P.nb, G = P.groups, n = a.n;
  if (CW != 8 || SG) S.codes.resize(size_t(nb * 512));
  const int64_t k0 = r0 / kRepackRows, k1 = (r1 + kRepackRows - 1) / kRepackRows;
  // Activations from QActs::panel (16-token blocks, aligned: t0 a multiple of 16) or from qa's rows.
  const bool panel = a.panel && t0 % kTok == 0;
  // Tail tokens: their scales (and, without the panel, their activations) in a zero-padded block.
  const int64_t nfull = (t1 - t0) / kTok * kTok, ntail = (t1 - t0) - nfull;
  std::vector<float> dtail;
  if (ntail) {
    if (!panel) S.tail.assign(size_t(kTok * nb * 32), 0);
    dtail.assign(size_t(nb * kTok), 0.f);
    for (int64_t j = 0; j < ntail; ++j) {
      const int64_t t = t0 + nfull + j;
      if (!panel) std::memcpy(S.tail.data() + j * nb * 32, a.qa + t * a.a_stride, size_t(nb * 32));
      for (int64_t b = 0; b < nb; ++b) dtail[size_t(b * kTok + j)] = a.d[b * n + t];
    }
    amx::stores_before_tile_loads();
  }
  // Token chunks so one chunk's activations stay in L2 while every row tile passes over them.
  const int64_t tok_bytes = a.a_stride;
  const int64_t chunk = std::max<int64_t>(kTok, (int64_t(768) << 10) / tok_bytes / kTok * kTok);
  for (int64_t tc = t0; tc < t1; tc += chunk) {
    const int64_t tce = std::min(t1, tc + chunk);
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t rb = k * kRepackRows;
      const int nr = int(std::min<int64_t>(kRepackRows, r1 - rb));
      const __mmask16 rm = __mmask16((1u << nr) - 1u);
      const uint8_t* tile = P.tile(k);
      const uint8_t* codes = tile;
      if (CW != 8 || SG) {
        const __m512i off = _mm512_set1_epi8(SG ? char(P.code_offset) : char(0));
        for (int64_t b = 0; b < nb; ++b) unpack_block<CW>(tile + b * CW * 64, S.codes.data() + b * 512, off);
        codes = S.codes.data();
      }
      amx::stores_before_tile_loads();
      const float* corr = reinterpret_cast<const float*>(tile + P.code_bytes + P.scale_bytes);
      for (int64_t tb = tc; tb < tce; tb += kTok) {
        const bool tail = tb >= t0 + nfull;
        const int nt = int(std::min<int64_t>(kTok, tce - tb));
        __m512 acc[kTok];
        // A: the panel's 16-token block, qa's rows, or the zero-padded tail copy; d: the tail's own scales.
        const int8_t* A = panel ? a.panel + (tb / kTok) * nb * 512 : tail ? S.tail.data() : a.qa + tb * a.a_stride;
        const int64_t astride = panel ? 32 : tail ? nb * 32 : a.a_stride, ablk = panel ? 512 : 32;
        micro<UNITS, SF32, SG>(P, tile, codes, A, astride, ablk, tail ? dtail.data() : a.d + tb, tail ? kTok : n, 1,
                               acc);
        // Zero points: per group, X[t][g] (ggml: the block's two halves summed); none with signed
        // codes (code_offset: corr was exactly -offset x scale).
        // (every loop over the 16 tokens is unrolled with constant indices, so acc stays in
        // registers through micro's block loop; a runtime bound would put it in memory)
        for (int64_t g = 0; g < (SG ? 0 : G); ++g) {
          const __m512 C = _mm512_loadu_ps(corr + g * 16);
#pragma GCC unroll 16
          for (int j = 0; j < kTok; ++j) {
            if (j >= nt) break;
            const int64_t t = tb + j;
            const float xv =
                P.xsum == 2 ? a.x[(t * G + g) * 2] + a.x[(t * G + g) * 2 + 1] : a.x[t * G + g];
            acc[j] = _mm512_fmadd_ps(C, _mm512_set1_ps(xv), acc[j]);
          }
        }
#pragma GCC unroll 16
        for (int j = 0; j < kTok; ++j)
          if (j < nt) _mm512_mask_storeu_ps(y + (tb + j) * ldy + rb, rm, acc[j]);
      }
    }
  }
}

}  // namespace

void repacked_gemm_amx(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1,
                       int64_t t0, int64_t t1) {
  if (r0 >= r1 || t0 >= t1) return;
  const bool sg = p.code_offset > 0;
  repacked_dispatch(p, [&](auto cw, auto units, auto sf) {
    if (sg) gemm_t<cw.value, units.value, sf.value, true>(p, a, y, ldy, r0, r1, t0, t1);
    else gemm_t<cw.value, units.value, sf.value, false>(p, a, y, ldy, r0, r1, t0, t1);
  });
}

double int8_peak_gops_amx(double seconds) {
  load_config(1);
  alignas(64) static int8_t A[kTok * 32];
  alignas(64) static uint8_t B[8 * 64];
  std::memset(A, 1, sizeof A);
  std::memset(B, 1, sizeof B);
  amx::stores_before_tile_loads();
  _tile_loadd(0, A, 32);
  _tile_loadd(1, B, 64);
  _tile_loadd(3, A, 32);
  _tile_loadd(4, B, 64);
  _tile_zero(2);
  _tile_zero(5);
  const double rate = amx::peak_rate(seconds, 4096.0 * 2 * kTok * 16 * 32 * 2, [] {
    for (int i = 0; i < 4096; ++i) {
      _tile_dpbsud(2, 0, 1);
      _tile_dpbsud(5, 3, 4);
    }
  });
  alignas(64) static int32_t C[kTok][16];
  _tile_stored(2, C, 64);
  volatile int32_t sink = C[0][0];
  (void)sink;
  return rate;
}

}  // namespace lmpress::kern
