// AVX2 kernels of the trellis family (kernels/trellis_x86.h): decode on two 8-row ymm halves
// (vpmaddubsw + vpmaddwd per column and token), prefill through the AVX2 repacked GEMM.
#include "kernels/trellis_x86.h"

namespace lmpress::kern {

const FormatKernels trellis_kernels_avx2 = {SimdLevel::AVX2, trellis_gemm, trellis_dequant_rows_scalar};

}  // namespace lmpress::kern
