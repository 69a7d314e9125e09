// AVX2 kernels of the ggml family (kernels/ggml_x86.h): maddubs + madd integer dots of decoded
// lanes; prefill tiles of 2 rows x 4 tokens (8 accumulators of 16 registers).
#include "kernels/ggml_x86.h"

namespace lmpress::kern {
namespace {
struct GgmlCfgAvx2 {
  static constexpr int GR = 2, GT = 4;
  static constexpr int64_t kChunkBytes = 192 << 10;  // activations per token chunk (L2)
};
}  // namespace

const FormatKernels ggml_kernels_avx2 = {SimdLevel::AVX2, ggml_gemm<GgmlCfgAvx2>, ggml_dequant};

}  // namespace lmpress::kern
