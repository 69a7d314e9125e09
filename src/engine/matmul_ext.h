// Engine-internal helpers shared by the engine's translation units.
#pragma once
#include "lmpress/engine.h"
#include "lmpress/model.h"

namespace lmpress {
// Row r of an embedding-like tensor as f32 (dense or quantized).
void tensor_row_f32(const Tensor& t, int64_t r, float* out);
// LMPRESS_F16_PREFILL=sgemm: f16/bf16 prefill without AMX through f32 panels + OpenBLAS instead of
// the register-blocked f16 GEMM (kernels/dense_x86.h gemm16); the scalar level always takes it.
bool f16_prefill_sgemm();
// Whether f16/bf16 prefill without AMX takes that register-blocked GEMM at the active level (the
// engine's dispatch; bench names the path from it).
bool f16_prefill_register_gemm();
}  // namespace lmpress
