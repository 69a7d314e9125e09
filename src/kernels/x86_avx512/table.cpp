// AVX-512 kernels of the table families and fp8 (kernels/table_x86.h): the AVX2 structure with
// AVX512-VNNI dpbusd for the integer dot, AVX512BW mask ops for the 3-bit high plane and the 32
// vector registers for 4 rows x 6 tokens prefill tiles. Vectors stay 256 bits wide (one block per
// vector, as in the int family's kernels).
#define LMP_QX86_VNNI 1
#include "kernels/table_x86.h"

namespace lmpress::kern {
namespace {
struct TableCfgAvx512 {
  static constexpr int RP = 4, TP = 6;  // 24 accumulators of 32 registers
  static constexpr int64_t kChunkBytes = 384 << 10;
  static constexpr int64_t kSliceBlocks = 64;
};
}  // namespace

const FormatKernels table_kernels_avx512 = {SimdLevel::AVX512, table_gemm<TableCfgAvx512>, table_dequant};
const FormatKernels fp8_kernels_avx512 = {SimdLevel::AVX512, fp8_gemm<TableCfgAvx512>, fp8_dequant};

}  // namespace lmpress::kern
