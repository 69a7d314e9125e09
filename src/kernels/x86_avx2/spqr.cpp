// AVX2 kernels of the spqr family (kernels/spqr_x86.h): maddubs + madd integer dots, prefill tiles
// of 2 rows x 4 tokens.
#include "kernels/spqr_x86.h"

namespace lmpress::kern {
namespace {
struct SpqrCfgAvx2 {
  static constexpr int GR = 2, GT = 4;
  static constexpr int64_t kChunkBytes = 192 << 10;  // activations per token chunk (L2)
};
}  // namespace

const FormatKernels spqr_kernels_avx2 = {SimdLevel::AVX2, spqr_gemm<SpqrCfgAvx2>, spqr_dequant};

}  // namespace lmpress::kern
