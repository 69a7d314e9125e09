// Model loading and conversion with the shared checkpoints: llama2.c and GGUF give identical
// tensors, and Hugging Face / GGUF exports read back to the same tensors (after undoing the RoPE
// row permutation where the convention changes).
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;
namespace fs = std::filesystem;

namespace {

using test::TempDir;

struct SharedModel {
  const char* dir;
  const char* tok;
  int64_t n_params;
};
const SharedModel kModels[] = {
    {"models/tinystories-279k", "tok512", 279232},
    {"models/babyllama-936k", "tok105", 936448},
    {"models/wiki5m", "tok1024", 4984064},
};

std::string bin_path(const SharedModel& s) { return test::shared(std::string(s.dir) + "/model.bin"); }
std::string gguf_path(const SharedModel& s) {
  return test::shared(std::string(s.dir) + "/model-f32.gguf");
}

// Every tensor of `got` equals the matching tensor of `want` converted to the dtype of `got`
// (1-D tensors are always f32). permute_qk: `got` is in the other RoPE convention.
void expect_same_weights(const Model& want, const Model& got, const std::string& what) {
  ASSERT_EQ(want.layers.size(), got.layers.size()) << what;
  std::vector<const Tensor*> a = want.weight_tensors(), b = got.weight_tensors();
  ASSERT_EQ(a.size(), b.size()) << what;
  const bool flip = want.cfg.rope_style != got.cfg.rope_style;
  for (size_t i = 0; i < a.size(); ++i) {
    const Tensor& ta = *a[i];
    Tensor tb = *b[i];
    ASSERT_EQ(ta.shape, tb.shape) << what << ": " << ta.name << " vs " << tb.name;
    // q/k rows (and biases): bring `got` back to `want`'s convention.
    if (flip) {
      for (size_t l = 0; l < got.layers.size(); ++l) {
        const LayerWeights& L = got.layers[l];
        if (b[i] == &L.wq || b[i] == &L.bq)
          tb = permute_rope_rows(tb, got.cfg.n_heads, want.cfg.rope_style == RopeStyle::Halves);
        if (b[i] == &L.wk || b[i] == &L.bk)
          tb = permute_rope_rows(tb, got.cfg.n_kv_heads, want.cfg.rope_style == RopeStyle::Halves);
      }
    }
    std::vector<float> va = tensor_to_f32(ta.dtype == tb.dtype ? ta : convert_tensor(ta, tb.dtype));
    std::vector<float> vb = tensor_to_f32(tb);
    ASSERT_EQ(va.size(), vb.size());
    size_t bad = 0;
    for (size_t k = 0; k < va.size(); ++k) bad += !(va[k] == vb[k]);
    EXPECT_EQ(bad, 0u) << what << ": tensor " << ta.name << " / " << tb.name << " differs in " << bad
                       << " of " << va.size() << " values";
  }
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b, bool same_seq = true) {
  EXPECT_EQ(a.dim, b.dim);
  EXPECT_EQ(a.hidden_dim, b.hidden_dim);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  if (same_seq) {
    EXPECT_EQ(a.max_seq_len, b.max_seq_len);
  }
  EXPECT_FLOAT_EQ(a.norm_eps, b.norm_eps);
  EXPECT_FLOAT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.tied_embeddings, b.tied_embeddings);
  EXPECT_EQ(a.attn_bias, b.attn_bias);
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
}

void expect_same_vocab(const Model& a, const Model& b) {
  ASSERT_NE(a.tokenizer, nullptr);
  ASSERT_NE(b.tokenizer, nullptr);
  const Vocab& va = a.tokenizer->vocab();
  const Vocab& vb = b.tokenizer->vocab();
  EXPECT_EQ(va.kind, vb.kind);
  EXPECT_EQ(va.tokens, vb.tokens);
  EXPECT_EQ(va.bos_id, vb.bos_id);
  EXPECT_EQ(va.eos_id, vb.eos_id);
  EXPECT_EQ(va.add_bos, vb.add_bos);
  const std::string text = "Once upon a time, there was a little dog.";
  EXPECT_EQ(a.tokenizer->encode(text, true), b.tokenizer->encode(text, true));
}

// A small random Qwen2-style model (q/k/v biases, halves RoPE, untied) without tokenizer.
Model synthetic_model(const std::string& arch, bool bias, RopeStyle style) {
  Model m;
  ModelConfig& c = m.cfg;
  c.arch = arch;
  c.dim = 32;
  c.hidden_dim = 48;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 40;
  c.max_seq_len = 64;
  c.norm_eps = 1e-6f;
  c.rope_theta = 1e6f;
  c.rope_style = style;
  c.tied_embeddings = false;
  c.attn_bias = bias;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto rnd = [&](const std::string& name, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = nd(rng);
    return make_f32_tensor(name, std::move(shape), std::move(v));
  };
  m.tok_embd = rnd("token_embd.weight", {40, 32});
  m.layers.resize(2);
  for (int i = 0; i < 2; ++i) {
    LayerWeights& l = m.layers[size_t(i)];
    l.attn_norm = rnd("n", {32});
    l.wq = rnd("q", {32, 32});
    l.wk = rnd("k", {16, 32});
    l.wv = rnd("v", {16, 32});
    if (bias) {
      l.bq = rnd("bq", {32});
      l.bk = rnd("bk", {16});
      l.bv = rnd("bv", {16});
    }
    l.wo = rnd("o", {32, 32});
    l.ffn_norm = rnd("fn", {32});
    l.w_gate = rnd("g", {48, 32});
    l.w_up = rnd("u", {48, 32});
    l.w_down = rnd("d", {32, 48});
  }
  m.out_norm = rnd("on", {32});
  m.output = rnd("output.weight", {40, 32});
  m.path = "synthetic";
  m.validate();
  return m;
}

LoadOptions no_tokenizer() {
  LoadOptions o;
  o.require_tokenizer = false;
  return o;
}

}  // namespace

TEST(ModelLoad, Llama2cConfigAndTokenizer) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  Model m = load_model(bin_path(kModels[0]));
  EXPECT_EQ(m.format, "llama2c");
  EXPECT_EQ(m.cfg.arch, "llama");
  EXPECT_EQ(m.cfg.dim, 64);
  EXPECT_EQ(m.cfg.hidden_dim, 192);
  EXPECT_EQ(m.cfg.n_layers, 5);
  EXPECT_EQ(m.cfg.n_heads, 8);
  EXPECT_EQ(m.cfg.n_kv_heads, 4);
  EXPECT_EQ(m.cfg.head_dim, 8);
  EXPECT_EQ(m.cfg.vocab_size, 512);
  EXPECT_EQ(m.cfg.max_seq_len, 256);
  EXPECT_TRUE(m.cfg.tied_embeddings);
  EXPECT_EQ(m.cfg.rope_style, RopeStyle::Interleaved);
  EXPECT_EQ(m.n_params(), 279232);
  EXPECT_EQ(m.file_bytes, 1125148u);
  EXPECT_EQ(m.output.data, m.tok_embd.data);
  EXPECT_EQ(m.layers[2].wk.shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(m.layers[2].w_down.shape, (std::vector<int64_t>{64, 192}));
  ASSERT_NE(m.tokenizer, nullptr);
  EXPECT_EQ(m.tokenizer->n_vocab(), 512);
  EXPECT_EQ(m.tokenizer->bos(), 1);
  EXPECT_EQ(m.tokenizer->eos(), 2);
  auto names = m.weight_tensors();
  EXPECT_EQ(names.front()->name, "token_embd.weight");
  EXPECT_EQ(names[1]->name, "blk.0.attn_norm.weight");
  EXPECT_EQ(names.back()->name, "output_norm.weight");
}

TEST(ModelLoad, Llama2cMatchesGguf) {
  for (const SharedModel& s : kModels) {
    if (!file_exists(bin_path(s)) || !file_exists(gguf_path(s)))
      GTEST_SKIP() << "SKIPPED: shared input missing: " << bin_path(s);
    Model a = load_model(bin_path(s));
    Model b = load_model(gguf_path(s));
    SCOPED_TRACE(s.dir);
    EXPECT_EQ(b.format, "gguf");
    expect_same_config(a.cfg, b.cfg, false);
    EXPECT_EQ(b.cfg.max_seq_len, 128);  // the converter wrote 128
    EXPECT_EQ(a.n_params(), s.n_params);
    EXPECT_EQ(b.n_params(), s.n_params);  // the converter's output.weight copy is detected as tied
    expect_same_weights(a, b, s.dir);
    expect_same_vocab(a, b);
  }
}

TEST(ModelLoad, TokenizerSearchAndOverride) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/tok512.bin");
  TempDir d;
  fs::copy_file(bin_path(kModels[0]), d / "model.bin");
  fs::copy_file(test::shared("models/tinystories-279k/tok512.bin"), d / "tok512.bin");
  Model m = load_model(d / "model.bin");  // only tok512.bin beside it
  ASSERT_NE(m.tokenizer, nullptr);
  EXPECT_EQ(m.tokenizer->n_vocab(), 512);
  LoadOptions o;
  o.tokenizer_path = test::shared("models/tinystories-279k/tok512.model");
  Model m2 = load_model(d / "model.bin", o);
  EXPECT_EQ(m2.tokenizer->vocab().tokens, m.tokenizer->vocab().tokens);
  // GGUF with an explicit tokenizer file.
  Model g = load_model(gguf_path(kModels[0]), o);
  EXPECT_EQ(g.tokenizer->vocab().tokens, m.tokenizer->vocab().tokens);
}

TEST(ModelLoad, Llama2cUntiedClassifier) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  TempDir d;
  std::ifstream in(bin_path(kModels[0]), std::ios::binary);
  std::vector<char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int32_t vocab;
  std::memcpy(&vocab, b.data() + 20, 4);
  const int32_t neg = -vocab;
  std::memcpy(b.data() + 20, &neg, 4);
  // wcls follows the RoPE tables: use 2x the embedding so it is recognisable.
  std::vector<float> wcls(size_t(vocab) * 64);
  std::memcpy(wcls.data(), b.data() + 28, wcls.size() * 4);
  for (auto& x : wcls) x *= 2;
  {
    std::ofstream out(d / "model.bin", std::ios::binary);
    out.write(b.data(), std::streamsize(b.size()));
    out.write(reinterpret_cast<const char*>(wcls.data()), std::streamsize(wcls.size() * 4));
  }
  Model m = load_model(d / "model.bin", no_tokenizer());
  EXPECT_FALSE(m.cfg.tied_embeddings);
  EXPECT_EQ(tensor_to_f32(m.output), wcls);
  EXPECT_EQ(m.n_params(), 279232 + 512 * 64);
  // Round trip through GGUF keeps the separate classifier.
  write_gguf_model(m, d / "u.gguf", DType::F32);
  Model g = load_model(d / "u.gguf", no_tokenizer());
  EXPECT_FALSE(g.cfg.tied_embeddings);
  expect_same_weights(m, g, "untied gguf");
}

TEST(ModelLoad, HfRoundTripF32) {
  for (int i = 0; i < 2; ++i) {
    const SharedModel& s = kModels[i];
    if (!file_exists(bin_path(s))) GTEST_SKIP() << "SKIPPED: shared input missing: " << bin_path(s);
    SCOPED_TRACE(s.dir);
    TempDir d;
    Model src = load_model(bin_path(s));
    write_hf_model(src, d / "hf", DType::F32);
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json",
                          "generation_config.json"})
      EXPECT_TRUE(file_exists(d / "hf/" + f)) << f;
    auto cfg = nlohmann::json::parse(read_text_file(d / "hf/config.json"));
    EXPECT_EQ(cfg["architectures"][0], "LlamaForCausalLM");
    EXPECT_EQ(cfg["torch_dtype"], "float32");
    EXPECT_EQ(cfg["tie_word_embeddings"], true);
    EXPECT_EQ(cfg["rms_norm_eps"].get<double>(), 1e-5);
    Model hf = load_model(d / "hf");
    EXPECT_EQ(hf.format, "hf");
    EXPECT_EQ(hf.cfg.rope_style, RopeStyle::Halves);
    expect_same_config(src.cfg, hf.cfg);
    EXPECT_EQ(hf.n_params(), s.n_params);
    expect_same_weights(src, hf, "hf f32");
    // q rows really were permuted: raw rows differ from the source.
    EXPECT_NE(tensor_to_f32(hf.layers[0].wq), tensor_to_f32(src.layers[0].wq));
    expect_same_vocab(src, hf);
    // HF -> GGUF brings q/k back to the interleaved order: identical to the llama2.c weights.
    write_gguf_model(hf, d / "back.gguf", DType::F32);
    Model back = load_model(d / "back.gguf");
    EXPECT_EQ(back.cfg.rope_style, RopeStyle::Interleaved);
    for (size_t l = 0; l < src.layers.size(); ++l) {
      EXPECT_EQ(tensor_to_f32(back.layers[l].wq), tensor_to_f32(src.layers[l].wq));
      EXPECT_EQ(tensor_to_f32(back.layers[l].wk), tensor_to_f32(src.layers[l].wk));
    }
    expect_same_weights(src, back, "hf -> gguf");
    expect_same_vocab(src, back);
  }
}

TEST(ModelLoad, HfRoundTripBf16AndSharded) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  TempDir d;
  Model src = load_model(bin_path(kModels[0]));
  write_hf_model(src, d / "hf", DType::BF16);
  Model hf = load_model(d / "hf");
  EXPECT_EQ(hf.layers[0].wq.dtype, DType::BF16);
  EXPECT_EQ(hf.layers[0].attn_norm.dtype, DType::F32);
  EXPECT_EQ(nlohmann::json::parse(read_text_file(d / "hf/config.json"))["torch_dtype"], "bfloat16");
  expect_same_weights(src, hf, "hf bf16");

  // Split model.safetensors into two shards with an index.
  SafetensorsFile st = read_safetensors(d / "hf/model.safetensors");
  std::vector<SafetensorsWriteTensor> a, b;
  nlohmann::json wm = nlohmann::json::object();
  for (const auto& t : st.tensors) {
    const bool first = t.name.find("layers.3") == std::string::npos &&
                       t.name.find("layers.4") == std::string::npos;
    (first ? a : b).push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
    wm[t.name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  fs::create_directories(d / "sharded");
  write_safetensors(d / "sharded/model-00001-of-00002.safetensors", a, {{"format", "pt"}});
  write_safetensors(d / "sharded/model-00002-of-00002.safetensors", b, {{"format", "pt"}});
  for (const char* f : {"config.json", "tokenizer.model", "tokenizer_config.json"})
    fs::copy_file(d / "hf/" + f, d / "sharded/" + f);
  {
    std::ofstream idx(d / "sharded/model.safetensors.index.json");
    idx << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", wm}}.dump();
  }
  Model sh = load_model(d / "sharded");
  EXPECT_EQ(sh.files.size(), 2u);
  expect_same_weights(hf, sh, "sharded");
}

TEST(ModelLoad, GgufRoundTripAllTypes) {
  LMP_REQUIRE_SHARED("models/babyllama-936k/model.bin");
  const SharedModel& s = kModels[1];
  Model src = load_model(bin_path(s));
  TempDir d;
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    const std::string p = d / (std::string("m-") + dtype_name(dt) + ".gguf");
    write_gguf_model(src, p, dt);
    GgufFile g = read_gguf(p);
    EXPECT_EQ(g.version, 3u);
    EXPECT_EQ(g.find("general.architecture")->s, "llama");
    EXPECT_EQ(g.find("tokenizer.ggml.model")->s, "llama");
    EXPECT_EQ(g.find_tensor("output.weight"), nullptr);  // tied
    for (const auto& t : g.tensors) {
      EXPECT_EQ(t.offset % 32, 0u) << t.name;
      if (t.ne.size() == 1) {
        EXPECT_EQ(t.ggml_type, 0u) << t.name;
      }
    }
    Model back = load_model(p);
    expect_same_config(src.cfg, back.cfg);
    EXPECT_EQ(back.layers[1].w_up.dtype, dt);
    expect_same_weights(src, back, dtype_name(dt));
    expect_same_vocab(src, back);
    const Vocab& vs = src.tokenizer->vocab();
    const Vocab& vb = back.tokenizer->vocab();
    EXPECT_EQ(vs.scores, vb.scores);
    EXPECT_EQ(vs.types, vb.types);
    // F16/BF16 -> F32 GGUF again is exact.
    if (dt != DType::F32) {
      write_gguf_model(back, d / "again.gguf", DType::F32);
      expect_same_weights(back, load_model(d / "again.gguf"), "again");
    }
  }
}

TEST(ModelLoad, SyntheticBiasesAndHalves) {
  TempDir d;
  Model src = synthetic_model("qwen2", true, RopeStyle::Halves);
  write_hf_model(src, d / "hf", DType::F32);
  auto cfg = nlohmann::json::parse(read_text_file(d / "hf/config.json"));
  EXPECT_EQ(cfg["architectures"][0], "Qwen2ForCausalLM");
  EXPECT_EQ(cfg["tie_word_embeddings"], false);
  Model hf = load_model(d / "hf", no_tokenizer());
  EXPECT_EQ(hf.cfg.arch, "qwen2");
  expect_same_config(src.cfg, hf.cfg);
  expect_same_weights(src, hf, "qwen2 hf");
  // Halves in HF are unchanged: raw equality.
  EXPECT_EQ(tensor_to_f32(hf.layers[1].bq), tensor_to_f32(src.layers[1].bq));

  // GGUF stores llama-convention (interleaved) rows, biases included.
  write_gguf_model(src, d / "q.gguf", DType::F32);
  Model g = load_model(d / "q.gguf", no_tokenizer());
  EXPECT_EQ(g.cfg.rope_style, RopeStyle::Interleaved);
  EXPECT_TRUE(g.cfg.attn_bias);
  EXPECT_FALSE(g.cfg.tied_embeddings);
  EXPECT_EQ(tensor_to_f32(g.layers[0].bk),
            tensor_to_f32(permute_rope_rows(src.layers[0].bk, src.cfg.n_kv_heads, false)));
  expect_same_weights(src, g, "qwen2 gguf");

  // Interleaved model with biases -> HF Llama with attention_bias.
  Model il = synthetic_model("llama", true, RopeStyle::Interleaved);
  write_hf_model(il, d / "hf2", DType::F16);
  auto cfg2 = nlohmann::json::parse(read_text_file(d / "hf2/config.json"));
  EXPECT_EQ(cfg2["attention_bias"], true);
  Model hf2 = load_model(d / "hf2", no_tokenizer());
  expect_same_weights(il, hf2, "llama+bias hf f16");
}

TEST(ModelLoad, RopeScalingRoundTrip) {
  TempDir d;
  Model src = synthetic_model("llama", false, RopeStyle::Interleaved);
  src.cfg.rope_scaling.type = "llama3";
  src.cfg.rope_scaling.factor = 8.0f;
  src.cfg.rope_scaling.low_freq_factor = 1.0f;
  src.cfg.rope_scaling.high_freq_factor = 4.0f;
  src.cfg.rope_scaling.original_max_position = 16;
  write_hf_model(src, d / "hf", DType::F32);
  Model hf = load_model(d / "hf", no_tokenizer());
  EXPECT_EQ(hf.cfg.rope_scaling.type, "llama3");
  EXPECT_FLOAT_EQ(hf.cfg.rope_scaling.factor, 8.0f);
  EXPECT_EQ(hf.cfg.rope_scaling.original_max_position, 16);
  write_gguf_model(src, d / "m.gguf", DType::F32);
  GgufFile g = read_gguf(d / "m.gguf");
  const GgufTensorInfo* rf = g.find_tensor("rope_freqs.weight");
  ASSERT_NE(rf, nullptr);
  EXPECT_EQ(rf->ne, (std::vector<int64_t>{4}));
  Model back = load_model(d / "m.gguf", no_tokenizer());
  EXPECT_EQ(back.cfg.rope_scaling.type, "llama3");
  EXPECT_FLOAT_EQ(back.cfg.rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(back.cfg.rope_scaling.original_max_position, 16);
  expect_same_weights(src, back, "llama3 gguf");

  src.cfg.rope_scaling = RopeScaling{};
  src.cfg.rope_scaling.type = "linear";
  src.cfg.rope_scaling.factor = 2.0f;
  write_gguf_model(src, d / "lin.gguf", DType::F32);
  Model lin = load_model(d / "lin.gguf", no_tokenizer());
  EXPECT_EQ(lin.cfg.rope_scaling.type, "linear");
  EXPECT_FLOAT_EQ(lin.cfg.rope_scaling.factor, 2.0f);
}

TEST(ModelLoad, WritersAreAtomic) {
  TempDir d;
  Model m = synthetic_model("llama", false, RopeStyle::Interleaved);
  m.layers[1].wk = Tensor{};  // invalid: nothing may be left behind
  EXPECT_THROW(write_gguf_model(m, d / "x.gguf", DType::F16), Error);
  EXPECT_THROW(write_hf_model(m, d / "hf", DType::F16), Error);
  EXPECT_TRUE(fs::is_empty(d.path));
}
