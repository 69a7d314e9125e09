// AMX bf16 GEMM for f16 and bf16 weights, at f32-class accuracy (issue 9).
//
// AMX multiplies bf16 (8 significant bits) and accumulates in f32. Used naively it would round
// every weight and activation to bf16 (f16 keeps 11 bits). Instead each operand is split into a
// bf16 "high" part and a bf16 "low" part holding what the high part missed:
//   f16 weight w = wh + wl exactly (wh = bf16(w), wl = w - wh needs <= 3 significant bits);
//   bf16 weight w = wh exactly (wl = 0, its product skipped);
//   f32 activation x = xh + xl + r with |r| <= 2^-16 |x| (two bf16 roundings);
// and y = sum wh xh + wh xl + wl xh, dropping wl xl (<= 2^-11 * 2^-8 relative) and r: each
// product carries a relative error of about 2^-16, against f32's 2^-24 per operation but
// n·2^-24 accumulated over n = 2048+ terms; tests/test_engine.cpp checks it against a double
// product and the f32 path.
//
// Operands: A = weights, 16 rows x 32 bf16 per tile, row-major (the weights' own order: groups
// of 16-row tiles are converted to wh / wl once per call into a scratch); B = activations in
// AMX's pair layout [K/2][16 tokens][2], built once per call for all tokens; C = 16 rows x 16
// tokens f32, accumulated over K in the tile (no per-block scaling: these products are pure dot
// products; between K chunks the accumulators wait in L1), then transposed into y[t][r]. Two
// token tiles share each A load (tiles: 0/1 C, 2/3 A hi/lo, 4-7 B hi/lo of the two token tiles).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/amx_tiles.h"
#include "kernels/kernels.h"

namespace lmpress::kern {
namespace {

inline __m512 load16(const uint16_t* p, bool f16) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if (f16) return _mm512_cvtph_ps(v);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

// bf16 of 32 floats (round to nearest even) as one 512-bit vector, and the residual.
inline void split32(__m512 a, __m512 b, __m512i* hi, __m512* ra, __m512* rb) {
  *hi = (__m512i)_mm512_cvtne2ps_pbh(b, a);  // a -> elements 0..15, b -> 16..31
  const __m512i hv = *hi;
  const __m512 ha = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(hv)), 16));
  const __m512 hb =
      _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(hv, 1)), 16));
  *ra = _mm512_sub_ps(a, ha);
  *rb = _mm512_sub_ps(b, hb);
}

inline __m512i to_bf16(__m512 a, __m512 b) {
  return (__m512i)_mm512_cvtne2ps_pbh(b, a);
}

struct Scratch {
  std::vector<uint16_t> wh[2], wl[2];  // [kRG][Kp / 32][16][32] two groups of row tiles, tile order
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Converts units [u0, u1) of the row group starting at g0 (unit u = row u / nkb of the group,
// 32-column block u % nkb) into tile order: dh / dl [row tile][block][16 rows][32], so that each
// A tile is one contiguous 1 KB load (rows 2*Kp bytes apart would all fall into the same L1 sets).
// Rows at or beyond r1 and columns beyond cols are zeros.
inline void convert_units(const uint16_t* W, bool f16, int64_t cols, int64_t nkb, int64_t g0, int64_t r1, int64_t u0,
                          int64_t u1, uint16_t* dh, uint16_t* dl) {
  const int64_t Kp = nkb * 32;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t i = u / nkb, kb = u % nkb, c = kb * 32;
    const int64_t off = (i / 16) * 16 * Kp + kb * 512 + (i % 16) * 32;
    if (g0 + i >= r1) {
      std::memset(dh + off, 0, 64);
      std::memset(dl + off, 0, 64);
      continue;
    }
    const uint16_t* p = W + (g0 + i) * cols + c;
    alignas(64) uint16_t tmp[32];
    if (c + 32 > cols) {
      std::memset(tmp, 0, sizeof tmp);
      std::memcpy(tmp, p, size_t(cols - c) * 2);
      p = tmp;
    }
    if (f16) {
      __m512i h;
      __m512 ra, rb;
      split32(load16(p, true), load16(p + 16, true), &h, &ra, &rb);
      _mm512_storeu_si512(dh + off, h);
      _mm512_storeu_si512(dl + off, to_bf16(ra, rb));
    } else {
      std::memcpy(dh + off, p, 64);
    }
  }
}

}  // namespace

// Activations x [n][cols] f32 -> pair layout hi / lo (Kp = cols rounded up to 32, tokens padded
// to 16 with zeros). out arrays sized ntt * Kp * 16.
void amx_bf16_pack_acts(const float* x, int64_t n, int64_t cols, uint16_t* xh, uint16_t* xl) {
  const int64_t Kp = (cols + 31) / 32 * 32, ntt = (n + 15) / 16;
  std::memset(xh, 0, size_t(ntt * Kp * 16) * 2);
  std::memset(xl, 0, size_t(ntt * Kp * 16) * 2);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t tt = t / 16, j = t % 16;
    uint16_t* dh = xh + tt * Kp * 16 + j * 2;
    uint16_t* dl = xl + tt * Kp * 16 + j * 2;
    const float* xt = x + t * cols;
    int64_t c = 0;
    for (; c + 32 <= cols; c += 32) {
      __m512i h;
      __m512 ra, rb;
      split32(_mm512_loadu_ps(xt + c), _mm512_loadu_ps(xt + c + 16), &h, &ra, &rb);
      const __m512i l = to_bf16(ra, rb);
      alignas(64) uint32_t hp[16], lp[16];
      _mm512_store_si512(hp, h);
      _mm512_store_si512(lp, l);
      for (int k2 = 0; k2 < 16; ++k2) {  // pair k2 of this 32-column block -> row (c/2 + k2)
        std::memcpy(dh + (c / 2 + k2) * 32, &hp[k2], 4);
        std::memcpy(dl + (c / 2 + k2) * 32, &lp[k2], 4);
      }
    }
    if (c < cols) {
      alignas(64) float tmp[32] = {};
      std::memcpy(tmp, xt + c, size_t(cols - c) * 4);
      __m512i h;
      __m512 ra, rb;
      split32(_mm512_load_ps(tmp), _mm512_load_ps(tmp + 16), &h, &ra, &rb);
      const __m512i l = to_bf16(ra, rb);
      alignas(64) uint32_t hp[16], lp[16];
      _mm512_store_si512(hp, h);
      _mm512_store_si512(lp, l);
      for (int k2 = 0; k2 < 16; ++k2) {
        std::memcpy(dh + (c / 2 + k2) * 32, &hp[k2], 4);
        std::memcpy(dl + (c / 2 + k2) * 32, &lp[k2], 4);
      }
    }
  }
}

// y[t * ldy + r] for rows [r0, r1) (r0 a multiple of 16) x all n tokens, weights W [rows][cols]
// f16 (f16 = true) or bf16, activations packed by amx_bf16_pack_acts.
// Blocking: groups of kRG row tiles are converted once into tile order (scratch, L2); then per
// pair of token tiles and per K chunk of kKC x 32 columns (its activation tiles, 32 KB, stay in L1
// while the group's row tiles pass over them) each row tile's two accumulators are reloaded,
// advanced and stored again (the last chunk transposes them into y). The conversion of the next
// group is interleaved with the tile products of this one (a few 32-column units per step, into
// the other scratch buffer): the vector units convert while the tile unit multiplies, and the
// group after that is prefetched into L2.
void amx_bf16_gemm_rows(const uint16_t* W, bool f16, int64_t cols, const uint16_t* xh, const uint16_t* xl, int64_t n,
                        float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int kRG = 4;      // row tiles per converted group
  constexpr int64_t kKC = 8;  // 32-column steps per K chunk
  amx::load(3);
  Scratch& S = scratch();
  const int64_t Kp = (cols + 31) / 32 * 32, nkb = Kp / 32, ntt = (n + 15) / 16;
  for (int b = 0; b < 2; ++b) {
    S.wh[b].resize(size_t(kRG * 16 * Kp));
    S.wl[b].resize(size_t(kRG * 16 * Kp));
  }
  auto group_units = [&](int64_t g) { return std::min<int64_t>(kRG, (r1 - g + 15) / 16) * 16 * nkb; };
  alignas(64) float acc[kRG][2][16][16];
  int cur = 0;
  if (r0 < r1) convert_units(W, f16, cols, nkb, r0, r1, 0, group_units(r0), S.wh[0].data(), S.wl[0].data());
  for (int64_t g0 = r0; g0 < r1; g0 += kRG * 16, cur ^= 1) {
    const int ng = int(std::min<int64_t>(kRG, (r1 - g0 + 15) / 16));
    const uint16_t* wh = S.wh[cur].data();
    const uint16_t* wl = S.wl[cur].data();
    // the next group: converted during this one's products
    const int64_t gn = g0 + kRG * 16;
    const int64_t nu = gn < r1 ? group_units(gn) : 0;
    uint16_t* nh = S.wh[cur ^ 1].data();
    uint16_t* nl = S.wl[cur ^ 1].data();
    // and the one after it: prefetched into L2 (its rows are contiguous in W)
    amx::NextGroupWork next(nu, (ntt + 1) / 2 * nkb * ng, W + std::min(gn + kRG * 16, r1) * cols,
                            W + std::min(gn + 2 * kRG * 16, r1) * cols);
    auto convert = [&](int64_t u0, int64_t u1) { convert_units(W, f16, cols, nkb, gn, r1, u0, u1, nh, nl); };
    amx::stores_before_tile_loads();
    for (int64_t tt = 0; tt < ntt; tt += 2) {
      const bool two = tt + 1 < ntt;
      const uint16_t* bh0 = xh + tt * Kp * 16;
      const uint16_t* bl0 = xl + tt * Kp * 16;
      const uint16_t* bh1 = two ? bh0 + Kp * 16 : bh0;
      const uint16_t* bl1 = two ? bl0 + Kp * 16 : bl0;
      for (int64_t k0 = 0; k0 < nkb; k0 += kKC) {
        const int64_t k1 = std::min(nkb, k0 + kKC);
        const bool last = k1 == nkb;
        for (int rt = 0; rt < ng; ++rt) {
          const uint16_t* ah = wh + rt * 16 * Kp;  // tile kb at ah + kb * 512
          const uint16_t* al = wl + rt * 16 * Kp;
          if (k0 == 0) {
            _tile_zero(0);
            _tile_zero(1);
          } else {
            _tile_loadd(0, acc[rt][0], 64);
            _tile_loadd(1, acc[rt][1], 64);
          }
          for (int64_t kb = k0; kb < k1; ++kb) {
            // products alternate between the two accumulators (each one's chain waits on the last)
            _tile_loadd(2, ah + kb * 512, 64);
            _tile_loadd(4, bh0 + kb * 16 * 32, 64);
            _tile_loadd(6, bh1 + kb * 16 * 32, 64);
            _tile_dpbf16ps(0, 2, 4);
            _tile_dpbf16ps(1, 2, 6);
            _tile_loadd(5, bl0 + kb * 16 * 32, 64);
            _tile_loadd(7, bl1 + kb * 16 * 32, 64);
            _tile_dpbf16ps(0, 2, 5);
            _tile_dpbf16ps(1, 2, 7);
            if (f16) {
              _tile_loadd(3, al + kb * 512, 64);
              _tile_dpbf16ps(0, 3, 4);
              _tile_dpbf16ps(1, 3, 6);
            }
            next.step(convert);
          }
          _tile_stored(0, acc[rt][0], 64);
          _tile_stored(1, acc[rt][1], 64);
          if (!last) continue;
          const int64_t rb = g0 + rt * 16;
          amx::store_transposed(acc[rt], two ? 2 : 1, y, ldy, rb, int(std::min<int64_t>(16, r1 - rb)), tt, n);
        }
      }
    }
    next.finish(convert);
  }
}

double bf16_peak_gflops_amx(double seconds) {
  amx::load(3);
  alignas(64) static uint16_t A[16 * 32], B[16 * 32];
  std::memset(A, 0, sizeof A);
  std::memset(B, 0, sizeof B);
  amx::stores_before_tile_loads();
  _tile_loadd(2, A, 64);
  _tile_loadd(3, A, 64);
  _tile_loadd(4, B, 64);
  _tile_loadd(5, B, 64);
  _tile_zero(0);
  _tile_zero(1);
  const double rate = amx::peak_rate(seconds, 4096.0 * 2 * 16 * 16 * 32 * 2, [] {
    for (int i = 0; i < 4096; ++i) {
      _tile_dpbf16ps(0, 2, 4);
      _tile_dpbf16ps(1, 3, 5);
    }
  });
  alignas(64) static float C[16][16];
  _tile_stored(0, C, 64);
  volatile float sink = C[0][0];
  (void)sink;
  return rate;
}

}  // namespace lmpress::kern
