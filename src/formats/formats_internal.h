// Private to src/formats (and its tests / benchmarks): views of packed tensors and the
// quantized matmul entry points.
#pragma once
#include <string>

#include "kernels/qkernels.h"
#include "lmpress/engine.h"
#include "lmpress/formats.h"

namespace lmpress {
namespace detail {
// Kernel view of a DType::Q tensor (the caller has validated it).
kern::QWeights packed_view(const Tensor& t);
}  // namespace detail

// y[n, rows] = x[n, cols] * W^T for a packed W (the engine's matmul() lands here for DType::Q),
// with the active SIMD level's kernels of W's format family. W was validated when it was made or
// loaded (pack_tensor / validate_packed).
void quant_matmul(const Tensor& W, const float* x, int64_t n, float* y, ThreadPool& pool);
// Several products in one dispatch (every W packed); inputs shared by consecutive jobs are
// quantized once.
void quant_matmul_batch(const MatmulJob* jobs, int count, ThreadPool& pool);
// The composed alternative: dequantize row panels to f32 and multiply with OpenBLAS sgemm.
// Kept as an oracle and for benchmarks (bench_quant compares the two for prefill).
void quant_matmul_dequant_sgemm(const Tensor& W, const float* x, int64_t n, float* y, ThreadPool& pool);
// The kernel path a product of W (packed) with n tokens takes at the active SIMD level, e.g.
// "int w4g32 repacked-avx512-vnni" (bench reports it per matmul kind).
std::string quant_kernel_path(const Tensor& W, int64_t n);
// Bytes held by repacked prefill copies of int-family weights (kernels/qrepack.h).
int64_t prefill_layout_bytes();
// Row r as f32 (embedding lookups of quantized tables).
void quant_row(const Tensor& t, int64_t r, float* out);
}  // namespace lmpress
