// QuaRot (src/algo/quarot.cpp): the rotation is orthogonal, the rotated float model computes the same
// logits (tied and untied, GQA), folded norms are ones, the streaming pipeline writes an untied
// model that loads back, quarot+rtn gives a finite perplexity, recipe errors are clear.
#include <cmath>
#include <filesystem>

#include "algo/pipeline_internal.h"
#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_util.h"

using namespace lmpress;

namespace {

using test::logits_of;

// max |a - b| / max |a|
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, double(std::fabs(a[i] - b[i])));
    s = std::max(s, double(std::fabs(a[i])));
  }
  return d / s;
}

void expect_ones(const Tensor& t) {
  const std::vector<float> v = tensor_to_f32(t);
  for (float x : v) ASSERT_EQ(x, 1.f) << t.name;
}

// Rotates a copy of the model at `rel` and compares logits on a few tokens.
void check_invariance(const std::string& rel, double tol) {
  const Model ref = load_model(test::shared(rel));
  Model m = load_model(test::shared(rel));
  const bool tied = m.cfg.tied_embeddings;
  std::vector<int32_t> toks = {1};
  for (int i = 0; i < 11; ++i) toks.push_back(int32_t((37 * i + 5) % m.cfg.vocab_size));
  const auto a = logits_of(ref, toks);
  for (const bool heads : {true, false}) {
    Model r = load_model(test::shared(rel));
    ThreadPool pool(2);
    QuarotOptions o;
    o.heads = heads;
    quarot_rotate_model(r, o, pool);
    EXPECT_FALSE(r.cfg.tied_embeddings);
    EXPECT_EQ(r.output.name, "output.weight");
    EXPECT_EQ(r.output.dtype, DType::F32);
    expect_ones(r.out_norm);
    for (const auto& L : r.layers) {
      expect_ones(L.attn_norm);
      expect_ones(L.ffn_norm);
    }
    // the weights did change
    EXPECT_NE(tensor_to_f32(r.layers[0].wq)[0], tensor_to_f32(ref.layers[0].wq)[0]);
    if (tied) {
      EXPECT_NE(tensor_to_f32(r.output)[0], tensor_to_f32(r.tok_embd)[0]);
    }
    const double d = rel_diff(a, logits_of(r, toks));
    EXPECT_LT(d, tol) << rel << " heads=" << heads;
    std::printf("[ quarot   ] %s heads=%d: max |dlogit| / max |logit| = %.3g\n", rel.c_str(), int(heads), d);
  }
}

}  // namespace

TEST(Quarot, RotationIsOrthogonal) {
  for (const int64_t n : {int64_t(64), int64_t(288), int64_t(352), int64_t(768)}) {
    ModelConfig c;
    c.dim = int32_t(n);
    c.head_dim = 32;
    const QuarotPlan P = quarot_plan(c, QuarotOptions{});
    const QuarotPlan P2 = quarot_plan(c, QuarotOptions{7, true});
    EXPECT_NE(P.signs, P2.signs);
    EXPECT_EQ(P.signs, quarot_plan(c, QuarotOptions{}).signs);  // deterministic
    // V's columns: V e_j
    std::vector<float> V(size_t(n * n), 0.f);
    const HadamardPlan& H = hadamard_plan(n);
    for (int64_t j = 0; j < n; ++j) {
      std::vector<float> e(size_t(n), 0.f);
      e[size_t(j)] = 1.f;
      rht_forward(H, P.signs.data(), e.data());
      for (int64_t i = 0; i < n; ++i) V[size_t(i * n + j)] = e[size_t(i)];
    }
    double worst = 0, maxabs = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < n; ++k) dot += double(V[size_t(k * n + i)]) * V[size_t(k * n + j)];
        worst = std::max(worst, std::fabs(dot - (i == j ? 1.0 : 0.0)));
        maxabs = std::max(maxabs, double(std::fabs(V[size_t(i * n + j)])));
      }
    EXPECT_LT(worst, 1e-5) << n;
    // a Hadamard spreads every channel: all entries +-1/sqrt(n) (block-diagonal orders aside)
    if (H.blocks == 1) {
      EXPECT_NEAR(maxabs, 1.0 / std::sqrt(double(n)), 1e-6) << n;
    }
  }
}

TEST(Quarot, FloatModelInvariantTinystories) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  check_invariance("models/tinystories-279k/model.bin", 2e-5);
}

TEST(Quarot, FloatModelInvariantWiki5m) {
  LMP_REQUIRE_SHARED("models/wiki5m/model.bin");
  check_invariance("models/wiki5m/model.bin", 2e-5);
}

TEST(Quarot, FloatModelInvariantUntiedGqa) {
  // synthetic: untied classifier, 4 query heads on 2 kv heads (the per-head rotation shared by a group)
  const Model ref = synth_model("tiny", DType::F32, 5);
  ASSERT_FALSE(ref.cfg.tied_embeddings);
  ASSERT_NE(ref.cfg.n_heads, ref.cfg.n_kv_heads);
  Model r = synth_model("tiny", DType::F32, 5);
  ThreadPool pool(2);
  quarot_rotate_model(r, QuarotOptions{3, true}, pool);
  const std::vector<int32_t> toks = {1, 17, 42, 99, 7, 250, 3};
  EXPECT_LT(rel_diff(logits_of(ref, toks), logits_of(r, toks)), 2e-5);
}

TEST(Quarot, StreamsAnUntiedModelThatLoadsBack) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  const Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  ASSERT_TRUE(m.cfg.tied_embeddings);
  QuantizeOptions qo;
  qo.recipe = parse_recipe("quarot+rtn:w4g32,seed=2;token_embd.weight=rtn:w8g32;output.weight=rtn:w6g32");
  qo.progress = false;
  qo.n_threads = 2;
  test::TempDir dir;
  const std::string path = dir / "q.lmp";
  const std::vector<PlannedTensor> plan = plan_quantization(m, qo.recipe);
  int64_t planned = 0, emb = 0, out = 0;
  for (const auto& p : plan) {
    planned += int64_t(p.nbytes);
    if (p.name == "token_embd.weight") emb = int64_t(p.nbytes);
    if (p.name == "output.weight") out = int64_t(p.nbytes);
  }
  EXPECT_GT(emb, 0);
  EXPECT_GT(out, 0);  // the untied classifier is planned, and counted
  EXPECT_LT(out, emb);
  QuantizeReport rep;
  {
    LmpressStreamWriter w(path, m, plan, {{"recipe", qo.recipe.text}});
    qo.sink = &w;
    quantize_model(m, qo, &rep);
    w.commit();
  }
  EXPECT_EQ(rep.params, m.n_params());
  EXPECT_DOUBLE_EQ(rep.weight_bits, double(planned) * 8);
  const Model back = load_model(path);
  EXPECT_FALSE(back.cfg.tied_embeddings);
  EXPECT_EQ(back.output.dtype, DType::Q);
  // the same recipe without a sink gives the same logits as the file
  qo.sink = nullptr;
  const Model q = quantize_model(m, qo, nullptr);
  const std::vector<int32_t> toks = {1, 5, 9, 200, 31};
  const auto a = logits_of(q, toks), b = logits_of(back, toks);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << i;
}

TEST(Quarot, EndToEndRtnW4g32HasFinitePerplexity) {
  LMP_REQUIRE_SHARED("models/tinystories-279k/model.bin");
  LMP_REQUIRE_SHARED("data/tinystories/calib.oneline.txt");
  const Model m = load_model(test::shared("models/tinystories-279k/model.bin"));
  QuantizeOptions qo;
  qo.recipe = parse_recipe("quarot+rtn:w4g32");
  qo.calib = {test::shared("data/tinystories/calib.oneline.txt"), 4, 64, 1};
  qo.progress = false;
  qo.n_threads = 2;
  QuantizeReport rep;
  const Model q = quantize_model(m, qo, &rep);
  EXPECT_FALSE(q.cfg.tied_embeddings);
  EXPECT_EQ(q.output.dtype, DType::Q);
  EXPECT_EQ(q.layers[0].wq.dtype, DType::Q);
  const std::vector<int32_t> tokens = m.tokenizer->encode(read_text_file(test::shared("data/tinystories/calib.oneline.txt")).substr(0, 20000), true);
  PerplexityOptions po;
  po.n_ctx = 64;
  po.max_chunks = 8;
  po.progress = false;
  po.n_threads = 2;
  po.base = &m;
  const PerplexityResult r = perplexity(q, tokens, po);
  EXPECT_TRUE(std::isfinite(r.ppl));
  EXPECT_TRUE(std::isfinite(r.kld));
  EXPECT_LT(r.ppl, 4 * r.ppl_base);
}

TEST(Quarot, RecipeErrors) {
  const Recipe r = parse_recipe("quarot+gptq:w4g64,mse,seed=9,noheads;token_embd.weight=gptq:w8g32");
  ASSERT_NE(r.quarot(), nullptr);
  EXPECT_EQ(r.quarot()->quarot.seed, 9u);
  EXPECT_FALSE(r.quarot()->quarot.heads);
  EXPECT_EQ(r.base.chain, (std::vector<std::string>{"quarot", "gptq"}));
  EXPECT_TRUE(r.has_transforms());
  EXPECT_FALSE(parse_recipe("quarot:w4g32").needs_calibration());  // quarot+rtn runs data-free
  EXPECT_EQ(parse_recipe("gptq:w4g32").quarot(), nullptr);
  EXPECT_NE(parse_recipe("quarot+awq+gptq:w4g32").quarot(), nullptr);
  const std::pair<const char*, const char*> bad[] = {
      {"gptq:w4g64;blk.0.*=quarot+gptq:w4g64", "default rule"},
      {"quarot+gptq:w4g64;blk.0.*=quarot+gptq:w4g64,seed=3", "options differ"},
      {"awq+quarot+gptq:w4g64", "first in the chain"},
      {"quarot+gptq:w4g64,seed=-1", "seed"},
      {"quarot+gptq:w4g64,seed=x", "seed"},
      {"quarot+gptq:w4g64,noheads=1", "noheads"},
      {"gptq+quarot:w4g64", "must come last"},
      {"quarot+quarot:w4g64", "twice"},
  };
  for (const auto& [text, needle] : bad) {
    try {
      parse_recipe(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << text << ": " << e.what();
    }
  }
  // the budget's candidates are per-tensor rounding rules: a model-wide rotation is refused
  EXPECT_THROW(parse_candidates("gptq:w4g64 quarot+gptq:w4g64"), Error);
}
