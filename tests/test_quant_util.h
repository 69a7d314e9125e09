// Shared helpers for the method tests: quantize a shared model by a recipe and measure its KLD, and
// check that recipes are refused with the right message.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "lmpress/compress.h"
#include "lmpress/eval.h"
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

}  // namespace lmpress::test
