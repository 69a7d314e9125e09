#include "kernels/kernels.h"

namespace lmpress::kern {

const Ops& ops_at(SimdLevel l) {
  switch (l) {
    case SimdLevel::AVX512: return ops_avx512;
    case SimdLevel::AVX2: return ops_avx2;
    default: return ops_scalar;
  }
}

const Ops& ops() { return ops_at(active_simd_level()); }

}  // namespace lmpress::kern
