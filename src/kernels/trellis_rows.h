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

// Code 1, the hashed-table code (formats "trellis<k>h", session 11): h = the high byte of the 16-bit
// product s * kHashMul (mod 2^16; the golden-ratio multiplier), value = kHashTable[h], the 256 N(0, 1)
// quantiles Phi^-1((h + 0.5) / 256) times 44, rounded (monotone, in [-127, 127], sd 43.9); u = value +
// kBiasH. In a 16-bit lane the hash is one vpmullw and the value one table lookup (vpermi2b), and four
// columns' values of a row fill a dword: one vpdpbusd per 64 weights and token. Viterbi MSE on N(0, 1)
// sequences, 38,400 weights (free runs of 256): k = 2 0.0665, 3 0.0168, 4 0.0048 against the 1MAD
// code's 0.0671, 0.0176, 0.0047 (docs/formats.md, "trellis").
constexpr uint16_t kHashMul = 40503;
constexpr int kBiasH = 127;
alignas(64) inline constexpr int8_t kHashTable[256] = {
    -127, -111, -103, -97, -93, -89, -86, -83, -81, -79, -77, -75, -73, -71, -70, -68,
    -67, -65, -64, -63, -62, -61, -60, -59, -57, -56, -56, -55, -54, -53, -52, -51,
    -50, -49, -49, -48, -47, -46, -46, -45, -44, -43, -43, -42, -41, -41, -40, -39,
    -39, -38, -37, -37, -36, -36, -35, -34, -34, -33, -33, -32, -32, -31, -30, -30,
    -29, -29, -28, -28, -27, -27, -26, -26, -25, -25, -24, -24, -23, -23, -22, -22,
    -21, -21, -20, -20, -19, -19, -18, -18, -17, -17, -17, -16, -16, -15, -15, -14,
    -14, -13, -13, -12, -12, -12, -11, -11, -10, -10, -9, -9, -8, -8, -8, -7,
    -7, -6, -6, -5, -5, -5, -4, -4, -3, -3, -2, -2, -2, -1, -1, 0,
    0, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7,
    7, 8, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 12, 13, 13, 14,
    14, 15, 15, 16, 16, 17, 17, 17, 18, 18, 19, 19, 20, 20, 21, 21,
    22, 22, 23, 23, 24, 24, 25, 25, 26, 26, 27, 27, 28, 28, 29, 29,
    30, 30, 31, 32, 32, 33, 33, 34, 34, 35, 36, 36, 37, 37, 38, 39,
    39, 40, 41, 41, 42, 43, 43, 44, 45, 46, 46, 47, 48, 49, 49, 50,
    51, 52, 53, 54, 55, 56, 56, 57, 59, 60, 61, 62, 63, 64, 65, 67,
    68, 70, 71, 73, 75, 77, 79, 81, 83, 86, 89, 93, 97, 103, 111, 127,
};
constexpr bool hash_table_odd_symmetric() {
  for (int i = 0; i < 256; ++i)
    if (kHashTable[255 - i] != -kHashTable[i]) return false;
  return true;
}
static_assert(hash_table_odd_symmetric(), "the VBMI decode looks up half the table (trellis_x86.h, hash_quad)");
inline int32_t hash_value(uint32_t s) { return kHashTable[uint16_t(uint16_t(s) * kHashMul) >> 8]; }
// The value and the code offset of a state under code `code` (0: 1MAD, 1: hashed table).
inline int32_t code_value(int code, uint32_t s) { return code ? hash_value(s) : state_value(s); }

// Viterbi in half precision (the encoder's run where the CPU has AVX512-FP16; the reference is
// trellis_viterbi_f16_generic): state values and targets are scaled by kViterbiF16Scale (so the
// squared errors of targets up to the clamp stay below the f16 range), targets clamped to
// +-kViterbiF16Clamp value units (35.7 standard deviations of the values) and rounded to f16.
constexpr float kViterbiF16Scale = 0.125f;
constexpr float kViterbiF16Clamp = 1320.f;
inline float viterbi_f16_input(float x) {
  return (x > kViterbiF16Clamp ? kViterbiF16Clamp : x < -kViterbiF16Clamp ? -kViterbiF16Clamp : x) * kViterbiF16Scale;
}
inline int32_t code_bias(int code) { return code ? kBiasH : kBias; }

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
// (viterbi_generic), and the AVX-512 and AVX2 runs for L = 16 over this code's state values.
float trellis_viterbi_generic(const float* vals, int L, int k, const float* x, int T, int64_t overlap, uint32_t* states);
float trellis_viterbi16_avx512(int k, const float* x, int T, int64_t overlap, uint32_t* states, int code = 0);
float trellis_viterbi16_avx2(int k, const float* x, int T, int64_t overlap, uint32_t* states, int code = 0);
// The same contract in half precision (kViterbiF16Scale above): every sum, product and difference
// rounded to f16 as vsubph / vfmaddph do, each step's group minima lowered by the previous step's
// smallest one; the generic version for any L and values, the AVX512-FP16 run (where
// trellis_viterbi_fp16_available()) for L = 16 over this code's values, state for state the same.
float trellis_viterbi_f16_generic(const float* vals, int L, int k, const float* x, int T, int64_t overlap, uint32_t* states);
bool trellis_viterbi_fp16_available();
float trellis_viterbi16_fp16(int k, const float* x, int T, int64_t overlap, uint32_t* states, int code = 0);
// Tile rows [16 rt, 16 rt + 16) of w into repacked tiles (qrepack.h layout; p from
// trellis_repack_geometry), one tile at `out`; per level (the layout is the same).
QRepacked trellis_repack_geometry(const QWeights& w);
void trellis_repack_tile_scalar(const QWeights& w, int64_t rt, const QRepacked& p, uint8_t* out);
}  // namespace lmpress::kern
