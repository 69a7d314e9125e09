// The ggml family (src/formats/ggml.cpp) as the rest of lmpress sees it: GGUF import / export,
// tests and benchmarks.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "lmpress/formats.h"

namespace lmpress {

// lmpress format name of a ggml_type ("q4_k"), or null when lmpress does not run that type.
const char* ggml_type_format_name(uint32_t type);
// Block of a supported ggml_type: weights per block, bytes per block (false for other types).
bool ggml_type_block(uint32_t type, int* qk, int* bytes);
// The QuantSpec of a supported ggml_type (asserts it is one).
QuantSpec ggml_spec(uint32_t type);
// Load-time check of [rows, cols] blocks of a supported type (cols a multiple of its block): every
// f16 scale / min is finite; throws Error naming `where`, the row and the block.
void ggml_check_blocks(uint32_t type, const uint8_t* data, int64_t rows, int64_t cols, const std::string& where);
// Quantizing to the types (ggml_quant.cpp): S / M of a GroupParams from its stored integers
// (gd, gdmin, gsc, gm), the grid, and pack / unpack of whole blocks (traits signatures).
void ggml_set_factors(uint32_t type, GroupParams& p);
std::unique_ptr<Grid> make_ggml_grid(const QuantSpec& s);
void ggml_pack_blocks(const QuantizedMatrix& qm, const PackedGeometry& g, uint8_t* out, const std::string& where);
void ggml_unpack_blocks(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, QuantizedMatrix& qm);
// Synthetic tensors (tests, benchmarks): random codes and sub-scales, f16 scales of about `scale`.
void ggml_random_blocks(uint32_t type, int64_t rows, int64_t cols, uint64_t seed, float scale, uint8_t* out);

}  // namespace lmpress
