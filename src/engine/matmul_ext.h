// Seam for quantized formats: the format registry installs its matmul for DType::Q tensors.
#pragma once
#include "lmpress/engine.h"
#include "lmpress/model.h"

namespace lmpress {
using QuantMatmulFn = void (*)(const Tensor& W, const float* x, int64_t n, float* y, ThreadPool& pool);
void set_quant_matmul(QuantMatmulFn fn);
// Batched form (see matmul_batch); every job's W is DType::Q.
using QuantMatmulBatchFn = void (*)(const MatmulJob* jobs, int count, ThreadPool& pool);
void set_quant_matmul_batch(QuantMatmulBatchFn fn);
// Row r of an embedding-like tensor as f32 (dense or quantized).
void tensor_row_f32(const Tensor& t, int64_t r, float* out);
using QuantRowFn = void (*)(const Tensor& t, int64_t r, float* out);
void set_quant_row(QuantRowFn fn);
}  // namespace lmpress
