// AVX2 kernels of the ggml family (kernels/ggml_x86.h): maddubs + madd integer dots of decoded
// lanes; prefill tiles of 2 rows x 4 tokens (8 accumulators of 16 registers).
#include "kernels/ggml_x86.h"

namespace lmpress::kern {

const FormatKernels ggml_kernels_avx2 = {SimdLevel::AVX2, ggml_gemm<gx::HalfRowsCfg>, ggml_dequant};

}  // namespace lmpress::kern
