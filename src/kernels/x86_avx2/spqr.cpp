// AVX2 kernels of the spqr family (kernels/spqr_x86.h): maddubs + madd integer dots, prefill tiles
// of 2 rows x 4 tokens.
#include "kernels/spqr_x86.h"

namespace lmpress::kern {

const FormatKernels spqr_kernels_avx2 = {SimdLevel::AVX2, spqr_gemm<gx::HalfRowsCfg>, spqr_dequant};

}  // namespace lmpress::kern
