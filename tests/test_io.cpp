// Model-file IO: unit tests of the tensor helpers and the safetensors / GGUF containers, and one
// test per kind of bad input. Every bad-input test checks that the Error names the file and the
// problem. Hostile files are built in a temporary directory from copies of the shared models or
// from hand-made buffers.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <random>

#include "lmpress/formats.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;
namespace fs = std::filesystem;

namespace {

// A fresh directory removed at scope exit.
using test::TempDir;

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
void write_text(const std::string& path, const std::string& s) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << s;
}

// Runs fn and checks it throws lmpress::Error whose message contains every fragment.
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& f : fragments)
      EXPECT_NE(msg.find(f), std::string::npos) << "message lacks \"" << f << "\": " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-lmpress exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "no error thrown";
}

const char* kTiny = "models/tinystories-279k";

// Position just after the GGUF-encoded string `s` (u64 length + bytes) in the buffer.
size_t after_gguf_string(const std::vector<uint8_t>& b, const std::string& s) {
  std::vector<uint8_t> pat(8);
  const uint64_t n = s.size();
  std::memcpy(pat.data(), &n, 8);
  pat.insert(pat.end(), s.begin(), s.end());
  auto it = std::search(b.begin(), b.end(), pat.begin(), pat.end());
  EXPECT_NE(it, b.end()) << "string not found: " << s;
  return size_t(it - b.begin()) + pat.size();
}
template <class T>
void poke(std::vector<uint8_t>& b, size_t pos, T v) {
  std::memcpy(b.data() + pos, &v, sizeof v);
}
template <class T>
T peek(const std::vector<uint8_t>& b, size_t pos) {
  T v;
  std::memcpy(&v, b.data() + pos, sizeof v);
  return v;
}

// A copy of the tinystories GGUF with `mutate` applied, written into dir.
std::string mutated_gguf(const TempDir& dir, const std::function<void(std::vector<uint8_t>&)>& mutate) {
  std::vector<uint8_t> b = read_bytes(test::shared(std::string(kTiny) + "/model-f32.gguf"));
  mutate(b);
  const std::string p = dir / "model.gguf";
  write_bytes(p, b);
  return p;
}

// Offsets of the fields of tensor `name`'s info record in a GGUF buffer.
struct TensorInfoPos {
  size_t n_dims, ne0, type, offset;
};
TensorInfoPos tensor_info_pos(const std::vector<uint8_t>& b, const std::string& name) {
  TensorInfoPos p;
  p.n_dims = after_gguf_string(b, name);
  const uint32_t nd = peek<uint32_t>(b, p.n_dims);
  p.ne0 = p.n_dims + 4;
  p.type = p.ne0 + 8 * nd;
  p.offset = p.type + 4;
  return p;
}

// A llama2.c header + zero weights of the right size for the given header values.
std::vector<uint8_t> llama2c_file(std::array<int32_t, 7> h, int64_t floats) {
  std::vector<uint8_t> b(28 + size_t(std::max<int64_t>(floats, 0)) * 4, 0);
  std::memcpy(b.data(), h.data(), 28);
  return b;
}

}  // namespace

// ---- tensor helpers ---------------------------------------------------------------------------

TEST(Io, PermuteRopeRowsKnownOrder) {
  // 2 heads of size 4, one column: row r holds value r.
  Tensor w = make_f32_tensor("w", {8, 1}, {0, 1, 2, 3, 4, 5, 6, 7});
  Tensor h = permute_rope_rows(w, 2, true);
  EXPECT_EQ(tensor_to_f32(h), (std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7}));
  Tensor back = permute_rope_rows(h, 2, false);
  EXPECT_EQ(tensor_to_f32(back), tensor_to_f32(w));
  // 1 head of size 6 with 2 columns; biases (1-D) permute the same way.
  Tensor w2 = make_f32_tensor("w2", {6, 2}, {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5});
  EXPECT_EQ(tensor_to_f32(permute_rope_rows(w2, 1, true)),
            (std::vector<float>{0, 0, 2, 2, 4, 4, 1, 1, 3, 3, 5, 5}));
  Tensor b = make_f32_tensor("b", {6}, {0, 1, 2, 3, 4, 5});
  EXPECT_EQ(tensor_to_f32(permute_rope_rows(b, 1, true)), (std::vector<float>{0, 2, 4, 1, 3, 5}));
  expect_error([&] { permute_rope_rows(b, 4, true); }, {"b", "cannot permute"});
}

TEST(Io, ConvertTensorF16Bf16) {
  std::vector<float> v = {0.0f, 1.0f, -2.5f, 65504.0f, 1e-3f, 3.14159f};
  Tensor t = make_f32_tensor("t", {2, 3}, v);
  for (DType dt : {DType::F16, DType::BF16}) {
    Tensor c = convert_tensor(t, dt);
    EXPECT_EQ(c.dtype, dt);
    EXPECT_EQ(c.nbytes, 12u);
    EXPECT_EQ(c.shape, t.shape);
    std::vector<float> back = tensor_to_f32(c);
    for (size_t i = 0; i < v.size(); ++i)
      EXPECT_NEAR(back[i], v[i], std::fabs(v[i]) * (dt == DType::F16 ? 1e-3 : 8e-3)) << i;
    // Re-encoding the decoded values is exact.
    EXPECT_EQ(tensor_to_f32(convert_tensor(make_f32_tensor("x", {2, 3}, back), dt)), back);
    // F16 <-> BF16 goes through f32.
    Tensor other = convert_tensor(c, dt == DType::F16 ? DType::BF16 : DType::F16);
    EXPECT_EQ(other.nbytes, 12u);
  }
  EXPECT_EQ(tensor_to_f32(convert_tensor(t, DType::F32)), v);
  EXPECT_EQ(t.numel(), 6);
  expect_error([&] { convert_tensor(t, DType::I32); }, {"t", "F32, F16, BF16"});
}

TEST(Io, ValidateReportsWrongShape) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model.bin");
  LoadOptions o;
  o.require_tokenizer = false;
  Model m = load_model(test::shared(std::string(kTiny) + "/model.bin"), o);
  m.validate();
  m.layers[3].wk.shape = {64, 32};
  expect_error([&] { m.validate(); },
               {"model.bin", "tensor blk.3.attn_k.weight has shape [64, 32] but the config implies [32, 64]"});
  m.layers[3].wk = Tensor{};
  expect_error([&] { m.validate(); }, {"model.bin", "blk.3.attn_k.weight is missing"});
}

// ---- safetensors ------------------------------------------------------------------------------

TEST(Io, SafetensorsRoundTrip) {
  TempDir d;
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> b = {1, 2, 3};
  std::vector<uint8_t> c = {7, 8, 9, 10, 11};
  const std::string p = d / "t.safetensors";
  write_safetensors(p,
                    {{"a", "F32", {2, 3}, a.data(), 24},
                     {"b", "BF16", {3}, b.data(), 6},
                     {"c", "U8", {5}, c.data(), 5}},
                    {{"format", "pt"}, {"note", "x"}});
  SafetensorsFile f = read_safetensors(p);
  EXPECT_EQ(f.metadata.at("format"), "pt");
  EXPECT_EQ(f.metadata.at("note"), "x");
  ASSERT_EQ(f.tensors.size(), 3u);
  const auto* ta = f.find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->dtype, "F32");
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(ta->data, a.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.find("b")->data, b.data(), 6), 0);
  EXPECT_EQ(std::memcmp(f.find("c")->data, c.data(), 5), 0);
  // The header is padded so the data region starts 8-byte aligned.
  EXPECT_EQ((8 + peek<uint64_t>(read_bytes(p), 0)) % 8, 0u);
  EXPECT_EQ(f.find("zz"), nullptr);
  expect_error([&] { write_safetensors(d / "u.safetensors", {{"a", "F32", {2, 2}, a.data(), 24}}, {}); },
               {"u.safetensors", "needs 16"});
  EXPECT_FALSE(file_exists(d / "u.safetensors"));
}

TEST(Io, SafetensorsTruncated) {
  TempDir d;
  std::vector<float> a(64, 1.0f);
  const std::string p = d / "t.safetensors";
  write_safetensors(p, {{"a", "F32", {64}, a.data(), 256}}, {});
  auto b = read_bytes(p);
  b.erase(b.end() - 10, b.end());
  write_bytes(p, b);
  expect_error([&] { read_safetensors(p); }, {p, "tensor 'a'", "outside the data region", "truncated"});
  write_bytes(p, {1, 2, 3});
  expect_error([&] { read_safetensors(p); }, {p, "truncated"});
}

TEST(Io, SafetensorsHeaderLengthBeyondFile) {
  TempDir d;
  const std::string p = d / "t.safetensors";
  std::vector<uint8_t> b(64, ' ');
  poke<uint64_t>(b, 0, 1000);
  write_bytes(p, b);
  expect_error([&] { read_safetensors(p); }, {p, "header length 1000", "past the end"});
  poke<uint64_t>(b, 0, uint64_t(1) << 40);
  write_bytes(p, b);
  expect_error([&] { read_safetensors(p); }, {p, "100 MB"});
}

TEST(Io, SafetensorsMalformedJson) {
  TempDir d;
  const std::string p = d / "t.safetensors";
  const std::string js = "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], ";
  std::vector<uint8_t> b(8);
  poke<uint64_t>(b, 0, js.size());
  b.insert(b.end(), js.begin(), js.end());
  write_bytes(p, b);
  expect_error([&] { read_safetensors(p); }, {p, "not valid JSON"});
}

// Builds a safetensors file from a raw header text and `data_bytes` zero bytes of data.
static std::string raw_safetensors(const TempDir& d, const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> b(8);
  poke<uint64_t>(b, 0, header.size());
  b.insert(b.end(), header.begin(), header.end());
  b.resize(b.size() + data_bytes, 0);
  const std::string p = d / "raw.safetensors";
  write_bytes(p, b);
  return p;
}

TEST(Io, SafetensorsOffsetsBeyondData) {
  TempDir d;
  const std::string p = raw_safetensors(
      d, R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8);
  expect_error([&] { read_safetensors(p); }, {p, "tensor 'w'", "[0, 16]", "outside the data region of 8"});
}

TEST(Io, SafetensorsSizeMismatch) {
  TempDir d;
  const std::string p = raw_safetensors(
      d, R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", 16);
  expect_error([&] { read_safetensors(p); }, {p, "tensor 'w'", "span 16 bytes", "needs 12"});
}

TEST(Io, SafetensorsOverlap) {
  TempDir d;
  const std::string p = raw_safetensors(
      d,
      R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
          "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})",
      24);
  expect_error([&] { read_safetensors(p); }, {p, "'a' and 'b' overlap"});
}

TEST(Io, SafetensorsBadEntries) {
  TempDir d;
  expect_error([&] { read_safetensors(raw_safetensors(d, R"({"w": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}})", 1)); },
               {"raw.safetensors", "unknown dtype 'Q4'"});
  expect_error([&] { read_safetensors(raw_safetensors(d, R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4)); },
               {"raw.safetensors", "non-negative integers"});
  expect_error([&] { read_safetensors(raw_safetensors(d, R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})", 4)); },
               {"raw.safetensors", "needs more than 2^64"});
  expect_error([&] { read_safetensors(raw_safetensors(d, R"([1, 2])", 0)); }, {"raw.safetensors", "not a JSON object"});
  expect_error([&] { read_safetensors(raw_safetensors(d, R"({"__metadata__": {"a": 1}})", 0)); },
               {"raw.safetensors", "__metadata__"});
}

// ---- GGUF -------------------------------------------------------------------------------------

TEST(Io, GgufReadsSharedHeader) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  GgufFile g = read_gguf(test::shared(std::string(kTiny) + "/model-f32.gguf"));
  EXPECT_EQ(g.version, 3u);
  EXPECT_EQ(g.alignment, 32u);
  EXPECT_EQ(g.tensors.size(), 48u);
  ASSERT_NE(g.find("general.architecture"), nullptr);
  EXPECT_EQ(g.find("general.architecture")->s, "llama");
  EXPECT_EQ(g.find("llama.embedding_length")->u, 64u);
  EXPECT_EQ(g.find("tokenizer.ggml.tokens")->as.size(), 512u);
  EXPECT_NEAR(g.find("llama.attention.layer_norm_rms_epsilon")->f, 1e-5, 1e-9);
  const GgufTensorInfo* t = g.find_tensor("blk.0.attn_k.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->ne, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(t->nbytes, 64u * 32u * 4u);
  EXPECT_EQ(g.data_offset % 32, 0u);
  EXPECT_EQ(t->data, g.file->data() + g.data_offset + t->offset);
}

TEST(Io, GgufTruncated) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) { b.erase(b.end() - 1000, b.end()); });
  expect_error([&] { load_model(p); }, {p, "blk.4.", "beyond the end of the file", "truncated"});
}

TEST(Io, GgufTruncatedInHeader) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) { b.erase(b.begin() + 3000, b.end()); });
  expect_error([&] { read_gguf(p); }, {p, "GGUF"});
  const std::string p2 = mutated_gguf(d, [](auto& b) { b.erase(b.begin() + 10, b.end()); });
  expect_error([&] { read_gguf(p2); }, {p2, "GGUF truncated", "tensor count"});
}

TEST(Io, GgufWrongMagic) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) { b[3] = 'X'; });
  expect_error([&] { read_gguf(p); }, {p, "not a GGUF file", "magic"});
  // load_model falls back to llama2.c, which rejects the header.
  expect_error([&] { load_model(p); }, {p, "not a llama2.c checkpoint"});
}

TEST(Io, GgufUnsupportedVersion) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) { poke<uint32_t>(b, 4, 1); });
  expect_error([&] { read_gguf(p); }, {p, "unsupported GGUF version 1"});
}

TEST(Io, GgufTensorOffsetBeyondFile) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) {
    poke<uint64_t>(b, tensor_info_pos(b, "blk.2.ffn_up.weight").offset, uint64_t(1) << 40);
  });
  expect_error([&] { read_gguf(p); }, {p, "blk.2.ffn_up.weight", "beyond the end of the file"});
  // An offset that wraps around when the size is added.
  const std::string p2 = mutated_gguf(d, [](auto& b) {
    poke<uint64_t>(b, tensor_info_pos(b, "blk.2.ffn_up.weight").offset, ~uint64_t(31));
  });
  expect_error([&] { read_gguf(p2); }, {p2, "blk.2.ffn_up.weight", "beyond the end of the file"});
}

TEST(Io, GgufTensorSizeBeyondFile) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) {
    poke<uint64_t>(b, tensor_info_pos(b, "output.weight").ne0 + 8, 1u << 20);  // ne[1]: 512 -> 2^20
  });
  expect_error([&] { read_gguf(p); }, {p, "output.weight", "larger than the whole file"});
}

TEST(Io, GgufTensorMisaligned) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) {
    const size_t pos = tensor_info_pos(b, "blk.1.attn_q.weight").offset;
    poke<uint64_t>(b, pos, peek<uint64_t>(b, pos) + 4);
  });
  expect_error([&] { read_gguf(p); }, {p, "blk.1.attn_q.weight", "not a multiple of the alignment 32"});
}

TEST(Io, GgufUnsupportedTensorType) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) {
    poke<uint32_t>(b, tensor_info_pos(b, "blk.0.ffn_down.weight").type, 16);  // IQ2_XXS
  });
  expect_error([&] { load_model(p); },
               {p, "blk.0.ffn_down.weight", "unsupported tensor type IQ2_XXS", "supported: F32, F16, BF16, Q4_0"});
  const std::string p2 = mutated_gguf(d, [](auto& b) { poke<uint32_t>(b, tensor_info_pos(b, "output.weight").type, 9999); });
  expect_error([&] { read_gguf(p2); }, {p2, "output.weight", "unknown type 9999"});
}

// llama.cpp block types (the ggml format family): a tensor's type rewritten to Q8_0 (blk.0.ffn_down,
// [64, 192]: 6 blocks of 34 bytes a row, inside its old f32 bytes) with `fill` writing its blocks.
std::string ggml_q8_gguf(const TempDir& d, const std::function<void(uint8_t*, int64_t)>& fill) {
  return mutated_gguf(d, [&](auto& b) {
    const TensorInfoPos ti = tensor_info_pos(b, "blk.0.ffn_down.weight");
    poke<uint32_t>(b, ti.type, 8);  // Q8_0
    GgufFile g;
    parse_gguf_buffer(b.data(), b.size(), "m", g);
    const GgufTensorInfo* t = g.find_tensor("blk.0.ffn_down.weight");
    fill(b.data() + (t->data - b.data()), 64 * 6);
  });
}

TEST(Io, GgufGgmlBlockTypes) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  // valid Q8_0 blocks (d = 2^-10, codes i % 255 - 127): loads as a packed q8_0 tensor and runs
  const std::string ok = ggml_q8_gguf(d, [](uint8_t* p, int64_t nblk) {
    for (int64_t k = 0; k < nblk; ++k) {
      const uint16_t h = 0x1400;
      std::memcpy(p + 34 * k, &h, 2);
      for (int i = 0; i < 32; ++i) p[34 * k + 2 + i] = uint8_t(int8_t((k * 32 + i) % 255 - 127));
    }
  });
  {
    const Model m = load_model(ok);
    EXPECT_EQ(m.layers[0].w_down.dtype, DType::Q);
    EXPECT_EQ(format_name(format_spec(m.layers[0].w_down.format)), "q8_0");
    EXPECT_EQ(m.layers[0].w_down.nbytes, 64u * 6 * 34);
  }
  // a non-finite scale: refused at load, naming the block
  const std::string inf = ggml_q8_gguf(d, [](uint8_t* p, int64_t nblk) {
    for (int64_t k = 0; k < nblk; ++k) std::memset(p + 34 * k, 0, 34);
    const uint16_t h = 0x7c00;
    std::memcpy(p + 34 * (5 * 6 + 2), &h, 2);
  });
  expect_error([&] { load_model(inf); }, {inf, "blk.0.ffn_down.weight", "non-finite f16 scale in block 2 of row 5"});
  // rows that are not whole blocks (Q4_K: 256 weights; ffn_down rows have 192)
  const std::string ragged = mutated_gguf(d, [](auto& b) { poke<uint32_t>(b, tensor_info_pos(b, "blk.0.ffn_down.weight").type, 12); });
  expect_error([&] { read_gguf(ragged); }, {ragged, "blk.0.ffn_down.weight", "Q4_K", "not a multiple of its 256-element block"});
  // a 1-D tensor (norm) of a block type
  const std::string norm = mutated_gguf(d, [](auto& b) { poke<uint32_t>(b, tensor_info_pos(b, "blk.0.attn_norm.weight").type, 8); });
  expect_error([&] { load_model(norm); }, {norm, "blk.0.attn_norm.weight", "Q8_0", "must be 2-D"});
  // a block-typed tensor whose blocks run past the end of the file
  const std::string big = mutated_gguf(d, [](auto& b) {
    const TensorInfoPos ti = tensor_info_pos(b, "output.weight");
    poke<uint32_t>(b, ti.type, 8);
    poke<uint64_t>(b, ti.ne0, uint64_t(1) << 20);  // 2^15 blocks of 34 bytes a row, 512 rows
  });
  expect_error([&] { read_gguf(big); }, {big, "output.weight", "larger than the whole file"});
}

TEST(Io, GgufHugeStringLength) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) {
    const size_t pos = after_gguf_string(b, "general.name") + 4;  // value: u64 length
    poke<uint64_t>(b, pos, uint64_t(1) << 62);
  });
  expect_error([&] { read_gguf(p); }, {p, "string value has length 4611686018427387904"});
}

TEST(Io, GgufHugeCounts) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) { poke<uint64_t>(b, 8, uint64_t(1) << 50); });
  expect_error([&] { read_gguf(p); }, {p, "tensor count 1125899906842624 cannot fit"});
  const std::string p2 = mutated_gguf(d, [](auto& b) { poke<uint64_t>(b, 16, ~uint64_t(0)); });
  expect_error([&] { read_gguf(p2); }, {p2, "metadata count", "cannot fit"});
  // An array count larger than the bytes left.
  const std::string p3 = mutated_gguf(d, [](auto& b) {
    const size_t pos = after_gguf_string(b, "tokenizer.ggml.scores") + 4 + 4;  // type, elem type
    poke<uint64_t>(b, pos, uint64_t(1) << 40);
  });
  expect_error([&] { read_gguf(p3); }, {p3, "tokenizer.ggml.scores", "does not fit"});
}

TEST(Io, GgufInconsistentShape) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  // blk.3.attn_k.weight ne {64, 32} -> {32, 64}: same bytes, wrong shape for 4 kv heads.
  const std::string p = mutated_gguf(d, [](auto& b) {
    const size_t ne = tensor_info_pos(b, "blk.3.attn_k.weight").ne0;
    poke<uint64_t>(b, ne, 32);
    poke<uint64_t>(b, ne + 8, 64);
  });
  expect_error([&] { load_model(p); },
               {p, "tensor blk.3.attn_k.weight has shape [64, 32] but the config implies [32, 64]"});
}

TEST(Io, GgufMissingTensor) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) {
    const size_t end = after_gguf_string(b, "blk.2.ffn_gate.weight");
    std::memcpy(b.data() + end - 11, "xxxx", 4);  // "blk.2.ffn_xxxx.weight"
  });
  expect_error([&] { load_model(p); }, {p, "tensor blk.2.ffn_gate.weight is missing"});
}

TEST(Io, GgufUnknownArchitecture) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) {
    const size_t pos = after_gguf_string(b, "general.architecture") + 4 + 8;
    std::memcpy(b.data() + pos, "bogus", 5);
  });
  expect_error([&] { load_model(p); }, {p, "unknown architecture 'bogus'"});
}

TEST(Io, GgufMissingHyperParameter) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) {
    const size_t end = after_gguf_string(b, "llama.block_count");
    b[end - 1] = 'X';
  });
  expect_error([&] { load_model(p); }, {p, "'llama.block_count' is missing"});
  // A hyper-parameter of the wrong type.
  const std::string p2 = mutated_gguf(d, [](auto& b) {
    poke<uint32_t>(b, after_gguf_string(b, "llama.embedding_length"), uint32_t(GgufType::F32));
  });
  expect_error([&] { load_model(p2); }, {p2, "llama.embedding_length", "expected an integer"});
  // A negative count (i32 -1).
  const std::string p3 = mutated_gguf(d, [](auto& b) {
    const size_t pos = after_gguf_string(b, "llama.attention.head_count");
    poke<uint32_t>(b, pos, uint32_t(GgufType::I32));
    poke<int32_t>(b, pos + 4, -1);
  });
  expect_error([&] { load_model(p3); }, {p3, "llama.attention.head_count", "value -1 is out of range"});
}

TEST(Io, GgufMissingTokenizer) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model-f32.gguf");
  TempDir d;
  const std::string p = mutated_gguf(d, [](auto& b) {
    const size_t end = after_gguf_string(b, "tokenizer.ggml.tokens");
    b[end - 1] = 'X';  // "tokenizer.ggml.tokenX"
  });
  expect_error([&] { load_model(p); }, {p, "no tokenizer", "--tokenizer"});
  LoadOptions o;
  o.require_tokenizer = false;
  Model m = load_model(p, o);
  EXPECT_EQ(m.tokenizer, nullptr);
}

TEST(Io, GgufBufferFuzzSeeds) {
  // A few hand-made buffers through the buffer parser (what the fuzz target does).
  GgufFile g;
  expect_error([&] { parse_gguf_buffer(nullptr, 0, "empty", g); }, {"empty", "not a GGUF file"});
  std::vector<uint8_t> b = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
  b.resize(24, 0);
  parse_gguf_buffer(b.data(), b.size(), "minimal", g);  // no tensors, no metadata: valid
  EXPECT_TRUE(g.tensors.empty());
  // One KV: a nested array is refused.
  std::vector<uint8_t> k = b;
  poke<uint64_t>(k, 16, 1);
  auto put = [&](const void* p, size_t n) {
    k.insert(k.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  };
  const uint64_t len = 1;
  const uint32_t arr = 9;
  const uint64_t cnt = 1;
  put(&len, 8);
  put("k", 1);
  put(&arr, 4);
  put(&arr, 4);
  put(&cnt, 8);
  expect_error([&] { parse_gguf_buffer(k.data(), k.size(), "nested", g); }, {"nested", "nested array"});
}

// ---- llama2.c ---------------------------------------------------------------------------------

TEST(Io, Llama2cTruncated) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model.bin");
  TempDir d;
  auto b = read_bytes(test::shared(std::string(kTiny) + "/model.bin"));
  const size_t full = b.size();
  b.erase(b.end() - 100, b.end());
  write_bytes(d / "model.bin", b);
  expect_error([&] { load_model(d / "model.bin"); },
               {d / "model.bin", std::to_string(full - 100) + " bytes", "implies " + std::to_string(full),
                "truncated"});
}

TEST(Io, Llama2cTrailingBytes) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model.bin");
  TempDir d;
  auto b = read_bytes(test::shared(std::string(kTiny) + "/model.bin"));
  b.resize(b.size() + 4, 0);
  write_bytes(d / "model.bin", b);
  expect_error([&] { load_model(d / "model.bin"); }, {d / "model.bin", "trailing data"});
}

TEST(Io, Llama2cTooSmallForHeader) {
  TempDir d;
  write_bytes(d / "model.bin", {1, 2, 3, 4, 5});
  expect_error([&] { load_model(d / "model.bin"); }, {d / "model.bin", "header alone needs 28"});
}

TEST(Io, Llama2cAbsurdDims) {
  TempDir d;
  write_bytes(d / "a.bin", llama2c_file({-64, 192, 5, 8, 4, 512, 256}, 10));
  expect_error([&] { load_model(d / "a.bin"); }, {d / "a.bin", "dim = -64", "out of range"});
  write_bytes(d / "b.bin", llama2c_file({64, 192, 5, 8, 4, 512, (1 << 20) + 1}, 10));
  expect_error([&] { load_model(d / "b.bin"); }, {d / "b.bin", "seq_len", "out of range"});
  write_bytes(d / "c.bin", llama2c_file({1 << 20, 1 << 20, 4096, 128, 128, 1 << 22, 256}, 10));
  expect_error([&] { load_model(d / "c.bin"); }, {d / "c.bin", "implies", "truncated"});
}

TEST(Io, Llama2cHeadsNotDividingDim) {
  TempDir d;
  write_bytes(d / "m.bin", llama2c_file({64, 192, 5, 7, 7, 512, 256}, 10));
  expect_error([&] { load_model(d / "m.bin"); }, {d / "m.bin", "n_heads 7 does not divide dim 64"});
}

TEST(Io, Llama2cKvHeadsNotDividingHeads) {
  TempDir d;
  write_bytes(d / "m.bin", llama2c_file({64, 192, 5, 8, 3, 512, 256}, 10));
  expect_error([&] { load_model(d / "m.bin"); }, {d / "m.bin", "n_kv_heads 3 does not divide n_heads 8"});
}

TEST(Io, Llama2cVersion1Rejected) {
  TempDir d;
  std::vector<uint8_t> b(256, 0);
  std::memcpy(b.data(), "ak42", 4);
  write_bytes(d / "m.bin", b);
  expect_error([&] { load_model(d / "m.bin"); }, {d / "m.bin", "ak42", "not supported"});
}

TEST(Io, Llama2cMissingTokenizer) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model.bin");
  TempDir d;
  fs::copy_file(test::shared(std::string(kTiny) + "/model.bin"), d / "model.bin");
  expect_error([&] { load_model(d / "model.bin"); },
               {d / "model.bin", "no tokenizer found beside the model", "tokenizer.model, tok*.model, tok*.bin",
                "pass --tokenizer"});
  LoadOptions o;
  o.require_tokenizer = false;
  EXPECT_EQ(load_model(d / "model.bin", o).tokenizer, nullptr);
  o.tokenizer_path = d / "nope.model";
  expect_error([&] { load_model(d / "model.bin", o); }, {"nope.model", "not found"});
}

TEST(Io, Llama2cWrongTokenizer) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model.bin");
  LMP_REQUIRE_SHARED("models/wiki5m/tok1024.model");
  LoadOptions o;
  o.tokenizer_path = test::shared("models/wiki5m/tok1024.model");
  expect_error([&] { load_model(test::shared(std::string(kTiny) + "/model.bin"), o); },
               {"tok1024.model", "1024 tokens", "512"});
}

TEST(Io, Llama2cBufferParser) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model.bin");
  MappedFile f(test::shared(std::string(kTiny) + "/model.bin"));
  ModelConfig c;
  parse_llama2c_buffer(f.data(), f.size(), "buf", c);
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 192);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_seq_len, 256);
  EXPECT_TRUE(c.tied_embeddings);
  expect_error([&] { parse_llama2c_buffer(f.data(), f.size() - 4, "buf", c); }, {"buf", "truncated"});
}

// ---- Hugging Face -----------------------------------------------------------------------------

static const char* kHfConfig = R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 192,
  "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 4,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 256,
  "tie_word_embeddings": true, "vocab_size": 512})";

TEST(Io, HfConfigParses) {
  ModelConfig c = parse_hf_config(kHfConfig, "config.json");
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_EQ(c.rope_style, RopeStyle::Halves);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FALSE(c.attn_bias);
  ModelConfig q = parse_hf_config(R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "vocab_size": 100, "rope_theta": 1000000.0, "rope_scaling": null})", "q.json");
  EXPECT_EQ(q.arch, "qwen2");
  EXPECT_TRUE(q.attn_bias);
  EXPECT_FALSE(q.tied_embeddings);
  ModelConfig l3 = parse_hf_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 32,
    "vocab_size": 100, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})", "l3.json");
  EXPECT_EQ(l3.head_dim, 32);
  EXPECT_EQ(l3.rope_scaling.type, "llama3");
  EXPECT_FLOAT_EQ(l3.rope_scaling.factor, 8.0f);
  EXPECT_EQ(l3.rope_scaling.original_max_position, 8192);
}

TEST(Io, HfMalformedConfig) {
  TempDir d;
  write_text(d / "config.json", "{\"hidden_size\": 64,");
  expect_error([&] { load_model(d.path); }, {d / "config.json", "malformed JSON"});
  expect_error([&] { parse_hf_config("[1]", "c.json"); }, {"c.json", "JSON object"});
  expect_error([&] { parse_hf_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": "64"})", "c.json"); },
               {"c.json", "\"hidden_size\" must be an integer"});
  expect_error([&] { parse_hf_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64})", "c.json"); },
               {"c.json", "\"intermediate_size\" is missing"});
  expect_error([&] { parse_hf_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 6, "vocab_size": 10})", "c.json"); },
               {"c.json", "not a multiple of num_attention_heads"});
  expect_error([&] { parse_hf_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10,
      "rope_scaling": {"type": "yarn", "factor": 4}})", "c.json"); },
               {"c.json", "rope_scaling type 'yarn' is not supported"});
  expect_error([&] { parse_hf_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 0, "num_attention_heads": 4, "vocab_size": 10})", "c.json"); },
               {"c.json", "n_layers is 0"});
}

TEST(Io, HfUnknownArchitecture) {
  TempDir d;
  write_text(d / "config.json", R"({"architectures": ["GPT2LMHeadModel"], "n_embd": 768})");
  expect_error([&] { load_model(d.path); }, {d / "config.json", "unknown architecture 'GPT2LMHeadModel'"});
}

TEST(Io, HfMissingWeights) {
  TempDir d;
  write_text(d / "config.json", kHfConfig);
  expect_error([&] { load_model(d.path); }, {d.path, "no model.safetensors"});
  write_text(d / "model.safetensors.index.json", R"({"weight_map": {"a": "../etc/passwd"}})");
  expect_error([&] { load_model(d.path); }, {"model.safetensors.index.json", "must be a file name"});
}

TEST(Io, HfInconsistentShape) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model.bin");
  TempDir d;
  LoadOptions o;
  o.require_tokenizer = false;
  Model m = load_model(test::shared(std::string(kTiny) + "/model.bin"), o);
  const std::string hf = d / "hf";
  write_hf_model(m, hf, DType::F32);
  // Claim 8 kv heads: k_proj/v_proj are [32, 64] in the file, the config implies [64, 64].
  std::string cfg = read_text_file(hf + "/config.json");
  const std::string from = "\"num_key_value_heads\": 4";
  ASSERT_NE(cfg.find(from), std::string::npos);
  cfg.replace(cfg.find(from), from.size(), "\"num_key_value_heads\": 8");
  write_text(hf + "/config.json", cfg);
  expect_error([&] { load_model(hf, o); },
               {hf, "tensor blk.0.attn_k.weight (model.layers.0.self_attn.k_proj.weight in the file) has "
                    "shape [32, 64] but the config implies [64, 64]"});
}

TEST(Io, HfUnsupportedDtypeAndExtraTensor) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model.bin");
  TempDir d;
  LoadOptions o;
  o.require_tokenizer = false;
  Model m = load_model(test::shared(std::string(kTiny) + "/model.bin"), o);
  const std::string hf = d / "hf";
  write_hf_model(m, hf, DType::F32);
  SafetensorsFile st = read_safetensors(hf + "/model.safetensors");
  std::vector<SafetensorsWriteTensor> ts;
  for (const auto& t : st.tensors) ts.push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
  const float extra[2] = {1, 2};
  ts.push_back({"model.layers.0.mlp.gate_proj.bias", "F32", {2}, extra, 8});
  write_safetensors(d / "model.safetensors", ts, {{"format", "pt"}});
  fs::rename(d / "model.safetensors", hf + "/model.safetensors");
  expect_error([&] { load_model(hf, o); }, {hf, "unexpected tensor model.layers.0.mlp.gate_proj.bias"});
  ts.pop_back();
  for (auto& t : ts)
    if (t.name == "model.norm.weight") t.dtype = "I32";
  write_safetensors(hf + "/model.safetensors", ts, {{"format", "pt"}});
  expect_error([&] { load_model(hf, o); }, {"model.safetensors", "model.norm.weight has dtype I32"});
}

TEST(Io, HfMissingTokenizer) {
  LMP_REQUIRE_SHARED(std::string(kTiny) + "/model.bin");
  TempDir d;
  LoadOptions o;
  o.require_tokenizer = false;
  Model m = load_model(test::shared(std::string(kTiny) + "/model.bin"), o);
  const std::string hf = d / "hf";
  write_hf_model(m, hf, DType::F32);
  ASSERT_TRUE(fs::remove(hf + "/tokenizer.model"));
  expect_error([&] { load_model(hf); }, {hf, "no tokenizer found", "tokenizer.model, tokenizer.json", "--tokenizer"});
}

TEST(Io, LoadModelMissingPath) {
  expect_error([&] { load_model("/nonexistent/lmpress/model.bin"); }, {"/nonexistent/lmpress/model.bin", "no such file"});
  TempDir d;
  expect_error([&] { load_model(d.path); }, {d.path, "without config.json"});
}
