// Scalar reference of the table-family kernels (nf4, fp4, mxfp4, lut3, lut4) and of fp8: the
// specification the SIMD levels are tested against (docs/formats.md, "Table formats").
//   table families: y[t][r] = sum_b d[t][b] * sum_{g} scale(r, g) * sum_{i in b, g} T_r[q_i] a_i,
//     T_r the int8 table of row r, a the int8 activations of qkernels.h; integer dots are exact.
//   fp8: y[t][r] = sum_g scale(r, g) * sum_{i in g} e4m3(q_i) x_i in f32 activations.
#include <cmath>
#include <vector>

#include "kernels/qkernels.h"

namespace lmpress::kern {

float e4m3_to_f32(uint8_t c) {
  const int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
  if (e == 15 && m == 7) return std::nanf("");
  const float v = e == 0 ? std::ldexp(float(m), -9) : std::ldexp(1.f + float(m) / 8.f, e - 7);
  return s ? -v : v;
}

namespace {

// Unpacks row r's codes (qblock layout of w.bits) into q[nb * 32].
void unpack_row(const QWeights& w, int64_t r, uint8_t* q) {
  const int bpb = qblock_bytes(w.bits);
  for (int64_t b = 0; b < w.nb; ++b) unpack_qblock(w.bits, w.q + r * w.row_bytes + b * bpb, q + b * kQBlock);
}

void table_gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const int64_t nb = w.nb, G = w.groups;
  std::vector<uint8_t> q(size_t(nb * kQBlock));
  std::vector<float> sf(static_cast<size_t>(G));
  for (int64_t r = r0; r < r1; ++r) {
    unpack_row(w, r, q.data());
    for (int64_t g = 0; g < G; ++g) sf[size_t(g)] = w.scale(r, g);
    for (int64_t t = t0; t < t1; ++t) {
      const int8_t* a = A.a.qa + t * A.a.a_stride;
      double acc = 0.0;
      for (int64_t b = 0; b < nb; ++b) {
        const float db = A.a.d[b * A.a.n + t];
        // a block lies in one group when group >= 32; group 16 splits it in halves (and has one
        // table per row: per-group tables, bitmod, need groups >= 32)
        const int8_t* T = w.group_lut(r, w.g16() ? 0 : b / w.blocks_per_group());
        int32_t dot[2] = {0, 0};
        for (int i = 0; i < kQBlock; ++i) dot[i >> 4] += int32_t(T[q[size_t(b * kQBlock + i)]]) * int32_t(a[b * kQBlock + i]);
        if (w.g16()) {
          for (int h = 0; h < 2; ++h)
            if (2 * b + h < G) acc += double(sf[size_t(2 * b + h)]) * db * dot[h];
        } else {
          acc += double(sf[size_t(b / w.blocks_per_group())]) * db * (dot[0] + dot[1]);
        }
      }
      A.y[t * A.ldy + r] = float(acc);
    }
  }
}

void table_dequant_rows(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  std::vector<uint8_t> q(size_t(w.nb * kQBlock));
  for (int64_t r = r0; r < r1; ++r) {
    unpack_row(w, r, q.data());
    float* o = out + (r - r0) * ldo;
    for (int64_t c = 0; c < w.cols; ++c) o[c] = w.scale(r, c / w.group) * float(w.group_lut(r, c / w.group)[q[size_t(c)]]);
  }
}

// fp8: codes are bytes, rows padded to whole 32-byte blocks (row_bytes).
void fp8_gemm(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  const QWeights& w = A.w;
  const int64_t cols = w.cols, G = w.groups;
  std::vector<float> v(static_cast<size_t>(cols));
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* q = w.q + r * w.row_bytes;
    for (int64_t c = 0; c < cols; ++c) v[size_t(c)] = e4m3_to_f32(q[c]);
    for (int64_t t = t0; t < t1; ++t) {
      const float* x = A.a.xf + t * cols;
      double acc = 0.0;
      for (int64_t g = 0; g < G; ++g) {
        const int64_t c0 = g * w.group, c1 = std::min(cols, c0 + w.group);
        double s = 0.0;
        for (int64_t c = c0; c < c1; ++c) s += double(v[size_t(c)]) * double(x[c]);
        acc += double(w.scale(r, g)) * s;
      }
      A.y[t * A.ldy + r] = float(acc);
    }
  }
}

void fp8_dequant_rows(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* q = w.q + r * w.row_bytes;
    float* o = out + (r - r0) * ldo;
    for (int64_t c = 0; c < w.cols; ++c) o[c] = w.scale(r, c / w.group) * e4m3_to_f32(q[c]);
  }
}

}  // namespace

const FormatKernels table_kernels_scalar = {SimdLevel::Scalar, table_gemm, table_dequant_rows};
const FormatKernels fp8_kernels_scalar = {SimdLevel::Scalar, fp8_gemm, fp8_dequant_rows};

}  // namespace lmpress::kern
