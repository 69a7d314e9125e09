// Scalar reference of the spqr family's kernels: the specification the SIMD levels are tested
// against. A row decodes to its codes q (unsigned, < 2^bits) and per-16-half factors S = s_g,
// M = s_g z_g (spqr_row_factors); w = S q - M, and the product is the ggml family's half-factor
// product (half_rows_gemm_ref).
#include <algorithm>

#include "kernels/spqr_rows.h"

namespace lmpress::kern {

void spqr_row_factors(const QWeights& w, int64_t r, float* S, float* M) {
  const int64_t nh = 2 * w.nb, G = w.groups, hpg = w.group / 16;
  const uint8_t* st = spqr::stat_codes(w, r);
  const uint16_t* p = spqr::stats2_of(w, r);
  for (int64_t h = 0; h < nh; ++h) S[h] = M[h] = 0.f;
  for (int64_t g = 0; g < G; ++g) {
    float s, m;
    spqr::group_factors(p, G, g, spqr::stat_code(st, G, g), &s, &m);
    for (int64_t h = g * hpg; h < std::min(nh, (g + 1) * hpg); ++h) S[h] = s, M[h] = m;
  }
}

namespace {

void decode_row(const QWeights& w, int64_t r, int8_t* v, float* S, float* M) {
  const int bpb = qblock_bytes(w.bits);
  for (int64_t b = 0; b < w.nb; ++b)
    unpack_qblock(w.bits, w.q + r * w.row_bytes + b * bpb, reinterpret_cast<uint8_t*>(v) + b * kQBlock);
  spqr_row_factors(w, r, S, M);
}

}  // namespace

const FormatKernels spqr_kernels_scalar = {SimdLevel::Scalar, half_rows_gemm_of<decode_row>, half_rows_dequant_of<decode_row>};

}  // namespace lmpress::kern
