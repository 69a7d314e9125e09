// Quantized-weight kernels (internal API). The packed formats are described in formats.h and
// docs/formats.md ("Packed weight formats"); this header is what the kernels need of them.
//
// Arithmetic (every ISA level computes exactly this, up to float summation order):
//   activations x[t][c] are quantized per 32-column block b to int8 a in [-127, 127] with scale
//   d[t][b] = amax/127 (rounded to nearest-even, blocks zero-padded to a multiple of 32);
//   y[t][r] = sum_u S[r][u] * d[t][b(u)] * sum_{i in u} (q_i - C) a_i
//           - sum_g s[r][g] * (z[r][g] - C) * X[t][g]
//   where u runs over "scale units" (16-column halves for group 16, else 32-column blocks),
//   S[r][u] is the f16 scale of the group holding unit u, X[t][g] = sum_{b,h in g} d[t][b] *
//   hs[t][b][h] (hs = integer sum of a over a 16-half) and C is a per-kernel code offset
//   (128 for 8-bit codes on AVX2, where the sign trick needs signed codes; 0 elsewhere).
//   Integer dot products are exact, so levels differ only in float rounding.
// Kernels trust their arguments: the front end (src/formats/qmatmul.cpp) validates shapes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "lmpress/core.h"

namespace lmpress::kern {

constexpr int kQBlock = 32;  // weights per packed block (and activations per int8 block)

// Bytes for 32 codes of `bits` bits (2 -> 8, 3 -> 12, 4 -> 16, 5 -> 20, 6 -> 24, 8 -> 32).
constexpr int qblock_bytes(int bits) { return bits * 4; }

// Scalar reference of the block bit layout: the specification (docs/formats.md).
// q: 32 codes, each < 2^bits. out / in: qblock_bytes(bits) bytes.
void pack_qblock(int bits, const uint8_t* q, uint8_t* out);
void unpack_qblock(int bits, const uint8_t* in, uint8_t* q);

// Read-only view of a packed [rows, cols] tensor.
struct QWeights {
  const uint8_t* q = nullptr;        // [rows][row_bytes]: blocks of qblock_bytes(bits)
  const uint16_t* scales = nullptr;  // [rows][groups] f16
  const uint8_t* zeros = nullptr;    // [rows][groups] u8; null for symmetric formats
  int64_t rows = 0, cols = 0;
  int64_t nb = 0;         // blocks per row = ceil(cols / 32)
  int64_t row_bytes = 0;  // nb * qblock_bytes(bits)
  int64_t groups = 0;     // groups per row
  int64_t group = 0;      // group length in columns (cols for whole-row)
  int32_t bits = 4;
  int32_t zero_sym = 8;   // implicit zero of symmetric formats: 2^(bits-1)
  // Table families (nf4, fp4, mxfp4, lut): value of code q in group g of row r is
  // scale(r, g) * lut[r * lut_stride + q]; lut_stride 0 = one table for all rows.
  const int8_t* lut = nullptr;
  int64_t lut_stride = 0;
  // bitmod: a table per group: [rows][groups] u8 selectors, the value of code q in group g of row
  // r is scale(r, g) * lut[16 * lut_sel[r * groups + g] + q] (lut_stride unused; groups >= 32).
  const uint8_t* lut_sel = nullptr;
  const int8_t* group_lut(int64_t r, int64_t g) const {
    return lut_sel ? lut + 16 * int64_t(lut_sel[r * groups + g]) : lut + r * lut_stride;
  }
  const uint8_t* e8m0 = nullptr;  // mxfp4: [rows][groups] E8M0 scales (2^(e-128)) instead of f16
  // spqr: second-level statistics [row groups][4][groups] f16 (scale step, scale low, zero step,
  // zero low) of groups of stat_rows rows; each row's 6-bit statistic codes (scale | zero << 3,
  // group g at bit 6g) follow its code blocks, at byte nb * qblock_bytes(bits) of the row.
  const uint16_t* stats2 = nullptr;
  int64_t stat_rows = 0;
  // vq (formats/vq.h): q is the code stream (code of vector i of 16-row tile t, column c at bit
  // ((t * cols + c) * 16 / vq_v + i) * (bits + vq_bits2)); value of row r = 16 t + vq_v i + l,
  // column c: (vq_s1 * book1[idx1][l] + vq_s2 * book2[idx2][l]) * colscale[c] + colbias[c]
  // (colscale / colbias f16, null without column norm), book2 = vq_book + 2^bits * vq_v.
  const int8_t* vq_book = nullptr;
  float vq_s1 = 0.f, vq_s2 = 0.f;
  int32_t vq_v = 0, vq_bits2 = 0;
  const uint16_t* col_scale = nullptr;
  const uint16_t* col_bias = nullptr;
  // trellis: the code (kernels/trellis_rows.h): 0 1MAD, 1 hashed table
  int32_t trellis_code = 0;
  // Scale of (row, group) as f32 (either stored kind).
  float scale(int64_t r, int64_t g) const;
  bool g16() const { return group == 16; }
  // Blocks per group when group >= 32 (whole-row: nb).
  int64_t blocks_per_group() const { return group == 16 ? 0 : (group + 31) / 32; }
};

inline float QWeights::scale(int64_t r, int64_t g) const {
  if (e8m0) {
    uint32_t e = e8m0[r * groups + g];
    // 2^(e - 128) as an f32 bit pattern: exponent field e - 1 (validation keeps e in [2, 254])
    e = (e - 1u) << 23;
    float f;
    std::memcpy(&f, &e, 4);
    return f;
  }
  return f16_to_f32(scales[r * groups + g]);
}

// Quantized activations of n tokens (built once per matmul call by the front end).
struct QActs {
  const float* xf = nullptr;   // f32 activations [n][cols] (formats whose kernels read f32)
  const int8_t* qa = nullptr;  // [n][a_stride] int8; token t's block b at qa + t*a_stride + 32*b
  int64_t a_stride = 0;        // >= nb*32, padded so tokens do not alias in L1 sets
  const float* d = nullptr;    // [nb][n] block scales (token-minor so tiles load them as vectors);
                               // followed by >= 16 zero floats of padding
  const float* x = nullptr;    // [n][groups]: X[t][g] (see above); ggml family: [n][2 nb], X per
                               // 16-column half h of block b: d[t][b] * hs[t][h]
  // Optional copy of qa in AMX A-tile order (built by the front end where the AMX kernels run):
  // [ceil(n / 16)][nb][16 tokens][32], tokens past n zero. One block of 16 tokens is then 512
  // contiguous bytes (8 cache lines) where qa's rows touch 16 half-used lines.
  const int8_t* panel = nullptr;
  int64_t n = 0;
};

struct QGemmArgs {
  QWeights w;
  QActs a;
  float* y = nullptr;  // y[t * ldy + r]
  int64_t ldy = 0;
};

struct QuantOps {
  SimdLevel level;
  // One token: x[cols] -> qa[nb*32] (zero padded), d[b * d_stride], hs[2*nb] (16-half sums).
  // A block holding a NaN or Inf gets d = NaN and a = 0, so results turn NaN instead of garbage.
  void (*quantize_acts)(const float* x, int64_t cols, int8_t* qa, float* d, int64_t d_stride,
                        int32_t* hs);
  // y for rows [r0, r1) x tokens [t0, t1).
  void (*gemm)(const QGemmArgs& a, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
  // Dequantizes rows [r0, r1): out[(r - r0) * ldo + c] for c < cols.
  void (*dequant_rows)(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo);
};

// Kernels of one non-int format family at one ISA level (the int family's are QuantOps::gemm /
// dequant_rows). Format traits (src/formats/traits.h) list them per level.
struct FormatKernels {
  SimdLevel level;
  void (*gemm)(const QGemmArgs& a, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
  void (*dequant_rows)(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo);
};
// Table families (int8 table per format or per row, 3- or 4-bit codes, f16 or E8M0 scales):
// int8 activations, integer dot products of table values.
extern const FormatKernels table_kernels_scalar, table_kernels_avx2, table_kernels_avx512;
// fp8 (E4M3 codes in 32-byte blocks, f16 scales): f32 activations (QActs::xf), float FMA.
extern const FormatKernels fp8_kernels_scalar, fp8_kernels_avx2, fp8_kernels_avx512;
// Sparse outliers of a packed tensor (formats with +s): y[t][r] += sum over outliers (r, c) of
// rows [r0, r1): value * x[t][c], tokens [t0, t1). idx: ascending positions r * cols + c; val:
// f16 values (finite). Scalar reference, AVX2 (gathers, F16C) and AVX-512 (masked gathers).
struct SparseArgs {
  const uint32_t* idx = nullptr;
  const uint16_t* val = nullptr;
  int64_t nnz = 0, cols = 0;
  const float* x = nullptr;  // [n][cols]
  float* y = nullptr;        // [n][ldy]
  int64_t ldy = 0;
  // Prefill: the same activations transposed, xT[c * n_all + t] (null for decode); the SIMD
  // kernels then run 8/16 tokens per vector with contiguous loads instead of gathers.
  const float* xT = nullptr;
  int64_t n_all = 0;
};
using SparseAddFn = void (*)(const SparseArgs& a, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
void sparse_add_scalar(const SparseArgs& a, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
void sparse_add_avx2(const SparseArgs& a, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
void sparse_add_avx512(const SparseArgs& a, int64_t r0, int64_t r1, int64_t t0, int64_t t1);

// llama.cpp's block types (kernels/ggml_blocks.h; QWeights::bits is the ggml_type): int8
// activations, per-type unpacking of a block to int8 lanes and f32 scales (+ offsets, QActs::x
// holding X per 16-column half).
extern const FormatKernels ggml_kernels_scalar, ggml_kernels_avx2, ggml_kernels_avx512;
// SpQR (spqr family): b-bit codes, w = s_g (q - z_g) with s_g, z_g decoded from 3-bit codes and the
// second-level statistics (QWeights::stats2); int8 activations and, like ggml, per-16-half scales S
// and offsets M = s z against QActs::x per half.
extern const FormatKernels spqr_kernels_scalar, spqr_kernels_avx2, spqr_kernels_avx512;
// Row r's per-half factors (the specification of the statistics' decoding): S[h] = s_g, M[h] =
// s_g * z_g of the group holding half h, for h < 2 * nb (0 past the row's groups), where
// s = s_low + s_step * code_s and z = z_low + z_step * code_z in f32 (one product, one sum).
void spqr_row_factors(const QWeights& w, int64_t r, float* S, float* M);
// Rows whose blocks decode to int8 values v and per-16-half factors (ggml, spqr): w = S v - M,
//   y[t][r] = sum_b d[t][b] sum_{h in b} S[h] (sum_{i in h} v_i a_i) - sum_h M[h] X[t][h].
// The scalar reference of that product for any row decoder (kernels/generic/ggml.cpp).
using HalfRowDecoder = void (*)(const QWeights& w, int64_t r, int8_t* v, float* S, float* M);
void half_rows_gemm_ref(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1, HalfRowDecoder dec);
// Their reference dequantization: w = S v - M in f32 (one product, one difference).
void half_rows_dequant_ref(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo, HalfRowDecoder dec);
// The two as kernel-table entries for one decoder.
template <HalfRowDecoder DEC>
void half_rows_gemm_of(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  half_rows_gemm_ref(A, r0, r1, t0, t1, DEC);
}
template <HalfRowDecoder DEC>
void half_rows_dequant_of(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  half_rows_dequant_ref(w, r0, r1, out, ldo, DEC);
}
// vq (vector quantization, formats/vq.h): f32 activations (QActs::xf); decode: per 16-row tile
// and column, the tile's 16 weights from the codebook(s), one FMA with x; prefill: a decoded tile
// reused over the tokens.
extern const FormatKernels vq_kernels_scalar, vq_kernels_avx2, vq_kernels_avx512;
// E4M3 code -> float (scalar reference; 0x7f / 0xff are NaN).
float e4m3_to_f32(uint8_t c);

extern const QuantOps qops_scalar;
extern const QuantOps qops_avx2;
extern const QuantOps qops_avx512;

const QuantOps& qops();                // active level
const QuantOps& qops_at(SimdLevel l);  // caller ensures the CPU supports l

}  // namespace lmpress::kern
