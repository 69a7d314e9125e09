// The AVX-512 trellis kernels with AVX512-VBMI state extraction (kernels/trellis_x86.h: one
// vpmultishiftqb per column instead of vpshufb + vpsrlvd + vpand). This TU is compiled with
// -mavx512vbmi too (CMakeLists.txt; a `#pragma GCC target` would not reach clang's fuzz build);
// x86_avx512/trellis.cpp calls it only when the CPU has VBMI.
#define LMP_TRELLIS_AVX512 1
#define LMP_TRELLIS_VBMI 1
#include "kernels/trellis_x86.h"

namespace lmpress::kern {

void trellis_gemm_avx512vbmi(const QGemmArgs& A, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  trellis_gemm(A, r0, r1, t0, t1);
}

}  // namespace lmpress::kern
