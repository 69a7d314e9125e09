// AVX-512 quantized kernels: the AVX2 structure (kernels/qkernels_x86.h) with AVX512-VNNI dpbusd
// for the integer dot (u8 x s8 -> i32 in one instruction, so 8-bit codes need no sign trick),
// AVX512BW masked byte adds for 1-bit planes, and the 32 vector registers for bigger tiles.
// Vectors stay 256 bits wide: one 32-weight block per vector, exactly as on AVX2.
#define LMP_QX86_VNNI 1
#include "kernels/qkernels_x86.h"

namespace lmpress::kern {
namespace {
struct CfgAvx512 {
  static constexpr int RP = 4, TP = 6;  // 24 accumulators of 32 registers
  static constexpr int64_t kChunkBytes = 384 << 10;
  static constexpr int64_t kSliceBlocks = 64;
};
}  // namespace

const QuantOps qops_avx512 = {SimdLevel::AVX512, quantize_acts, gemm<CfgAvx512>, dequant_rows};

}  // namespace lmpress::kern
