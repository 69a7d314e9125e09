// SpQR's two-level statistics (Dettmers et al. 2023, "SpQR: A Sparse-Quantized Representation for
// Near-Lossless LLM Weight Compression"), shared by the spqr format family (spqr.cpp), its
// round-to-nearest reference and the spqr method (src/algo/spqr.cpp). Private to src/ and tests.
//
// A weight of column group g (G columns) in row r is w = s * q - m with a b-bit code q, where the
// group's scale s and offset m = s z come from 3-bit codes: s = s_low + s_step * code_s,
// z = z_low + z_step * code_z, with (s_step, s_low, z_step, z_low) f16 values shared by the R rows
// of r's row group (docs/formats.md, "spqr").
#pragma once
#include <cstdint>
#include <vector>

#include "lmpress/formats.h"

namespace lmpress::spqr {

constexpr int kStatBits = 3, kStatMax = 7;

// SpQR's first-level min-max statistics of one group of n weights (the reference's quantizer:
// the range is [min, max] of the values, not widened to include 0, and the zero -min / scale is
// not rounded). Deviations: a range that makes |zero| > 1024 (a group far from 0 relative to its
// width, or a constant one) is widened to include 0, so zero stays in [0, maxq]; an all-zero group
// has scale 0. Throws Error on a non-finite weight.
struct Stats1 {
  float scale = 0.f, zero = 0.f;
};
Stats1 minmax_stats(const float* w, int64_t n, int bits);

// Second-level quantization of one statistic over the rows of a row group: low = min rounded to
// the nearest f16, step = (max - low) / 7 rounded up to f16 (0 for a constant vector), codes =
// nearest. Throws Error when the values exceed the f16 range.
void quantize_stat(const float* v, int64_t n, uint8_t* codes, float* low, float* step);

// Sets group gi of the row group holding rows [r0, r1) of qm from the first-level statistics of
// those rows (scale[i], zero[i] of row r0 + i): the codes (qm.zeros), the second-level values
// (qm.stats2) and the decoded scales (qm.scales).
void set_group(QuantizedMatrix& qm, int64_t r0, int64_t r1, int64_t gi, const float* scale, const float* zero);

// The decoded statistics of (r, gi): s, z and m = s * z in f32, exactly as the kernels decode them.
struct Factors {
  float s = 0.f, z = 0.f, m = 0.f;
};
Factors factors(const QuantizedMatrix& qm, int64_t r, int64_t gi);
// The nearest code of w under f (the reference's clamp(round(w / s + z), 0, maxq); s <= 0: the
// code of the zero point) and the value of a code: s * q - m.
inline uint8_t quantize(float w, const Factors& f, int32_t maxq) {
  const float q = f.s > 0.f ? __builtin_nearbyintf(w / f.s + f.z) : __builtin_nearbyintf(f.z);
  return uint8_t(q < 0.f ? 0.f : q > float(maxq) ? float(maxq) : q);
}
inline float value(uint8_t q, const Factors& f) {
  const float p = f.s * float(q);
  return p - f.m;
}

// Row groups of a [rows, cols] tensor and the second-level values' index of (row group, k, gi).
inline int64_t row_groups(const QuantSpec& s, int64_t rows) { return (rows + s.group2 - 1) / s.group2; }
inline size_t stats2_index(const QuantizedMatrix& qm, int64_t rg, int k, int64_t gi) {
  return size_t((rg * 4 + k) * qm.groups() + gi);
}

// Round to nearest: per column group and row group, the rows' min-max statistics quantized as
// above, every weight to its nearest code (the reference quantizer without outliers or GPTQ).
QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSpec& s);
// Dense values [rows][cols] of qm (sparse outliers not included).
std::vector<float> dequantize_dense(const QuantizedMatrix& qm);

}  // namespace lmpress::spqr
