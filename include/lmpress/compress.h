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
  // The same, reusing the accumulator's storage (no second n^2 buffer); the accumulator is empty after.
  std::vector<double> take_mean();

 private:
  int64_t n_, count_ = 0;
  std::vector<double> h_;  // upper triangle used; mirrored by mean()
};

// ---- statistics collectors ------------------------------------------------------------------------
// What a method asks to be collected of the input of the tensors it compresses (per linear-layer
// input: attn_in, attn_out_in, ffn_in, ffn_down_in, output_in). Only what some rule needs is
// collected.
enum StatKind : uint32_t {
  kStatHessian = 1u << 0,     // H = mean X^T X [n][n] (double)
  kStatDiag = 1u << 1,        // mean x^2 per input channel (= diag H, without the n^2 cost)
  kStatMeanAbs = 1u << 2,     // mean |x| per input channel
  kStatMaxAbs = 1u << 3,      // max |x| per input channel
  kStatTokenNorms = 1u << 4,  // ||x|| of every calibration row
  kStatSamples = 1u << 5,     // up to kMaxSampleRows rows of X themselves (output-error searches)
  kStatFisher = 1u << 6,      // diagonal Fisher information: needs a backward pass (not yet)
};
struct InputStats {
  static constexpr int64_t kMaxSampleRows = 4096;
  int64_t n = 0, count = 0;     // width, rows seen
  uint32_t kinds = 0;
  std::vector<double> H, diag, mean_abs, max_abs, token_norms;
  std::vector<float> samples;   // [sample_rows][n]
  int64_t sample_rows = 0;
};
class StatsCollector {
 public:
  StatsCollector(int64_t n, uint32_t kinds, int64_t expected_rows);
  void add(const float* x, int64_t rows, ThreadPool& pool);  // x: [rows, n]
  InputStats finish();                                       // normalised statistics
 private:
  InputStats s_;
  std::unique_ptr<HessianAccumulator> h_;
  int64_t sample_every_ = 1, seen_ = 0;
};
std::string stat_kind_names(uint32_t kinds);  // "hessian,mean_abs"

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
  // Per column group grid (slim: each group on the grid of its bit class; null: the spec's grid for
  // every group; dynamic groups only) and the params of a group from its current weights (slim's
  // salience-weighted calibration; null: the grid's min-max, or the mse search).
  const std::vector<const Grid*>* group_grids = nullptr;
  GroupParams (*group_params)(const Grid& grid, const float* w, int64_t n) = nullptr;
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
// EasyQuant's range optimisation (easyquant.cpp): per group, min-max params, then `steps`
// gradient steps on the scale against the reconstruction error (data-free).
QuantizedMatrix quantize_easyquant(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, int steps,
                                   ThreadPool& pool);
namespace detail {
// Reconstruction error sum (Q(w) - w)^2 of a group under p, and (grad) its straight-through
// derivative in p.scale; the optimised params of a group.
double easyquant_loss(const Grid& grid, const float* w, int64_t n, const GroupParams& p, double* grad);
GroupParams easyquant_params(const Grid& grid, const float* w, int64_t n, int steps);
}  // namespace detail
// GPTQ (Frantar et al. 2023) on W [rows, cols] with H [cols, cols] (double, not modified).
// Any format (its grid); fit_imp as for quantize_rtn. keep (may be null) [rows, cols]: weights
// kept exactly (sparse outliers, SpQR-style): left out of the group ranges, no rounding error in
// the sweep; their final (error-updated) values go to kept [rows, cols].
QuantizedMatrix quantize_gptq(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                              const std::vector<double>& H, const GptqOptions& o, ThreadPool& pool,
                              const double* fit_imp = nullptr, const uint8_t* keep = nullptr,
                              float* kept = nullptr);
// PB-LLM's (and SparseGPT's) saliency denominator, per input column j: 1 / U_jj, where U is the
// upper Cholesky factor of (H + damp * mean(diag H) * I)^-1 (dead inputs: H_jj = 1), as GPTQ forms
// it. A weight's salience is w_ij^2 / U_jj^2, i.e. (|w_ij| / U_jj)^2.
std::vector<double> inverse_factor_recip_diag(const std::vector<double>& H, int64_t n, double damp);
// GPTQ's factor: U [n, n] float, upper triangular, with (H + damp * mean(diag H) * I)^-1 = U^T U
// (dead inputs: H_jj = 1; identity order). `who` names the caller in errors (qtip's LDLQ uses it).
std::vector<float> inverse_factor_upper(const std::vector<double>& H, int64_t n, double damp, const char* who);
// NUPES's exponent search (nupes.cpp) for a pow format s: the exponent a (hundredths, from
// kNupesMin to kNupesMax in steps of kNupesStep) whose RTN rounding has the least layer error
// tr(D H D^T)/rows (H given; max_rows as for layer_error), else sum_j hdiag_j sum_r D_rj^2 / rows
// (hdiag, or unweighted when null). trace (optional): (a, error) of every candidate.
inline constexpr int kNupesMin = 30, kNupesMax = 120, kNupesStep = 5;
int nupes_search(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>* H,
                 const double* hdiag, std::vector<std::pair<int, double>>* trace = nullptr, int64_t max_rows = 0);
// LLM-FP4's exponent-bias search (llmfp4.cpp; Liu et al. 2023) onto fp4g<G> (E2M1 times an f16
// scale = 2^-b for a real-valued bias b): per row and group of G columns, starting from min-max
// (b0 = log2(12 / max|w|)), the bias among {current} and alpha_k * b0, alpha_k = lo + k (hi - lo) / n,
// k = 0..n, of least layer output error d_r^T H d_r (d_r = w_r - q_r; the other groups of the row at
// their current bias), groups in order, `rounds` sweeps (stops early when nothing changes).
// err_minmax / err_searched (optional): tr(D H D^T) / rows before and after the search.
inline constexpr double kLlmfp4AlphaLo = 0.01, kLlmfp4AlphaHi = 1.2;  // the reference's eq_alpha, eq_beta
struct Llmfp4Options {
  int n = 100;     // candidates per group: n + 1 (the reference's eq_n)
  int rounds = 3;  // sweeps over the groups of a row (the reference's search_round)
  // LLM-FP4's format search: every exponent/mantissa split of the spec's bit width (fp4: E1M2, E2M1,
  // E3M0; fp3: E1M1, E2M0) is searched and the one of least layer output error kept (option `search`)
  bool search = false;
};
QuantizedMatrix quantize_llmfp4(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                                const std::vector<double>& H, const Llmfp4Options& o, ThreadPool& pool,
                                double* err_minmax = nullptr, double* err_searched = nullptr);
// ---- SliM-LLM and MixLLM (src/algo/mixed.cpp; formats mix / slim: src/formats/composite.h) -----------
struct SlimOptions {
  int beta = -1;  // groups at N-1 (and at N+1) per tensor; -1: searched (SBA)
};
// SliM-LLM's group salience: sum over the group's weights of (w_ij / U_jj)^2, U GPTQ's upper Cholesky
// factor of (H + damp mean(diag H) I)^-1 (the OBS saliency of each weight, summed per column group).
std::vector<double> slim_salience(const float* w, int64_t rows, int64_t cols, int64_t group, const std::vector<double>& H,
                                  double damp);
// SBA: for beta = 0 .. floor(full groups / 2): the beta least salient groups at N-1 bits and the beta
// most salient at N+1 (min-max RTN per row and group), and KL(softmax(X Wq^T) || softmax(X W^T)) over
// the output features, averaged over the sample rows X [n_samples][cols] (probabilities clamped at
// 1e-6, as the reference); returns the beta with the smallest KL (kl_out: that KL per beta).
int64_t slim_search_beta(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>& salience,
                         const float* samples, int64_t n_samples, std::vector<double>* kl_out = nullptr);
// SQC: a group's asymmetric params with the range scaled by p in [0.9, 1.1] (101 values), keeping the
// p with the smallest sum |w - Q(w)|^2.4 (binary groups: their grid's params).
GroupParams slim_sqc_params(const Grid& grid, const float* w, int64_t n);
// SliM-LLM (GPTQ variant): classes by SBA (or o.beta), then GPTQ with each group on its class's grid
// and SQC params (g.mse: GPTQ's mse shrink search instead); samples may be null (then beta = 0 unless
// o.beta fixes it).
QuantizedMatrix quantize_slim(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>& H,
                              const float* samples, int64_t n_samples, const GptqOptions& g, const SlimOptions& o,
                              ThreadPool& pool, int64_t* beta_out = nullptr);
// d_r H d_r^T per row r of D = W - dequant(q) (float accumulation of D H, double row dots); H is
// [cols][cols], or its diagonal [cols].
std::vector<double> row_errors(const float* w, const std::vector<float>& deq, int64_t rows, int64_t cols,
                               const std::vector<double>& H);
// MixLLM within one tensor: GPTQ onto the low and the high int format (rows are independent in GPTQ,
// so a row of either run is what GPTQ gives that row), the rows whose error d H d^T falls most go high.
QuantizedMatrix quantize_mixllm(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>& H,
                                const GptqOptions& g, ThreadPool& pool);
namespace detail {
// 2^E - log2(amax) + log2(2 - 2^-M) - 1 for E2M1 (vmax 12, the fp table's largest entry); in general
// log2(vmax / amax) for a minifloat table whose largest entry is vmax
double llmfp4_init_bias(float amax, float vmax = 12.f);
std::vector<double> llmfp4_alphas(int n);    // the n + 1 bias factors
}  // namespace detail
// Hessian for a matrix that is both the token embedding and the classifier (tied): the
// classifier's input Hessian plus the embedding role's, an identity scaled so that emb = 1 gives
// both roles the same trace: H_cls + emb * mean(diag H_cls) * I (docs/methods.md).
std::vector<double> tied_embedding_hessian(const std::vector<double>& H_cls, int64_t n, double emb);
// QuantEase (Behdin et al. 2023): cyclic coordinate descent on tr((W - Q) H (W - Q)^T) starting
// from `init` (a rounding of w: GPTQ's or RTN's). The group params of `init` stay fixed; each pass
// visits the columns in order (descending diag(H) with act_order) and sets every row's weight of
// the column to the grid value nearest its optimal unconstrained value given all other weights
// (closed form); rows are updated together. The objective never increases. H is used as given
// (no dampening; a column with H_jj = 0 keeps its init code). objective (optional): the layer
// objective tr(D H D^T)/rows of the init and after each pass (iters + 1 values).
struct QuantEaseOptions {
  int iters = 30;         // passes over the columns (the reference's default num_iter)
  bool init_rtn = false;  // init=rtn: start from RTN instead of GPTQ
};
QuantizedMatrix quantease_refine(const float* w, int64_t rows, int64_t cols, const QuantizedMatrix& init,
                                 const std::vector<double>& H, int iters, bool act_order, ThreadPool& pool,
                                 std::vector<double>* objective = nullptr);
// SpQR (Dettmers et al. 2023) onto an spqr format (src/algo/spqr.cpp): its own GPTQ sweep in the
// original column order; at each group of the format's G columns every row's scale and zero are
// fitted to the (updated) weights, leaving out the weights whose leave-one-out GPTQ loss reduction
// exceeds the outlier threshold, and quantized to 3 bits over the row groups; a weight whose
// scaled error ((w - q) / U_ii)^2 exceeds the threshold is kept as an f16 outlier (the format's +s
// part) and takes no rounding error into the feedback. Threshold = tau * mean_j(var_j / U_jj^2)
// (the reference's outlier_relative_threshold). docs/methods.md lists the deviations.
struct SpqrOptions {
  double tau = -1;      // >= 0: this relative threshold; < 0: searched so the outliers fill the +s budget
  double damp = 0.01;   // fraction of mean(diag H) added to the diagonal
  int64_t block = 128;  // lazy-batch block size (a multiple of the group)
};
// The core step: one sweep with relative threshold tau (infinity: no outliers) onto the spqr format
// s (its sparse part ignored); the outliers it keeps (positions r * cols + c ascending, f16 values
// on top of the dense value) go to sp_idx / sp_val of the result, whatever their number.
QuantizedMatrix spqr_sweep(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                           const std::vector<double>& H, double tau, const SpqrOptions& o, ThreadPool& pool);
// The method: the sweep, with tau searched (or given) so the outliers fit s's +s budget, then the
// rest of the budget filled after the sweep by the single-weight corrections that lower the
// layer loss tr(D H D^T) most (docs/methods.md). sweeps (optional): how many sweeps ran.
QuantizedMatrix quantize_spqr(const float* w, int64_t rows, int64_t cols, const QuantSpec& s,
                              const std::vector<double>& H, const SpqrOptions& o, ThreadPool& pool,
                              int* sweeps = nullptr);
// VPTQ (Liu et al. 2024) onto a vq format (src/algo/vptq.cpp): dead inputs zeroed; with the
// format's column norm (n) every column standardized by its (f16) mean and deviation and H scaled
// to match (diag(s) H diag(s)); stage-1 codebook by k-means of the column vectors weighted by H_jj
// (its int8 form the one used); GPTQ's column-by-column sweep (channel-independent: each vector of
// a column to its nearest centroid, the scaled error fed forward to the later columns, lazy batched
// updates); with a residual stage, its codebook by H_jj-weighted k-means of the first sweep's
// remaining error, then a second sweep from the original weights choosing stage-1 then stage-2
// nearest. docs/methods.md lists the deviations (no layer-wise fine-tuning, no outlier columns).
struct VptqOptions {
  int iters = 20;          // k-means iterations per codebook
  double damp = 0.01;      // fraction of mean(diag H) added to the diagonal
  int64_t block = 128;     // lazy-batch block size
  uint64_t seed = 0;       // k-means initial centroids
  bool act_order = false;  // columns by descending diag(H) (the vectors stay within a column)
  int refine = 0;          // (lmpress) stage-1 re-fits to the sweep's targets, each followed by a sweep
};
// The core step: one sweep of w onto fixed codebooks (centroids [K1][v], [K2][v] f32; book2 empty:
// no residual stage), H already normalized / dampened as the caller wants it (not modified).
// Returns the chosen codes [real row blocks][cols] (idx1 | idx2 << bits1) and, in target (optional,
// [rows][cols]), the updated weight each vector was rounded from (GPTQ's error feedback included).
std::vector<uint32_t> vptq_sweep(const float* w, int64_t rows, int64_t cols, int v, const std::vector<float>& book1,
                                 const std::vector<float>& book2, int bits1, const std::vector<double>& H,
                                 int64_t block, bool act_order, ThreadPool& pool, std::vector<float>* target = nullptr);
QuantizedMatrix quantize_vptq(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>& H,
                              const VptqOptions& o, ThreadPool& pool);
// QTIP (Tseng et al. 2024) onto a trellis format (formats/trellis.h, src/algo/qtip.cpp): dead
// inputs zeroed; f16 row scales from each row's RMS; LDLQ (QuIP#'s block form of GPTQ's error
// feedback): column blocks of 16, each 16 x 16 tile of a block coded by the tail-biting Viterbi
// encoder on the feedback-updated weights, the block's error then propagated to the later columns
// through GPTQ's inverse Cholesky factor (E U_BB^-1 U_B,rest). Tiles of a block run on the pool.
// Without H: every tile coded on its own (rtn). docs/methods.md lists the deviations.
struct QtipOptions {
  double damp = 0.01;  // fraction of mean(diag H) added to the diagonal
};
QuantizedMatrix quantize_qtip(const float* w, int64_t rows, int64_t cols, const QuantSpec& s, const std::vector<double>* H,
                              const QtipOptions& o, ThreadPool& pool);
// tr(D H D^T)/rows with D = W - Wq for dequantized weights Wq (formats without a per-group grid);
// rel and max_rows as layer_error below.
double dense_layer_error(const float* w, const std::vector<float>& wq, int64_t rows, int64_t cols,
                         const std::vector<double>& H, double* rel = nullptr, int64_t max_rows = 0);
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
//   rule     := 'keep' | 'f16' | 'bf16' | 'f32' | CHAIN ':' FORMAT (',' option)*
//   CHAIN    := METHOD ('+' METHOD)*      transforms first, one rounding method last (default rtn)
//   METHOD   := a registry name: rtn | gptq | quantease | squeezellm | easyquant | spqr | nupes | bitmod | vptq |
//               qtip | awq | smoothquant | quarot
//   FORMAT   := a format name (formats.h): w4g32, w3g128a, w8row, nf4g64, fp4g32, mxfp4, fp8row, lut3 ...
//   option   := a key (or key=value) taken by exactly one method of the chain: gptq act_order,
//               static_groups, mse, damp=F, block=N, emb=F; rtn clip, mse; quantease iters=N,
//               init=gptq|rtn (and the init's gptq / rtn options); awq grid=N, noclip;
//               smoothquant grid=N, alpha=F; quarot seed=N, noheads
// A JSON recipe file holds {"default": rule, "overrides": [{"pattern": P, "rule": rule}, ...]}.
// Later overrides win. Tied embeddings: the shared tensor is matched as token_embd.weight and
// as output.weight (an output.weight override takes precedence for it).
// AWQ (Lin et al. 2024) options (recipe: awq+gptq:w4g128,grid=20,noclip).
struct AwqOptions {
  int grid = 20;       // alpha in {0, 1/grid, ..., (grid-1)/grid}
  bool clip = true;    // AWQ's per-group weight clipping search after scaling
};
// SmoothQuant+ (Pan et al. 2023) options (recipe: smoothquant+gptq:w4g128,grid=20 / alpha=0.5).
struct SmoothOptions {
  int grid = 20;       // alpha in {0, 1/grid, ..., 1}, plus no smoothing
  double alpha = -1;   // >= 0: this alpha, no search
};
// QuaRot (Ashkboos et al. 2024) options (recipe: quarot+gptq:w4g64,seed=3,noheads). QuaRot rotates
// the whole model once (src/algo/quarot.cpp): a recipe naming it in any rule must name it in the
// default rule, with the same options wherever it appears.
struct QuarotOptions {
  uint64_t seed = 0;   // the random signs of the residual rotation Q (and of the per-head one)
  bool heads = true;   // also rotate each attention head's value/output space (v's rows, o's columns)
  bool operator==(const QuarotOptions&) const = default;
};
// NUPES's search objective (recipe option err=): the layer error with H, with diag(H), or plain.
enum class NupesErr { Full, Diag, Mse };
struct TensorRule {
  std::string method = "keep";  // keep | f16 | bf16 | f32 | a method chain: rtn, gptq, awq+gptq, ...
  std::vector<std::string> chain;  // the chain's methods (registry names), transforms first
  QuantSpec spec;
  GptqOptions gptq;
  AwqOptions awq;
  QuantEaseOptions quantease;
  SmoothOptions smooth;
  QuarotOptions quarot;
  SpqrOptions spqr;
  VptqOptions vptq;
  QtipOptions qtip;
  Llmfp4Options llmfp4;
  SlimOptions slim;
  bool clip = false;
  int easyquant_steps = 100;  // easyquant: gradient steps per group
  bool pb_magnitude = false;  // pbllm: salient weights by |w| instead of the Hessian criterion
  NupesErr nupes_err = NupesErr::Full;  // nupes: the exponent search's error
  std::string text;  // the rule as written
  bool quantized() const { return !chain.empty(); }
  bool has(const std::string& m) const;       // the chain holds method m
  const std::string& rounding() const;        // the chain's final (rounding) method
  uint32_t stats() const;                     // StatKind union of the chain's methods
};

// ---- method registry ----------------------------------------------------------------------------
// Every method registers its name, its options (parsed and validated by the method: an option
// that does not apply is an error), the statistics it needs and its entry point:
//  - transform methods (awq, smoothquant) rewrite the float weights of the tensors that share an input, and
//    fold the inverse into the model (norm weights, producing layers), before rounding;
//  - rounding methods (rtn, gptq, quantease, squeezellm) turn one float weight into a QuantizedMatrix.
// A chain is transforms then exactly one rounding method: "awq+gptq"; "awq" alone rounds by rtn.
struct RoundArgs {
  const float* w = nullptr;
  int64_t rows = 0, cols = 0;
  const TensorRule* rule = nullptr;
  const InputStats* stats = nullptr;      // of the tensor's input (null without calibration)
  const std::vector<double>* H = nullptr; // the Hessian to use (tied embedding: adjusted)
  ThreadPool* pool = nullptr;
  // Sparse outliers (formats with +s): the positions kept apart ([rows, cols], 1 = outlier) and
  // where a method that adjusts weights (gptq) writes their final values; w holds the outliers
  // zeroed (dense_w) for methods that only round, the original weights in orig_w.
  const uint8_t* keep = nullptr;
  float* kept = nullptr;
  const float* orig_w = nullptr;
};
struct StepContext;  // pipeline.cpp: a group of tensors sharing one input, and the model
struct MethodInfo {
  const char* name;
  const char* summary;
  bool rounds;                 // rounding method (else transform)
  // A rounding method that may also come right before `gptq` in a chain: then it only fits the
  // grid (its sensitivity-weighted per-row tables) and gptq rounds onto it (squeezellm+gptq).
  bool fits_grid;
  uint32_t stats;              // StatKind it needs
  const char* options;         // the options it accepts, for messages: "act_order, damp=F, ..."
  // Applies option key[=val] to the rule; false if the method does not take that key.
  bool (*option)(TensorRule& r, const std::string& key, const std::string& val);
  // Checks the rule once its options are parsed (formats it cannot target ...); throws Error.
  void (*check)(const TensorRule& r);
  QuantizedMatrix (*round)(const RoundArgs& a);   // rounding methods
  void (*transform)(StepContext& ctx);             // transform methods
};
const std::vector<MethodInfo>& method_registry();
const MethodInfo& find_method(const std::string& name);  // throws Error listing the methods
struct Recipe {
  TensorRule base;
  std::vector<std::pair<std::string, TensorRule>> overrides;
  std::string text;  // canonical text of the whole recipe (stored in output files)
  const TensorRule& rule_for(const std::string& name, bool tied_output = false) const;
  bool needs_calibration() const;
  bool has_transforms() const;
  // The rule whose quarot options rotate the model (the default rule), or null without quarot.
  // parse_recipe checks that quarot appears in the default rule and with the same options everywhere.
  const TensorRule* quarot() const;
  // Throws Error naming the first override pattern that matches none of `names` (a pattern that
  // matches nothing is a typo: "*.ffn_down" without ".weight").
  void check_patterns(const std::vector<std::string>& names) const;
};
TensorRule parse_rule(const std::string& s);
Recipe parse_recipe(const std::string& s);          // inline grammar; throws Error with position
Recipe load_recipe_file(const std::string& path);  // JSON
bool glob_match(const std::string& pattern, const std::string& name);

// ---- pipeline -----------------------------------------------------------------------------------
std::vector<PlannedTensor> plan_quantization(const Model& src, const Recipe& recipe);

struct QuantizeOptions {
  Recipe recipe;
  TensorSink* sink = nullptr;  // streaming output; the returned model then holds no finished tensors
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
  double peak_anon_bytes = 0;  // peak anonymous memory during quantize_model (RssAnon sampled every 5 ms)
  double bpw() const { return params ? weight_bits / double(params) : 0; }
};
// Returns a new model whose tensors own their (quantized or converted) data.
Model quantize_model(const Model& src, const QuantizeOptions& o, QuantizeReport* report);

// ---- QuaRot: rotation of the residual stream (src/algo/quarot.cpp, docs/methods.md "quarot") ------
// Rewrites a float model in place (every touched tensor becomes owned f32) so that it computes the
// same function with its residual stream rotated by an orthogonal V = H_dim D (normalized Hadamard
// times random signs): RMSNorm weights folded into their readers (norms become ones), embedding rows
// and readers' rows rotated (W <- W V^T), writers' columns rotated (W <- V W), the classifier
// untied (cfg.tied_embeddings becomes false), and with o.heads each head's value space rotated by a
// Hadamard of order head_dim. The quantize pipeline does the same block by block (streaming).
void quarot_rotate_model(Model& m, const QuarotOptions& o, ThreadPool& pool);

}  // namespace lmpress

namespace lmpress {

// ---- mixed precision under a budget (docs/methods.md, "Mixed precision under a budget") -----------
// Candidates: the rules a tensor may get (rounding-method chains, no transforms), cheapest first
// after sorting by bytes. kDefaultCandidates is the set `quantize --target-bpw` uses.
extern const char* const kDefaultCandidates;
std::vector<TensorRule> parse_candidates(const std::string& s);  // space-separated rules; throws Error

// Exact byte accounting: every weight tensor of the output (norms and biases too) is either fixed
// (not a quantizable tensor: its bytes do not depend on the choice) or choosable, with the exact
// bytes of each candidate (packed_geometry's total, as plan_quantization plans them). The tied
// embedding/classifier is one tensor, counted once.
struct BudgetTable {
  std::vector<std::string> names;              // the choosable tensors, in pipeline order
  std::vector<std::vector<int64_t>> bytes;     // [tensor][candidate]
  int64_t fixed_bytes = 0;                     // all other weight tensors
  int64_t params = 0;                          // Model::n_params() (bpw denominator)
  int64_t min_bytes() const;                   // every tensor on its cheapest candidate (+ fixed)
  int64_t max_bytes() const;
  int64_t bytes_of(const std::vector<int>& choice) const;  // fixed + chosen
};
BudgetTable budget_table(const Model& m, const std::vector<TensorRule>& cands);
// Target bytes of a bpw budget: floor(bpw * params / 8) (bpw counts every weight tensor).
int64_t bpw_to_bytes(double bpw, int64_t params);

// Multiple-choice knapsack: choose one option per item minimising sum cost[i][c] subject to
// sum bytes[i][c] <= budget. Dynamic programming over a byte grid: weights are offsets from each
// item's cheapest option, in quanta of q = the gcd of those offsets (exact) or, when the grid
// would exceed max_cells, a coarser q with every weight rounded up (feasible, within n*q bytes of
// optimal use), then a greedy fix-up spends the real slack left. Throws Error if even the
// cheapest choice exceeds the budget.
struct KnapsackResult {
  std::vector<int> choice;
  int64_t bytes = 0;
  double cost = 0;
  bool exact = false;  // the grid was the gcd: the optimum of the problem as stated
  int64_t quantum = 1;
};
KnapsackResult solve_mckp(const std::vector<std::vector<int64_t>>& bytes, const std::vector<std::vector<double>>& cost,
                          int64_t budget, int64_t max_cells = int64_t(1) << 18);

// The database of compressed variants: every choosable tensor quantized once per candidate,
// from the statistics of the unquantized model's activations (not true-sequential: every
// variant of a block sees the f32 block's inputs, so variants can be swapped freely). Kept in
// memory (packed tensors, db_bytes of them).
struct Variant {
  Tensor t;        // packed (owns its data)
  LayerReport rep; // err = tr(D H D^T)/rows (0 without a Hessian: the untied embedding)
};
struct VariantDb {
  std::vector<TensorRule> candidates;
  BudgetTable table;
  std::vector<std::vector<Variant>> v;  // [tensor][candidate], tensors as table.names
  double seconds = 0;
  int64_t db_bytes = 0;
};
VariantDb build_variant_db(const Model& src, const std::vector<TensorRule>& cands, const CalibOptions& calib,
                           int n_threads, bool progress = true);
// The database on disk (`quantize --database DIR`): one uniform .lmp per candidate (cand<k>.lmp,
// every choosable tensor on candidate k: a usable model and the uniform baseline) and
// database.json (model, calibration, candidates, per-variant errors). load_variant_db refuses a
// directory built for another model, calibration or candidate list; the variants map the files.
void save_variant_db(const VariantDb& db, const Model& src, const std::string& dir, const std::string& calib_desc);
VariantDb load_variant_db(const Model& src, const std::vector<TensorRule>& cands, const std::string& dir,
                          const std::string& calib_desc);
int64_t variant_db_disk_bytes(const std::string& dir);
// src with every choosable tensor replaced by its chosen variant (sharing the db's data).
// custom (may be null; else one per choosable tensor): a tensor replacing the variant where non-empty.
Model assemble_model(const Model& src, const VariantDb& db, const std::vector<int>& choice,
                     const std::vector<Tensor>* custom = nullptr);
// The allocation as a recipe: the most frequent candidate as the default, one override per
// other tensor (re-parsable; stored in the output's metadata).
// rules (may be null; else one per choosable tensor): the rule text replacing the candidate's where non-empty.
std::string allocation_recipe(const VariantDb& db, const std::vector<int>& choice,
                              const std::vector<std::string>* rules = nullptr);
// MixLLM's global salience (budget.cpp, allocator mixllm), per row r of tensor i moving from candidate lo
// to hi: (KL_i(lo) - KL_i(hi)) * max(0, e_r(lo) - e_r(hi)) / sum_r' max(0, e_r'(lo) - e_r'(hi)), e_r the
// row's d H d^T (formats and derivation: docs/methods.md, "MixLLM").
std::vector<double> mixllm_row_gains(double kl_lo, double kl_hi, const std::vector<double>& e_lo, const std::vector<double>& e_hi);

// KL divergence of a model from the base model on calibration windows (base log-probabilities
// cached once): mean over the first n_windows windows and their first n_tokens positions.
class KlEvaluator {
 public:
  KlEvaluator(const Model& base, std::vector<std::vector<int32_t>> windows, int n_threads);
  double kl(const Model& m, int n_windows, int n_tokens);
  double kl(const Model& m, const std::vector<int>& windows, int n_tokens);  // those windows
  const std::vector<int32_t>& window(int i) const { return win_[size_t(i)]; }
  int threads() const { return n_threads_; }
  int windows() const { return int(win_.size()); }
  int seqlen() const { return win_.empty() ? 0 : int(win_[0].size()); }
  int64_t evaluations = 0;
 private:
  std::vector<std::vector<int32_t>> win_;
  std::vector<std::vector<float>> base_logp_;  // [window][seqlen * vocab]
  int n_threads_;
  int32_t vocab_;
};

// Allocators (a registry, like the methods): each turns the database and a byte budget into a
// choice per tensor.
struct AllocateOptions {
  int64_t budget = 0;               // total weight bytes allowed (fixed tensors included)
  uint64_t seed = 0;
  int n_threads = 0;
  KlEvaluator* kl = nullptr;        // the allocators that measure KL need it
  // evopress
  int generations = 150, offspring = 16;
  std::vector<int> stage_tokens = {64, 256};   // selection stages: tokens per window evaluated
  std::vector<int> stage_windows = {2, 8};     // windows evaluated in each stage
  std::vector<int> stage_survivors = {4, 1};   // survivors of each stage
  std::string evo_start = "kl";     // evopress start: the "kl" or the "proxy" knapsack's allocation
  double max_seconds = 0;           // evopress: > 0 stops after the generation that passes it
  double guided = 0.5;              // evopress from kl: share of level switches drawn by the sensitivities
  // kl / evopress: each variant's own KL (kl_sensitivities), when already measured (a cache)
  const std::vector<std::vector<double>>* kl_costs = nullptr;
  int sens_windows = 0, sens_tokens = 0;  // kl sensitivities: windows x tokens (0: the first stage's
                                          // windows, the last stage's tokens)
  // lim / hessian: windows of the evaluator used (first n), tokens per window
  int probe_windows = 4, probe_tokens = 128;
  // hessian: Hutchinson probes per tensor
  int hutchinson_samples = 4;
  bool progress = true;
};
struct AllocateResult {
  std::vector<int> choice;
  int64_t bytes = 0;
  double score = 0;   // the allocator's objective at the choice
  double seconds = 0;
  int64_t evaluations = 0;
  std::string note;
  // Allocators that build tensors of their own (mixllm: mix formats from two candidates' variants):
  // per choosable tensor, a packed tensor and its rule (empty: the chosen candidate's variant).
  std::vector<Tensor> tensors;
  std::vector<std::string> rules;
};
struct AllocatorInfo {
  const char* name;
  const char* summary;
  bool needs_kl;
  AllocateResult (*run)(const VariantDb& db, const Model& base, const AllocateOptions& o);
};
// ---- the search's report (`lmpress report`): SVG written here, no plotting dependency ----------
struct BudgetPoint {
  std::string series;  // allocator name, "uniform" or "llama.cpp"
  std::string label;   // e.g. the recipe or the llama.cpp type
  double bpw = 0;      // weight bits per parameter
  double kld = 0;
};
// KLD (log scale) against bpw: one coloured polyline per series (points sorted by bpw), one
// <circle> per point with a <title> "series label: bpw, KLD", axes, ticks and a legend.
std::string budget_kld_svg(const std::vector<BudgetPoint>& pts, const std::string& title);
// The allocation as a heat map: one row per block (and one for the tensors outside blocks), one
// column per tensor kind; each cell coloured by its bits per weight (a <rect> with a <title>
// "name: bits"). Names "blk.N.KIND.weight" go to row N, column KIND.
std::string allocation_heatmap_svg(const std::vector<std::string>& names, const std::vector<double>& bits,
                                   const std::string& title);
std::string xml_escape(const std::string& s);

const std::vector<AllocatorInfo>& allocator_registry();
// Each variant's own KL divergence from the base model (only tensor i on candidate c, every other
// tensor unquantized), on the evaluator's first n_windows windows x n_tokens: [tensor][candidate].
std::vector<std::vector<double>> kl_sensitivities(const VariantDb& db, const Model& base, KlEvaluator& kl,
                                                  int n_windows, int n_tokens, bool progress);
// Layer-wise importance scores (Dumitru et al. 2024), per choosable tensor:
// LIM = 1 - mean cosine similarity of a block's input and output residual stream over the tokens
// of the evaluator's first n_windows windows (every tensor of the block shares it; the embedding /
// classifier gets the largest block score); ZD = the fraction of a tensor's weights whose z-score
// |w - mean| / std exceeds 1.
std::vector<double> lim_scores(const VariantDb& db, const Model& base, const KlEvaluator& kl, int n_windows,
                               int n_tokens);
std::vector<double> zd_scores(const VariantDb& db, const Model& base);
// ||W - dequant(variant)||^2 / ||W||^2 per [tensor][candidate].
std::vector<std::vector<double>> relative_weight_errors(const VariantDb& db, const Model& base);
const AllocatorInfo& find_allocator(const std::string& name);

}  // namespace lmpress
