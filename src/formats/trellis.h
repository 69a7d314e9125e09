// The trellis family (QTIP's trellis-coded quantization: Tseng et al. 2024, "QTIP: Quantization with
// Trellises and Incoherence Processing"), shared by the format (trellis.cpp), its encoder (Viterbi),
// the kernels and the qtip method (src/algo/qtip.cpp). Private to src/ and tests.
//
// trellis<k> (k = 2, 3, 4 bits per weight; trellis<k>h: the same with the hashed-table code,
// QuantSpec::variant 1, kernels/trellis_rows.h): a bitshift trellis with L = 16 state bits and V = 1.
// The tensor is cut into 16 x 16 tiles; each tile is one tail-biting sequence of 256 weights taken
// column-major (weight 16 c + r = row r, column c of the tile), coded by a cyclic bitstream of 256 k
// bits: weight i's state is bits [k i, k i + 16) mod 256 k, its value
// kern::trellis::state_value(state) (an integer in [-126, 126]); w(r, c) = scale_r * value.
// One f16 scale per row. rows and cols must be multiples of 16.
// Byte layout (docs/formats.md, "trellis"): code stream [rows / 16][cols / 16][32 k bytes] (tile
// (rt, ct) at (rt * cols / 16 + ct) * 32 k), then f16 row scales [rows]. Exactly k + 16 / cols bits
// per weight.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/trellis_rows.h"
#include "lmpress/formats.h"

namespace lmpress::trellis {

using kern::trellis::kL;
using kern::trellis::kSeq;
using kern::trellis::kStates;
using kern::trellis::kTile;

inline int64_t code_bytes(int k, int64_t rows, int64_t cols) { return rows / kTile * (cols / kTile) * kern::trellis::tile_bytes(k); }
// Whether a [rows, cols] tensor can take the family (the one shape rule), and the message when not.
bool shape_ok(int64_t rows, int64_t cols);
std::string shape_problem(const QuantSpec& s, int64_t rows, int64_t cols);

// The 65,536 state values of code `code` (kernels/trellis_rows.h: 0 1MAD, 1 hashed table) as floats
// (computed once per code).
const float* state_values(int code = 0);

// ---- encoder -------------------------------------------------------------------------------------
// Viterbi over a bitshift trellis of L state bits and k bits per step with state values vals[2^L]
// (the reference for any L, used by the tests with small L): the path s_0 .. s_{T-1}
// (s_{i+1} = s_i >> k | new << (L - k)) minimising sum_i (x_i - vals[s_i])^2. overlap < 0: free
// start and end; else the tail-biting constraint with a fixed overlap O (L - k bits): the low L - k
// bits of s_0 and the high L - k bits of s_{T-1} equal O. Returns the minimum (f32 sums, ties to
// the lowest state), path in states[T]; +inf when no path exists.
float viterbi_ref(const float* vals, int L, int k, const float* x, int T, int64_t overlap, uint32_t* states);
// The exact tail-biting optimum (every overlap tried: 2^(L-k) constrained runs; tests only).
float viterbi_tailbiting_exact(const float* vals, int L, int k, const float* x, int T, uint32_t* states);
// Production encoder of one 256-weight sequence x (in code units) with L = 16 at the active SIMD
// level: QTIP's tail-biting approximation (the sequence rotated by 128, a free Viterbi run over its middle half, the
// overlap read from the state at the original start; a second run constrained to that overlap).
// Writes the 32 k bytes of the tile's stream; returns the squared error sum.
float encode_sequence(const float* x, int k, uint8_t* stream, int code = 0);
// Path states [256] -> stream bytes (checks the tail-biting consistency).
void states_to_stream(const uint32_t* states, int k, uint8_t* stream);

// ---- matrices ------------------------------------------------------------------------------------
// Row scale for a row of RMS `rms` (f16-representable, > 0): rms * kScaleFactor / sd(values).
float row_scale(double rms, int code = 0);
// Quantizes one 16 x 16 tile w (row-major, ld) with row scales sc[16]: codes into qm at (rt, ct),
// the dequantized tile into out (row-major, ldo; may be null).
void quantize_tile(const float* w, int64_t ld, const float* sc, int k, uint8_t* stream, float* out, int64_t ldo,
                   int code = 0);
// No feedback ("rtn:trellis3"): per-row scales from the RMS, every tile encoded on its own.
QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, ThreadPool* pool = nullptr);
// Dense values [rows][cols] of a quantized matrix.
std::vector<float> dequantize_dense(const QuantizedMatrix& qm);
// Random streams and scales (benchmarks: encoding 1.1 B weights is too slow for a speed test; the
// kernels' cost does not depend on the values).
QuantizedMatrix random_matrix(const QuantSpec& s, int64_t rows, int64_t cols, uint32_t seed);

}  // namespace lmpress::trellis
