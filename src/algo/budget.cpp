// Mixed precision under a budget (docs/methods.md, "Mixed precision under a budget"): candidate
// rules, exact byte accounting per tensor and candidate, the multiple-choice knapsack, the KL
// evaluator on calibration windows, and the allocators (proxy, kl: one-shot knapsacks; evopress:
// evolutionary search). The variant database itself is built by the pipeline (pipeline.cpp).
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include <cblas.h>
#include <cstdio>

#include "formats/composite.h"
#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/formats.h"
#include "lmpress/io.h"

namespace lmpress {

const char* const kDefaultCandidates =
    "gptq:w2g64,mse gptq:w3g64,mse gptq:w4g64,mse gptq:w5g64,mse gptq:w6g64 gptq:w8g64";

std::vector<TensorRule> parse_candidates(const std::string& s) {
  std::istringstream ss(s);
  std::string tok;
  std::vector<TensorRule> out;
  std::set<std::string> seen;
  while (ss >> tok) {
    TensorRule r = parse_rule(tok);
    if (!r.quantized()) fail("candidates", "'" + tok + "' is not a quantizing rule (keep/f16/bf16/f32 are not candidates)");
    for (const auto& m : r.chain)
      if (!find_method(m).rounds)
        fail("candidates", "'" + tok + "' holds the transform " + m + " (candidates are rounding rules: transforms rewrite the model and cannot be swapped per tensor)");
    if (r.spec.sparse) fail("candidates", "'" + tok + "': sparse-outlier formats (+s) are not candidates yet");
    if (!seen.insert(r.text).second) fail("candidates", "'" + tok + "' is given twice");
    out.push_back(std::move(r));
  }
  if (out.empty()) fail("candidates", "no candidate rules given (e.g. \"gptq:w2g64,mse gptq:w4g64,mse\")");
  return out;
}

int64_t BudgetTable::min_bytes() const {
  int64_t b = fixed_bytes;
  for (const auto& r : bytes) b += *std::min_element(r.begin(), r.end());
  return b;
}
int64_t BudgetTable::max_bytes() const {
  int64_t b = fixed_bytes;
  for (const auto& r : bytes) b += *std::max_element(r.begin(), r.end());
  return b;
}
int64_t BudgetTable::bytes_of(const std::vector<int>& choice) const {
  LMP_ASSERT(choice.size() == bytes.size());
  int64_t b = fixed_bytes;
  for (size_t i = 0; i < choice.size(); ++i) b += bytes[i][size_t(choice[i])];
  return b;
}

BudgetTable budget_table(const Model& m, const std::vector<TensorRule>& cands) {
  BudgetTable t;
  t.params = m.n_params();
  std::set<std::string> choosable;
  for (const auto& L : m.layers)
    for (const Tensor* x : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) choosable.insert(x->name);
  choosable.insert(m.tok_embd.name);
  if (!m.cfg.tied_embeddings) choosable.insert(m.output.name);
  // One plan per candidate (every tensor on that candidate): the planned bytes are what the
  // writer will check each tensor against, so they are exact by construction.
  std::vector<std::map<std::string, int64_t>> per(cands.size());
  std::vector<PlannedTensor> first;
  for (size_t c = 0; c < cands.size(); ++c) {
    Recipe rc;
    rc.base = cands[c];
    rc.text = cands[c].text;
    std::vector<PlannedTensor> plan;
    try {
      plan = plan_quantization(m, rc);
    } catch (const Error& e) {
      fail("candidates", "'" + cands[c].text + "' does not fit this model: " + e.what());
    }
    for (const auto& p : plan) per[c][p.name] = int64_t(p.nbytes);
    if (c == 0) first = plan;
  }
  for (const auto& p : first) {
    if (choosable.count(p.name)) {
      t.names.push_back(p.name);
      std::vector<int64_t> b;
      for (size_t c = 0; c < cands.size(); ++c) b.push_back(per[c].at(p.name));
      t.bytes.push_back(std::move(b));
    } else {
      t.fixed_bytes += int64_t(p.nbytes);
    }
  }
  return t;
}

int64_t bpw_to_bytes(double bpw, int64_t params) {
  if (!(bpw > 0) || !std::isfinite(bpw)) fail("budget", "bits per weight must be a positive number");
  return int64_t(std::floor(bpw * double(params) / 8.0));
}

KnapsackResult solve_mckp(const std::vector<std::vector<int64_t>>& bytes, const std::vector<std::vector<double>>& cost,
                          int64_t budget, int64_t max_cells) {
  const size_t n = bytes.size();
  LMP_ASSERT(cost.size() == n && max_cells >= 1);
  KnapsackResult res;
  res.choice.assign(n, 0);
  int64_t base = 0;
  std::vector<int64_t> lo(n);
  for (size_t i = 0; i < n; ++i) {
    LMP_ASSERT(!bytes[i].empty() && bytes[i].size() == cost[i].size());
    lo[i] = *std::min_element(bytes[i].begin(), bytes[i].end());
    base += lo[i];
  }
  if (base > budget)
    fail("budget", "the budget of " + std::to_string(budget) + " bytes is below the cheapest choice (" +
                       std::to_string(base) + " bytes)");
  const int64_t cap = budget - base;
  int64_t g = 0;
  for (size_t i = 0; i < n; ++i)
    for (int64_t b : bytes[i]) g = std::gcd(g, b - lo[i]);
  if (g == 0) g = 1;
  int64_t q = g;
  if (cap / q > max_cells) {
    q = (cap + max_cells - 1) / max_cells;
    q = (q + g - 1) / g * g;  // a multiple of g
  }
  res.quantum = q;
  res.exact = q == g;
  const int64_t cells = cap / q;
  const size_t W = size_t(cells) + 1;
  const double inf = std::numeric_limits<double>::infinity();
  // best[w] = least cost of the items so far using at most w cells; pick[i][w] = option chosen.
  std::vector<double> best(W, 0.0), next(W);
  std::vector<std::vector<uint8_t>> pick(n, std::vector<uint8_t>(W, 0));
  LMP_ASSERT(std::all_of(bytes.begin(), bytes.end(), [](const auto& r) { return r.size() <= 255; }));
  for (size_t i = 0; i < n; ++i) {
    std::fill(next.begin(), next.end(), inf);
    for (size_t c = 0; c < bytes[i].size(); ++c) {
      const int64_t wc = (bytes[i][c] - lo[i] + q - 1) / q;  // rounded up: feasible in real bytes
      if (wc > cells) continue;
      const double cc = cost[i][c];
      for (size_t w = size_t(wc); w < W; ++w) {
        const double v = best[w - size_t(wc)] + cc;
        if (v < next[w]) {
          next[w] = v;
          pick[i][w] = uint8_t(c);
        }
      }
    }
    best.swap(next);
  }
  // backtrack from the full capacity (best is monotone in w: "at most w cells")
  size_t w = W - 1;
  for (size_t i = n; i-- > 0;) {
    const int c = pick[i][w];
    res.choice[i] = c;
    w -= size_t((bytes[i][size_t(c)] - lo[i] + q - 1) / q);
  }
  auto total = [&] {
    int64_t b = 0;
    for (size_t i = 0; i < n; ++i) b += bytes[i][size_t(res.choice[i])];
    return b;
  };
  // Fix-up (coarse grid only): spend the real slack on the single switches that lower the cost most.
  if (!res.exact) {
    for (;;) {
      const int64_t slack = budget - total();
      double gain = 0;
      size_t bi = 0;
      int bc = -1;
      for (size_t i = 0; i < n; ++i)
        for (size_t c = 0; c < bytes[i].size(); ++c) {
          const int64_t extra = bytes[i][c] - bytes[i][size_t(res.choice[i])];
          const double d = cost[i][size_t(res.choice[i])] - cost[i][c];
          if (extra <= slack && d > gain) gain = d, bi = i, bc = int(c);
        }
      if (bc < 0) break;
      res.choice[bi] = bc;
    }
  }
  res.bytes = total();
  res.cost = 0;
  for (size_t i = 0; i < n; ++i) res.cost += cost[i][size_t(res.choice[i])];
  LMP_ASSERT(res.bytes <= budget);
  return res;
}

// ---- the database on disk ------------------------------------------------------------------------
namespace {
std::string db_file(const std::string& dir, size_t k) { return dir + "/cand" + std::to_string(k) + ".lmp"; }
}  // namespace

void save_variant_db(const VariantDb& db, const Model& src, const std::string& dir, const std::string& calib_desc) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail(dir, "cannot create the database directory: " + ec.message());
  nlohmann::json j;
  j["lmpress.database"] = 1;
  j["model"] = src.path;
  j["calib"] = calib_desc;
  j["seconds"] = db.seconds;
  nlohmann::json cj = nlohmann::json::array(), tj = nlohmann::json::array();
  for (const auto& c : db.candidates) cj.push_back(c.text);
  j["candidates"] = cj;
  for (size_t i = 0; i < db.v.size(); ++i) {
    nlohmann::json err = nlohmann::json::array(), rel = nlohmann::json::array();
    for (const auto& v : db.v[i]) err.push_back(v.rep.err), rel.push_back(v.rep.rel_err);
    tj.push_back({{"name", db.table.names[i]}, {"err", err}, {"rel_err", rel}});
  }
  j["tensors"] = tj;
  for (size_t k = 0; k < db.candidates.size(); ++k) {
    const std::vector<int> all(db.v.size(), int(k));
    const Model q = assemble_model(src, db, all);
    Recipe rc;
    rc.base = db.candidates[k];
    rc.text = rc.base.text;
    std::map<std::string, std::string> meta = src.metadata;
    meta["recipe"] = rc.text;
    meta["source"] = src.path;
    meta["calib"] = calib_desc + " (variant database: not true-sequential)";
    LmpressStreamWriter w(db_file(dir, k), src, plan_quantization(src, rc), meta, true);
    for (const Tensor* t : q.weight_tensors()) w.put(*t);
    w.commit();
  }
  AtomicFile f(dir + "/database.json", true);
  f.write(j.dump(1));
  f.commit();
}

VariantDb load_variant_db(const Model& src, const std::vector<TensorRule>& cands, const std::string& dir,
                          const std::string& calib_desc) {
  const std::string jp = dir + "/database.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(jp));
  } catch (const nlohmann::json::exception& e) {
    fail(jp, std::string("not a database index: ") + e.what());
  }
  auto str = [&](const char* k) {
    if (!j.contains(k) || !j[k].is_string()) fail(jp, std::string("missing '") + k + "'");
    return j[k].get<std::string>();
  };
  if (str("model") != src.path) fail(jp, "built for model " + str("model") + ", not " + src.path + " (use another --database directory)");
  if (str("calib") != calib_desc) fail(jp, "built with calibration '" + str("calib") + "', not '" + calib_desc + "'");
  std::vector<std::string> names;
  if (!j.contains("candidates") || !j["candidates"].is_array()) fail(jp, "missing 'candidates'");
  for (const auto& c : j["candidates"]) names.push_back(c.is_string() ? c.get<std::string>() : std::string("?"));
  std::vector<std::string> want;
  for (const auto& c : cands) want.push_back(c.text);
  if (names != want) fail(jp, "built for other candidates (use another --database directory)");
  VariantDb db;
  db.candidates = cands;
  db.table = budget_table(src, cands);
  db.seconds = j.value("seconds", 0.0);
  const size_t n = db.table.names.size();
  if (!j.contains("tensors") || !j["tensors"].is_array() || j["tensors"].size() != n) fail(jp, "wrong tensor list");
  db.v.assign(n, std::vector<Variant>(cands.size()));
  for (size_t k = 0; k < cands.size(); ++k) {
    const Model m = load_model(db_file(dir, k));
    std::map<std::string, const Tensor*> by;
    for (const Tensor* t : m.weight_tensors()) by[t->name] = t;
    for (size_t i = 0; i < n; ++i) {
      const auto& tj = j["tensors"][i];
      if (!tj.is_object() || tj.value("name", "") != db.table.names[i]) fail(jp, "wrong tensor list");
      auto it = by.find(db.table.names[i]);
      if (it == by.end() || int64_t(it->second->nbytes) != db.table.bytes[i][k] || it->second->dtype != DType::Q)
        fail(db_file(dir, k), "tensor " + db.table.names[i] + " is not the candidate's variant");
      Variant& v = db.v[i][k];
      v.t = *it->second;
      if (!m.files.empty()) v.t.owner = m.files[0];  // the mapping outlives the loaded model
      v.rep.name = db.table.names[i];
      v.rep.method = cands[k].method;
      v.rep.spec = cands[k].spec;
      const auto& e = tj["err"];
      const auto& r = tj["rel_err"];
      if (!e.is_array() || !r.is_array() || e.size() != cands.size() || r.size() != cands.size() ||
          !e[k].is_number() || !r[k].is_number())
        fail(jp, "bad errors of " + db.table.names[i]);
      v.rep.err = e[k].get<double>();
      v.rep.rel_err = r[k].get<double>();
      db.db_bytes += int64_t(v.t.nbytes);
    }
  }
  return db;
}

int64_t variant_db_disk_bytes(const std::string& dir) {
  int64_t b = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.is_regular_file()) b += int64_t(e.file_size());
  return b;
}

// ---- KL evaluator --------------------------------------------------------------------------------
namespace {
void log_softmax(const float* x, int32_t n, float* out) {
  float mx = x[0];
  for (int32_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  double s = 0;
  for (int32_t i = 0; i < n; ++i) s += std::exp(double(x[i] - mx));
  const float l = float(std::log(s)) + mx;
  for (int32_t i = 0; i < n; ++i) out[i] = x[i] - l;
}
}  // namespace

KlEvaluator::KlEvaluator(const Model& base, std::vector<std::vector<int32_t>> windows, int n_threads)
    : win_(std::move(windows)), n_threads_(n_threads), vocab_(base.cfg.vocab_size) {
  if (win_.empty()) fail("kl", "no calibration windows");
  EngineOptions eo;
  eo.n_threads = n_threads;
  eo.n_ctx = int32_t(win_[0].size());
  Engine e(base, eo);
  std::vector<float> logits(win_[0].size() * size_t(vocab_));
  for (const auto& w : win_) {
    e.reset();
    e.forward(w.data(), int64_t(w.size()), 0, logits.data(), true);
    std::vector<float> lp(logits.size());
    for (size_t t = 0; t < w.size(); ++t)
      log_softmax(logits.data() + t * size_t(vocab_), vocab_, lp.data() + t * size_t(vocab_));
    base_logp_.push_back(std::move(lp));
  }
}

double KlEvaluator::kl(const Model& m, int n_windows, int n_tokens) {
  n_windows = std::clamp(n_windows, 1, windows());
  std::vector<int> w(static_cast<size_t>(n_windows));
  std::iota(w.begin(), w.end(), 0);
  return kl(m, w, n_tokens);
}

double KlEvaluator::kl(const Model& m, const std::vector<int>& which, int n_tokens) {
  LMP_ASSERT(!which.empty());
  n_tokens = std::clamp(n_tokens, 1, seqlen());
  ++evaluations;
  EngineOptions eo;
  eo.n_threads = n_threads_;
  eo.n_ctx = int32_t(n_tokens);
  Engine e(m, eo);
  std::vector<float> logits(size_t(n_tokens) * size_t(vocab_)), lq(static_cast<size_t>(vocab_));
  double sum = 0;
  for (int w : which) {
    LMP_ASSERT(w >= 0 && w < windows());
    e.reset();
    e.forward(win_[size_t(w)].data(), n_tokens, 0, logits.data(), true);
    for (int t = 0; t < n_tokens; ++t) {
      log_softmax(logits.data() + size_t(t) * size_t(vocab_), vocab_, lq.data());
      const float* lp = base_logp_[size_t(w)].data() + size_t(t) * size_t(vocab_);
      double k = 0;
      for (int32_t v = 0; v < vocab_; ++v) k += std::exp(double(lp[v])) * (double(lp[v]) - double(lq[size_t(v)]));
      sum += k;
    }
  }
  return sum / (double(which.size()) * n_tokens);
}

// ---- allocators ----------------------------------------------------------------------------------
namespace {

// cost[i][c] -> the knapsack over the db's table, with the fixed bytes taken off the budget.
AllocateResult knapsack_of(const VariantDb& db, const std::vector<std::vector<double>>& cost, int64_t budget) {
  const int64_t var_budget = budget - db.table.fixed_bytes;
  if (var_budget < 0) fail("budget", "the budget is below the bytes of the tensors that are not quantized");
  KnapsackResult k = solve_mckp(db.table.bytes, cost, var_budget);
  AllocateResult r;
  r.choice = k.choice;
  r.bytes = db.table.bytes_of(k.choice);
  r.score = k.cost;
  r.note = k.exact ? "exact knapsack" : "knapsack on a " + std::to_string(k.quantum) + "-byte grid + fix-up";
  return r;
}

// proxy: the layer objective tr(D H D^T) of each variant (the report's err times rows): the
// squared output error per calibration token that the tensor's rounding adds, summed over tensors.
AllocateResult alloc_proxy(const VariantDb& db, const Model&, const AllocateOptions& o) {
  const double t0 = now_seconds();
  std::vector<std::vector<double>> cost(db.v.size());
  for (size_t i = 0; i < db.v.size(); ++i)
    for (const auto& var : db.v[i]) cost[i].push_back(var.rep.err * double(var.t.rows()));
  AllocateResult r = knapsack_of(db, cost, o.budget);
  r.seconds = now_seconds() - t0;
  return r;
}

// The slots of a model copy that hold the db's tensors, in table order.
std::vector<Tensor*> slots_of(Model& m, const VariantDb& db) {
  std::vector<Tensor*> slot;
  for (const auto& name : db.table.names) {
    Tensor* t = nullptr;
    for (Tensor* x : m.weight_tensors())
      if (x->name == name) t = x;
    LMP_ASSERT(t);
    slot.push_back(t);
  }
  return slot;
}
void put_slot(Model& m, Tensor* slot, const Tensor& t) {
  *slot = t;
  if (m.cfg.tied_embeddings && slot == &m.tok_embd) m.output = m.tok_embd;
}

// kl: each variant's own KL divergence from the base model (only that tensor quantized, every
// other tensor unquantized) on the first windows of the evaluator; the knapsack then assumes the
// KLs add up.
AllocateResult alloc_kl(const VariantDb& db, const Model& base, const AllocateOptions& o) {
  const double t0 = now_seconds();
  LMP_ASSERT(o.kl);
  const int64_t e0 = o.kl->evaluations;
  std::vector<std::vector<double>> cost;
  if (o.kl_costs && !o.kl_costs->empty()) {
    cost = *o.kl_costs;
    LMP_ASSERT(cost.size() == db.v.size());
  } else {
    const int nw = o.sens_windows > 0 ? o.sens_windows : o.stage_windows.empty() ? 2 : o.stage_windows.front();
    const int nt = o.sens_tokens > 0 ? o.sens_tokens : o.stage_tokens.empty() ? 128 : o.stage_tokens.back();
    cost = kl_sensitivities(db, base, *o.kl, nw, nt, o.progress);
  }
  AllocateResult r = knapsack_of(db, cost, o.budget);
  r.evaluations = o.kl->evaluations - e0;
  r.seconds = now_seconds() - t0;
  if (o.kl_costs && !o.kl_costs->empty()) r.note += " (sensitivities from the cache)";
  return r;
}

// The importance allocators' knapsack: cost[i][c] = score_i * (elements of i) * relative weight
// error of variant c (data-free apart from the score).
AllocateResult importance_knapsack(const VariantDb& db, const Model& base, const std::vector<double>& score,
                                   int64_t budget) {
  const auto rel = relative_weight_errors(db, base);
  std::vector<std::vector<double>> cost(db.v.size());
  for (size_t i = 0; i < db.v.size(); ++i) {
    const double n = double(db.v[i][0].t.numel());
    for (double e : rel[i]) cost[i].push_back(score[i] * n * e);
  }
  return knapsack_of(db, cost, budget);
}

// lim: the layer input modification score (Dumitru et al. 2024) as each tensor's importance.
AllocateResult alloc_lim(const VariantDb& db, const Model& base, const AllocateOptions& o) {
  const double t0 = now_seconds();
  LMP_ASSERT(o.kl);
  const std::vector<double> s = lim_scores(db, base, *o.kl, o.probe_windows, o.probe_tokens);
  AllocateResult r = importance_knapsack(db, base, s, o.budget);
  r.seconds = now_seconds() - t0;
  return r;
}

// zd: the z-score distribution (fraction of weights beyond one standard deviation) as importance.
AllocateResult alloc_zd(const VariantDb& db, const Model& base, const AllocateOptions& o) {
  const double t0 = now_seconds();
  AllocateResult r = importance_knapsack(db, base, zd_scores(db, base), o.budget);
  r.seconds = now_seconds() - t0;
  return r;
}

// hessian: HAWQ-style sensitivity tr(F_i)/n_i * ||W_i - Q_c(W_i)||^2 / 2 with F the Hessian of
// KL(base || model) at the base weights (the Fisher; no gradient needed: KL is flat there, so
// KL(W + s v) = s^2 v^T F v / 2 + O(s^3), and Hutchinson's E[v^T F v] = tr F over Rademacher v),
// times an inter-layer term: how much tensor i's damage grows when every other tensor is
// quantized too (leave-one-out on the all-cheapest model divided by the damage alone).
AllocateResult alloc_hessian(const VariantDb& db, const Model& base, const AllocateOptions& o) {
  const double t0 = now_seconds();
  LMP_ASSERT(o.kl);
  KlEvaluator& kl = *o.kl;
  const int64_t e0 = kl.evaluations;
  const int nw = std::clamp(o.probe_windows, 1, kl.windows()), nt = o.probe_tokens;
  const size_t n = db.v.size();
  const auto& B = db.table.bytes;
  std::vector<int> cheap(n);
  for (size_t i = 0; i < n; ++i) cheap[i] = int(std::min_element(B[i].begin(), B[i].end()) - B[i].begin());
  // squared error norms ||W - Q_c(W)||^2 per variant
  const auto rel = relative_weight_errors(db, base);
  Model m = assemble_model(base, db, {});
  std::vector<Tensor*> slot = slots_of(m, db);
  std::vector<Tensor> plain;
  for (Tensor* t : slot) plain.push_back(*t);
  std::vector<double> trace_kl(n), alone(n), loo(n);
  std::mt19937_64 rng(o.seed ^ 0x5bd1e995ull);
  Progress prog("hessian traces", int64_t(n));
  for (size_t i = 0; i < n; ++i) {
    const Tensor orig = *slot[i];
    const std::vector<float> w = tensor_to_f32(orig);
    double w2 = 0;
    for (float x : w) w2 += double(x) * x;
    // probe scale: the RMS of the cheapest variant's error (second order holds at that size)
    const double sigma = std::sqrt(rel[i][size_t(cheap[i])] * w2 / double(w.size()));
    double acc = 0;
    for (int s = 0; s < o.hutchinson_samples; ++s) {
      std::vector<float> p(w);
      for (auto& x : p) x += float((rng() & 1) ? sigma : -sigma);
      put_slot(m, slot[i], make_f32_tensor(orig.name, orig.shape, std::move(p)));
      acc += kl.kl(m, nw, nt);
    }
    // mean KL of a random probe of squared norm n sigma^2 = tr(F) sigma^2 / 2
    trace_kl[i] = acc / std::max(1, o.hutchinson_samples);
    put_slot(m, slot[i], db.v[i][size_t(cheap[i])].t);
    alone[i] = kl.kl(m, nw, nt);
    put_slot(m, slot[i], orig);
    if (o.progress) prog.update(int64_t(i + 1));
  }
  prog.finish();
  // leave-one-out on the all-cheapest model
  for (size_t i = 0; i < n; ++i) put_slot(m, slot[i], db.v[i][size_t(cheap[i])].t);
  const double all = kl.kl(m, nw, nt);
  for (size_t i = 0; i < n; ++i) {
    put_slot(m, slot[i], plain[i]);
    loo[i] = std::max(0.0, all - kl.kl(m, nw, nt));
    put_slot(m, slot[i], db.v[i][size_t(cheap[i])].t);
  }
  std::vector<std::vector<double>> cost(n);
  for (size_t i = 0; i < n; ++i) {
    const double e0i = std::max(rel[i][size_t(cheap[i])], 1e-30);
    const double amp = alone[i] > 0 ? loo[i] / alone[i] : 1.0;
    for (size_t c = 0; c < db.v[i].size(); ++c) cost[i].push_back(trace_kl[i] * (rel[i][c] / e0i) * amp);
  }
  AllocateResult r = knapsack_of(db, cost, o.budget);
  r.evaluations = kl.evaluations - e0;
  r.seconds = now_seconds() - t0;
  r.note += "; " + std::to_string(o.hutchinson_samples) + " Hutchinson probes per tensor, inter-layer leave-one-out";
  return r;
}

// EvoPress (Sieberling et al. 2024): a (1 + lambda) evolutionary search over the levels with KL
// to the base model as fitness, selected in stages on growing numbers of calibration tokens.
AllocateResult alloc_evopress(const VariantDb& db, const Model& base, const AllocateOptions& o) {
  const double t0 = now_seconds();
  LMP_ASSERT(o.kl);
  KlEvaluator& kl = *o.kl;
  const int64_t e0 = kl.evaluations;
  const size_t n = db.v.size(), C = db.candidates.size();
  const auto& B = db.table.bytes;
  // levels per tensor: candidate indices sorted by bytes (a "higher level" costs more bytes)
  std::vector<std::vector<int>> order(n);
  for (size_t i = 0; i < n; ++i) {
    order[i].resize(C);
    std::iota(order[i].begin(), order[i].end(), 0);
    std::stable_sort(order[i].begin(), order[i].end(), [&](int a, int b) { return B[i][size_t(a)] < B[i][size_t(b)]; });
  }
  std::mt19937_64 rng(o.seed ^ 0x9e3779b97f4a7c15ull);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  // start: a one-shot knapsack's allocation (within the budget), as levels
  if (o.evo_start != "kl" && o.evo_start != "proxy")
    fail("evopress", "unknown start '" + o.evo_start + "' (kl or proxy)");
  // the kl sensitivities (the start's costs) also guide the mutation
  std::vector<std::vector<double>> sens;
  if (o.evo_start == "kl") {
    if (o.kl_costs && !o.kl_costs->empty()) {
      sens = *o.kl_costs;
    } else {
      const int nw = o.sens_windows > 0 ? o.sens_windows : o.stage_windows.empty() ? 2 : o.stage_windows.front();
      const int nt = o.sens_tokens > 0 ? o.sens_tokens : o.stage_tokens.empty() ? 128 : o.stage_tokens.back();
      sens = kl_sensitivities(db, base, kl, nw, nt, o.progress);
    }
  }
  AllocateOptions io = o;
  io.kl_costs = &sens;
  const AllocateResult init = o.evo_start == "kl" ? alloc_kl(db, base, io) : alloc_proxy(db, base, o);
  const bool guide = !sens.empty() && o.guided > 0;
  // marginal KL per byte of moving tensor i from level a to level b (by the sensitivities)
  auto per_byte = [&](size_t i, int a, int b) {
    const size_t ca = size_t(order[i][size_t(a)]), cb = size_t(order[i][size_t(b)]);
    return std::abs(sens[i][ca] - sens[i][cb]) / double(std::max<int64_t>(1, std::abs(B[i][ca] - B[i][cb])));
  };
  // pick from `idx` with probability proportional to w (uniformly with probability 1 - guided)
  auto pick = [&](const std::vector<size_t>& idx, const std::vector<double>& w) {
    if (guide && std::uniform_real_distribution<double>(0, 1)(rng) < o.guided) {
      double tot = 0;
      for (double x : w) tot += x;
      if (tot > 0 && std::isfinite(tot)) {
        double r = std::uniform_real_distribution<double>(0, tot)(rng);
        for (size_t k = 0; k < idx.size(); ++k)
          if ((r -= w[k]) <= 0) return idx[k];
        return idx.back();
      }
    }
    return idx[size_t(uni(0, int(idx.size()) - 1))];
  };
  std::vector<int> parent(n);
  for (size_t i = 0; i < n; ++i)
    parent[i] = int(std::find(order[i].begin(), order[i].end(), init.choice[i]) - order[i].begin());
  auto choice_of = [&](const std::vector<int>& lv) {
    std::vector<int> c(n);
    for (size_t i = 0; i < n; ++i) c[i] = order[i][size_t(lv[i])];
    return c;
  };
  auto bytes_of = [&](const std::vector<int>& lv) { return db.table.bytes_of(choice_of(lv)); };
  const int nwin = kl.windows();
  // fitness of a set of level vectors on `nw` windows drawn for this stage, first `nt` tokens
  Model m = assemble_model(base, db, choice_of(parent));
  std::vector<Tensor*> slot;
  for (const auto& name : db.table.names)
    for (Tensor* x : m.weight_tensors())
      if (x->name == name) slot.push_back(x);
  LMP_ASSERT(slot.size() == n);
  auto load = [&](const std::vector<int>& lv) {
    for (size_t i = 0; i < n; ++i) *slot[i] = db.v[i][size_t(order[i][size_t(lv[i])])].t;
    if (m.cfg.tied_embeddings) m.output = m.tok_embd;
  };
  const int stages = int(std::min({o.stage_tokens.size(), o.stage_windows.size(), o.stage_survivors.size()}));
  if (stages < 1) fail("evopress", "no selection stages");
  double parent_fit = std::numeric_limits<double>::infinity();
  int64_t budget = o.budget;
  Progress prog("evopress", o.generations);
  int gens_run = 0, accepted = 0;
  for (int gen = 0; gen < o.generations; ++gen) {
    if (o.max_seconds > 0 && now_seconds() - t0 > o.max_seconds) break;
    ++gens_run;
    std::vector<std::vector<int>> kids;
    int tries = 0;
    const int64_t pbytes = bytes_of(parent);
    while (int(kids.size()) < o.offspring && tries++ < 100 * o.offspring) {
      std::vector<int> kid = parent;
      int64_t kb = pbytes, added = 0, removed = 0;
      const int flips = std::min(uni(1, 3), uni(1, 3));  // biased towards fewer
      bool ok = true;
      for (int f = 0; f < flips && ok; ++f) {
        std::vector<size_t> up;
        std::vector<double> wu;  // guided: the KL gained per byte spent
        for (size_t i = 0; i < n; ++i)
          if (kid[i] + 1 < int(C)) up.push_back(i), wu.push_back(guide ? per_byte(i, kid[i], kid[i] + 1) : 0.0);
        if (up.empty()) { ok = false; break; }
        const size_t i = pick(up, wu);
        const int64_t d = B[i][size_t(order[i][size_t(kid[i] + 1)])] - B[i][size_t(order[i][size_t(kid[i])])];
        ++kid[i], kb += d, added += d;
      }
      int changes = flips;
      while (ok && kb > budget) {  // lower random tensors until back within the budget
        std::vector<size_t> down;
        std::vector<double> wd;  // guided: bytes freed per KL lost
        for (size_t i = 0; i < n; ++i)
          if (kid[i] > 0) down.push_back(i), wd.push_back(guide ? 1.0 / (per_byte(i, kid[i], kid[i] - 1) + 1e-12) : 0.0);
        if (down.empty()) { ok = false; break; }
        const size_t i = pick(down, wd);
        const int64_t d = B[i][size_t(order[i][size_t(kid[i])])] - B[i][size_t(order[i][size_t(kid[i] - 1)])];
        --kid[i], kb -= d, removed += d;
        ++changes;
      }
      // as the reference: no offspring with too many switches or that gives up much of the budget
      if (!ok || changes > 10 || (removed > 0 && double(added) / double(removed) < 0.8)) continue;
      if (kid == parent || std::find(kids.begin(), kids.end(), kid) != kids.end()) continue;
      LMP_ASSERT(kb <= budget);
      kids.push_back(std::move(kid));
    }
    // windows of this generation: a random subset of the evaluator's, the same for every stage
    // prefix (stage s uses the first stage_windows[s] of the shuffled list)
    std::vector<int> wperm(static_cast<size_t>(nwin));
    std::iota(wperm.begin(), wperm.end(), 0);
    std::shuffle(wperm.begin(), wperm.end(), rng);
    std::vector<double> fit;
    for (int s = 0; s < stages; ++s) {
      const bool last = s == stages - 1;
      if (last && std::find(kids.begin(), kids.end(), parent) == kids.end()) kids.push_back(parent);  // elitist
      const int nw = std::min(o.stage_windows[size_t(s)], nwin), nt = o.stage_tokens[size_t(s)];
      fit.assign(kids.size(), 0.0);
      for (size_t k = 0; k < kids.size(); ++k) {
        load(kids[k]);
        fit[k] = kl.kl(m, std::vector<int>(wperm.begin(), wperm.begin() + nw), nt);
      }
      std::vector<size_t> idx(kids.size());
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return fit[a] < fit[b]; });
      const size_t keep = last ? 1 : std::min(idx.size(), size_t(std::max(1, o.stage_survivors[size_t(s)])));
      std::vector<std::vector<int>> nk;
      std::vector<double> nf;
      for (size_t j = 0; j < keep; ++j) nk.push_back(kids[idx[j]]), nf.push_back(fit[idx[j]]);
      kids.swap(nk);
      fit.swap(nf);
    }
    if (kids[0] != parent) ++accepted;
    parent = kids[0];
    parent_fit = fit[0];
    if (o.progress) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "fitness %.5f", parent_fit);
      prog.update(gen + 1, buf);
    }
  }
  prog.finish();
  AllocateResult r;
  r.choice = choice_of(parent);
  r.bytes = db.table.bytes_of(r.choice);
  LMP_ASSERT(r.bytes <= o.budget);
  r.score = parent_fit;
  r.evaluations = kl.evaluations - e0;
  r.seconds = now_seconds() - t0;
  int accepted_count = accepted;
  r.note = "start: " + o.evo_start + " knapsack (" + init.note + ")" +
           (guide ? "; mutations guided by the kl sensitivities with p=" + std::to_string(o.guided).substr(0, 4) : "") +
           "; " + std::to_string(accepted_count) + " improvements accepted; " + std::to_string(gens_run) +
           " generations x " + std::to_string(o.offspring) + " offspring";
  if (gens_run < o.generations) r.note += " (stopped by the time limit)";
  return r;
}

}  // namespace

std::vector<double> mixllm_row_gains(double kl_lo, double kl_hi, const std::vector<double>& e_lo,
                                     const std::vector<double>& e_hi) {
  LMP_ASSERT(e_lo.size() == e_hi.size());
  std::vector<double> g(e_lo.size(), 0.0);
  double sum = 0;
  for (size_t r = 0; r < g.size(); ++r) sum += g[r] = std::max(0.0, e_lo[r] - e_hi[r]);
  const double dk = kl_lo - kl_hi;
  for (double& x : g) x = sum > 0 && dk > 0 ? dk * x / sum : 0.0;
  return g;
}

namespace {
// ---- row-level mixing (mixllm, kl-rows): mix formats assembled from two candidates' variants -------
// Every tensor's input Hessian on the probe windows (full up to 2048 columns, else the diagonal), and
// each variant's row errors d_r H d_r^T on demand.
class RowModel {
 public:
  RowModel(const VariantDb& db, const Model& base, const AllocateOptions& o) : db_(db) {
    for (const Tensor* t : base.weight_tensors()) by_[t->name] = t;
    constexpr int64_t kFullH = 2048;
    std::map<std::pair<std::string, int>, int64_t> counts;
    const int nw = std::clamp(o.probe_windows, 1, o.kl->windows()), nt = std::clamp(o.probe_tokens, 1, o.kl->seqlen());
    EngineOptions eo;
    eo.n_threads = o.kl->threads();
    eo.n_ctx = nt;
    Engine e(base, eo);
    e.set_hook([&](const std::string& name, int layer, const float* x, int64_t rows, int64_t width) {
      std::vector<double>& H = hs_[{name, layer}];
      const bool full = width <= kFullH;
      H.resize(size_t(full ? width * width : width), 0.0);
      counts[{name, layer}] += rows;
      if (full) {
        std::vector<double> xd(x, x + rows * width);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, int(width), int(rows), 1.0, xd.data(), int(width), 1.0, H.data(),
                    int(width));
      } else {
        for (int64_t t = 0; t < rows; ++t)
          for (int64_t j = 0; j < width; ++j) H[size_t(j)] += double(x[t * width + j]) * x[t * width + j];
      }
    });
    std::vector<float> logits(size_t(int64_t(nt) * base.cfg.vocab_size));
    for (int w = 0; w < nw; ++w) {
      e.reset();
      e.forward(o.kl->window(w).data(), nt, 0, logits.data(), true);
    }
    for (auto& [key, H] : hs_) {
      const int64_t cnt = std::max<int64_t>(1, counts[key]);
      const int64_t wd = int64_t(std::llround(std::sqrt(double(H.size()))));
      if (wd * wd == int64_t(H.size()) && wd > 1)  // full: mirror the upper triangle
        for (int64_t a = 0; a < wd; ++a)
          for (int64_t b = 0; b < a; ++b) H[size_t(a * wd + b)] = H[size_t(b * wd + a)];
      for (double& h : H) h /= double(cnt);
    }
    w_.resize(db.v.size());
    err_.assign(db.v.size(), std::vector<std::vector<double>>(db.candidates.size()));
  }
  const std::vector<double>& row_err(size_t i, size_t c) {
    if (err_[i][c].empty()) {
      const std::string& name = db_.table.names[i];
      if (w_[i].empty()) w_[i] = tensor_to_f32(*by_.at(name));
      auto it = hs_.find(input_of(name));
      if (it == hs_.end()) fail("mixllm", "no activations reached the input of " + name);
      const Tensor& t = db_.v[i][c].t;
      err_[i][c] = row_errors(w_[i].data(), dequantize_ref(t), t.rows(), t.cols(), it->second);
    }
    return err_[i][c];
  }

 private:
  static std::pair<std::string, int> input_of(const std::string& name) {
    int layer = -1;
    char key[64] = {};
    if (std::sscanf(name.c_str(), "blk.%d.%63[^.].weight", &layer, key) == 2) {
      const char* in = linear_input_name(key);
      if (!in) fail("mixllm", "no input known for tensor " + name);
      return {in, layer};
    }
    return {"output_in", -1};  // the classifier (tied: the embedding too)
  }
  const VariantDb& db_;
  std::map<std::string, const Tensor*> by_;
  std::map<std::pair<std::string, int>, std::vector<double>> hs_;
  std::vector<std::vector<float>> w_;
  std::vector<std::vector<std::vector<double>>> err_;
};

void check_int_candidates(const VariantDb& db, const char* who) {
  for (size_t i = 0; i < db.v.size(); ++i)
    for (size_t c = 0; c < db.candidates.size(); ++c) {
      const QuantSpec& s = db.v[i][c].rep.spec;
      if (s.family != FormatFamily::Int || s.sparse || s.rht)
        fail(who, std::string("the ") + who + " allocator mixes int formats (w<b>g<G>[a] / w<b>row[a]) by rows; candidate '" +
                      db.candidates[c].text + "' gives " + format_name(s));
    }
}

// The mix format of tensor i with its rows on candidate lo and the k it asks for on hi: the smallest
// share (permille) holding k rows.
QuantSpec mix_spec(const VariantDb& db, size_t i, size_t lo, size_t hi, int64_t k) {
  QuantSpec s = db.v[i][lo].rep.spec;
  const QuantSpec h = db.v[i][hi].rep.spec;
  s.family = FormatFamily::Mix;
  s.hi_bits = h.bits;
  s.hi_group = h.group;
  s.hi_sym = h.sym;
  const int64_t rows = db.v[i][hi].t.rows();
  s.share = int(std::min<int64_t>(1000, k * 1000 / rows));
  while (s.share < 1000 && composite::mix_hi_rows(s, rows) < k) ++s.share;
  return s;
}
// Rows on hi that asking for k gives (0 and all rows: the plain candidates).
int64_t mix_rows(const VariantDb& db, size_t i, int64_t k) {
  const int64_t rows = db.v[i][0].t.rows();
  return k <= 0 ? 0 : k >= rows ? rows : composite::mix_hi_rows(mix_spec(db, i, 0, 0, k), rows);
}
// Exact bytes of tensor i with mix_rows(k) rows on hi.
int64_t mix_bytes(const VariantDb& db, size_t i, size_t lo, size_t hi, int64_t k) {
  const int64_t rows = db.v[i][hi].t.rows(), cols = db.v[i][hi].t.cols();
  if (k <= 0) return db.table.bytes[i][lo];
  if (k >= rows) return db.table.bytes[i][hi];
  return packed_geometry(mix_spec(db, i, lo, hi, k), rows, cols).total_bytes;
}
// The mix tensor: the k rows of largest gain on hi (ties: lower row first), assembled from the variants.
Tensor build_mix(const VariantDb& db, size_t i, size_t lo, size_t hi, int64_t k, const std::vector<double>& gain,
                 std::string* rule) {
  const int64_t rows = db.v[i][0].t.rows();
  const QuantSpec s = mix_spec(db, i, lo, hi, k);
  k = composite::mix_hi_rows(s, rows);
  std::vector<int64_t> order(static_cast<size_t>(rows));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return gain[size_t(a)] > gain[size_t(b)]; });
  std::vector<uint8_t> flag(static_cast<size_t>(rows), 0);
  for (int64_t r = 0; r < k; ++r) flag[size_t(order[size_t(r)])] = 1;
  Tensor t = pack_tensor(db.table.names[i], composite::assemble_mix(s, flag, unpack_tensor(db.v[i][lo].t), unpack_tensor(db.v[i][hi].t)));
  LMP_ASSERT(int64_t(t.nbytes) == mix_bytes(db, i, lo, hi, k));
  *rule = "mixllm:" + format_name(s);
  return t;
}

std::vector<std::vector<double>> kl_costs_of(const VariantDb& db, const Model& base, const AllocateOptions& o) {
  if (o.kl_costs && !o.kl_costs->empty()) return *o.kl_costs;
  const int nw = o.sens_windows > 0 ? o.sens_windows : o.stage_windows.empty() ? 2 : o.stage_windows.front();
  const int nt = o.sens_tokens > 0 ? o.sens_tokens : o.stage_tokens.empty() ? 128 : o.stage_tokens.back();
  return kl_sensitivities(db, base, *o.kl, nw, nt, o.progress);
}

// MixLLM (Zheng et al. 2024) as an allocator: one low candidate for every tensor (the largest uniform
// candidate within the budget), and the output features (rows) of highest global salience per byte in a
// high candidate, up to the budget; each tensor with some of both becomes a mix format. MixLLM's
// salience is each feature's estimated effect on the loss; here (no backward pass) a tensor's measured
// KL change from lo to hi, shared among its rows by their drop in d H d^T (mixllm_row_gains). Every
// candidate above lo is tried as the high one; the one with the least estimated KL is kept.
AllocateResult alloc_mixllm(const VariantDb& db, const Model& base, const AllocateOptions& o) {
  const double t0 = now_seconds();
  LMP_ASSERT(o.kl);
  const int64_t e0 = o.kl->evaluations;
  const size_t n = db.v.size(), C = db.candidates.size();
  check_int_candidates(db, "mixllm");
  std::vector<int64_t> uni(C, db.table.fixed_bytes);
  for (size_t i = 0; i < n; ++i)
    for (size_t c = 0; c < C; ++c) uni[c] += db.table.bytes[i][c];
  int lo = -1;
  for (size_t c = 0; c < C; ++c)
    if (uni[c] <= o.budget && (lo < 0 || uni[c] > uni[size_t(lo)])) lo = int(c);
  if (lo < 0) fail("mixllm", "no candidate fits the budget in every tensor (the low format of the mix)");
  const std::vector<std::vector<double>> kl = kl_costs_of(db, base, o);
  RowModel rm(db, base, o);
  struct Plan {
    double est = 0;
    std::vector<int64_t> k;
    std::vector<std::vector<double>> gain;
  };
  Plan best;
  int best_hi = -1;
  for (size_t hi = 0; hi < C; ++hi) {
    if (uni[hi] <= uni[size_t(lo)]) continue;
    Plan P;
    P.k.assign(n, 0);
    P.gain.resize(n);
    struct Item {
      double key;
      size_t i;
    };
    std::vector<Item> items;
    for (size_t i = 0; i < n; ++i) {
      P.est += kl[i][size_t(lo)];
      P.gain[i] = mixllm_row_gains(kl[i][size_t(lo)], kl[i][hi], rm.row_err(i, size_t(lo)), rm.row_err(i, hi));
      const double per_row = double(db.table.bytes[i][hi] - db.table.bytes[i][size_t(lo)]) / double(db.v[i][hi].t.rows());
      for (double g : P.gain[i])
        if (g > 0) items.push_back({g / std::max(per_row, 1e-9), i});
    }
    std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.key > b.key; });
    std::vector<int64_t> nsel(n, 0);
    int64_t used = uni[size_t(lo)];
    for (const Item& it : items) {  // (a tensor's rows come in its own gain order: the key is gain / its row cost)
      const int64_t cur = mix_bytes(db, it.i, size_t(lo), hi, mix_rows(db, it.i, nsel[it.i]));
      const int64_t nxt = mix_bytes(db, it.i, size_t(lo), hi, mix_rows(db, it.i, nsel[it.i] + 1));
      if (used - cur + nxt > o.budget) continue;
      used += nxt - cur;
      ++nsel[it.i];
    }
    for (size_t i = 0; i < n; ++i) {
      P.k[i] = mix_rows(db, i, nsel[i]);
      std::vector<double> g = P.gain[i];
      std::sort(g.begin(), g.end(), std::greater<double>());
      for (int64_t r = 0; r < P.k[i]; ++r) P.est -= g[size_t(r)];
    }
    if (best_hi < 0 || P.est < best.est) best = std::move(P), best_hi = int(hi);
  }
  AllocateResult res;
  res.choice.assign(n, lo);
  res.tensors.assign(n, Tensor{});
  res.rules.assign(n, std::string());
  res.bytes = db.table.fixed_bytes;
  int64_t mixed = 0, hi_rows = 0, all_rows = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t rows = db.v[i][0].t.rows(), k = best_hi < 0 ? 0 : best.k[i];
    all_rows += rows;
    hi_rows += k;
    if (k >= rows) res.choice[i] = best_hi;
    if (k > 0 && k < rows) {
      res.tensors[i] = build_mix(db, i, size_t(lo), size_t(best_hi), k, best.gain[i], &res.rules[i]);
      ++mixed;
      res.bytes += int64_t(res.tensors[i].nbytes);
    } else {
      res.bytes += db.table.bytes[i][size_t(res.choice[i])];
    }
  }
  if (res.bytes > o.budget) fail("mixllm", "internal: the allocation exceeds the budget");
  res.score = best_hi < 0 ? 0.0 : best.est;
  res.evaluations = o.kl->evaluations - e0;
  res.seconds = now_seconds() - t0;
  char buf[256];
  std::snprintf(buf, sizeof buf, "low %s, high %s: %lld of %lld rows high (%.2f%%), %lld tensors mixed",
                db.candidates[size_t(lo)].text.c_str(), best_hi < 0 ? "(none)" : db.candidates[size_t(best_hi)].text.c_str(),
                (long long)hi_rows, (long long)all_rows, 100.0 * double(hi_rows) / double(std::max<int64_t>(1, all_rows)),
                (long long)mixed);
  res.note = buf;
  return res;
}

// kl-rows (lmpress): the kl knapsack with row-level steps. A tensor's options are its candidates (cost:
// the variant's own KL) and, between each two candidates adjacent in bytes, mixes with 1/8 .. 7/8 of
// the rows on the larger one: those rows of largest drop in d H d^T, cost KL(lo) - (their share of the
// gains, mixllm_row_gains). Within a tensor the first rows moved up buy most of the KL; the knapsack
// sees that concavity instead of whole-tensor steps.
AllocateResult alloc_kl_rows(const VariantDb& db, const Model& base, const AllocateOptions& o) {
  const double t0 = now_seconds();
  LMP_ASSERT(o.kl);
  const int64_t e0 = o.kl->evaluations;
  const size_t n = db.v.size(), C = db.candidates.size();
  check_int_candidates(db, "kl-rows");
  const std::vector<std::vector<double>> kl = kl_costs_of(db, base, o);
  RowModel rm(db, base, o);
  constexpr int kSteps = 8;
  struct Opt {
    int lo, hi;  // hi < 0: plain candidate lo
    int64_t k;
  };
  std::vector<std::vector<Opt>> opts(n);
  std::vector<std::vector<int64_t>> bytes(n);
  std::vector<std::vector<double>> cost(n);
  std::vector<std::map<std::pair<int, int>, std::vector<double>>> gains(n);
  for (size_t i = 0; i < n; ++i) {
    std::vector<int> order(C);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return db.table.bytes[i][size_t(a)] < db.table.bytes[i][size_t(b)]; });
    for (size_t c = 0; c < C; ++c) {
      opts[i].push_back({int(c), -1, 0});
      bytes[i].push_back(db.table.bytes[i][c]);
      cost[i].push_back(kl[i][c]);
    }
    const int64_t rows = db.v[i][0].t.rows();
    for (size_t a = 0; a + 1 < C; ++a) {
      const int lo = order[a], hi = order[a + 1];
      if (db.table.bytes[i][size_t(hi)] <= db.table.bytes[i][size_t(lo)] || kl[i][size_t(hi)] >= kl[i][size_t(lo)]) continue;
      std::vector<double> g = mixllm_row_gains(kl[i][size_t(lo)], kl[i][size_t(hi)], rm.row_err(i, size_t(lo)), rm.row_err(i, size_t(hi)));
      std::vector<double> sorted = g;
      std::sort(sorted.begin(), sorted.end(), std::greater<double>());
      int64_t last = 0;
      for (int s = 1; s < kSteps; ++s) {
        const int64_t k = mix_rows(db, i, rows * s / kSteps);
        if (k <= last || k >= rows) continue;
        last = k;
        double gsum = 0;
        for (int64_t r = 0; r < k; ++r) gsum += sorted[size_t(r)];
        opts[i].push_back({lo, hi, k});
        bytes[i].push_back(mix_bytes(db, i, size_t(lo), size_t(hi), k));
        cost[i].push_back(kl[i][size_t(lo)] - gsum);
      }
      gains[i][{lo, hi}] = std::move(g);
    }
  }
  const int64_t var_budget = o.budget - db.table.fixed_bytes;
  if (var_budget < 0) fail("budget", "the budget is below the bytes of the tensors that are not quantized");
  const KnapsackResult ks = solve_mckp(bytes, cost, var_budget);
  AllocateResult res;
  res.choice.assign(n, 0);
  res.tensors.assign(n, Tensor{});
  res.rules.assign(n, std::string());
  res.bytes = db.table.fixed_bytes;
  int mixed = 0;
  for (size_t i = 0; i < n; ++i) {
    const Opt& op = opts[i][size_t(ks.choice[i])];
    res.choice[i] = op.lo;
    if (op.hi >= 0) {
      res.tensors[i] = build_mix(db, i, size_t(op.lo), size_t(op.hi), op.k, gains[i].at({op.lo, op.hi}), &res.rules[i]);
      ++mixed;
    }
    res.bytes += bytes[i][size_t(ks.choice[i])];
  }
  if (res.bytes > o.budget) fail("kl-rows", "internal: the allocation exceeds the budget");
  res.score = ks.cost;
  res.evaluations = o.kl->evaluations - e0;
  res.seconds = now_seconds() - t0;
  res.note = (ks.exact ? std::string("exact knapsack") : "knapsack on a " + std::to_string(ks.quantum) + "-byte grid + fix-up") +
             ", " + std::to_string(mixed) + " tensors mixed";
  return res;
}
}  // namespace

const std::vector<AllocatorInfo>& allocator_registry() {
  static const std::vector<AllocatorInfo> reg = {
      {"proxy", "knapsack on the layer objective tr(D H D^T) of each variant (seconds)", false, alloc_proxy},
      {"kl", "knapsack on each variant's own KL to the base model (one evaluation per variant)", true, alloc_kl},
      {"evopress", "EvoPress: evolutionary search, level-switch mutations, KL fitness in stages", true, alloc_evopress},
      {"lim", "knapsack on the layer input modification score (1 - cos(in, out) of a block) x relative weight error",
       true, alloc_lim},
      {"zd", "knapsack on the z-score distribution (share of |z| > 1 weights) x relative weight error (data-free)",
       false, alloc_zd},
      {"hessian", "knapsack on Hutchinson tr(F)/n x ||dW||^2 (HAWQ) times an inter-layer leave-one-out factor", true,
       alloc_hessian},
      {"mixllm", "MixLLM: one low candidate everywhere, the output features of highest global salience per byte in a "
                 "high one (mix formats)", true, alloc_mixllm},
      {"kl-rows", "the kl knapsack with row-level mixes (1/8 .. 7/8 of the rows) between byte-adjacent candidates "
                  "(mix formats)", true, alloc_kl_rows},
  };
  return reg;
}

std::vector<std::vector<double>> kl_sensitivities(const VariantDb& db, const Model& base, KlEvaluator& kl,
                                                  int n_windows, int n_tokens, bool progress) {
  Model m = assemble_model(base, db, {});  // an unquantized copy whose tensors are swapped below
  std::vector<Tensor*> slot = slots_of(m, db);
  std::vector<std::vector<double>> cost(db.v.size());
  Progress prog("kl sensitivities", int64_t(db.v.size()));
  for (size_t i = 0; i < db.v.size(); ++i) {
    const Tensor orig = *slot[i];
    for (const auto& var : db.v[i]) {
      put_slot(m, slot[i], var.t);
      cost[i].push_back(kl.kl(m, n_windows, n_tokens));
    }
    put_slot(m, slot[i], orig);
    if (progress) prog.update(int64_t(i + 1));
  }
  prog.finish();
  return cost;
}

std::vector<std::vector<double>> relative_weight_errors(const VariantDb& db, const Model& base) {
  std::map<std::string, const Tensor*> by;
  for (const Tensor* t : base.weight_tensors()) by[t->name] = t;
  std::vector<std::vector<double>> out(db.v.size());
  for (size_t i = 0; i < db.v.size(); ++i) {
    const std::vector<float> w = tensor_to_f32(*by.at(db.table.names[i]));
    double w2 = 0;
    for (float x : w) w2 += double(x) * x;
    for (const auto& var : db.v[i]) {
      const std::vector<float> q = var.t.dtype == DType::Q ? dequantize_ref(var.t) : tensor_to_f32(var.t);
      LMP_ASSERT(q.size() == w.size());
      double d2 = 0;
      for (size_t k = 0; k < w.size(); ++k) d2 += (double(w[k]) - q[k]) * (double(w[k]) - q[k]);
      out[i].push_back(w2 > 0 ? d2 / w2 : 0.0);
    }
  }
  return out;
}

namespace {
// block index of each choosable tensor (-1: embedding / classifier)
std::vector<int> block_of(const VariantDb& db, const Model& base) {
  std::vector<int> out;
  for (const auto& name : db.table.names) {
    int b = -1;
    for (size_t l = 0; l < base.layers.size(); ++l) {
      const auto& L = base.layers[l];
      for (const Tensor* x : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
        if (x->name == name) b = int(l);
    }
    out.push_back(b);
  }
  return out;
}
}  // namespace

std::vector<double> lim_scores(const VariantDb& db, const Model& base, const KlEvaluator& kl, int n_windows,
                               int n_tokens) {
  n_windows = std::clamp(n_windows, 1, kl.windows());
  n_tokens = std::clamp(n_tokens, 1, kl.seqlen());
  const int64_t d = base.cfg.dim;
  const size_t L = base.layers.size();
  EngineOptions eo;
  eo.n_threads = kl.threads();
  eo.n_ctx = n_tokens;
  Engine e(base, eo);
  std::vector<double> sum(L, 0.0);
  std::vector<float> x(size_t(n_tokens * d)), in(x.size());
  for (int w = 0; w < n_windows; ++w) {
    e.reset();
    e.embed(kl.window(w).data(), n_tokens, x.data());
    for (size_t l = 0; l < L; ++l) {
      in = x;
      e.run_layers(x.data(), n_tokens, 0, int(l), int(l) + 1);
      for (int64_t t = 0; t < n_tokens; ++t) {
        double ab = 0, aa = 0, bb = 0;
        for (int64_t k = 0; k < d; ++k) {
          const double a = in[size_t(t * d + k)], b = x[size_t(t * d + k)];
          ab += a * b, aa += a * a, bb += b * b;
        }
        sum[l] += 1.0 - (aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 1.0);
      }
    }
  }
  std::vector<double> lim(L);
  for (size_t l = 0; l < L; ++l) lim[l] = sum[l] / (double(n_windows) * n_tokens);
  const double top = L ? *std::max_element(lim.begin(), lim.end()) : 1.0;
  std::vector<double> out;
  for (int b : block_of(db, base)) out.push_back(b < 0 ? top : lim[size_t(b)]);
  return out;
}

std::vector<double> zd_scores(const VariantDb& db, const Model& base) {
  std::map<std::string, const Tensor*> by;
  for (const Tensor* t : base.weight_tensors()) by[t->name] = t;
  std::vector<double> out;
  for (const auto& name : db.table.names) {
    const std::vector<float> w = tensor_to_f32(*by.at(name));
    double s = 0, s2 = 0;
    for (float x : w) s += x, s2 += double(x) * x;
    const double mean = s / double(w.size()), sd = std::sqrt(std::max(0.0, s2 / double(w.size()) - mean * mean));
    size_t beyond = 0;
    for (float x : w) beyond += std::abs(double(x) - mean) > sd;
    out.push_back(double(beyond) / double(w.size()));
  }
  return out;
}

const AllocatorInfo& find_allocator(const std::string& name) {
  std::string names;
  for (const auto& a : allocator_registry()) {
    if (name == a.name) return a;
    names += names.empty() ? a.name : std::string(", ") + a.name;
  }
  fail("allocator", "unknown allocator '" + name + "' (one of: " + names + ")");
}

}  // namespace lmpress
