// The vq family (VPTQ's vector quantization: Liu et al. 2024, "VPTQ: Extreme Low-bit Vector
// Post-Training Quantization for Large Language Models"), shared by the format (vq.cpp), its
// reference quantizer, the kernels and the vptq method (src/algo/vptq.cpp). Private to src/ and tests.
//
// vq<v>k<b>[r<b2>][n]: the weights of a column are cut into vectors of v consecutive rows (the
// output-channel direction, so GPTQ's column-by-column error feedback applies to whole vectors);
// each vector is a b-bit index into a per-tensor codebook of K1 = 2^b int8 vectors with one f32
// scale, plus (r<b2>) a b2-bit index into a residual codebook of K2 = 2^b2 vectors; with `n` every
// column has an f16 scale and bias (VPTQ's weight normalization). Row r = v * rb + l, column c:
//   u = s1 * book1[idx1][l]  (+ s2 * book2[idx2][l])      (f32: two products, one sum)
//   w = u                    (or, with n: u * colscale[c] + colbias[c], one product, one sum)
// A vector's code is idx1 | idx2 << b (b + b2 bits). Rows are padded to a multiple of 16 (a tile);
// the vectors of the padding have codes too (any value; their rows are never read).
// Byte layout (docs/formats.md, "vq"): f32 s1, f32 s2 (0 without a residual stage); int8 book1
// [K1][v], book2 [K2][v]; with n: f16 colscale [cols], f16 colbias [cols]; then the code stream:
// code of vector i (0 <= i < 16 / v) of tile t, column c at bit ((t * cols + c) * 16 / v + i) *
// (b + b2), little-endian, rounded up to whole bytes, plus 8 zero bytes (kernels load 8 bytes).
#pragma once
#include <cstdint>
#include <vector>

#include "lmpress/formats.h"

namespace lmpress::vq {

constexpr int kTile = 16;                  // rows per tile of the code stream
constexpr int kMinBits = 4, kMaxBits = 12;  // index bits of a stage
constexpr int kSlack = 8;                  // zero bytes after the code stream

inline int64_t padded_rows(int64_t rows) { return (rows + kTile - 1) / kTile * kTile; }
inline int code_bits(const QuantSpec& s) { return s.bits + s.group2; }
inline int64_t book1_size(const QuantSpec& s) { return int64_t(1) << s.bits; }
inline int64_t book2_size(const QuantSpec& s) { return s.group2 ? int64_t(1) << s.group2 : 0; }
// Vectors (v rows each) per column, padding included, and those holding at least one real row.
inline int64_t row_blocks(const QuantSpec& s, int64_t rows) { return padded_rows(rows) / s.group; }
inline int64_t real_row_blocks(const QuantSpec& s, int64_t rows) { return (rows + s.group - 1) / s.group; }
// Position of vector (rb, c)'s code in the stream.
inline int64_t code_pos(const QuantSpec& s, int64_t cols, int64_t rb, int64_t c) {
  const int64_t T = kTile / s.group;
  return (rb / T * cols + c) * T + rb % T;
}

// Byte offsets of the parts of a packed [rows, cols] tensor.
struct Layout {
  int64_t book = 0;      // int8 codebooks (after the two f32 scales)
  int64_t colnorm = 0;   // f16 column scales then biases (n), else == codes
  int64_t codes = 0;     // the code stream
  int64_t code_bytes = 0;  // stream bytes including the slack
  int64_t total = 0;
};
Layout layout(const QuantSpec& s, int64_t rows, int64_t cols);

// Value of (r, c) of a quantized matrix, exactly as the scalar kernels compute it.
float value(const QuantizedMatrix& qm, int64_t r, int64_t c);
// Dense values [rows][cols].
std::vector<float> dequantize_dense(const QuantizedMatrix& qm);

// ---- codebook fitting (shared with the vptq method) -----------------------------------------------
// Lloyd's k-means of n vectors x [n][v] with per-vector weights wt (null: all 1) into k centroids
// [k][v]: the initial centroids are k distinct vectors drawn with `seed` (fewer than k vectors:
// all of them, the rest zero); each iteration assigns every vector to its nearest centroid
// (Euclidean) and moves each centroid to the weighted mean of its vectors; a centroid left without
// vectors takes the vector of largest weighted error. Stops after `iters` iterations or when no
// assignment changes. assign (optional): the final assignment. Parallel over vectors on `pool`.
std::vector<float> kmeans(const float* x, int64_t n, int v, const double* wt, int k, int iters, uint64_t seed,
                          ThreadPool* pool, std::vector<int32_t>* assign = nullptr);
// Nearest of k centroids book [k][v] to x over its first nv (<= v) entries (ties: lowest index).
// `fast` holds the same centroids transposed [v][k] with their squared norms (make_search).
struct Search {
  int v = 0, k = 0;
  std::vector<float> t;      // [v][k]
  std::vector<float> norm2;  // [k]
  std::vector<float> book;   // [k][v]
};
Search make_search(const float* book, int k, int v);
int32_t nearest(const Search& s, const float* x, int nv);

// The int8 form of f32 centroids c [n]: scale = max|c| / 127 (1 for all-zero centroids), values
// round(c / scale); returns the scale.
float to_int8(const float* c, int64_t n, int8_t* out);

// Column normalization (n): per column the mean (bias) and standard deviation (scale) over the
// rows, both rounded to f16 (a zero or tiny deviation: scale 1).
void column_norm(const float* w, int64_t rows, int64_t cols, std::vector<float>& scale, std::vector<float>& bias);

// Reference quantizer without calibration: column norm (n), unweighted k-means of the vectors for
// stage 1 (and of the remaining error for stage 2), nearest centroids.
QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSpec& s);
// Random codes and codebooks (benchmarks: k-means over 1.1 B weights is too slow for a speed
// test; the kernels' cost does not depend on the values).
QuantizedMatrix random_matrix(const QuantSpec& s, int64_t rows, int64_t cols, uint32_t seed);

}  // namespace lmpress::vq
