// Hugging Face GPTQ / AWQ checkpoints (src/io/hf_quant.cpp) against an independent numpy reference
// (tests/hf_gptq_ref.py: its own safetensors writer/reader, GPTQ / AWQ packing and dequantization):
//  HfQuantNumpy.Import*   directories numpy packed from known codes, scales and zeros (2/3/4/8
//                         bits, sym / asym, v1 / v2, act-order, bf16 scales, dynamic bits, AWQ)
//                         load to exactly numpy's dequantization, in the expected lmpress format;
//  HfQuantNumpy.Export*   lmpress's GPTQ export of a quantized tinystories model, read and
//                         dequantized by numpy, equals lmpress's dequantization; reloading it gives
//                         the same weights and logits (bit-identical once in HF's RoPE order).
// Without numpy (python3 from LMPRESS_TEST_PYTHON, else /usr/bin/python3) the tests skip loudly.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "io/io_internal.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/formats.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;
namespace fs = std::filesystem;

namespace {

std::string python() {
  if (const char* e = std::getenv("LMPRESS_TEST_PYTHON")) return e;
  return "/usr/bin/python3";
}

// Runs tests/hf_gptq_ref.py with `args`; false (with why = "SKIPPED: ...") without numpy.
bool run_ref(const std::string& args, std::string* why) {
  return test::run_python_ref(python(), "numpy", "apt install python3-numpy, or set LMPRESS_TEST_PYTHON",
                              "hf_gptq_ref.py " + args, why);
}

#define RUN_REF_OR_SKIP(args)                             \
  do {                                                    \
    std::string why_;                                     \
    if (!run_ref(args, &why_)) {                          \
      if (why_.rfind("SKIPPED", 0) == 0) GTEST_SKIP() << why_; \
      FAIL() << why_;                                     \
    }                                                     \
  } while (0)

LoadOptions no_tokenizer() {
  LoadOptions o;
  o.require_tokenizer = false;
  return o;
}

std::vector<float> values(const Tensor& t) { return t.dtype == DType::Q ? dequantize_ref(t) : tensor_to_f32(t); }

std::string format_of(const Tensor& t) { return t.dtype == DType::Q ? format_name(format_spec(t.format)) : dtype_name(t.dtype); }

// Number of values of `got` that are not bit-identical to `want`.
size_t mismatches(const std::vector<float>& want, const std::vector<float>& got) {
  if (want.size() != got.size()) return std::max(want.size(), got.size());
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += std::memcmp(&want[i], &got[i], 4) != 0;
  return bad;
}

// Logits of the first `n` tokens (all positions).
std::vector<float> logits(const Model& m, int n) {
  EngineOptions eo;
  eo.n_threads = 2;
  Engine e(m, eo);
  std::vector<int32_t> tok(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) tok[size_t(i)] = (7 * i + 3) % m.cfg.vocab_size;
  std::vector<float> out(size_t(n) * size_t(m.cfg.vocab_size));
  e.forward(tok.data(), n, 0, out.data(), true);
  return out;
}

// HF name -> tensor of a loaded model.
std::map<std::string, const Tensor*> by_hf_name(const Model& m) {
  std::map<std::string, const Tensor*> r;
  const ArchInfo& ai = arch_info(m.cfg.arch);
  for (const io_detail::NamedTensor& nt : io_detail::canonical_tensors(m))
    r[arch_hf_name(arch_tensor(ai, nt.kind), nt.layer)] = nt.t;
  return r;
}

}  // namespace

TEST(HfQuantNumpy, ImportMatchesNumpyDequantization) {
  test::TempDir d;
  RUN_REF_OR_SKIP("make " + d / "cases");
  const auto cases = nlohmann::json::parse(read_text_file(d / "cases/cases.json"));
  ASSERT_GE(cases.size(), 20u);
  for (const auto& c : cases) {
    const std::string name = c["name"], dir = c["dir"];
    SCOPED_TRACE(name);
    const Model m = load_model(dir, no_tokenizer());
    EXPECT_EQ(m.format, name.rfind("awq", 0) == 0 ? "hf-awq" : "hf-gptq");
    const auto tensors = by_hf_name(m);
    const SafetensorsFile ref = read_safetensors(dir + "/reference.safetensors");
    ASSERT_EQ(ref.tensors.size(), c["expect"].size());
    for (const SafetensorsTensor& r : ref.tensors) {
      ASSERT_TRUE(tensors.count(r.name)) << r.name;
      const Tensor& t = *tensors.at(r.name);
      const std::string prefix = r.name.substr(0, r.name.size() - 7);
      EXPECT_EQ(format_of(t), c["expect"][prefix].get<std::string>()) << r.name;
      ASSERT_EQ(t.shape, r.shape) << r.name;
      std::vector<float> want(r.nbytes / 4);
      std::memcpy(want.data(), r.data, r.nbytes);
      EXPECT_EQ(mismatches(want, values(t)), 0u) << r.name << " differs from numpy's dequantization";
    }
    // The model runs (packed kernels or dense) and gives finite logits.
    for (float v : logits(m, 4)) ASSERT_TRUE(std::isfinite(v));
  }
}

namespace {

// tinystories with every linear layer RTN-quantized, cycling through int formats GPTQ holds
// (2/3/4/8 bits, groups 16..128 and per row, sym and asym), and optionally a w8g32 embedding.
Model quantized_tinystories(bool packed_embedding) {
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  const char* kFormats[] = {"w4g32", "w3g64a", "w8row", "w2g32a", "w4g64a", "w3g32", "w8g16a", "w4row", "w2g64", "w4g128a"};
  int k = 0;
  auto quantize = [&](Tensor& t, const std::string& f) {
    const std::vector<float> w = tensor_to_f32(t);
    t = pack_tensor(t.name, quantize_rtn_ref(w.data(), t.rows(), t.cols(), parse_format_name(f)));
  };
  for (LayerWeights& l : m.layers)
    for (Tensor* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      std::string f = kFormats[k++ % 10];
      if (t->cols() % 128 != 0 && f == "w4g128a") f = "w4g64a";  // groups divide the columns
      quantize(*t, f);
    }
  if (packed_embedding) {
    quantize(m.tok_embd, "w8g32");
    m.output = m.tok_embd;
  }
  return m;
}

}  // namespace

TEST(HfQuantNumpy, ExportReadByNumpyAndRoundTrip) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  test::TempDir d;
  const Model src = quantized_tinystories(false);
  ASSERT_EQ(src.cfg.rope_style, RopeStyle::Interleaved);
  const std::string out = d / "gptq";
  write_hf_gptq_model(src, out, DType::F32);
  RUN_REF_OR_SKIP("read " + out + " " + d / "numpy.safetensors");
  const auto cfg = nlohmann::json::parse(read_text_file(out + "/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["checkpoint_format"], "gptq");
  EXPECT_FALSE(cfg["quantization_config"]["dynamic"].is_null());  // mixed formats

  // numpy's dequantization of the file = lmpress's dequantization of the source (q/k rows in
  // HF's halves order).
  const SafetensorsFile ref = read_safetensors(d / "numpy.safetensors");
  const auto src_t = by_hf_name(src);
  EXPECT_EQ(ref.tensors.size(), 7u * src.layers.size());
  for (const SafetensorsTensor& r : ref.tensors) {
    SCOPED_TRACE(r.name);
    ASSERT_TRUE(src_t.count(r.name));
    const Tensor& t = *src_t.at(r.name);
    Tensor f = make_f32_tensor(t.name, t.shape, dequantize_ref(t));
    if (r.name.find("q_proj") != std::string::npos) f = permute_rope_rows(f, src.cfg.n_heads, true);
    if (r.name.find("k_proj") != std::string::npos) f = permute_rope_rows(f, src.cfg.n_kv_heads, true);
    std::vector<float> want(r.nbytes / 4);
    std::memcpy(want.data(), r.data, r.nbytes);
    EXPECT_EQ(mismatches(want, tensor_to_f32(f)), 0u);
  }

  // lmpress reads it back: every layer with the same values, in its source format (a group as
  // long as the row reads back as per-row: the same bytes); logits equal up to the float rounding
  // of the other RoPE pairing order.
  const Model back = load_model(out);
  EXPECT_EQ(back.format, "hf-gptq");
  EXPECT_EQ(back.cfg.rope_style, RopeStyle::Halves);
  const auto back_t = by_hf_name(back);
  for (const auto& [name, t] : src_t) {
    SCOPED_TRACE(name);
    const Tensor& b = *back_t.at(name);
    if (t->dtype == DType::Q && format_of(b) != format_of(*t)) {
      const QuantSpec sb = format_spec(b.format), st = format_spec(t->format);
      EXPECT_TRUE(sb.group == 0 && st.group == t->cols() && sb.bits == st.bits && sb.sym == st.sym)
          << format_of(b) << " read back from " << format_of(*t);
      EXPECT_EQ(b.nbytes, t->nbytes);
    } else {
      EXPECT_EQ(format_of(b), format_of(*t));
    }
    Tensor f = t->dtype == DType::Q ? make_f32_tensor(t->name, t->shape, dequantize_ref(*t)) : *t;
    if (name.find("q_proj") != std::string::npos) f = permute_rope_rows(f, src.cfg.n_heads, true);
    if (name.find("k_proj") != std::string::npos) f = permute_rope_rows(f, src.cfg.n_kv_heads, true);
    EXPECT_EQ(mismatches(tensor_to_f32(f), values(b)), 0u);
  }
  const std::vector<float> la = logits(src, 16), lb = logits(back, 16);
  double maxdiff = 0;
  for (size_t i = 0; i < la.size(); ++i) maxdiff = std::max(maxdiff, double(std::fabs(la[i] - lb[i])));
  EXPECT_LT(maxdiff, 1e-4) << "logits of the source and of its GPTQ export";
  std::printf("logits of tinystories (interleaved RoPE) vs its GPTQ export: max |diff| %.3g\n", maxdiff);

  // A model already in HF's order round-trips byte for byte: same packed tensors, same logits.
  write_hf_gptq_model(back, d / "gptq2", DType::F32);
  const Model again = load_model(d / "gptq2");
  const auto again_t = by_hf_name(again);
  for (const auto& [name, t] : back_t) {
    const Tensor& a = *again_t.at(name);
    ASSERT_EQ(a.nbytes, t->nbytes) << name;
    EXPECT_EQ(a.format, t->format) << name;
    if (t->dtype == DType::Q) {
      EXPECT_EQ(std::memcmp(a.data, t->data, a.nbytes), 0) << name;
    }
  }
  EXPECT_EQ(mismatches(lb, logits(again, 16)), 0u);
}

// An asymmetric group with zero point 0 cannot be stored in v1 (stored zero - 1): the export
// switches to gptq_v2, which numpy and lmpress read back exactly.
TEST(HfQuantNumpy, ExportZeroPointZeroUsesV2) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  test::TempDir d;
  Model m = quantized_tinystories(true);
  QuantizedMatrix qm = unpack_tensor(m.layers[0].wk);  // w3g64a
  ASSERT_FALSE(qm.spec.sym);
  qm.zeros[0] = 0;
  m.layers[0].wk = pack_tensor(m.layers[0].wk.name, qm);
  write_hf_gptq_model(m, d / "gptq", DType::F32);
  const auto cfg = nlohmann::json::parse(read_text_file(d / "gptq/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["checkpoint_format"], "gptq_v2");
  RUN_REF_OR_SKIP("read " + d / "gptq" + " " + d / "numpy.safetensors");
  const SafetensorsFile ref = read_safetensors(d / "numpy.safetensors");
  const SafetensorsTensor* k = ref.find("model.layers.0.self_attn.k_proj.weight");
  ASSERT_NE(k, nullptr);
  const Tensor f = permute_rope_rows(make_f32_tensor("k", m.layers[0].wk.shape, dequantize_ref(m.layers[0].wk)),
                                     m.cfg.n_kv_heads, true);
  std::vector<float> want(k->nbytes / 4);
  std::memcpy(want.data(), k->data, k->nbytes);
  EXPECT_EQ(mismatches(want, tensor_to_f32(f)), 0u);
  const Model back = load_model(d / "gptq");
  EXPECT_EQ(mismatches(tensor_to_f32(f), dequantize_ref(back.layers[0].wk)), 0u);
  // The packed embedding was written as its exact f32 values.
  EXPECT_EQ(back.tok_embd.dtype, DType::F32);
  EXPECT_EQ(mismatches(dequantize_ref(m.tok_embd), tensor_to_f32(back.tok_embd)), 0u);
}

// Formats GPTQ cannot hold are refused with one message naming the tensor and its format.
TEST(HfQuant, ExportRefusesOtherFormats) {
  Model m = synth_model("tiny", DType::F32, 3);
  test::TempDir d;
  auto expect_refusal = [&](const char* fmt, const char* what) {
    Model q = synth_model("tiny", DType::F32, 3);
    Tensor& t = q.layers[1].w_up;
    const std::vector<float> w = tensor_to_f32(t);
    QuantizedMatrix qm = quantize_rtn_ref(w.data(), t.rows(), t.cols(), parse_format_name(fmt));
    const int64_t nnz = sparse_count(qm.spec, t.rows(), t.cols());  // outliers: any valid ones
    for (int64_t k = 0; k < nnz; ++k) qm.sp_idx.push_back(uint32_t(k)), qm.sp_val.push_back(0.f);
    t = pack_tensor(t.name, qm);
    try {
      write_hf_gptq_model(q, d / "out", DType::F16);
      ADD_FAILURE() << fmt << " was written";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("blk.1.ffn_up.weight has format " + std::string(fmt)), std::string::npos) << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(d / "out"));
  };
  expect_refusal("w5g32", "2, 3, 4 or 8 bits");
  expect_refusal("nf4g64", "int formats");
  expect_refusal("w4g32+s0.50", "sparse");
  // A dense model has nothing to write as GPTQ.
  EXPECT_THROW(write_hf_gptq_model(m, d / "out", DType::F16), Error);
  EXPECT_FALSE(fs::exists(d / "out"));
}
