// Quantize pipeline end to end: recipe grammar, quantize -> save -> load -> identical logits,
// corrupt lmpress files rejected, GPTQ beats RTN on a real model.
#include <filesystem>
#include <fstream>

#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;

TEST(Recipe, ParsesRulesAndOverrides) {
  Recipe r = parse_recipe("gptq:w4g32,act_order,damp=0.05;token_embd.weight=rtn:w8g32;blk.*.ffn_down.weight=gptq:w3g128a");
  EXPECT_EQ(r.base.method, "gptq");
  EXPECT_EQ(r.base.spec, (QuantSpec{4, 32, true}));
  EXPECT_TRUE(r.base.gptq.act_order);
  EXPECT_DOUBLE_EQ(r.base.gptq.damp, 0.05);
  EXPECT_EQ(r.rule_for("token_embd.weight").method, "rtn");
  EXPECT_EQ(r.rule_for("token_embd.weight").spec.bits, 8);
  EXPECT_EQ(r.rule_for("blk.3.ffn_down.weight").spec, (QuantSpec{3, 128, false}));
  EXPECT_EQ(r.rule_for("blk.3.ffn_up.weight").spec.bits, 4);
  EXPECT_TRUE(r.needs_calibration());
  EXPECT_FALSE(parse_recipe("rtn:w8row;output.weight=keep").needs_calibration());
  // tied: an output.weight override applies to the shared tensor
  Recipe t = parse_recipe("rtn:w4g32;output.weight=rtn:w6g32");
  EXPECT_EQ(t.rule_for("token_embd.weight", true).spec.bits, 6);
  EXPECT_EQ(t.rule_for("token_embd.weight", false).spec.bits, 4);
  EXPECT_EQ(parse_recipe(r.text).text, r.text);
}

TEST(Recipe, BadRecipesAreClearErrors) {
  for (const char* bad : {"", "gptq", "gptq:w7g32", "gptq:w4g33", "foo:w4g32", "gptq:w4g32,act_order=1",
                          "gptq:w4g32,damp=x", "rtn:w4g32,act_order", "gptq:w4g32;nopattern",
                          "gptq:w4g32;x=bad:w4"}) {
    try {
      parse_recipe(bad);
      ADD_FAILURE() << "accepted bad recipe '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("recipe"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(glob_match("blk.*.attn_?.weight", "blk.12.attn_q.weight"));
  EXPECT_FALSE(glob_match("blk.*.attn_?.weight", "blk.12.attn_output.weight"));
}

namespace {
std::string tmp(const std::string& n) { return test::tmp_dir() + "/lmpress_q_" + std::to_string(::getpid()) + "_" + n; }

using test::logits_of;
}  // namespace

TEST(QuantizePipeline, SaveLoadGivesIdenticalLogits) {
  LMP_REQUIRE_SHARED("models/babyllama-936k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.oneline.txt");
  Model m = load_model(test::shared("models/babyllama-936k/model.bin"));
  QuantizeOptions qo;
  qo.recipe = parse_recipe("gptq:w4g64;token_embd.weight=rtn:w8g32;blk.0.*=gptq:w3g32a");
  qo.calib = {test::shared("data/tinystories/calib.oneline.txt"), 4, 64, 1};
  qo.progress = false;
  QuantizeReport rep;
  Model q = quantize_model(m, qo, &rep);
  EXPECT_GT(rep.bpw(), 3.5);
  EXPECT_LT(rep.bpw(), 6.0);
  const std::string path = tmp("baby.lmp");
  write_lmpress_model(q, path);
  Model back = load_model(path);
  EXPECT_EQ(back.format, "lmpress");
  EXPECT_EQ(back.metadata.at("recipe"), qo.recipe.text);
  EXPECT_EQ(back.tok_embd.dtype, DType::Q);
  EXPECT_EQ(back.layers[0].wq.format, format_id({3, 32, false}));
  const std::vector<int32_t> toks = m.tokenizer->encode("Once upon a time, there was a little dog.", true);
  EXPECT_EQ(back.tokenizer->encode("Once upon a time, there was a little dog.", true), toks);
  const auto a = logits_of(q, toks), b = logits_of(back, toks);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << i;
  // Quantized logits stay close to the f32 model's.
  const auto f = logits_of(m, toks);
  double maxd = 0;
  for (size_t i = 0; i < a.size(); ++i) maxd = std::max(maxd, double(std::fabs(a[i] - f[i])));
  EXPECT_LT(maxd, 3.0);
  EXPECT_GT(maxd, 0.0);
  std::filesystem::remove(path);
}

TEST(QuantizePipeline, CorruptFilesRejected) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  QuantizeOptions qo;
  qo.recipe = parse_recipe("rtn:w4g32");
  qo.progress = false;
  Model q = quantize_model(m, qo, nullptr);
  const std::string good = tmp("good.lmp");
  write_lmpress_model(q, good);
  std::string bytes = read_text_file(good);
  auto write = [&](const std::string& name, const std::string& b) {
    const std::string p = tmp(name);
    std::ofstream(p, std::ios::binary) << b;
    return p;
  };
  auto expect_error = [&](const std::string& p, const std::string& what) {
    try {
      load_model(p);
      ADD_FAILURE() << "loaded corrupt file (" << what << ")";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
    std::filesystem::remove(p);
  };
  expect_error(write("trunc.lmp", bytes.substr(0, bytes.size() - 100)), "truncated");
  // A packed tensor whose format claims more bytes than stored.
  {
    std::string b = bytes;
    const size_t pos = b.find("\\\"format\\\":\\\"w4g32\\\"");
    ASSERT_NE(pos, std::string::npos);
    b.replace(pos, 19, "\\\"format\\\":\\\"w8g32\\\"");
    expect_error(write("fmt.lmp", b), "format size mismatch");
  }
  // Unknown format name.
  {
    std::string b = bytes;
    const size_t pos = b.find("\\\"format\\\":\\\"w4g32\\\"");
    b.replace(pos, 19, "\\\"format\\\":\\\"w9g32\\\"");
    expect_error(write("fmt9.lmp", b), "unknown format");
  }
  // Future version.
  {
    std::string b = bytes;
    const size_t pos = b.find("\"lmpress.version\":\"1\"");
    ASSERT_NE(pos, std::string::npos);
    b.replace(pos, 21, "\"lmpress.version\":\"9\"");
    expect_error(write("ver.lmp", b), "version");
  }
  std::filesystem::remove(good);
}

// KLD against the f32 babyllama of the model quantized with `recipe` (calibration: nsamples
// windows of 128 tokens of calib.oneline.txt; evaluation: the first max_chunks chunks of eval).
struct BabyllamaKld {
  Model m;
  std::vector<int32_t> toks;
  int nsamples;
  int max_chunks;
  BabyllamaKld(int nsamples_, int max_chunks_)
      : m(load_model(test::shared("models/babyllama-936k/model.bin"))), nsamples(nsamples_), max_chunks(max_chunks_) {
    toks = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/eval.oneline.txt")), true);
  }
  double operator()(const std::string& recipe) const {
    QuantizeOptions qo;
    qo.recipe = parse_recipe(recipe);
    qo.calib = {test::shared("data/tinystories/calib.oneline.txt"), nsamples, 128, 0};
    qo.progress = false;
    Model q = quantize_model(m, qo, nullptr);
    PerplexityOptions po;
    po.base = &m;
    po.max_chunks = max_chunks;
    po.progress = false;
    return perplexity(q, toks, po).kld;
  }
};

TEST(QuantizePipeline, GptqBeatsRtnOnBabyllama) {
  LMP_REQUIRE_SHARED("models/babyllama-936k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/eval.oneline.txt");
  const BabyllamaKld kld(16, 24);
  const double rtn = kld("rtn:w3g32;token_embd.weight=rtn:w8g32");
  const double gptq = kld("gptq:w3g32;token_embd.weight=rtn:w8g32");
  EXPECT_LT(gptq, 0.75 * rtn) << "gptq " << gptq << " rtn " << rtn;
}

// Every tensor quantized, including the tied embedding/classifier: GPTQ must beat RTN. With the
// classifier's Hessian alone for the tied matrix (emb=0) it lost at w2g128 in docs/results.md and
// loses at w4g128 with these settings (8 windows, 12 chunks: KLD 0.184 vs RTN 0.158; default 0.127).
TEST(QuantizePipeline, TiedGptqBeatsRtnOnBabyllama) {
  LMP_REQUIRE_SHARED("models/babyllama-936k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/eval.oneline.txt");
  const BabyllamaKld kld(8, 12);
  ASSERT_TRUE(kld.m.cfg.tied_embeddings);
  for (const char* fmt : {"w4g128", "w2g128"}) {
    const double rtn = kld(std::string("rtn:") + fmt);
    const double gptq = kld(std::string("gptq:") + fmt);
    std::printf("  %s: gptq %.5f rtn %.5f ratio %.3f\n", fmt, gptq, rtn, gptq / rtn);
    // The calibration passes run the quantized blocks through the level's kernels, whose float
    // rounding differs (scalar / AVX2 / AVX-512 / AMX); GPTQ's choices move with it: w4g128 gives
    // 0.131 / 0.132 / 0.132 / 0.145 here (the AMX-calibrated model: 0.1440 vs 0.1407 on the whole
    // eval text, within its +-0.0032), so w4g128 keeps a 5% margin, w2g128 (ratio 0.82-0.85) 10%.
    EXPECT_LT(gptq, (std::string(fmt) == "w4g128" ? 0.95 : 0.9) * rtn) << fmt << ": gptq " << gptq << " rtn " << rtn;
  }
}

// An untied model: the embedding has no Hessian, its gptq rule runs as rtn; the classifier gets GPTQ.
TEST(QuantizePipeline, UntiedEmbeddingWithGptqRule) {
  LMP_REQUIRE_SHARED("data/tinystories/calib.txt");
  Model m = synth_model("tiny", DType::F32, 3);
  ASSERT_FALSE(m.cfg.tied_embeddings);
  QuantizeOptions qo;
  qo.recipe = parse_recipe("gptq:w4g32");
  qo.calib = {test::shared("data/tinystories/calib.txt"), 2, 32, 0};
  qo.progress = false;
  QuantizeReport rep;
  Model q = quantize_model(m, qo, &rep);
  EXPECT_EQ(q.tok_embd.dtype, DType::Q);
  EXPECT_EQ(q.output.dtype, DType::Q);
  bool saw_rtn_embd = false, saw_gptq_out = false;
  for (const auto& l : rep.layers) {
    saw_rtn_embd |= l.name == "token_embd.weight" && l.method == "rtn";
    saw_gptq_out |= l.name == "output.weight" && l.method == "gptq";
  }
  EXPECT_TRUE(saw_rtn_embd);
  EXPECT_TRUE(saw_gptq_out);
}
