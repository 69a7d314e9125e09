// AVX2 kernels of the vq family (kernels/vq_x86.h): xmm / ymm FMAs on codebook vectors for decode,
// a 4-token x 16-row (two ymm) f32 tile for prefill.
#include "kernels/vq_x86.h"

namespace lmpress::kern {

const FormatKernels vq_kernels_avx2 = {SimdLevel::AVX2, vq_gemm, vq_dequant};

}  // namespace lmpress::kern
