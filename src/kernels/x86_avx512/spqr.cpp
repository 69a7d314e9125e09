// AVX-512 kernels of the spqr family (kernels/spqr_x86.h): AVX512-VNNI dpbusd on 256-bit vectors,
// prefill tiles of 4 rows x 4 tokens.
#define LMP_QX86_VNNI 1
#include "kernels/spqr_x86.h"

namespace lmpress::kern {
namespace {
struct SpqrCfgAvx512 {
  static constexpr int GR = 4, GT = 4;
  static constexpr int64_t kChunkBytes = 384 << 10;
};
}  // namespace

const FormatKernels spqr_kernels_avx512 = {SimdLevel::AVX512, spqr_gemm<SpqrCfgAvx512>, spqr_dequant};

}  // namespace lmpress::kern
