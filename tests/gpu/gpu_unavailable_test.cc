// Placeholder for builds without the CUDA toolkit: the gpu label exists and reports why its
// tests did not run.
#include "gtest/gtest.h"

TEST(GpuTests, SkippedWithoutCudaBuild) {
  GTEST_SKIP() << "this build has no CUDA backend (configure with -DBMS_CUDA=ON on a machine "
                  "with the CUDA toolkit to build the GPU tests)";
}
