// Randomized Hadamard transform at this level (the body: kernels/rht_impl.h).
#include "kernels/rht_impl.h"

namespace lmpress::kern {
const RhtKernel rht_kernel_avx512 = {SimdLevel::AVX512, rht_apply};
}  // namespace lmpress::kern
