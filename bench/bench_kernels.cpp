// Kernel micro-benchmarks: matrix-vector products per dtype and ISA level, sweeping the weight
// size from L1-resident to DRAM-resident. Reports bytes of weights streamed per second.
#include <benchmark/benchmark.h>

#include <vector>

#include "kernels/kernels.h"

using namespace lmpress;

static void run_gemv(benchmark::State& st, DType dt, SimdLevel lvl) {
  if (lvl > cpu_simd_level()) {
    st.SkipWithError("ISA level not supported by this CPU");
    return;
  }
  const size_t k = 2048, rows = size_t(st.range(0)) / (k * dtype_size(dt));
  std::vector<uint16_t> w16(rows * k, 0x3c00);
  std::vector<float> w32(rows * k, 1.0f), x(k, 0.5f), y(rows);
  const auto& K = kern::ops_at(lvl);
  for (auto _ : st) {
    if (dt == DType::F32)
      K.gemv_f32(w32.data(), k, x.data(), k, y.data(), rows);
    else if (dt == DType::F16)
      K.gemv_f16(w16.data(), k, x.data(), k, y.data(), rows);
    else
      K.gemv_bf16(w16.data(), k, x.data(), k, y.data(), rows);
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(rows * k * dtype_size(dt)));
}

#define GEMV_BENCH(DT, LVL)                                                                  \
  BENCHMARK_CAPTURE(run_gemv, DT##_##LVL, DType::DT, SimdLevel::LVL)                         \
      ->RangeMultiplier(8)->Range(32 << 10, 128 << 20)->Unit(benchmark::kMicrosecond)
GEMV_BENCH(F32, Scalar);
GEMV_BENCH(F32, AVX2);
GEMV_BENCH(F32, AVX512);
GEMV_BENCH(F16, Scalar);
GEMV_BENCH(F16, AVX2);
GEMV_BENCH(F16, AVX512);
GEMV_BENCH(BF16, AVX2);
GEMV_BENCH(BF16, AVX512);

BENCHMARK_MAIN();
