// AMX int8 GEMM for f16 and bf16 weights through 16-bit fixed point split into two int8 limbs
// (issue 9): the default prefill path for f16/bf16 weights on AMX CPUs.
//
// TDPBSSD multiplies signed bytes at about twice the rate of TDPBF16PS's bf16 pairs (64 products
// per row per instruction against 32). Both operands are written per 256-column block as 16-bit
// integers q = hi * 256 + lo with hi, lo in [-128, 127]:
//   weights: one scale per row and block, sw = max|w| / 32639 (32639 = 127 * 256 + 127);
//   activations: one scale per token and block, sx likewise (an outlier channel only coarsens its
//   own block);
// and y = sum_blocks 256 sw sx (256 sum hi_w hi_x + sum (hi_w lo_x + lo_w hi_x)), dropping lo_w lo_x
// (<= 127^2 / 32639^2 = 2^-16 of the block's largest product). Each operand's rounding is <= 2^-16 of
// its block maximum: finer than f16's own 2^-11 for typical elements, coarser near an outlier.
// Measured (docs/results.md, session 9): SmolLM2-135M f16 vs f32, KLD 3.2e-6 (bf16 split 1.8e-6,
// llama.cpp b4747's f16 path ~3e-6). The bf16 split (dense.cpp) stays as LMPRESS_F16_PREFILL=bf16x3.
// tests/test_amx.cpp checks both against a double product.
//
// Tiles (configuration 3: all 16 x 64 bytes): A = 16 weight rows x 64 columns (one hi and one lo
// tile; converted per call into tile order, 256 columns and one scale at a time, the next row group
// interleaved with this group's products); B = activations in the VNNI layout [16 column quads]
// [16 tokens][4]; C = 16 rows x 16 tokens int32. Per 64-column step and pair of token tiles: hh0,
// hh1 and the mixed products m0, m1 (tiles 0-3), A hi/lo (4, 5), B (6, 7: the hi pair, then the lo
// pair). After each 256-column block the int32 tiles are stored, 256 hh + m formed exactly in int32
// and added into f32 sums with the block's row and token scales.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/amx_tiles.h"
#include "kernels/kernels.h"

namespace lmpress::kern {
namespace {

constexpr int64_t kChunk = 256;  // activation scale granularity (columns)
constexpr float kQMax = 32639.f;  // 127 * 256 + 127

inline __m512 load16(const uint16_t* p, bool f16) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if (f16) return _mm512_cvtph_ps(v);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

// 16 floats -> 16-bit fixed point (x * inv, rounded) -> hi, lo bytes: hi = (q + 128) >> 8, lo = q - 256 hi.
inline void limbs16(__m512 v, __m512 inv, __m128i* hi, __m128i* lo) {
  const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v, inv));
  const __m512i h = _mm512_srai_epi32(_mm512_add_epi32(q, _mm512_set1_epi32(128)), 8);
  const __m512i l = _mm512_sub_epi32(q, _mm512_slli_epi32(h, 8));
  *hi = _mm512_cvtepi32_epi8(h);
  *lo = _mm512_cvtepi32_epi8(l);
}

// The weights' limbs are built 64 columns at a time with in-lane packs and shuffles, which leave
// the columns of a 64-column block in a fixed order: byte k of a tile row holds column
// pi(k) = 32 [k >= 32] + (k % 8 < 4 ? 4 L + k % 8 : 16 + 4 L + k % 8 - 4), L = (k / 8) % 4.
// pi keeps quads (k = 4j..4j+3 -> 4 consecutive columns), so the activations' VNNI quads follow
// the same order: column quad cq (0..15) of a block goes to k quad kq_of_cq(cq).
inline int kq_of_cq(int cq) { return 8 * (cq / 8) + 2 * (cq % 4) + (cq % 8) / 4; }

// Raw 16-bit weights (two vectors of 32 = 64 columns) -> 64 hi and 64 lo bytes in pi order.
inline void limbs64(__m512i raw0, __m512i raw1, bool f16, __m512 inv, __m512i* hi, __m512i* lo) {
  auto f32 = [f16](__m256i h) {
    return f16 ? _mm512_cvtph_ps(h) : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  };
  auto q = [&](__m256i h) { return _mm512_cvtps_epi32(_mm512_mul_ps(f32(h), inv)); };
  const __m512i off = _mm512_set1_epi16(128);
  // lane L of a pack: columns 4L..4L+3 of its first vector, then of its second
  const __m512i p0 = _mm512_add_epi16(
      _mm512_packs_epi32(q(_mm512_castsi512_si256(raw0)), q(_mm512_extracti64x4_epi64(raw0, 1))), off);
  const __m512i p1 = _mm512_add_epi16(
      _mm512_packs_epi32(q(_mm512_castsi512_si256(raw1)), q(_mm512_extracti64x4_epi64(raw1, 1))), off);
  // per lane: low bytes of its 8 values, then high bytes
  const __m512i sep = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
  const __m512i s0 = _mm512_shuffle_epi8(p0, sep), s1 = _mm512_shuffle_epi8(p1, sep);
  *lo = _mm512_xor_si512(_mm512_permutex2var_epi64(s0, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), s1),
                         _mm512_set1_epi8(char(0x80)));
  *hi = _mm512_permutex2var_epi64(s0, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), s1);
}

struct Scratch {
  std::vector<int8_t> wh[2], wl[2];  // [kRG][Kp / 64][16][64] two groups of row tiles, tile order
  std::vector<float> sw[2];          // [kRG * 16][chunks] scales of the rows' 256-column blocks
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Converts units [u0, u1) of the row group at g0 (unit u = row u / nch, 256-column block u % nch,
// with its own scale). Rows at or beyond r1 and columns beyond cols are 0.
void convert_units(const uint16_t* W, bool f16, int64_t cols, int64_t nkb, int64_t nch, int64_t g0, int64_t r1,
                   int64_t u0, int64_t u1, int8_t* dh, int8_t* dl, float* sw) {
  static_assert(kChunk == 256, "one unit = one scale block of 4 tiles' columns");
  const int64_t Kp = nkb * 64;
  for (int64_t u = u0; u < u1; ++u) {
    const int64_t i = u / nch, ch = u % nch, c = ch * kChunk;
    const int64_t nb = std::min<int64_t>(4, nkb - ch * 4);  // 64-column tiles in this block
    const int64_t off = (i / 16) * 16 * Kp + ch * 4 * 1024 + (i % 16) * 64;
    if (g0 + i >= r1) {
      for (int64_t b = 0; b < nb; ++b) {
        std::memset(dh + off + b * 1024, 0, 64);
        std::memset(dl + off + b * 1024, 0, 64);
      }
      sw[u] = 0;
      continue;
    }
    const uint16_t* p = W + (g0 + i) * cols + c;
    alignas(64) uint16_t tmp[kChunk];
    if (c + kChunk > cols) {
      std::memset(tmp, 0, sizeof tmp);
      std::memcpy(tmp, p, size_t(cols - c) * 2);
      p = tmp;
    }
    __m512i raw[8];
    __m512i m = _mm512_setzero_si512();
    const __m512i mag = _mm512_set1_epi16(0x7fff);
    for (int k = 0; k < 2 * nb; ++k) {
      raw[k] = _mm512_loadu_si512(p + k * 32);
      m = _mm512_max_epu16(m, _mm512_and_si512(raw[k], mag));  // |f16| and |bf16| order as integers
    }
    m = _mm512_max_epu16(m, _mm512_srli_epi32(m, 16));
    const uint16_t mb = uint16_t(_mm512_reduce_max_epu32(_mm512_and_si512(m, _mm512_set1_epi32(0xffff))));
    float mx = f16 ? f16_to_f32(mb) : bf16_to_f32(mb);  // (Inf / NaN order above every finite value)
    // A non-finite weight (a file loaded with --no-check) makes the block's scale NaN, so that its
    // rows' outputs are NaN as they would be in f32, not silently finite.
    sw[u] = std::isfinite(mx) ? mx / kQMax : std::numeric_limits<float>::quiet_NaN();
    const __m512 inv = _mm512_set1_ps(std::isfinite(mx) && mx > 0.f ? kQMax / mx : 0.f);
    for (int64_t b = 0; b < nb; ++b) {
      __m512i h, l;
      limbs64(raw[2 * b], raw[2 * b + 1], f16, inv, &h, &l);
      _mm512_storeu_si512(dh + off + b * 1024, h);
      _mm512_storeu_si512(dl + off + b * 1024, l);
    }
  }
}

}  // namespace

// Activations x [n][cols] -> hi / lo in the VNNI layout [token tile][Kp/4][16][4] (Kp = cols
// rounded up to 64, tokens padded to 16 with zeros) and scales sx [ntt * 16][chunks].
void amx_i16_pack_acts(const float* x, int64_t n, int64_t cols, int8_t* xh, int8_t* xl, float* sx) {
  const int64_t Kp = (cols + 63) / 64 * 64, ntt = (n + 15) / 16, nch = (cols + kChunk - 1) / kChunk;
  std::memset(xh, 0, size_t(ntt * Kp * 16));
  std::memset(xl, 0, size_t(ntt * Kp * 16));
  std::fill(sx, sx + ntt * 16 * nch, 0.f);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t tt = t / 16, j = t % 16;
    int8_t* dh = xh + tt * Kp * 16 + j * 4;
    int8_t* dl = xl + tt * Kp * 16 + j * 4;
    const float* xt = x + t * cols;
    for (int64_t ch = 0; ch < nch; ++ch) {
      const int64_t c0 = ch * kChunk, c1 = std::min(cols, c0 + kChunk);
      // the chunk's largest |x|, and fin = sum of x * 0: NaN once any element is Inf or NaN
      __m512 vm = _mm512_setzero_ps(), vf = _mm512_setzero_ps();
      int64_t c = c0;
      for (; c + 16 <= c1; c += 16) {
        const __m512 v = _mm512_loadu_ps(xt + c);
        vm = _mm512_max_ps(vm, _mm512_abs_ps(v));
        vf = _mm512_add_ps(vf, _mm512_mul_ps(v, _mm512_setzero_ps()));
      }
      float mx = _mm512_reduce_max_ps(vm), fin = _mm512_reduce_add_ps(vf);
      for (; c < c1; ++c) {
        mx = std::max(mx, std::fabs(xt[c]));
        fin += xt[c] * 0.f;
      }
      const bool ok = fin == 0.f;  // non-finite activations give NaN outputs, as in f32
      sx[t * nch + ch] = ok ? mx / kQMax : std::numeric_limits<float>::quiet_NaN();
      const __m512 inv = _mm512_set1_ps(ok && mx > 0.f ? kQMax / mx : 0.f);
      for (int64_t c = c0; c < c1; c += 16) {
        __m512 v;
        if (c + 16 <= c1) {
          v = _mm512_loadu_ps(xt + c);
        } else {
          alignas(64) float tmp[16] = {};
          std::memcpy(tmp, xt + c, size_t(c1 - c) * 4);
          v = _mm512_load_ps(tmp);
        }
        __m128i h, l;
        limbs16(v, inv, &h, &l);
        alignas(16) uint32_t hq[4], lq[4];
        _mm_store_si128(reinterpret_cast<__m128i*>(hq), h);
        _mm_store_si128(reinterpret_cast<__m128i*>(lq), l);
        for (int q = 0; q < 4; ++q) {  // column quad c/4 + q -> its k quad in the weights' pi order
          const int64_t gq = c / 4 + q, kq = gq / 16 * 16 + kq_of_cq(int(gq % 16));
          std::memcpy(dh + kq * 64, &hq[q], 4);
          std::memcpy(dl + kq * 64, &lq[q], 4);
        }
      }
    }
  }
}

// y[t * ldy + r] for rows [r0, r1) (r0 a multiple of 16) x all n tokens; see the top of the file.
// Blocking as in amx_bf16_gemm_rows: groups of kRG row tiles converted once (the next group
// interleaved with this group's products); per pair of token tiles the 256-column chunks pass in
// order (their activation tiles, 16 KB, stay in L1 while the group's row tiles use them) and the
// group's f32 sums wait in an L1 scratch.
void amx_i16_gemm_rows(const uint16_t* W, bool f16, int64_t cols, const int8_t* xh, const int8_t* xl, const float* sx,
                       int64_t n, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr int kRG = 4;
  constexpr int64_t kSteps = kChunk / 64;  // 64-column steps per chunk
  amx::load(3);
  Scratch& S = scratch();
  const int64_t Kp = (cols + 63) / 64 * 64, nkb = Kp / 64, ntt = (n + 15) / 16;
  const int64_t nch = (cols + kChunk - 1) / kChunk;
  for (int b = 0; b < 2; ++b) {
    S.wh[b].resize(size_t(kRG * 16 * Kp));
    S.wl[b].resize(size_t(kRG * 16 * Kp));
    S.sw[b].resize(size_t(kRG * 16 * nch));
  }
  auto group_units = [&](int64_t g) { return std::min<int64_t>(kRG, (r1 - g + 15) / 16) * 16 * nch; };
  alignas(64) int32_t ci[4][16][16];   // the four int32 tiles of one chunk
  alignas(64) float acc[kRG][2][16][16];  // f32 sums of the group's row tiles x two token tiles
  int cur = 0;
  if (r0 < r1)
    convert_units(W, f16, cols, nkb, nch, r0, r1, 0, group_units(r0), S.wh[0].data(), S.wl[0].data(), S.sw[0].data());
  for (int64_t g0 = r0; g0 < r1; g0 += kRG * 16, cur ^= 1) {
    const int ng = int(std::min<int64_t>(kRG, (r1 - g0 + 15) / 16));
    const int8_t* wh = S.wh[cur].data();
    const int8_t* wl = S.wl[cur].data();
    const float* sw = S.sw[cur].data();
    const int64_t gn = g0 + kRG * 16;
    const int64_t nu = gn < r1 ? group_units(gn) : 0;
    int8_t* nh = S.wh[cur ^ 1].data();
    int8_t* nl = S.wl[cur ^ 1].data();
    float* nsw = S.sw[cur ^ 1].data();
    amx::NextGroupWork next(nu, (ntt + 1) / 2 * nkb * ng, W + std::min(gn + kRG * 16, r1) * cols,
                            W + std::min(gn + 2 * kRG * 16, r1) * cols);
    auto convert = [&](int64_t u0, int64_t u1) { convert_units(W, f16, cols, nkb, nch, gn, r1, u0, u1, nh, nl, nsw); };
    amx::stores_before_tile_loads();
    for (int64_t tt = 0; tt < ntt; tt += 2) {
      const bool two = tt + 1 < ntt;
      const int8_t* bh0 = xh + tt * Kp * 16;
      const int8_t* bl0 = xl + tt * Kp * 16;
      const int8_t* bh1 = two ? bh0 + Kp * 16 : bh0;
      const int8_t* bl1 = two ? bl0 + Kp * 16 : bl0;
      std::memset(acc, 0, sizeof acc);
      for (int64_t ch = 0; ch < nch; ++ch) {
        const int64_t k0 = ch * kSteps, k1 = std::min(nkb, k0 + kSteps);
        alignas(64) float s[2][16];  // the chunk's token scales
        for (int h = 0; h < 2; ++h)
          for (int j = 0; j < 16; ++j) {
            const int64_t t = (tt + h) * 16 + j;
            s[h][j] = t < n ? sx[t * nch + ch] : 0.f;
          }
        for (int rt = 0; rt < ng; ++rt) {
          const int8_t* ah = wh + rt * 16 * Kp;  // tile kb at ah + kb * 1024
          const int8_t* al = wl + rt * 16 * Kp;
          _tile_zero(0);
          _tile_zero(1);
          _tile_zero(2);
          _tile_zero(3);
          for (int64_t kb = k0; kb < k1; ++kb) {
            _tile_loadd(4, ah + kb * 1024, 64);
            _tile_loadd(5, al + kb * 1024, 64);
            _tile_loadd(6, bh0 + kb * 1024, 64);
            _tile_loadd(7, bh1 + kb * 1024, 64);
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
            _tile_loadd(6, bl0 + kb * 1024, 64);
            _tile_loadd(7, bl1 + kb * 1024, 64);
            _tile_dpbssd(2, 4, 6);
            _tile_dpbssd(3, 4, 7);
            next.step(convert);
          }
          _tile_stored(0, ci[0], 64);
          _tile_stored(1, ci[1], 64);
          _tile_stored(2, ci[2], 64);
          _tile_stored(3, ci[3], 64);
          // acc[rt][h][r][t] += 256 sw[r] sx[t] (256 hh + m): rows r of the tile, tokens t across the vector
          for (int h = 0; h < (two ? 2 : 1); ++h) {
            const __m512 vs = _mm512_load_ps(s[h]);
            for (int i = 0; i < 16; ++i) {
              // 256 hh + m fits int32 exactly (|hh| <= 128^2 * 256, |m| <= 2 * 128^2 * 256)
              const __m512 d = _mm512_cvtepi32_ps(
                  _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(ci[h][i]), 8), _mm512_load_si512(ci[2 + h][i])));
              const __m512 sc = _mm512_mul_ps(vs, _mm512_set1_ps(256.f * sw[(rt * 16 + i) * nch + ch]));
              _mm512_store_ps(acc[rt][h][i], _mm512_fmadd_ps(d, sc, _mm512_load_ps(acc[rt][h][i])));
            }
          }
        }
      }
      for (int rt = 0; rt < ng; ++rt) {
        const int64_t rb = g0 + rt * 16;
        amx::store_transposed(acc[rt], two ? 2 : 1, y, ldy, rb, int(std::min<int64_t>(16, r1 - rb)), tt, n);
      }
    }
    next.finish(convert);
  }
}

}  // namespace lmpress::kern
