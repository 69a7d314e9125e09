// The trellis family's code (QTIP's bitshift trellis, formats/trellis.h) as the kernels need it:
// the integer value of a 16-bit state and the state of weight i of a tile's tail-biting bitstream.
// Shared by the format (pack / dequantize / encoder tables), the scalar reference kernels
// (generic/trellis.cpp) and the x86 levels (trellis_x86.h). This file is the specification.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/qkernels.h"
#include "kernels/qrepack.h"

namespace lmpress::kern::trellis {

constexpr int kL = 16;               // state bits
constexpr int kStates = 1 << kL;     // 65,536
constexpr int kTile = 16;            // a tile is 16 rows x 16 columns
constexpr int kSeq = kTile * kTile;  // weights per trellis sequence (one tile), column-major inside it
// Value of state s: x = (kMulA * s + kAddB) mod 2^32, keep 6 bits of each byte, sum the four bytes,
// subtract kBias: an integer in [-126, 126], close to N(0, 36.9^2) (docs/formats.md, "trellis").
// kMulA is odd; the pair is QTIP's "1MAD" LCG (a = 34038481, b = 76625530). Over the 65,536 states
// the values have mean -0.006, standard deviation 36.95 and a Kolmogorov-Smirnov distance of 0.0073
// to N(mean, sd) (Irwin-Hall-like sum of four 6-bit bytes; other odd constants tried gave 0.0070 ..
// 0.0077, docs/formats.md).
constexpr uint32_t kMulA = 34038481u;
constexpr uint32_t kAddB = 76625530u;
constexpr uint32_t kMask = 0x3F3F3F3Fu;
constexpr int kBias = 126;

// The masked word whose four bytes sum to value + kBias (what dpbusd consumes).
inline uint32_t state_word(uint32_t s) { return (kMulA * s + kAddB) & kMask; }
inline int32_t state_value(uint32_t s) {
  const uint32_t x = state_word(s);
  return int32_t((x & 0xff) + ((x >> 8) & 0xff) + ((x >> 16) & 0xff) + (x >> 24)) - kBias;
}

// Bytes of one tile's bitstream: 256 k bits.
constexpr int tile_bytes(int k) { return kSeq * k / 8; }

// State of weight i (0..255) of a tile's cyclic bitstream: bits [k i, k i + 16) mod 256 k, bit j of
// the stream being bit j % 8 of byte j / 8.
inline uint32_t state_at(const uint8_t* tile, int k, int i) {
  const int nbits = kSeq * k, bit = k * i, n = tile_bytes(k);
  const int b0 = bit / 8;
  const uint32_t x = uint32_t(tile[b0 % n]) | uint32_t(tile[(b0 + 1) % n]) << 8 | uint32_t(tile[(b0 + 2) % n]) << 16;
  (void)nbits;
  return (x >> (bit % 8)) & 0xffffu;
}

// Weight (r, c) of a tile: sequence index 16 c + r (column-major: 16 consecutive weights are the 16
// rows of one column).
inline int seq_index(int r, int c) { return kTile * c + r; }

// Tiles of a [rows, cols] tensor are stored row-tile-major: tile (rt, ct) at byte
// (rt * cols / 16 + ct) * tile_bytes(k) of the code stream.
inline const uint8_t* tile_ptr(const QWeights& w, int64_t rt, int64_t ct) {
  return w.q + (rt * (w.cols / kTile) + ct) * tile_bytes(w.bits);
}

}  // namespace lmpress::kern::trellis

namespace lmpress::kern {
// ---- trellis kernels (formats/trellis.h) ---------------------------------------------------------
// Int8 block activations (QActs::qa / d) and X[t][0] = sum_b d_b * (sum of a over block b) (the
// whole-row group of the int family's arithmetic): with u = value + 126 the masked-byte sum of the
// state word,
//   y[t][r] = scale_r * (sum_b d[t][b] * sum_{c in b} u(r, c) a[t][c] - 126 * X[t][0]).
// decode (<= 3 tokens): per 16-row tile and column, the 16 states from the stream, one 32-bit
//   multiply, add, and, then one dpbusd (AVX-512) / maddubs + madd (AVX2) per token;
// prefill: each 16-row tile decoded once per call into the repacked int8 layout (kernels/qrepack.h:
//   8-bit container, codes u, zero 126) and the level's repacked GEMM.
extern const FormatKernels trellis_kernels_scalar, trellis_kernels_avx2, trellis_kernels_avx512;
// Dequantization (every level: a tensor's rows are dequantized for the token embedding or the
// dequantize + sgemm oracle only).
void trellis_dequant_rows_scalar(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo);
// AVX-512 level: whether the CPU has AVX512-VBMI (the state extraction then uses vpmultishiftqb),
// and a switch for tests to run the level's other path.
bool trellis_vbmi_available();
void trellis_disable_vbmi(bool off);
// One Viterbi run (formats/trellis.h, viterbi_ref's contract): the reference for any L and values
// (viterbi_generic), and the AVX-512 run for L = 16 over this code's state values.
float trellis_viterbi_generic(const float* vals, int L, int k, const float* x, int T, int64_t overlap, uint32_t* states);
float trellis_viterbi16_avx512(int k, const float* x, int T, int64_t overlap, uint32_t* states);
// Tile rows [16 rt, 16 rt + 16) of w into repacked tiles (qrepack.h layout; p from
// trellis_repack_geometry), one tile at `out`; per level (the layout is the same).
QRepacked trellis_repack_geometry(const QWeights& w);
void trellis_repack_tile_scalar(const QWeights& w, int64_t rt, const QRepacked& p, uint8_t* out);
}  // namespace lmpress::kern
