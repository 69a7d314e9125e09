// Private to src/algo: what a transform method (awq, ...) gets to work on.
#pragma once
#include <string>
#include <vector>

#include "lmpress/compress.h"

namespace lmpress {

// One group of linear layers sharing an input, inside one block, during the transform pass.
struct StepContext {
  Model& model;
  int layer = 0;
  std::string input;                      // "attn_in", "attn_out_in", "ffn_in", "ffn_down_in"
  std::vector<Tensor*> readers;           // every tensor reading the input (f32 owned once transformed)
  std::vector<const TensorRule*> rules;   // their rules
  const TensorRule* rule = nullptr;       // the rule whose transform runs
  const InputStats* stats = nullptr;      // the input's statistics, captured before this pass changed anything
  // Where a per-input-channel scale 1/s folds: the RMSNorm weight producing the input, or the
  // linear layer whose output rows are the input's channels (and its bias); null if neither.
  Tensor* norm = nullptr;
  Tensor* producer = nullptr;
  Tensor* producer_bias = nullptr;
  ThreadPool* pool = nullptr;
  std::string note;                       // one line for the report: what the transform did
};

// QuaRot (quarot.cpp): the rotation's signs, then the model-wide part (fold the final norm into the
// classifier, untie it, rotate the embedding and the classifier) once before the blocks, and each
// block's part (fold its norms, rotate its readers and writers, the per-head v/o rotation) right
// before the block is first run: the streaming pipeline never holds more than one rotated block.
struct QuarotPlan {
  QuarotOptions o;
  std::vector<uint8_t> signs;       // D of V = H_dim D, dim bits
  std::vector<uint8_t> head_signs;  // D_h of V_h = H_head_dim D_h (o.heads)
};
QuarotPlan quarot_plan(const ModelConfig& c, const QuarotOptions& o);
void quarot_globals(Model& m, const QuarotPlan& P, ThreadPool& pool);
void quarot_block(Model& m, int layer, const QuarotPlan& P, ThreadPool& pool);

// Replaces t by an owned f32 copy (transforms rewrite weights in f32).
void make_f32_owned(Tensor& t);

// The tensors reading one input as f32 copies, with their outputs on the input's sampled rows: what
// the per-input-channel scale searches (awq, smoothquant) work on (awq.cpp).
struct ScaledReaders {
  struct Reader {
    Tensor* t;
    const TensorRule* r;
    std::vector<float> w, y;  // weights [rows][n], reference outputs [m][rows] (quantized readers only)
  };
  std::vector<Reader> rd;
  int64_t n = 0, m = 0;
  const std::vector<float>* X = nullptr;  // the sampled rows [m][n]
  explicit ScaledReaders(const StepContext& ctx);
  // Mean squared error of the quantized readers' outputs on the sampled rows when W diag(s) is
  // rounded to nearest on each reader's format and the input is x / s.
  double loss(const std::vector<double>& s) const;
  // W <- W diag(s) in the copies; 1/s folds into the producer (norm weight, or producer rows and bias).
  void apply(StepContext& ctx, const std::vector<double>& s);
  // Writes the copies back into the tensors (f32, owned).
  void commit();
};

}  // namespace lmpress
