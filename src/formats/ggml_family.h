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

// ---- lmpress int formats as llama.cpp blocks (GGUF export, docs/formats.md "Writers") ----------
// The llama.cpp type that holds the values of int-family format `s` on rows of `cols` columns
// exactly, or 0: same bit width, one scale (and zero) per 32-weight block or per larger group
// (64, 128, row: repeated in every block), no sparse outliers, whole blocks. w4 -> Q4_0, w5 ->
// Q5_0, w8 -> Q8_0 (symmetric), w4a -> Q4_1, w5a -> Q5_1 (asymmetric: exact up to the f16
// rounding of m = -scale * zero).
uint32_t ggml_exact_type(const QuantSpec& s, int64_t cols);
// What the asymmetric map changed: weights whose f16 offset m differs from -scale * zero.
struct GgmlExactError {
  int64_t n_changed = 0;            // weights whose value changed
  double max_abs = 0;               // largest |value in GGUF - value in lmpress|
  double sum_sq = 0, sum_ref_sq = 0; // sums of squared changes / of squared lmpress values
};
// Re-encodes a packed int tensor whose format has an exact type (ggml_exact_type) as blocks of
// that type: a ggml-family tensor of the same name and shape. `err` (may be null) accumulates the
// asymmetric offsets' rounding. Throws Error naming `where` and the tensor when an offset
// overflows f16.
Tensor ggml_encode_exact(const Tensor& t, GgmlExactError* err, const std::string& where);

// Synthetic tensors (tests, benchmarks): random codes and sub-scales, f16 scales of about `scale`.
void ggml_random_blocks(uint32_t type, int64_t rows, int64_t cols, uint64_t seed, float scale, uint8_t* out);

}  // namespace lmpress
