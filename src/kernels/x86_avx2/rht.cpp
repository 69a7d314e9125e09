// Randomized Hadamard transform at this level (the body: kernels/rht_impl.h).
#include "kernels/rht_impl.h"

namespace lmpress::kern {
const RhtKernel rht_kernel_avx2 = {SimdLevel::AVX2, rht_apply};
}  // namespace lmpress::kern
