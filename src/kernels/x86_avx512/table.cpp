// avx512 kernels of the table families and fp8: until the SIMD versions land, the scalar reference.
#include "kernels/qkernels.h"

namespace lmpress::kern {
const FormatKernels table_kernels_avx512 = {SimdLevel::AVX512, table_kernels_scalar.gemm, table_kernels_scalar.dequant_rows};
const FormatKernels fp8_kernels_avx512 = {SimdLevel::AVX512, fp8_kernels_scalar.gemm, fp8_kernels_scalar.dequant_rows};
}  // namespace lmpress::kern
