// lmpress engine: the Llama forward pass on CPU. Batched prefill uses GEMM, single-token decode
// uses matrix-vector kernels; both read every linear layer through one matmul entry point.
// Every linear layer's input is reachable through named activation hooks.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "lmpress/model.h"

namespace lmpress {

// y[n, W.rows] = x[n, W.cols] * W^T  (x, y row-major f32). Dispatches on W's dtype/format.
void matmul(const Tensor& W, const float* x, int64_t n, float* y, ThreadPool& pool);
// Several independent products in one dispatch of the pool (e.g. q/k/v, gate/up): for decode this
// saves a wake-up and a barrier per product and balances the rows of all of them over the threads.
struct MatmulJob {
  const Tensor* W;
  const float* x;
  int64_t n;
  float* y;
};
void matmul_batch(const MatmulJob* jobs, int count, ThreadPool& pool);

// Names of the activations that feed linear layers (per layer; "output_in" once):
//   attn_in    [n, dim]      -> wq, wk, wv     (after attention RMSNorm)
//   attn_out_in[n, n_heads*hd] -> wo           (attention output before projection)
//   ffn_in     [n, dim]      -> w_gate, w_up   (after FFN RMSNorm)
//   ffn_down_in[n, hidden]   -> w_down         (silu(gate) * up)
//   output_in  [n, dim]      -> output         (after final RMSNorm), layer = -1
// The hook sees the rows of the current forward call (n tokens), row-major.
using ActivationHook =
    std::function<void(const std::string& name, int layer, const float* x, int64_t n, int64_t width)>;
const char* linear_input_name(const std::string& tensor_suffix);  // "attn_q" -> "attn_in" ...

// The KV cache of one sequence: keys and values of every layer, f32 [n_layers][n_ctx][kv_dim]
// (kv_dim = n_kv_heads * head_dim). The engine writes positions pos..pos+n-1 before attention
// reads them; a later issue gives the cache a quantized format behind this interface.
class KvCache {
 public:
  KvCache(int32_t n_layers, int32_t n_ctx, int64_t kv_dim);
  int32_t n_ctx() const { return n_ctx_; }
  int64_t kv_dim() const { return kv_dim_; }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }
  // Rows of positions [pos, pos + n) of layer `layer` from k / v [n][kv_dim].
  void store(int layer, int32_t pos, int64_t n, const float* k, const float* v);
  const float* keys(int layer) const { return k_.data() + size_t(layer) * size_t(n_ctx_) * size_t(kv_dim_); }
  const float* values(int layer) const { return v_.data() + size_t(layer) * size_t(n_ctx_) * size_t(kv_dim_); }

 private:
  int32_t n_ctx_;
  int64_t kv_dim_;
  std::vector<float> k_, v_;
};

// Attention implementation: Auto = per (token, head) for fewer than kBlockedAttnMinTokens new
// tokens (decode), blocked matrix products otherwise (prefill). The others force one path (tests,
// benchmarks); both compute the same exact softmax attention, up to float summation order.
enum class AttnPath { Auto, PerToken, Blocked };
constexpr int64_t kBlockedAttnMinTokens = 4;

struct EngineOptions {
  int n_threads = 0;    // 0 = default_threads()
  int32_t n_ctx = 0;    // KV cache length; 0 = model's max_seq_len
  AttnPath attention = AttnPath::Auto;
};

class Engine {
 public:
  Engine(const Model& m, const EngineOptions& opt = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs tokens [n] at positions pos..pos+n-1 (appending to the KV cache; pos must equal the
  // number of tokens already cached). logits: [n, vocab] when all_logits, else [vocab] of the
  // last token; may be null to skip the classifier.
  void forward(const int32_t* tokens, int64_t n, int32_t pos, float* logits, bool all_logits);

  // Layer-range access for calibration: x [n, dim] is the residual stream entering layer
  // `begin`, updated in place to the stream leaving layer end-1.
  void embed(const int32_t* tokens, int64_t n, float* x) const;
  void run_layers(float* x, int64_t n, int32_t pos, int begin, int end);
  void final_logits(const float* x, int64_t n, float* logits);

  // Empties the KV cache: the next forward() starts at position 0. (Nothing is cleared: every
  // position is written before attention reads it.)
  void reset();
  const KvCache& kv_cache() const;
  void set_hook(ActivationHook h) { hook_ = std::move(h); }
  const Model& model() const { return m_; }
  int32_t n_ctx() const { return n_ctx_; }
  ThreadPool& pool() { return *pool_; }

 private:
  const Model& m_;
  int32_t n_ctx_;
  AttnPath attn_ = AttnPath::Auto;
  std::unique_ptr<ThreadPool> pool_;
  ActivationHook hook_;
  struct State;
  std::unique_ptr<State> st_;
  void layer_forward(int il, float* x, int64_t n, int32_t pos);
};

// ---- sampling ---------------------------------------------------------------------------------
struct SamplerOptions {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  float top_p = 1.0f;
  uint64_t seed = 0;
};
class Sampler {
 public:
  explicit Sampler(const SamplerOptions& o);
  int32_t sample(const float* logits, int32_t n_vocab);

 private:
  SamplerOptions o_;
  std::mt19937_64 rng_;
};

}  // namespace lmpress
