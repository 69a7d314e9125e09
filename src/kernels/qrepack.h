// Repacked (row-interleaved) layout of int-family weights for prefill GEMM (issue 9).
//
// The stored layout (formats.h, docs/formats.md) keeps each row's 32-code blocks contiguous; it is
// what decode streams. For prefill a second copy is built once per tensor (at the first prefill
// product that uses it, see src/formats/qmatmul.cpp): 16 rows form a tile, and per 32-column block
// the tile's codes are 8 "column quads" j = 0..7, each a 64-byte vector whose 32-bit lane i holds
// codes 4j..4j+3 of row i (one byte per code, unsigned). One 512-bit load then feeds 16 row lanes of
// one VNNI dpbusd against a 4-byte broadcast of the token's int8 activations: no shuffles at all.
// The 8 vectors are stored in a container of cw bits per code (cw = 2 for 2-bit codes, 4 for 3- and
// 4-bit, 8 for 5-, 6- and 8-bit): packed vector p (p < cw) holds vector j at bit shift
// (j / cw) * cw for j % cw == p, so unpacking is one shift and one mask per vector.
//
// Per tile (tile_bytes apart, 64-byte aligned):
//   codes  [nb][cw vectors of 64 B]
//   scales [nb][units][16] f16: the f16 scale of the group holding each unit (unit = the block, or
//          its two 16-column halves for group 16; 0 for a half past the last column; 0 for padded
//          rows)
//   corr   [groups][16] f32: -s_g (z_g - 0) (asymmetric) or -s_g * zero_sym (symmetric)
// (ggml types: scales f32 and corr as described at repack_ggml_supported below)
// Arithmetic: exactly qkernels.h with code offset C = 0:
//   y[t][r] = sum_u S[r][u] d[t][b(u)] sum_{i in u} q_i a_i + sum_g corr[r][g] X[t][g]
// so results differ from the stored layout's kernels only by float summation order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/qkernels.h"

namespace lmpress::kern {

constexpr int kRepackRows = 16;

struct QRepacked {
  const uint8_t* data = nullptr;
  int64_t rows = 0, cols = 0, nb = 0, groups = 0;
  int32_t bits = 4, cw = 4, units = 1;  // units per block: 1, or 2 for group 16
  bool sf32 = false;  // scales stored as f32 (ggml family: S = d x sub-scale is not an f16)
  int32_t xsum = 1;   // activation sums X per corr group: QActs::x entries summed (ggml: 2 halves)
  int32_t code_max = 255;  // largest stored code (AVX2 picks its i16 accumulation depth from it)
  // > 0 when every corr entry is exactly -code_offset * (its unit's scale) (symmetric int formats:
  // the format's zero; ggml types without mins: C): a kernel may then use signed codes
  // u - code_offset and skip the corr terms (the AMX kernel does). 0: corr holds other offsets.
  int32_t code_offset = 0;
  int64_t tiles = 0;
  int64_t code_bytes = 0, scale_bytes = 0, corr_bytes = 0, tile_bytes = 0;  // per tile
  const uint8_t* tile(int64_t k) const { return data + k * tile_bytes; }
};

// Container width of a code width (0: not repackable).
constexpr int repack_cw(int bits) {
  return bits == 2 ? 2 : (bits == 3 || bits == 4) ? 4 : (bits == 5 || bits == 6 || bits == 8) ? 8 : 0;
}
// Int-family weights this layout covers: every code width, group 16, multiples of 32 or whole row.
bool repack_supported(const QWeights& w);
// Geometry (data left null) and total bytes of w's repacked copy.
QRepacked repack_geometry(const QWeights& w);
inline int64_t repack_total_bytes(const QRepacked& g) { return g.tiles * g.tile_bytes; }
// Fills tiles [k0, k1) of out (repack_total_bytes, 64-byte aligned) from w: scalar, from the
// reference block unpacking.
void repack_int_tiles(const QWeights& w, uint8_t* out, int64_t k0, int64_t k1);
inline void repack_int(const QWeights& w, uint8_t* out) { repack_int_tiles(w, out, 0, repack_geometry(w).tiles); }

// Table families (nf4, fp, mxfp4, lut, pow, bitmod, binary: QWeights::lut; value of code q in group g
// of row r = scale(r, g) * T[q] with an int8 table T per tensor, row or group) in the same layout: the
// stored code is u = T[q] + C, C = -(the smallest value of the tensor's tables) (so u >= 0; code_max
// = largest value + C <= 255; container 2, 4 or 8 bits by code_max), scales f16 as stored (f32 for
// E8M0), corr = -C * scale (code_offset = C). Exact: the products are those of the stored layout's
// table kernels up to float summation order. Group 16, multiples of 32 or the whole row, as the int
// family; not spqr (per-row statistics) nor vq.
bool repack_table_supported(const QWeights& w);
QRepacked repack_geometry_table(const QWeights& w);  // reads every table of w (C, code_max)
void repack_table_tiles(const QWeights& w, const QRepacked& p, uint8_t* out, int64_t k0, int64_t k1);

// llama.cpp block types (QWeights::bits = ggml_type, kernels/ggml_blocks.h) in the same layout:
// each block decodes (reference decoder) to int8 v and per-16-half S, M (w = S v - M); stored codes
// are u = v + C (a per-type constant making them unsigned, in a 2-, 4- or 8-bit container), scales
// S as f32 and corr = -(M + C S), so y = sum S d dot(u, a) + sum corr X reproduces the reference.
// Types whose two halves of a 32-block share S and M (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_K,
// Q5_K, IQ4_XS) use one unit per block and X summed over the block's halves; Q2_K, Q3_K, Q6_K keep
// two units. Returns false from the builder when a value falls outside the container (corrupt).
bool repack_ggml_supported(const QWeights& w);
QRepacked repack_geometry_ggml(const QWeights& w);
bool repack_ggml_tiles(const QWeights& w, uint8_t* out, int64_t k0, int64_t k1);

// QActs::panel (the AMX A-tile order of qa): bytes for n tokens of nb blocks, and the copy of token
// blocks [tb0, tb1) (16 tokens each; tokens past n zero) from qa's rows (stride bytes apart).
inline int64_t act_panel_bytes(int64_t n, int64_t nb) { return (n + 15) / 16 * nb * 512; }
void build_act_panel(const int8_t* qa, int64_t stride, int64_t n, int64_t nb, int8_t* panel, int64_t tb0,
                     int64_t tb1);

// Token panels of the AVX2 / AVX-512 repacked kernels, tokens [tc, tce) in tiles of kt (tokens past
// tce repeat the last one; their results are not stored): qa [tile][nb][kt][32], d [tile][nb][kt] and
// the zero-point sums X [tile][groups][kt] (QRepacked::xsum entries of QActs::x summed).
void fill_token_panels(const QRepacked& p, const QActs& a, int64_t tc, int64_t tce, int kt, int8_t* qa, float* d,
                       float* x);

// y[t * ldy + r] = the product for rows [r0, r1) (r0 a multiple of 16) x tokens [t0, t1).
// QActs: qa / a_stride / d / x as built for the int family (x: X[t][g], [n][groups]).
using RepackedGemmFn = void (*)(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0,
                                int64_t r1, int64_t t0, int64_t t1);
// Calls f(cw, units, sf32) with std::integral_constant arguments for p's container width (2, 4,
// 8), units per block (1, 2) and scale type (f32 or f16): the SIMD kernels' template dispatch.
template <class F>
inline void repacked_dispatch(const QRepacked& p, F&& f) {
  auto by_units = [&](auto cw, auto sf) {
    if (p.units == 2) f(cw, std::integral_constant<int, 2>(), sf);
    else f(cw, std::integral_constant<int, 1>(), sf);
  };
  auto by_scale = [&](auto cw) {
    if (p.sf32) by_units(cw, std::true_type());
    else by_units(cw, std::false_type());
  };
  switch (p.cw) {
    case 2: return by_scale(std::integral_constant<int, 2>());
    case 4: return by_scale(std::integral_constant<int, 4>());
    default: return by_scale(std::integral_constant<int, 8>());
  }
}

// Scalar reference over the repacked layout (checks the layout itself), AVX-512 VNNI (512-bit
// dpbusd, 16 rows per vector) and AVX2 (maddubs + madd on two 8-row halves).
void repacked_gemm_scalar(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1,
                          int64_t t0, int64_t t1);
void repacked_gemm_avx512(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1,
                          int64_t t0, int64_t t1);
void repacked_gemm_avx2(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1,
                        int64_t t0, int64_t t1);
// AVX-VNNI (VEX-encoded 256-bit dpbusd, one path for every code width; kernels/repack_x86_avx2.h):
// the AVX2 level's kernel where avxvnni_active().
void repacked_gemm_avxvnni(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1,
                           int64_t t0, int64_t t1);
// AMX int8 (src/kernels/x86_amx/repack.cpp): the layout's code vectors are AMX B-tile rows; one
// TDPBSUD per 32-column block (16 tokens x 16 rows), scaled in AVX-512. Only where amx_active().
void repacked_gemm_amx(const QRepacked& p, const QActs& a, float* y, int64_t ldy, int64_t r0, int64_t r1,
                       int64_t t0, int64_t t1);

// Measured int8 peak of the calling thread's core at a level, in int8 ops (2 per multiply-add)
// per second, from a register-only loop of the level's multiply-accumulate for `seconds`:
// AVX-512 VNNI: independent 512-bit vpdpbusd chains (64 MACs each); AVX2: vpmaddubsw + vpaddw
// chains (32 MACs per vpmaddubsw; the repacked kernel's inner loop for codes <= 15 at its
// cheapest). `lmpress bench` puts prefill GFLOP/s next to it (an achievable ceiling on this
// machine now, not a datasheet figure).
double int8_peak_gops_avx2(double seconds);
double int8_peak_gops_avx512(double seconds);
// AVX-VNNI: independent 256-bit dpbusd chains (32 MACs each).
double int8_peak_gops_avxvnni(double seconds);
// AMX: two independent chains of TDPBSUD on 16 x 32 by 8 x 64 tiles (the GEMM's shape).
double int8_peak_gops_amx(double seconds);

}  // namespace lmpress::kern
