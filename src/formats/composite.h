// Composite formats: a tensor stored as int (or binary) sub-tensors, each of its own format, that
// together hold every weight once. Private to src/ and tests.
//
// mix<lo>_<hi>_p<P> (MixLLM, Zheng et al. 2024, "MixLLM: LLM Quantization with Global Mixed-precision
// between Output-features and Highly-efficient System Design"): rows (output features) split in two:
// k = ceil(rows * P / 1000) rows in the int format <hi>, the others in <lo>. Bytes: a row bitmap
// (bit r of byte r / 8 set: row r is in the high part; ceil(rows / 8) bytes, padded to 64), the low
// part (an int tensor [rows - k, cols] of its rows in ascending order), padding to 64, the high part
// ([k, cols]), then zero bytes to a multiple of 64 (a tensor after it in a file stays aligned). The
// product is the two parts' products, scattered to their rows.
//
// slim<N>g<G> (SliM-LLM, Huang et al. 2024, "SliM-LLM: Salience-Driven Mixed-Precision Quantization
// for Large Language Models"): column groups of G columns (all rows) in class 0, 1 or 2 = N-1, N or
// N+1 bits, as many of class 0 as of class 2 (N bits on average); the last group, when shorter than G,
// is class 1. Bytes: the class map (2 bits per group, group j in bits 2(j%4).. of byte j/4; padded to
// 64), then per class its part at a 64-aligned offset: an asymmetric int tensor w<b>g<G>a (b = 1:
// binary b1g<G>) [rows, columns of the class's groups in ascending order]; then zero bytes up to the
// fixed total = map + the bytes of slim's N-bit asymmetric int twin (w<N>g<G>a) + 3 x 64 (the binary
// part has no zeros, the parts' alignment), rounded up to a multiple of 64: the size depends on the shape
// only. The product is the sum
// of the parts' products with the activations of their columns.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lmpress/formats.h"
#include "lmpress/model.h"

namespace lmpress::composite {

inline bool is_composite(const QuantSpec& s) { return s.family == FormatFamily::Mix || s.family == FormatFamily::Slim; }
inline int n_parts(const QuantSpec& s) { return s.family == FormatFamily::Mix ? 2 : 3; }
// The format of part p (mix: 0 = low, 1 = high; slim: class 0, 1, 2).
QuantSpec part_spec(const QuantSpec& s, int p);
// mix: rows in the high part, ceil(rows * share / 1000).
int64_t mix_hi_rows(const QuantSpec& s, int64_t rows);
// slim: column groups per row, ceil(cols / G).
int64_t slim_groups(const QuantSpec& s, int64_t cols);
// Bytes of the row bitmap / class map (unpadded).
int64_t map_bytes(const QuantSpec& s, int64_t rows, int64_t cols);

struct Part {
  QuantSpec spec;
  int64_t rows = 0, cols = 0, offset = 0, bytes = 0;
};
// Where everything is, from the map at `data` (validated: bit counts, classes, padding bits; throws
// Error naming `where`). index[p]: mix: the tensor rows of part p (ascending); slim: the tensor columns
// of part p (ascending).
struct Layout {
  std::vector<Part> parts;
  std::vector<std::vector<int64_t>> index;
};
Layout layout_of(const QuantSpec& s, int64_t rows, int64_t cols, const uint8_t* data, const std::string& where);
// The layout of a packed tensor, cached per tensor (keyed by data pointer, size, format and the map's
// bytes, so a tensor freed and replaced is never served a stale layout). Thread-safe.
std::shared_ptr<const Layout> layout_cached(const Tensor& t);
// Part p of a packed composite tensor as a tensor of its own (a view into t's bytes, sharing its owner).
Tensor part_tensor(const Tensor& t, const Layout& L, size_t p);

// Builds composites from whole-matrix quantizations (every part's rows and params are copied from
// its source: rows / column groups of a part come from the matrix of that part).
//   mix: hi[r] = 1 for the rows of the high part; lo, hi_q: [rows, cols] in part_spec(s, 0 / 1).
QuantizedMatrix assemble_mix(const QuantSpec& s, const std::vector<uint8_t>& hi, const QuantizedMatrix& lo,
                             const QuantizedMatrix& hi_q);
//   slim: cls[j] in {0, 1, 2} per column group; src[c]: [rows, cols] matrices whose group j holds the
//   codes and params of class cls[j] (the same matrix may serve every class: a container whose
//   groups were quantized each on its class's grid, codes and (scale, zero) per group).
QuantizedMatrix assemble_slim(const QuantSpec& s, const std::vector<uint8_t>& cls, const QuantizedMatrix* const src[3]);
// Reference pieces for the format front end (pack.cpp).
std::vector<float> dequantize_dense(const QuantizedMatrix& qm);
void dequant_rows_ref(const Tensor& t, int64_t r0, int64_t r1, float* out);
// RTN: mix: the k rows whose squared rounding error falls most from <lo> to <hi>; slim: classes by the
// groups' sum of squared weights (salience without data), the number of +-1 groups `beta` (< 0: the one
// with the smallest total squared rounding error).
QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, int64_t beta = -1);
// slim: classes of ngroups groups for `beta` groups at N-1 and at N+1: the beta least / most salient
// of the full-length groups (ties: lower index first), the rest (and a short last group) class 1.
std::vector<uint8_t> slim_classes(const std::vector<double>& salience, int64_t cols, int64_t group, int64_t beta);
// Representative formats (tests; the composites are not in all_formats(): they have no kernels of
// their own, their parts' formats are there).
std::vector<QuantSpec> examples();

}  // namespace lmpress::composite
