// Scalar reference of the ggml family's kernels (llama.cpp's block types): the specification the
// SIMD levels are tested against. Each block decodes to int8 values v and per-16-half scales S and
// offsets M (kernels/ggml_blocks.h), w = S v - M; with the int8 activations of qkernels.h
//   y[t][r] = sum_b d[t][b] sum_{h in b} S[h] * (sum_{i in h} v_i a_i)  -  sum_h M[h] X[t][h]
// (X[t][h] = d[t][b] hs[t][h], QActs::x). Integer dots are exact; sums in double.
#include <vector>

#include "kernels/ggml_blocks.h"
#include "kernels/qkernels.h"

namespace lmpress::kern {

void half_rows_gemm_ref(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1, HalfRowDecoder dec) {
  const QWeights& w = A.w;
  const int64_t nb = w.nb, nh = 2 * nb;
  std::vector<int8_t> v(size_t(nb * kQBlock), 0);
  std::vector<float> S(static_cast<size_t>(nh)), M(static_cast<size_t>(nh));
  for (int64_t r = r0; r < r1; ++r) {
    dec(w, r, v.data(), S.data(), M.data());
    for (int64_t t = t0; t < t1; ++t) {
      const int8_t* a = A.a.qa + t * A.a.a_stride;
      const float* X = A.a.x + t * nh;
      double acc = 0.0;
      for (int64_t b = 0; b < nb; ++b) {
        const double db = A.a.d[b * A.a.n + t];
        for (int h = 0; h < 2; ++h) {
          int32_t dot = 0;
          for (int i = 16 * h; i < 16 * h + 16; ++i) dot += int32_t(v[size_t(b * kQBlock + i)]) * int32_t(a[b * kQBlock + i]);
          acc += double(S[size_t(2 * b + h)]) * db * dot - double(M[size_t(2 * b + h)]) * X[2 * b + h];
        }
      }
      A.y[t * A.ldy + r] = float(acc);
    }
  }
}

// w = S v - M in f32: ggml's own dequantization (one product, one difference).
void half_rows_dequant_ref(const QWeights& w, int64_t r0, int64_t r1, float* out, int64_t ldo, HalfRowDecoder dec) {
  std::vector<int8_t> v(size_t(w.nb * kQBlock));
  std::vector<float> S(size_t(2 * w.nb)), M(size_t(2 * w.nb));
  for (int64_t r = r0; r < r1; ++r) {
    dec(w, r, v.data(), S.data(), M.data());
    float* o = out + (r - r0) * ldo;
    for (int64_t c = 0; c < w.cols; ++c) {
      const float p = S[size_t(c / 16)] * float(v[size_t(c)]);
      o[c] = p - M[size_t(c / 16)];
    }
  }
}

namespace {

// Row r decoded: v[cols], S[cols / 16], M[cols / 16].
void decode_row(const QWeights& w, int64_t r, int8_t* v, float* S, float* M) {
  const ggml::TypeInfo* t = ggml::type_info(uint32_t(w.bits));
  const int64_t nblk = w.cols / t->qk;
  const uint8_t* row = w.q + r * w.row_bytes;
  for (int64_t k = 0; k < nblk; ++k) {
    const uint8_t* b = row + k * t->bytes;
    ggml::block_values(t->type, b, v + k * t->qk);
    ggml::block_factors(t->type, b, S + k * (t->qk / 16), M + k * (t->qk / 16));
  }
}

}  // namespace

const FormatKernels ggml_kernels_scalar = {SimdLevel::Scalar, half_rows_gemm_of<decode_row>, half_rows_dequant_of<decode_row>};

}  // namespace lmpress::kern
