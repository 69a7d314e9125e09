// ggml family: llama.cpp's quantized block types (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k,
// q5_k, q6_k, iq4_nl, iq4_xs), stored exactly as in a GGUF file: a row is cols / QK blocks of the
// type, rows are contiguous, nothing else (the scales live inside the blocks). Importing a GGUF
// tensor is a view of its bytes and exporting one a copy. QuantSpec: bits = the ggml_type value,
// group 0. Layouts: kernels/ggml_blocks.h and docs/formats.md.
//
// Every method can also quantize to them: their grid, pack and unpack are in ggml_quant.cpp (a
// group is one block; QuantizedMatrix::ggml holds each block's integer params).
#include <algorithm>
#include <cmath>
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

uint32_t ggml_exact_type(const QuantSpec& s, int64_t cols) {
  if (s.family != FormatFamily::Int || s.sparse || s.rht || cols % kern::kQBlock != 0) return 0;
  if (s.group != 0 && s.group % kern::kQBlock != 0) return 0;  // g16: two scales per block
  switch (s.bits) {
    case 4: return s.sym ? kg::kQ4_0 : kg::kQ4_1;
    case 5: return s.sym ? kg::kQ5_0 : kg::kQ5_1;
    case 8: return s.sym ? uint32_t(kg::kQ8_0) : 0u;  // no asymmetric 8-bit storage type
    default: return 0;
  }
}

namespace {

// One block of `type` from 32 codes q of an int format (symmetric zero 2^(b-1): llama.cpp's
// q - 8 / q - 16 / int8 q - 128 are the same integers), f16 scale d and offset m (asymmetric).
template <class B>
void put_block(const B& blk, uint8_t* dst) {
  std::memcpy(dst, &blk, sizeof blk);
}
void encode_block(uint32_t type, const uint8_t* q, uint16_t d, uint16_t m, uint8_t* dst) {
  uint8_t qs[16], qh[4] = {};
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t((q[j] & 15) | (q[j + 16] & 15) << 4);
  for (int i = 0; i < 32; ++i) qh[i / 8] = uint8_t(qh[i / 8] | ((q[i] >> 4) & 1) << (i % 8));
  switch (type) {
    case kg::kQ8_0: {
      kg::BlockQ8_0 b{d, {}};
      for (int i = 0; i < 32; ++i) b.qs[i] = int8_t(int(q[i]) - 128);
      return put_block(b, dst);
    }
    case kg::kQ4_0: {
      kg::BlockQ4_0 b{d, {}};
      std::memcpy(b.qs, qs, 16);
      return put_block(b, dst);
    }
    case kg::kQ4_1: {
      kg::BlockQ4_1 b{d, m, {}};
      std::memcpy(b.qs, qs, 16);
      return put_block(b, dst);
    }
    case kg::kQ5_0: {
      kg::BlockQ5_0 b{d, {}, {}};
      std::memcpy(b.qh, qh, 4);
      std::memcpy(b.qs, qs, 16);
      return put_block(b, dst);
    }
    case kg::kQ5_1: {
      kg::BlockQ5_1 b{d, m, {}, {}};
      std::memcpy(b.qh, qh, 4);
      std::memcpy(b.qs, qs, 16);
      return put_block(b, dst);
    }
    default: LMP_ASSERT(false);
  }
}

}  // namespace

Tensor ggml_encode_exact(const Tensor& t, GgmlExactError* err, const std::string& where) {
  const QuantSpec s = format_spec(t.format);
  const uint32_t type = ggml_exact_type(s, t.cols());
  LMP_ASSERT(type != 0);
  const kg::TypeInfo& ti = info(ggml_spec(type));
  const QuantizedMatrix qm = unpack_tensor(t);
  const int64_t nb = qm.cols / kern::kQBlock, glen = qm.group_len();
  std::vector<uint8_t> out(size_t(qm.rows * nb * ti.bytes));
  for (int64_t r = 0; r < qm.rows; ++r) {
    for (int64_t b = 0; b < nb; ++b) {
      const GroupParams p = qm.params(r, b * kern::kQBlock / glen);
      const uint8_t* q = qm.q.data() + r * qm.cols + b * kern::kQBlock;
      const uint16_t d = f32_to_f16(p.scale);  // lmpress scales are f16 values: exact
      LMP_ASSERT(f16_to_f32(d) == p.scale || std::isnan(p.scale));
      uint16_t m = 0;
      if (!s.sym) {
        // value = scale (q - zero) = d q + m with m = -scale * zero (exact in f32, rounded to f16)
        const float m32 = -p.scale * float(p.zero);
        m = f32_to_f16(m32);
        if ((m & 0x7c00) == 0x7c00 && std::isfinite(m32))
          fail(where, "tensor " + t.name + ": " + format_name(s) + " -> " + ti.gname + ": offset -scale*zero = " + std::to_string(m32) +
                           " of block " + std::to_string(b) + " of row " + std::to_string(r) +
                           " is beyond the f16 range");
        const float mf = f16_to_f32(m), df = f16_to_f32(d);
        for (int i = 0; err && i < kern::kQBlock; ++i) {
          const float ref = p.scale * float(int32_t(q[i]) - p.zero);  // lmpress's dequantization
          const float got = df * float(q[i]) + mf;                    // llama.cpp's d * q + m
          const double e = std::fabs(double(got) - double(ref));
          err->n_changed += e > 0;
          err->max_abs = std::max(err->max_abs, e);
          err->sum_sq += e * e;
          err->sum_ref_sq += double(ref) * ref;
        }
      }
      encode_block(type, q, d, m, out.data() + (r * nb + b) * ti.bytes);
    }
  }
  return make_owned_tensor(t.name, DType::Q, t.shape, std::move(out), format_id(ggml_spec(type)));
}

const FormatTraits ggml_format = {
    FormatFamily::Ggml, "ggml", "llama.cpp's block types (GGUF bytes as they are; scales inside the blocks)",
    ActKind::Int8Blocks, nullptr, valid, name_of, parse, list, geometry, ggml_pack_blocks, ggml_unpack_blocks, check, view,
    make_ggml_grid,
    {&kern::ggml_kernels_scalar, &kern::ggml_kernels_avx2, &kern::ggml_kernels_avx512}, true,
};

}  // namespace lmpress
