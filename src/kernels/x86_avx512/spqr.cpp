// AVX-512 kernels of the spqr family (kernels/spqr_x86.h): AVX512-VNNI dpbusd on 256-bit vectors,
// prefill tiles of 4 rows x 4 tokens.
#define LMP_QX86_VNNI 1
#include "kernels/spqr_x86.h"

namespace lmpress::kern {

const FormatKernels spqr_kernels_avx512 = {SimdLevel::AVX512, spqr_gemm<gx::HalfRowsCfg>, spqr_dequant};

}  // namespace lmpress::kern
