// Shared helpers for the method tests: quantize a shared model by a recipe and measure its KLD, and
// check that recipes are refused with the right message.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/io.h"
#include "test_util.h"

namespace lmpress::test {

// KLD of m quantized by `recipe` against m itself on `toks` (n_ctx 128, 8 chunks, 2 threads);
// calibration: `nsamples` windows of 128 tokens of the text file `calib` (empty: none), seed 0.
// keep (optional) receives the quantized model.
inline double quantized_kld(const Model& m, const std::vector<int32_t>& toks, const std::string& recipe,
                            const std::string& calib, int nsamples, Model* keep = nullptr) {
  QuantizeOptions qo;
  qo.recipe = parse_recipe(recipe);
  if (!calib.empty()) qo.calib = {calib, nsamples, 128, 0};
  qo.n_threads = 2;
  qo.progress = false;
  Model q = quantize_model(m, qo, nullptr);
  PerplexityOptions po;
  po.n_ctx = 128;
  po.max_chunks = 8;
  po.n_threads = 2;
  po.base = &m;
  po.progress = false;
  const double k = perplexity(q, toks, po).kld;
  if (keep) *keep = std::move(q);
  return k;
}

// Each recipe must be refused by parse_recipe with an error whose message contains its needle.
inline void expect_recipes_refused(const std::vector<std::pair<std::string, std::string>>& cases) {
  for (const auto& [recipe, needle] : cases) {
    try {
      parse_recipe(recipe);
      ADD_FAILURE() << "accepted " << recipe;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << recipe << ": " << e.what();
    }
  }
}

// An assembled model q (of src, by `plan`) written to `out` as a file and loaded back: its weight bytes are
// `bytes` and it computes exactly what q computes (all logits of 8 tokens; src's vocabulary >= 130).
inline void expect_file_matches(const Model& src, const Model& q, const std::vector<PlannedTensor>& plan,
                                const std::string& recipe, const std::string& out, int64_t bytes) {
  {
    LmpressStreamWriter w(out, src, plan, {{"recipe", recipe}});
    for (const Tensor* t : q.weight_tensors()) w.put(*t);
    w.commit();
  }
  const Model back = load_model(out);
  int64_t wbytes = 0;
  for (const Tensor* t : back.weight_tensors()) wbytes += int64_t(t->nbytes);
  EXPECT_EQ(wbytes, bytes) << out;
  const std::vector<int32_t> toks = {1, 5, 9, 17, 33, 65, 129, 7};
  EngineOptions eo;
  eo.n_threads = 1;
  eo.n_ctx = 8;
  const size_t nv = size_t(src.cfg.vocab_size);
  std::vector<float> a(8 * nv), b(8 * nv);
  Engine(q, eo).forward(toks.data(), 8, 0, a.data(), true);
  Engine(back, eo).forward(toks.data(), 8, 0, b.data(), true);
  EXPECT_EQ(a, b) << out;
}

}  // namespace lmpress::test
