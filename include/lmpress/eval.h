// lmpress eval: perplexity (two documented protocols), KL divergence against a base model,
// speed benchmark, synthetic models of real shapes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "lmpress/engine.h"
#include "lmpress/model.h"

namespace lmpress {

struct PerplexityOptions {
  int32_t n_ctx = 128;
  // "llamacpp": chunks of n_ctx tokens, first token of each chunk set to BOS, predictions of the
  //             second half scored (llama.cpp's perplexity tool).
  // "full":     non-overlapping windows of n_ctx tokens, every prediction inside a window scored
  //             (the GPTQ paper's protocol; the window's first token is the text's own token).
  std::string protocol = "llamacpp";
  int n_threads = 0;
  int64_t max_chunks = -1;          // -1 = all
  const Model* base = nullptr;      // when set: KL divergence of model from base on the same tokens
  bool progress = true;
};

struct PerplexityResult {
  std::string protocol;
  int32_t n_ctx = 0;
  int64_t chunks = 0;
  int64_t scored_tokens = 0;
  double nll = 0;  // mean negative log-likelihood (nats)
  double ppl = 0;
  double nll_sd = 0;  // standard error of the mean NLL
  double seconds = 0;
  // Only with a base model (llama.cpp --kl-divergence definitions):
  bool has_base = false;
  double ppl_base = 0, nll_base = 0;
  double kld = 0, kld_sd = 0;  // mean KL(base || model) per scored token, and its standard error
  double top1 = 0;             // fraction of scored tokens where both argmax agree
};

// Throws Error if the text is too short for one chunk.
PerplexityResult perplexity(const Model& m, const std::vector<int32_t>& tokens,
                            const PerplexityOptions& opt);

struct BenchOptions {
  int n_prompt = 128;
  int n_gen = 32;
  int n_threads = 0;
  int reps = 3;
};
struct BenchResult {
  double prefill_tps = 0, prefill_tps_sd = 0;
  double decode_tps = 0, decode_tps_sd = 0;
  std::vector<double> prefill_runs, decode_runs;
  double peak_rss_mb = 0;
  double weight_bytes = 0;
  double decode_gbps = 0;  // weight bytes streamed per second while decoding
};
BenchResult bench(const Model& m, const BenchOptions& opt);

// Synthetic model of a real shape, random weights (speed work). Shapes: tinyllama-1.1b,
// llama-3.2-1b, llama-7b, and "tiny" (for tests).
Model synth_model(const std::string& shape, DType dtype, uint64_t seed);
std::vector<std::string> synth_shapes();

}  // namespace lmpress
