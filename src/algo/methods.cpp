// THE method registry: one entry per method with its options, the statistics it needs and its
// entry point (compress.h MethodInfo). A recipe rule's chain ("awq+gptq") is resolved here; each
// option of the rule is handed to the chain's methods and must be taken by one of them.
#include <algorithm>
#include <cmath>

#include "formats/composite.h"
#include "formats/trellis.h"
#include "lmpress/compress.h"

namespace lmpress {

// awq.cpp, smoothquant.cpp
void awq_transform(StepContext& ctx);
void smoothquant_transform(StepContext& ctx);

namespace {

bool parse_double(const std::string& val, double lo, double hi, double* out) {
  try {
    size_t used = 0;
    const double v = std::stod(val, &used);
    if (used != val.size() || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
  } catch (const std::logic_error&) {
    return false;
  }
}

[[noreturn]] void bad_value(const std::string& key, const std::string& val, const std::string& want) {
  fail("recipe", "option '" + key + "=" + val + "': " + want);
}

std::vector<double> diag_of(const std::vector<double>& H, int64_t n) {
  std::vector<double> d(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) d[size_t(i)] = H[size_t(i * n + i)];
  return d;
}

// Sensitivity: SqueezeLLM weighs k-means by the Fisher information; lmpress has no backward
// pass yet, so by the activation second moment diag(H) (docs/methods.md, deviation).
std::vector<double> sensitivity(const RoundArgs& a) {
  if (a.stats && !a.stats->diag.empty()) return a.stats->diag;
  if (a.H) return diag_of(*a.H, a.cols);
  fail("squeezellm", "squeezellm needs calibration data (--calib FILE)");
}

// Per-row tables (lut) are fitted before the sweep by k-means over the original row: unweighted,
// or weighted by squeezellm's sensitivity in the chains squeezellm+gptq / squeezellm+quantease.
// llama.cpp's block types (ggml family) fit their block scales weighted by the input's second
// moment diag(H) when calibration data is there (what llama.cpp's importance matrix holds).
std::vector<double> grid_fit_importance(const RoundArgs& a) {
  for (const std::string& m : a.rule->chain)
    if (m != a.rule->rounding() && find_method(m).fits_grid) return sensitivity(a);
  if (a.rule->spec.family == FormatFamily::Ggml) {
    if (a.stats && !a.stats->diag.empty()) return a.stats->diag;
    if (a.H) return diag_of(*a.H, a.cols);
  }
  return {};
}

// ---- nupes / bitmod: grid choices made before the rounding ----
// The grid the rounding method quantizes onto: the rule's format, with the pow exponent searched
// by nupes when the chain holds it (nupes alone, nupes+gptq, nupes+quantease).
QuantSpec chosen_spec(const RoundArgs& a) {
  QuantSpec s = a.rule->spec;
  if (!a.rule->has("nupes")) return s;
  const std::vector<double>* H = nullptr;
  std::vector<double> hd;
  const NupesErr e = a.rule->nupes_err;
  if (e == NupesErr::Full && a.H) H = a.H;
  else if (e != NupesErr::Mse && (a.H || (a.stats && !a.stats->diag.empty())))
    hd = a.stats && !a.stats->diag.empty() ? a.stats->diag : diag_of(*a.H, a.cols);
  // the full-H error on at most 256 evenly spaced rows per candidate
  s.param = nupes_search(a.w, a.rows, a.cols, s, H, hd.empty() ? nullptr : hd.data(), nullptr, 256);
  log_debug("nupes [%lld x %lld] %s: exponent %.2f", (long long)a.rows, (long long)a.cols, format_name(a.rule->spec).c_str(),
            s.param / 100.0);
  return s;
}

bool nupes_option(TensorRule& r, const std::string& k, const std::string& v) {
  if (k == "err" && !v.empty()) {
    if (v == "full") r.nupes_err = NupesErr::Full;
    else if (v == "diag") r.nupes_err = NupesErr::Diag;
    else if (v == "mse") r.nupes_err = NupesErr::Mse;
    else bad_value(k, v, "err is full, diag or mse");
    return true;
  }
  return false;
}
void nupes_check(const TensorRule& r) {
  if (r.spec.family != FormatFamily::Pow)
    fail("recipe", "nupes searches the exponent of a power grid: use the format pow3g<G> or pow4g<G>, not " + format_name(r.spec));
  if (r.spec.param != 0)
    fail("recipe", "nupes searches the exponent: name the format without one (" +
                       format_name(QuantSpec{r.spec.bits, r.spec.group, true, FormatFamily::Pow}) + ", not " + format_name(r.spec) + ")");
  if (r.spec.sparse) fail("recipe", "nupes does not search with sparse outliers: use a pow format without +s");
}
QuantizedMatrix nupes_round(const RoundArgs& a) {
  return quantize_rtn(a.w, a.rows, a.cols, chosen_spec(a), false, nullptr);
}

void bitmod_check(const TensorRule& r) {
  if (r.spec.family != FormatFamily::Bitmod)
    fail("recipe", "bitmod chooses a datatype per group: use the format bitmod3g<G> or bitmod4g<G>, not " + format_name(r.spec));
}
// Each group's datatype by least diag(H)-weighted error (plain squared error without calibration,
// as BitMoD's reference), then round to nearest.
QuantizedMatrix bitmod_round(const RoundArgs& a) {
  std::vector<double> imp;
  if (a.stats && !a.stats->diag.empty()) imp = a.stats->diag;
  else if (a.H) imp = diag_of(*a.H, a.cols);
  return quantize_rtn(a.w, a.rows, a.cols, a.rule->spec, false, nullptr, false, imp.empty() ? nullptr : imp.data());
}

// ---- llmfp4 ----
bool llmfp4_option(TensorRule& r, const std::string& k, const std::string& v) {
  double x = 0;
  if (k == "n" && !v.empty()) {
    if (!parse_double(v, 1, 10000, &x) || x != std::floor(x)) bad_value(k, v, "n must be an integer in [1, 10000]");
    r.llmfp4.n = int(x);
    return true;
  }
  if (k == "rounds" && !v.empty()) {
    if (!parse_double(v, 0, 100, &x) || x != std::floor(x)) bad_value(k, v, "rounds must be an integer in [0, 100]");
    r.llmfp4.rounds = int(x);
    return true;
  }
  if (k == "search" && v.empty()) {
    r.llmfp4.search = true;
    return true;
  }
  return false;
}
void llmfp4_check(const TensorRule& r) {
  if (r.spec.family != FormatFamily::FP4)
    fail("recipe", "llmfp4 searches the exponent bias of minifloats: use an fp format (fp4g<G>, fp3g<G>, fp4e3m0g<G>, ...), not " +
                       format_name(r.spec));
}
QuantizedMatrix llmfp4_round(const RoundArgs& a) {
  if (!a.H) fail("llmfp4", "llmfp4 needs calibration data (--calib FILE)");
  std::vector<QuantSpec> cands{a.rule->spec};
  if (a.rule->llmfp4.search) {  // every split of the bit width (the rule's first: it wins ties)
    for (int e : {0, 1, 3}) {
      QuantSpec c = a.rule->spec;
      c.variant = e;
      bool valid = true;
      try {
        (void)format_id(c);
      } catch (const Error&) {
        valid = false;
      }
      if (c != a.rule->spec && valid) cands.push_back(c);
    }
  }
  QuantizedMatrix best;
  double best_e = INFINITY;
  for (const QuantSpec& c : cands) {
    double e0 = 0, e1 = 0;
    QuantizedMatrix q = quantize_llmfp4(a.w, a.rows, a.cols, c, *a.H, a.rule->llmfp4, *a.pool, &e0, &e1);
    log_debug("llmfp4 [%lld x %lld] %s: layer error %.6g (min-max) -> %.6g (searched bias)", (long long)a.rows,
              (long long)a.cols, format_name(c).c_str(), e0, e1);
    if (e1 < best_e) {
      best_e = e1;
      best = std::move(q);
    }
  }
  return best;
}

// ---- slim (SliM-LLM) ----
bool slim_option(TensorRule& r, const std::string& k, const std::string& v) {
  double x = 0;
  if (k == "beta" && !v.empty()) {
    if (!parse_double(v, 0, 1e6, &x) || x != std::floor(x)) bad_value(k, v, "beta must be an integer >= 0");
    r.slim.beta = int(x);
    return true;
  }
  if (k == "damp" && !v.empty()) {
    if (!parse_double(v, 0, 1, &r.gptq.damp)) bad_value(k, v, "damp must be in [0, 1]");
    return true;
  }
  if (k == "mse" && v.empty()) return r.gptq.mse = true;  // GPTQ's mse range search instead of SQC
  return false;
}
void slim_check(const TensorRule& r) {
  if (r.spec.family != FormatFamily::Slim)
    fail("recipe", "slim allocates bits to column groups: use a slim format (slim2g128, slim3g64, ...), not " + format_name(r.spec));
}
QuantizedMatrix slim_round(const RoundArgs& a) {
  if (!a.H) fail("slim", "slim needs calibration data (--calib FILE)");
  const InputStats* st = a.stats;
  const bool has = st && st->sample_rows > 0 && int64_t(st->samples.size()) >= st->sample_rows * a.cols;
  if (a.rule->slim.beta < 0 && !has) fail("slim", "the bit allocation search needs samples of the layer's input (internal)");
  int64_t beta = 0;
  QuantizedMatrix q = quantize_slim(a.w, a.rows, a.cols, a.rule->spec, *a.H, has ? st->samples.data() : nullptr,
                                    has ? st->sample_rows : 0, a.rule->gptq, a.rule->slim, *a.pool, &beta);
  log_debug("slim [%lld x %lld] %s: %lld groups at %d bits and %lld at %d", (long long)a.rows, (long long)a.cols,
            format_name(a.rule->spec).c_str(), (long long)beta, a.rule->spec.bits - 1, (long long)beta, a.rule->spec.bits + 1);
  return q;
}

// ---- mixllm (MixLLM within a tensor) ----
bool mixllm_option(TensorRule& r, const std::string& k, const std::string& v) {
  if (k == "mse" && v.empty()) return r.gptq.mse = true;
  if (k == "damp" && !v.empty()) {
    if (!parse_double(v, 0, 1, &r.gptq.damp)) bad_value(k, v, "damp must be in [0, 1]");
    return true;
  }
  return false;
}
void mixllm_check(const TensorRule& r) {
  if (r.spec.family != FormatFamily::Mix)
    fail("recipe", "mixllm splits output features between two int formats: use a mix format (mixw4g64a_w8row_p100, "
                   "...), not " + format_name(r.spec));
}
QuantizedMatrix mixllm_round(const RoundArgs& a) {
  if (!a.H) fail("mixllm", "mixllm needs calibration data (--calib FILE)");
  return quantize_mixllm(a.w, a.rows, a.cols, a.rule->spec, *a.H, a.rule->gptq, *a.pool);
}

// ---- rtn ----
bool rtn_option(TensorRule& r, const std::string& k, const std::string& v) {
  if (k == "clip" && v.empty()) return r.clip = true;
  if (k == "beta" && !v.empty() && r.spec.family == FormatFamily::Slim) {  // slim: fixed +-1 groups
    double x = 0;
    if (!parse_double(v, 0, 1e6, &x) || x != std::floor(x)) bad_value(k, v, "beta must be an integer >= 0");
    r.slim.beta = int(x);
    return true;
  }
  if (k == "mse" && v.empty()) return r.gptq.mse = true;
  return false;
}
void rtn_check(const TensorRule& r) {
  if (r.clip && r.gptq.mse) fail("recipe", "clip and mse are alternative parameter searches; use one");
  if ((r.clip || r.gptq.mse) && (r.spec.family == FormatFamily::Mix || r.spec.family == FormatFamily::Slim))
    fail("recipe", format_name(r.spec) + ": rtn rounds composite formats by plain min-max (clip and mse do not apply)");
  if ((r.clip || r.gptq.mse) && r.spec.family == FormatFamily::Trellis)
    fail("recipe", format_name(r.spec) + " has no range to search: clip and mse do not apply");
  if ((r.clip || r.gptq.mse) && !make_grid(r.spec)->has_range())
    fail("recipe", format_name(r.spec) + " has no range to search: clip and mse do not apply");
}
QuantizedMatrix rtn_round(const RoundArgs& a) {
  // composites (mix, slim): their parts' RTN (formats/composite.h)
  if (a.rule->spec.family == FormatFamily::Mix || a.rule->spec.family == FormatFamily::Slim)
    return composite::quantize_rtn(a.w, a.rows, a.cols, a.rule->spec, a.rule->slim.beta);
  // trellis: every tile Viterbi-coded on its own (no grid, no feedback)
  if (a.rule->spec.family == FormatFamily::Trellis) return trellis::quantize_rtn(a.w, a.rows, a.cols, a.rule->spec, a.pool);
  // The clip search weighs each weight's error by diag(H) when calibration is there.
  std::vector<double> hd;
  if (a.rule->clip && a.H) hd = diag_of(*a.H, a.cols);
  const std::vector<double> imp = grid_fit_importance(a);
  return quantize_rtn(a.w, a.rows, a.cols, a.rule->spec, a.rule->clip, hd.empty() ? nullptr : hd.data(),
                      a.rule->gptq.mse, imp.empty() ? nullptr : imp.data());
}

// ---- gptq ----
bool gptq_option(TensorRule& r, const std::string& k, const std::string& v) {
  GptqOptions& g = r.gptq;
  if (k == "act_order" && v.empty()) return g.act_order = true;
  if (k == "static_groups" && v.empty()) return g.static_groups = true;
  if (k == "mse" && v.empty()) return g.mse = true;
  if (k == "damp" && !v.empty()) {
    if (!parse_double(v, 0, 10 - 1e-12, &g.damp)) bad_value(k, v, "damp must be in [0, 10)");
    return true;
  }
  if (k == "emb" && !v.empty()) {
    if (!parse_double(v, 0, 1000, &g.emb)) bad_value(k, v, "emb must be in [0, 1000]");
    return true;
  }
  if (k == "block" && !v.empty()) {
    double b = 0;
    if (!parse_double(v, 1, 65536, &b) || b != std::floor(b)) bad_value(k, v, "block must be an integer in [1, 65536]");
    g.block = int64_t(b);
    return true;
  }
  return false;
}
void gptq_check(const TensorRule& r) {
  if (r.gptq.mse && !make_grid(r.spec)->has_range())
    fail("recipe", format_name(r.spec) + " has no range to search: mse does not apply");
}
QuantizedMatrix gptq_round(const RoundArgs& a) {
  if (!a.H) fail("gptq", "gptq needs calibration data (--calib FILE)");
  const std::vector<double> imp = grid_fit_importance(a);
  // Sparse outliers: GPTQ sees the original weights and keeps the outliers exact in its sweep.
  return quantize_gptq(a.keep ? a.orig_w : a.w, a.rows, a.cols, chosen_spec(a), *a.H, a.rule->gptq, *a.pool,
                       imp.empty() ? nullptr : imp.data(), a.keep, a.kept);
}

// ---- quantease ----
// Its own options, and those of its init (gptq's, or rtn's clip / mse with init=rtn).
bool quantease_option(TensorRule& r, const std::string& k, const std::string& v) {
  if (k == "iters" && !v.empty()) {
    double it = 0;
    if (!parse_double(v, 0, 1000, &it) || it != std::floor(it)) bad_value(k, v, "iters must be an integer in [0, 1000]");
    r.quantease.iters = int(it);
    return true;
  }
  if (k == "init" && !v.empty()) {
    if (v != "gptq" && v != "rtn") bad_value(k, v, "init is gptq or rtn");
    r.quantease.init_rtn = v == "rtn";
    return true;
  }
  return gptq_option(r, k, v) || rtn_option(r, k, v);
}
void quantease_check(const TensorRule& r) {
  if (r.spec.sparse)
    fail("recipe", "quantease does not keep sparse outliers in its passes yet: use a format without +s (or gptq)");
  const GptqOptions d;
  const GptqOptions& g = r.gptq;
  if (r.quantease.init_rtn) {
    if (g.damp != d.damp || g.block != d.block || g.static_groups || g.emb != d.emb)
      fail("recipe", "damp, block, static_groups and emb set up the gptq init; they do not apply with init=rtn");
    rtn_check(r);
  } else {
    if (r.clip) fail("recipe", "clip is an option of the rtn init (init=rtn); gptq's range search is mse");
    gptq_check(r);
  }
}
QuantizedMatrix quantease_round(const RoundArgs& a) {
  if (!a.H) fail("quantease", "quantease needs calibration data (--calib FILE)");
  const TensorRule& r = *a.rule;
  const std::vector<double> imp = grid_fit_importance(a);
  const double* fit = imp.empty() ? nullptr : imp.data();
  QuantizedMatrix init;
  if (r.quantease.init_rtn) {
    const std::vector<double> hd = r.clip ? diag_of(*a.H, a.cols) : std::vector<double>{};
    init = quantize_rtn(a.w, a.rows, a.cols, chosen_spec(a), r.clip, hd.empty() ? nullptr : hd.data(), r.gptq.mse, fit);
  } else {
    init = quantize_gptq(a.w, a.rows, a.cols, chosen_spec(a), *a.H, r.gptq, *a.pool, fit);
  }
  std::vector<double> f;
  QuantizedMatrix q = quantease_refine(a.w, a.rows, a.cols, init, *a.H, r.quantease.iters, r.gptq.act_order, *a.pool, &f);
  log_debug("quantease [%lld x %lld] %s: objective %.6g (%s init) -> %.6g after %d passes", (long long)a.rows,
            (long long)a.cols, format_name(r.spec).c_str(), f.front(), r.quantease.init_rtn ? "rtn" : "gptq", f.back(),
            r.quantease.iters);
  return q;
}

// ---- squeezellm ----
bool no_option(TensorRule&, const std::string&, const std::string&) { return false; }
void squeezellm_check(const TensorRule& r) {
  if (r.spec.family != FormatFamily::Lut)
    fail("recipe", "squeezellm quantizes onto per-row tables: use the format lut3 or lut4, not " + format_name(r.spec));
}
QuantizedMatrix squeezellm_round(const RoundArgs& a) {
  const std::vector<double> imp = sensitivity(a);
  return quantize_rtn(a.w, a.rows, a.cols, a.rule->spec, false, nullptr, false, imp.data());
}

// ---- easyquant ----
bool easyquant_option(TensorRule& r, const std::string& k, const std::string& v) {
  if (k == "steps" && !v.empty()) {
    double n = 0;
    if (!parse_double(v, 0, 100000, &n) || n != std::floor(n)) bad_value(k, v, "steps must be an integer in [0, 100000]");
    r.easyquant_steps = int(n);
    return true;
  }
  return false;
}
void easyquant_check(const TensorRule& r) {
  if (!make_grid(r.spec)->has_range())
    fail("recipe", format_name(r.spec) + " has no range to optimise: easyquant does not apply");
}
QuantizedMatrix easyquant_round(const RoundArgs& a) {
  return quantize_easyquant(a.w, a.rows, a.cols, a.rule->spec, a.rule->easyquant_steps, *a.pool);
}

// ---- spqr ----
bool spqr_option(TensorRule& r, const std::string& k, const std::string& v) {
  SpqrOptions& o = r.spqr;
  if (k == "tau" && !v.empty()) {
    if (!parse_double(v, 0, 1e12, &o.tau)) bad_value(k, v, "tau must be in [0, 1e12]");
    return true;
  }
  if (k == "damp" && !v.empty()) {
    if (!parse_double(v, 0, 10 - 1e-12, &o.damp)) bad_value(k, v, "damp must be in [0, 10)");
    return true;
  }
  if (k == "emb" && !v.empty()) {
    if (!parse_double(v, 0, 1000, &r.gptq.emb)) bad_value(k, v, "emb must be in [0, 1000]");
    return true;
  }
  return false;
}
void spqr_check(const TensorRule& r) {
  if (r.spec.family != FormatFamily::Spqr)
    fail("recipe", "spqr quantizes onto its own formats (spqr3g16, spqr3g32r32, ... with outliers +s<percent>), not " +
                       format_name(r.spec));
  if (r.spqr.tau >= 0 && !r.spec.sparse)
    fail("recipe", "tau is the outlier threshold: it needs a format with outliers (" + format_name(r.spec) + "+s0.50)");
}
QuantizedMatrix spqr_round(const RoundArgs& a) {
  if (!a.H) fail("spqr", "spqr needs calibration data (--calib FILE)");
  int sweeps = 0;
  QuantizedMatrix q = quantize_spqr(a.w, a.rows, a.cols, a.rule->spec, *a.H, a.rule->spqr, *a.pool, &sweeps);
  log_debug("spqr [%lld x %lld] %s: %d sweep(s), %zu outliers", (long long)a.rows, (long long)a.cols,
            format_name(a.rule->spec).c_str(), sweeps, q.sp_idx.size());
  return q;
}

// ---- vptq ----
bool vptq_option(TensorRule& r, const std::string& k, const std::string& v) {
  VptqOptions& o = r.vptq;
  auto integer = [&](double lo, double hi, double* out) {
    if (!parse_double(v, lo, hi, out) || *out != std::floor(*out))
      bad_value(k, v, k + " must be an integer in [" + std::to_string(int64_t(lo)) + ", " + std::to_string(int64_t(hi)) + "]");
  };
  double x = 0;
  if (k == "iters" && !v.empty()) return integer(0, 1000, &x), o.iters = int(x), true;
  if (k == "seed" && !v.empty()) return integer(0, 1e9, &x), o.seed = uint64_t(x), true;
  if (k == "refine" && !v.empty()) return integer(0, 20, &x), o.refine = int(x), true;
  if (k == "block" && !v.empty()) return integer(1, 65536, &x), o.block = int64_t(x), true;
  if (k == "act_order" && v.empty()) return o.act_order = true;
  if (k == "damp" && !v.empty()) {
    if (!parse_double(v, 0, 10 - 1e-12, &o.damp)) bad_value(k, v, "damp must be in [0, 10)");
    return true;
  }
  if (k == "emb" && !v.empty()) {
    if (!parse_double(v, 0, 1000, &r.gptq.emb)) bad_value(k, v, "emb must be in [0, 1000]");
    return true;
  }
  return false;
}
void vptq_check(const TensorRule& r) {
  if (r.spec.family != FormatFamily::Vq)
    fail("recipe", "vptq quantizes onto vector codebooks: use a vq format (vq4k8, vq8k8r8n, ...), not " + format_name(r.spec));
}
QuantizedMatrix vptq_round(const RoundArgs& a) {
  if (!a.H) fail("vptq", "vptq needs calibration data (--calib FILE)");
  return quantize_vptq(a.w, a.rows, a.cols, a.rule->spec, *a.H, a.rule->vptq, *a.pool);
}

// ---- qtip ----
bool qtip_option(TensorRule& r, const std::string& k, const std::string& v) {
  if (k == "damp" && !v.empty()) {
    if (!parse_double(v, 0, 10 - 1e-12, &r.qtip.damp)) bad_value(k, v, "damp must be in [0, 10)");
    return true;
  }
  if (k == "emb" && !v.empty()) {
    if (!parse_double(v, 0, 1000, &r.gptq.emb)) bad_value(k, v, "emb must be in [0, 1000]");
    return true;
  }
  return false;
}
void qtip_check(const TensorRule& r) {
  if (r.spec.family != FormatFamily::Trellis)
    fail("recipe", "qtip quantizes onto trellis codes: use a trellis format (trellis2, trellis3, trellis4), not " +
                       format_name(r.spec));
}
QuantizedMatrix qtip_round(const RoundArgs& a) {
  return quantize_qtip(a.w, a.rows, a.cols, a.rule->spec, a.H, a.rule->qtip, *a.pool);
}

// ---- pbllm ----
// PB-LLM (Shang et al. 2023): the +s salient weights (chosen in pipeline.cpp round_with_outliers by
// the Hessian criterion w^2 / U_jj^2, or |w| with salient=magnitude) stay in f16, the rest is
// binarized with GPTQ's error feedback (PB-GPTQ); alpha per group is the mean |w| (binary.cpp).
bool pbllm_option(TensorRule& r, const std::string& k, const std::string& v) {
  if (k == "salient" && !v.empty()) {
    if (v != "hessian" && v != "magnitude") bad_value(k, v, "salient is hessian or magnitude");
    r.pb_magnitude = v == "magnitude";
    return true;
  }
  if (k == "damp" || k == "block" || k == "emb") return gptq_option(r, k, v);
  return false;
}
void pbllm_check(const TensorRule& r) {
  if (r.spec.family != FormatFamily::Binary)
    fail("recipe", "pbllm binarizes: use a binary format (b1g128+s1.00, b1row+s0.50, ...), not " + format_name(r.spec));
  if (r.pb_magnitude && !r.spec.sparse)
    fail("recipe", "salient=magnitude chooses the salient weights: it needs a format with them (" + format_name(r.spec) +
                       "+s1.00)");
}
QuantizedMatrix pbllm_round(const RoundArgs& a) {
  if (!a.H) fail("pbllm", "pbllm needs calibration data (--calib FILE)");
  return quantize_gptq(a.keep ? a.orig_w : a.w, a.rows, a.cols, a.rule->spec, *a.H, a.rule->gptq, *a.pool, nullptr,
                       a.keep, a.kept);
}

// ---- awq ----
bool awq_option(TensorRule& r, const std::string& k, const std::string& v) {
  if (k == "grid" && !v.empty()) {
    double g = 0;
    if (!parse_double(v, 1, 1000, &g) || g != std::floor(g)) bad_value(k, v, "grid must be an integer in [1, 1000]");
    r.awq.grid = int(g);
    return true;
  }
  if (k == "noclip" && v.empty()) {
    r.awq.clip = false;
    return true;
  }
  return false;
}
void nothing_to_check(const TensorRule&) {}

// ---- smoothquant ----
bool smoothquant_option(TensorRule& r, const std::string& k, const std::string& v) {
  if (k == "grid" && !v.empty()) {
    double g = 0;
    if (!parse_double(v, 1, 1000, &g) || g != std::floor(g)) bad_value(k, v, "grid must be an integer in [1, 1000]");
    r.smooth.grid = int(g);
    return true;
  }
  if (k == "alpha" && !v.empty()) {
    if (!parse_double(v, 0, 1, &r.smooth.alpha)) bad_value(k, v, "alpha must be in [0, 1]");
    return true;
  }
  return false;
}
void smoothquant_check(const TensorRule& r) {
  if (r.has("awq"))
    fail("recipe", "awq and smoothquant both choose the input scales; use one of them in a chain");
}

// ---- quarot ----
// The rotation itself runs once per model in the pipeline (quarot.cpp), not per input: no entry.
bool quarot_option(TensorRule& r, const std::string& k, const std::string& v) {
  if (k == "seed" && !v.empty()) {
    double x = 0;
    if (!parse_double(v, 0, 1e9, &x) || x != std::floor(x)) bad_value(k, v, "seed must be an integer in [0, 1000000000]");
    r.quarot.seed = uint64_t(x);
    return true;
  }
  if (k == "noheads" && v.empty()) {
    r.quarot.heads = false;
    return true;
  }
  return false;
}
void quarot_check(const TensorRule& r) {
  if (r.chain.empty() || r.chain.front() != "quarot")
    fail("recipe", "quarot rotates the model the other transforms then see: put it first in the chain (quarot+" +
                       r.chain.front() + "+...)");
}

const std::vector<MethodInfo> kMethods = {
    {"rtn", "round to nearest on the format's grid (optional clip / mse range searches)", true, false, 0,
     "clip, mse, beta=N (slim formats)",
     rtn_option, rtn_check, rtn_round, nullptr},
    {"gptq", "GPTQ: Hessian-aware rounding with error feedback (Frantar et al. 2023)", true, false, kStatHessian,
     "act_order, static_groups, mse, damp=F, block=N, emb=F", gptq_option, gptq_check, gptq_round, nullptr},
    {"quantease", "QuantEase: cyclic coordinate descent on the layer objective from a gptq (or rtn) rounding (Behdin et al. 2023)",
     true, false, kStatHessian,
     "iters=N, init=gptq|rtn; the init's options: act_order, static_groups, mse, damp=F, block=N, emb=F (gptq), clip (rtn)",
     quantease_option, quantease_check, quantease_round, nullptr},
    {"squeezellm", "SqueezeLLM: sensitivity-weighted k-means per row onto lut3/lut4 (Kim et al. 2024); squeezellm+gptq: its tables, GPTQ rounding", true,
     true, kStatDiag, "(none)", no_option, squeezellm_check, squeezellm_round, nullptr},
    {"nupes", "NUPES: power grid sign(u)|u|^(1/a), the exponent searched per tensor on the layer error, onto pow3/pow4 "
     "(Yvinec et al. 2023); nupes+gptq: that grid, GPTQ rounding", true, true, kStatHessian, "err=full|diag|mse",
     nupes_option, nupes_check, nupes_round, nullptr},
    {"bitmod", "BitMoD: per group one of four FP3/FP4 datatypes with a special value, chosen by diag(H)-weighted error "
     "(Chen et al. 2025); bitmod+gptq: GPTQ rounding onto the group's datatype", true, true, kStatDiag, "(none)",
     no_option, bitmod_check, bitmod_round, nullptr},
    {"llmfp4", "LLM-FP4: minifloats (fp4g<G>, fp3g<G>, ...) with a real-valued exponent bias per output channel and group, searched on "
     "the layer output error; `search`: the exponent/mantissa split per tensor too (Liu et al. 2023)", true, false,
     kStatHessian, "n=N, rounds=N, search", llmfp4_option, llmfp4_check,
     llmfp4_round, nullptr},
    {"easyquant", "EasyQuant: data-free; outliers apart (+s), each group's range optimised by gradient descent "
     "on the reconstruction error (Tang et al. 2023)", true, false, 0, "steps=N", easyquant_option, easyquant_check,
     easyquant_round, nullptr},
    {"spqr", "SpQR: its GPTQ sweep onto spqr formats (3-bit statistics of small groups), outliers by "
     "leave-one-out GPTQ loss kept in f16 (Dettmers et al. 2023)", true, false, kStatHessian, "tau=F, damp=F, emb=F",
     spqr_option, spqr_check, spqr_round, nullptr},
    {"vptq", "VPTQ: vectors of a column's rows into a per-tensor codebook (H_jj-weighted k-means, optional residual "
     "stage), GPTQ's column-by-column error feedback, onto vq formats (Liu et al. 2024)", true, false, kStatHessian,
     "iters=N, damp=F, seed=N, block=N, act_order, refine=N, emb=F", vptq_option, vptq_check, vptq_round, nullptr},
    {"qtip", "QTIP: bitshift-trellis codes (L = 16, tail-biting Viterbi per 16 x 16 tile) with LDLQ block error "
     "feedback, onto trellis formats (Tseng et al. 2024); use +h for its incoherence processing", true, false, kStatHessian,
     "damp=F, emb=F", qtip_option, qtip_check, qtip_round, nullptr},
    {"slim", "SliM-LLM: column groups at N-1 / N / N+1 bits by salience (SBA: the split with the least output KL), "
     "GPTQ with salience-weighted range search (SQC) onto slim formats (Huang et al. 2024)", true, false,
     kStatHessian | kStatSamples, "beta=N, damp=F, mse", slim_option, slim_check, slim_round, nullptr},
    {"mixllm", "MixLLM within a tensor: the output features whose GPTQ error d H d^T falls most go to the high int "
     "format of a mix format (Zheng et al. 2024; globally: quantize --allocator mixllm)", true, false, kStatHessian,
     "mse, damp=F", mixllm_option, mixllm_check, mixllm_round, nullptr},
    {"pbllm", "PB-LLM: partial binarization: salient weights (+s, Hessian criterion) in f16, the rest binarized "
     "with GPTQ error feedback (Shang et al. 2023)", true, false, kStatHessian, "salient=hessian|magnitude, damp=F, block=N, emb=F",
     pbllm_option, pbllm_check, pbllm_round, nullptr},
    {"awq", "AWQ: activation-aware per-channel scales folded into the producer, and clipping (Lin et al. 2024)",
     false, false, kStatMeanAbs | kStatSamples | kStatHessian, "grid=N, noclip", awq_option, nothing_to_check, nullptr,
     awq_transform},
    {"smoothquant", "SmoothQuant+: per-channel smoothing max|x|^a / max|w|^(1-a) folded into the producer, a searched (Pan et al. 2023)",
     false, false, kStatMaxAbs | kStatSamples, "grid=N, alpha=F", smoothquant_option, smoothquant_check, nullptr,
     smoothquant_transform},
    {"quarot", "QuaRot: the residual stream rotated by a random Hadamard, norms folded, classifier untied (and each "
     "head's v/o space rotated); the float model is unchanged (Ashkboos et al. 2024)",
     false, false, 0, "seed=N, noheads", quarot_option, quarot_check, nullptr, nullptr},
};

}  // namespace

const std::vector<MethodInfo>& method_registry() { return kMethods; }

const MethodInfo& find_method(const std::string& name) {
  for (const auto& m : kMethods)
    if (name == m.name) return m;
  std::string list;
  for (const auto& m : kMethods) list += (list.empty() ? "" : ", ") + std::string(m.name);
  fail("recipe", "unknown method '" + name + "' (" + list + ")");
}

bool TensorRule::has(const std::string& m) const { return std::find(chain.begin(), chain.end(), m) != chain.end(); }

const std::string& TensorRule::rounding() const {
  static const std::string none;
  return chain.empty() ? none : chain.back();
}

uint32_t TensorRule::stats() const {
  uint32_t s = 0;
  for (const auto& m : chain) {
    // nupes's statistics follow its search error: err=diag needs diag(H) only, err=mse none (data-free
    // unless another method of the chain, e.g. gptq, needs calibration)
    if (m == "nupes" && nupes_err != NupesErr::Full) {
      s |= nupes_err == NupesErr::Diag ? uint32_t(kStatDiag) : 0u;
      continue;
    }
    s |= find_method(m).stats;
  }
  // +h: the rounding sees the rotated input, whose diag(H) needs the whole H
  if (spec.rht && (s & kStatDiag)) s |= kStatHessian;
  return s;
}

}  // namespace lmpress
