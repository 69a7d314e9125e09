// ggml family: llama.cpp's quantized block types (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k,
// q5_k, q6_k, iq4_nl, iq4_xs), stored exactly as in a GGUF file: a row is cols / QK blocks of the
// type, rows are contiguous, nothing else (the scales live inside the blocks). Importing a GGUF
// tensor is a view of its bytes and exporting one a copy. QuantSpec: bits = the ggml_type value,
// group 0. Layouts: kernels/ggml_blocks.h and docs/formats.md.
//
// Every method can also quantize to them: their grid, pack and unpack are in ggml_quant.cpp (a
// group is one block; QuantizedMatrix::ggml holds each block's integer params).
#include <cstring>

#include "formats/ggml_family.h"
#include "formats/traits.h"
#include "kernels/ggml_blocks.h"

namespace lmpress {

namespace kg = kern::ggml;

namespace {

const kg::TypeInfo& info(const QuantSpec& s) {
  const kg::TypeInfo* t = kg::type_info(uint32_t(s.bits));
  LMP_ASSERT(t);
  return *t;
}

bool valid(const QuantSpec& s) {
  return s.family == FormatFamily::Ggml && s.bits >= 0 && kg::type_info(uint32_t(s.bits)) && s.group == 0 && s.sym;
}
std::string name_of(const QuantSpec& s) { return info(s).name; }
bool parse(const std::string& n, QuantSpec* out) {
  for (const kg::TypeInfo& t : kg::kTypes)
    if (n == t.name) {
      *out = QuantSpec{int(t.type), 0, true, FormatFamily::Ggml};
      return true;
    }
  return false;
}
void list(std::vector<QuantSpec>& v) {
  for (const kg::TypeInfo& t : kg::kTypes) v.push_back(QuantSpec{int(t.type), 0, true, FormatFamily::Ggml});
}

PackedGeometry geometry(const QuantSpec& s, int64_t rows, int64_t cols) {
  const kg::TypeInfo& t = info(s);
  if (cols % t.qk != 0)
    fail("", std::string(t.name) + " needs a multiple of " + std::to_string(t.qk) + " columns (its block), got " +
                 std::to_string(cols));
  PackedGeometry g;
  g.rows = rows;
  g.cols = cols;
  g.blocks_per_row = cols / kern::kQBlock;
  g.row_bytes = cols / t.qk * t.bytes;
  g.group = t.qk;
  g.groups_per_row = cols / t.qk;  // blocks of the type per row
  g.q_bytes = rows * g.row_bytes;
  g.scale_size = 0;
  g.total_bytes = g.q_bytes;
  return g;
}

void check(const uint8_t* data, const PackedGeometry& g, const QuantSpec& s, const std::string& where) {
  ggml_check_blocks(uint32_t(s.bits), data, g.rows, g.cols, where);
}

kern::QWeights view(const uint8_t* base, const QuantSpec& s, const PackedGeometry& g) {
  return fmt::block_view(base, s, g);  // bits = the ggml type; the kernels read the blocks themselves
}


}  // namespace

void ggml_check_blocks(uint32_t type, const uint8_t* data, int64_t rows, int64_t cols, const std::string& where) {
  const kg::TypeInfo* t = kg::type_info(type);
  LMP_ASSERT(t);
  const int64_t nblk = rows * (cols / t->qk);
  for (int64_t k = 0; k < nblk; ++k) {
    const uint8_t* b = data + k * t->bytes;
    for (int f = 0; f < t->n_f16; ++f) {
      uint16_t h;
      std::memcpy(&h, b + t->f16_off[f], 2);
      if ((h & 0x7c00) == 0x7c00)
        fail(where, std::string(t->name) + ": non-finite f16 " + (f == 0 ? "scale" : "min") + " in block " +
                        std::to_string(k % (cols / t->qk)) + " of row " + std::to_string(k / (cols / t->qk)));
    }
  }
}

const char* ggml_type_format_name(uint32_t type) {
  const kg::TypeInfo* t = kg::type_info(type);
  return t ? t->name : nullptr;
}

bool ggml_type_block(uint32_t type, int* qk, int* bytes) {
  const kg::TypeInfo* t = kg::type_info(type);
  if (!t) return false;
  *qk = t->qk;
  *bytes = t->bytes;
  return true;
}

QuantSpec ggml_spec(uint32_t type) {
  LMP_ASSERT(kg::type_info(type));
  return QuantSpec{int(type), 0, true, FormatFamily::Ggml};
}

void ggml_random_blocks(uint32_t type, int64_t rows, int64_t cols, uint64_t seed, float scale, uint8_t* out) {
  const kg::TypeInfo* t = kg::type_info(type);
  LMP_ASSERT(t && cols % t->qk == 0);
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  auto next = [&] {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return s;
  };
  const int64_t nblk = rows * (cols / t->qk);
  for (int64_t k = 0; k < nblk; ++k) {
    uint8_t* b = out + k * t->bytes;
    for (int i = 0; i < t->bytes; ++i) b[i] = uint8_t(next() >> 24);
    // f16 fields: positive scale in [0.5, 1.5) * scale, (q4_1 / q5_1's m: signed)
    for (int f = 0; f < t->n_f16; ++f) {
      const float u = float(next() >> 40) / float(1 << 24);
      float v = scale * (0.5f + u);
      if (f == 1 && (type == kg::kQ4_1 || type == kg::kQ5_1)) v = -v * 8.f;
      const uint16_t h = f32_to_f16(v);
      std::memcpy(b + t->f16_off[f], &h, 2);
    }
  }
}

const FormatTraits ggml_format = {
    FormatFamily::Ggml, "ggml", "llama.cpp's block types (GGUF bytes as they are; scales inside the blocks)",
    ActKind::Int8Blocks, nullptr, valid, name_of, parse, list, geometry, ggml_pack_blocks, ggml_unpack_blocks, check, view,
    make_ggml_grid,
    {&kern::ggml_kernels_scalar, &kern::ggml_kernels_avx2, &kern::ggml_kernels_avx512}, true,
};

}  // namespace lmpress
