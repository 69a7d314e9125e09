// lmpress compress: calibration statistics, layer compressors (RTN, GPTQ), recipes, and the
// quantize pipeline that turns a model into a compressed one.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lmpress/formats.h"
#include "lmpress/model.h"

namespace lmpress {

// ---- calibration ------------------------------------------------------------------------------
struct CalibOptions {
  std::string text_path;  // calibration text
  int nsamples = 32;      // random windows
  int seqlen = 128;       // tokens per window (first token set to BOS)
  uint64_t seed = 0;
};
// Random windows of the tokenized calibration text: [nsamples][seqlen].
std::vector<std::vector<int32_t>> calibration_windows(const Model& m, const CalibOptions& o);

// H = X^T X accumulated over calibration rows, in double (symmetric [n, n], row-major).
// Shared by all projections reading the same input (q/k/v; gate/up).
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t n);
  void add(const float* x, int64_t rows, ThreadPool& pool);  // x: [rows, n]
  int64_t n() const { return n_; }
  int64_t count() const { return count_; }
  // H / count (the GPTQ normalisation 2/N X^T X differs by a constant that cancels).
  std::vector<double> mean() const;

 private:
  int64_t n_, count_ = 0;
  std::vector<double> h_;  // upper triangle used; mirrored by mean()
};

// ---- layer compressors -------------------------------------------------------------------------
struct GptqOptions {
  double damp = 0.01;       // fraction of mean(diag H) added to the diagonal
  int64_t block = 128;      // lazy-batch block size
  bool act_order = false;   // process columns by descending diag(H)
  bool static_groups = false;  // with act_order: group params from the original column order
  // Group params by the reference's `mse` grid search (shrink the range by p = 1, 0.99, ..., 0.21,
  // keep the p with the smallest sum |w - deq(q)|^2.4) instead of plain min-max. The recipe
  // option `mse` sets it for gptq and for rtn rules (the pipeline passes it to quantize_rtn).
  bool mse = false;
  // Tied embedding/classifier only (recipe option `emb=F`): weight of the embedding role. The
  // pipeline quantizes the shared matrix with tied_embedding_hessian(H_cls, emb) instead of the
  // classifier's H_cls alone (docs/methods.md); 0 = classifier only. Ignored for other tensors.
  double emb = 1.0;
};

struct LayerReport {
  std::string name;
  QuantSpec spec;
  std::string method;
  double err = 0;      // tr((W-Q) H (W-Q)^T) / rows (proxy loss, H normalised by count)
  double rel_err = 0;  // err / tr(W H W^T / rows)
  double seconds = 0;
};

// Plain RTN (optionally with per-group clipping search weighted by diag(H) if given, or with the
// reference's unweighted |.|^2.4 `mse` grid search; not both).
// fit_imp (may be null): per-column importance the grid fits its params with (the lut family's
// weighted k-means: SqueezeLLM's sensitivity).
QuantizedMatrix quantize_rtn(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                             bool clip_search, const double* hdiag /* [cols] or null */,
                             bool mse_search = false, const double* fit_imp = nullptr);
// Params of one group by a search over the grid's range (or the grid's plain params).
enum class ParamSearch { None, Clip, Mse };
namespace detail {
GroupParams search_params(const Grid& grid, const float* w, int64_t n, ParamSearch search, const double* imp,
                          const double* fit_imp);
}  // namespace detail
// GPTQ (Frantar et al. 2023) on W [rows, cols] with H [cols, cols] (double, not modified).
// Any format (its grid); fit_imp as for quantize_rtn.
QuantizedMatrix quantize_gptq(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                              const std::vector<double>& H, const GptqOptions& o, ThreadPool& pool,
                              const double* fit_imp = nullptr);
// Hessian for a matrix that is both the token embedding and the classifier (tied): the
// classifier's input Hessian plus the embedding role's, an identity scaled so that emb = 1 gives
// both roles the same trace: H_cls + emb * mean(diag H_cls) * I (docs/methods.md).
std::vector<double> tied_embedding_hessian(const std::vector<double>& H_cls, int64_t n, double emb);
// Proxy loss tr(D H D^T)/rows with D = W - dequant(Q); rel (optional) = that / tr(W H W^T)/rows.
// max_rows > 0: estimated on max_rows evenly spaced rows (the exact value costs rows * cols^2
// flops per quadratic form, as much as GPTQ itself on a big layer).
double layer_error(const float* w, const QuantizedMatrix& q, const std::vector<double>& H,
                   double* rel = nullptr, int64_t max_rows = 0);

}  // namespace lmpress

namespace lmpress {

// ---- recipes ------------------------------------------------------------------------------------
// Grammar (docs/recipes.md):
//   recipe   := rule (';' override)*
//   override := PATTERN '=' rule          PATTERN: glob over canonical tensor names (* and ?)
//   rule     := 'keep' | 'f16' | 'bf16' | 'f32' | METHOD ':' FORMAT (',' option)*
//   METHOD   := 'rtn' | 'gptq'
//   FORMAT   := 'w' BITS ('g' GROUP | 'row') ['a' | 's']     e.g. w4g32, w3g128a, w8row
//   option   := 'act_order' | 'static_groups' | 'clip' | 'mse' | 'damp=' FLOAT | 'block=' INT
//               | 'emb=' FLOAT
// A JSON recipe file holds {"default": rule, "overrides": [{"pattern": P, "rule": rule}, ...]}.
// Later overrides win. Tied embeddings: the shared tensor is matched as token_embd.weight and
// as output.weight (an output.weight override takes precedence for it).
struct TensorRule {
  std::string method = "keep";  // keep | f16 | bf16 | f32 | rtn | gptq
  QuantSpec spec;
  GptqOptions gptq;
  bool clip = false;
  std::string text;  // the rule as written
  bool quantized() const { return method == "rtn" || method == "gptq"; }
};
struct Recipe {
  TensorRule base;
  std::vector<std::pair<std::string, TensorRule>> overrides;
  std::string text;  // canonical text of the whole recipe (stored in output files)
  const TensorRule& rule_for(const std::string& name, bool tied_output = false) const;
  bool needs_calibration() const;
};
TensorRule parse_rule(const std::string& s);
Recipe parse_recipe(const std::string& s);          // inline grammar; throws Error with position
Recipe load_recipe_file(const std::string& path);  // JSON
bool glob_match(const std::string& pattern, const std::string& name);

// ---- pipeline -----------------------------------------------------------------------------------
struct QuantizeOptions {
  Recipe recipe;
  CalibOptions calib;  // text_path empty -> no calibration (only allowed for rtn without H)
  int n_threads = 0;
  bool true_sequential = true;  // quantize q/k/v, then o, then gate/up, then down with refreshed inputs
  bool progress = true;
};
struct QuantizeReport {
  std::vector<LayerReport> layers;
  double seconds = 0;
  double calib_seconds = 0;
  int64_t params = 0;
  double weight_bits = 0;  // total bits of all weight tensors in the output
  double bpw() const { return params ? weight_bits / double(params) : 0; }
};
// Returns a new model whose tensors own their (quantized or converted) data.
Model quantize_model(const Model& src, const QuantizeOptions& o, QuantizeReport* report);

}  // namespace lmpress
