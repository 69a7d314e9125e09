// The test binary's main: like gtest_main, after reexec_with_tuned_blas (core.h), so the tests run
// the same OpenBLAS kernels as the CLI (the golden logits depend on sgemm's summation order).
#include <gtest/gtest.h>

#include "lmpress/core.h"

int main(int argc, char** argv) {
  lmpress::reexec_with_tuned_blas(argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
