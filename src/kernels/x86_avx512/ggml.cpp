// AVX-512 kernels of the ggml family (kernels/ggml_x86.h): the AVX2 structure with AVX512-VNNI
// dpbusd (u8 x s8 -> i32, so q8_0 and iq4_* lanes are offset to unsigned too) and the 32 vector
// registers for 4 rows x 4 tokens prefill tiles.
#define LMP_QX86_VNNI 1
#include "kernels/ggml_x86.h"

namespace lmpress::kern {

const FormatKernels ggml_kernels_avx512 = {SimdLevel::AVX512, ggml_gemm<gx::HalfRowsCfg>, ggml_dequant};

}  // namespace lmpress::kern
