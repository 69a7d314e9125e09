// AVX2 quantized kernels: maddubs + madd integer dot products (kernels/qkernels_x86.h).
// Decode is one row at a time (decode_row_fused / decode_row_g16: each thread reads one sequential
// stream; 4-row tiles interleave four DRAM streams and measured 10-20% slower here); prefill tiles
// are 3 rows x 4 tokens (12 accumulators of 16 ymm registers).
#include "kernels/qkernels_x86.h"

namespace lmpress::kern {
namespace {
struct CfgAvx2 {
  static constexpr int RP = 3, TP = 4;               // prefill tile
  static constexpr int64_t kChunkBytes = 192 << 10;  // activations per token chunk (L2)
  static constexpr int64_t kSliceBlocks = 64;        // K slice: 2048 columns
};
}  // namespace

const QuantOps qops_avx2 = {SimdLevel::AVX2, quantize_acts, gemm<CfgAvx2>, dequant_rows};

}  // namespace lmpress::kern
