// Randomized Hadamard transform at this level (the body: kernels/rht_impl.h).
#include "kernels/rht_impl.h"

namespace lmpress::kern {
const RhtKernel rht_kernel_scalar = {SimdLevel::Scalar, rht_apply};
}  // namespace lmpress::kern
