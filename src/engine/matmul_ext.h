// Engine-internal helpers shared by the engine's translation units.
#pragma once
#include "lmpress/engine.h"
#include "lmpress/model.h"

namespace lmpress {
// Row r of an embedding-like tensor as f32 (dense or quantized).
void tensor_row_f32(const Tensor& t, int64_t r, float* out);
}  // namespace lmpress
