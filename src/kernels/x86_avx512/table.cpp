// AVX-512 kernels of the table families and fp8 (kernels/table_x86.h): the AVX2 structure with
// AVX512-VNNI dpbusd for the integer dot (4-bit prefill: u8 values T + 128, no sign op), AVX512BW
// mask ops for the 3-bit high plane and the 32 vector registers for bigger prefill tiles: table
// families 4 rows x 5 tokens (4 x 6 spilled accumulators next to the 4 tables), fp8 4 x 6. Integer
// vectors stay 256 bits wide (one block per vector, as in the int family's kernels); fp8 decode
// converts and FMAs 16 columns per zmm.
#define LMP_QX86_VNNI 1
#include "kernels/table_x86.h"

namespace lmpress::kern {
namespace {
struct TableCfgAvx512 {
  static constexpr int RP = 4, TP = 6;  // fp8 prefill tile: 24 accumulators of 32 registers
  static constexpr int TRP = 4, TTP = 5;  // table prefill tile
  static constexpr int64_t kChunkBytes = 384 << 10;
  static constexpr int64_t kSliceBlocks = 64;
};
}  // namespace

const FormatKernels table_kernels_avx512 = {SimdLevel::AVX512, table_gemm<TableCfgAvx512>, table_dequant};
const FormatKernels fp8_kernels_avx512 = {SimdLevel::AVX512, fp8_gemm<TableCfgAvx512>, fp8_dequant};

}  // namespace lmpress::kern
