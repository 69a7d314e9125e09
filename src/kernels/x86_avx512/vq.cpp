// AVX-512 kernels of the vq family (kernels/vq_x86.h): decode as AVX2 (one codebook vector per
// xmm / ymm FMA; a zmm would need three inserts per 16 weights), prefill an 8-token x 16-row tile of
// zmm FMAs with masked stores.
#define LMP_VQ_AVX512 1
#include "kernels/vq_x86.h"

namespace lmpress::kern {

const FormatKernels vq_kernels_avx512 = {SimdLevel::AVX512, vq_gemm, vq_dequant};

}  // namespace lmpress::kern
