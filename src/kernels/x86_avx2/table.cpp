// AVX2 kernels of the table families and fp8 (kernels/table_x86.h): maddubs + madd integer dots
// of table values. Prefill tiles: table families 2 rows x 4 tokens (the rows' tables, |v| and the
// sign-applied activations need the registers 3 x 4 gave to accumulators: it spilled and measured
// slower), fp8 3 rows x 4 tokens of f32 FMAs (12 accumulators of 16 ymm registers).
#include "kernels/table_x86.h"

namespace lmpress::kern {
namespace {
struct TableCfgAvx2 {
  static constexpr int RP = 3, TP = 4;               // fp8 prefill tile (f32)
  static constexpr int TRP = 2, TTP = 4;             // table prefill tile
  static constexpr int64_t kChunkBytes = 192 << 10;  // activations per token chunk (L2)
  static constexpr int64_t kSliceBlocks = 64;        // K slice: 2048 columns
};
}  // namespace

const FormatKernels table_kernels_avx2 = {SimdLevel::AVX2, table_gemm<TableCfgAvx2>, table_dequant};
const FormatKernels fp8_kernels_avx2 = {SimdLevel::AVX2, fp8_gemm<TableCfgAvx2>, fp8_dequant};

}  // namespace lmpress::kern
