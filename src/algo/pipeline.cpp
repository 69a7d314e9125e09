// The quantize pipeline (GPTQ protocol): run the model block by block over calibration windows,
// feeding each block the outputs of the already-quantized blocks before it; per block:
//   1. transform pass (only when a rule holds a transform method, e.g. awq): capture the
//      statistics of all four inputs with the block as it is, let each transform rewrite the
//      tensors reading an input and fold the inverse into the model (norm weights, v, up);
//   2. quantization passes (true-sequential: q/k/v, then o, then gate/up, then down): capture the
//      statistics the rules of the pass need (through the engine's hooks), round each tensor with
//      its rule's rounding method;
//   3. propagate the calibration streams through the finished block, then hand its tensors to the
//      sink (streaming output) and drop them.
// Peak memory is one block's working set (statistics, method buffers, calibration streams), not
// the model: finished tensors leave as they are done.
#include "algo/pipeline_internal.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>
#include <set>

#include "lmpress/engine.h"

namespace lmpress {

namespace {

constexpr int64_t kErrorRows = 256;  // rows sampled for the per-layer proxy error in the report

Model clone_model(const Model& src) {
  Model m;
  m.cfg = src.cfg;
  m.tok_embd = src.tok_embd;
  m.layers = src.layers;
  m.out_norm = src.out_norm;
  m.output = src.output;
  if (src.tokenizer) m.tokenizer = std::make_unique<Tokenizer>(src.tokenizer->vocab());
  m.path = src.path;
  m.format = src.format;
  m.file_bytes = src.file_bytes;
  m.files = src.files;
  m.metadata = src.metadata;
  return m;
}

// A linear-layer input of a block and the tensors reading it, in true-sequential order, with
// where a per-channel scale of the input folds (docs/architecture.md, "Transforms").
struct Step {
  const char* input;
  std::vector<Tensor LayerWeights::*> tensors;
  Tensor LayerWeights::*norm;      // RMSNorm producing the input, or null
  Tensor LayerWeights::*producer;  // linear whose rows are the input channels, or null
  Tensor LayerWeights::*producer_bias;
};
// From the architecture table: its inputs in order, each with the per-layer linear rows reading it.
std::vector<Step> steps_of(const ArchInfo& ai) {
  std::vector<Step> out;
  auto member = [&](const char* key) -> Tensor LayerWeights::* {
    return key ? arch_tensor(ai, key).member : nullptr;
  };
  for (const ArchInput& in : ai.inputs) {
    Step s{in.name, {}, member(in.norm), member(in.producer), member(in.producer_bias)};
    for (const ArchTensor& at : ai.tensors)
      if (at.role == TensorRole::Linear && arch_per_layer(at) && at.input && std::string(at.input) == in.name)
        s.tensors.push_back(at.member);
    LMP_ASSERT(!s.tensors.empty());
    out.push_back(std::move(s));
  }
  return out;
}

struct Rounded {
  Tensor t;
  LayerReport rep;
};

// The calibration engine (one window of seqlen tokens at a time) and the residual streams entering
// block 0, one [seqlen, dim] per window: the start of every calibrated pass (quantize, variant database).
EngineOptions calib_engine_options(const ThreadPool& pool, int64_t seqlen) {
  EngineOptions eo;
  eo.n_threads = pool.size();
  eo.n_ctx = int32_t(seqlen);
  return eo;
}
std::vector<std::vector<float>> embed_windows(Engine& eng, const std::vector<std::vector<int32_t>>& windows,
                                              int64_t seqlen, int64_t dim) {
  std::vector<std::vector<float>> X(windows.size());
  for (size_t w = 0; w < windows.size(); ++w) {
    X[w].resize(size_t(seqlen * dim));
    eng.embed(windows[w].data(), seqlen, X[w].data());
  }
  return X;
}

// Dense-and-sparse (formats with +s): the sparse_count(spec) weights of largest |w_ij| * sqrt(H_jj)
// (magnitude times the input's RMS: the output change their removal causes; plain magnitude
// without calibration) are kept apart. The rounding method quantizes the dense part on the
// format without +s with those weights out of the ranges (zeroed; gptq also keeps them exact in
// its sweep, so its error feedback accounts for them), then each outlier's f16 value is what
// its weight needs on top of its dense code.
QuantizedMatrix round_with_outliers(const RoundArgs& args, const std::vector<float>& w) {
  const int64_t rows = args.rows, cols = args.cols, N = rows * cols;
  const QuantSpec full = args.rule->spec;
  const int64_t nnz = sparse_count(full, rows, cols);
  // score: |w| * sqrt(H_jj) with calibration; data-free, the weight's z-score in its row
  // (EasyQuant's n-sigma criterion as a ranking)
  std::vector<double> colw(static_cast<size_t>(cols), 1.0), mean(static_cast<size_t>(rows), 0.0),
      inv_sd(static_cast<size_t>(rows), 1.0);
  if (args.H && args.rule->rounding() == "pbllm") {
    // PB-LLM's salience w^2 / U_jj^2 (SparseGPT's criterion), or plain |w| with salient=magnitude
    if (!args.rule->pb_magnitude) colw = inverse_factor_recip_diag(*args.H, cols, args.rule->gptq.damp);
  } else if (args.H) {
    for (int64_t j = 0; j < cols; ++j) colw[size_t(j)] = std::sqrt(std::max(0.0, (*args.H)[size_t(j * cols + j)]));
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      double s1 = 0, s2 = 0;
      for (int64_t c = 0; c < cols; ++c) s1 += w[size_t(r * cols + c)], s2 += double(w[size_t(r * cols + c)]) * w[size_t(r * cols + c)];
      mean[size_t(r)] = s1 / double(cols);
      const double var = s2 / double(cols) - mean[size_t(r)] * mean[size_t(r)];
      inv_sd[size_t(r)] = var > 0 ? 1.0 / std::sqrt(var) : 1.0;
    }
  }
  std::vector<uint32_t> order(static_cast<size_t>(N));
  std::iota(order.begin(), order.end(), uint32_t(0));
  auto score = [&](uint32_t i) {
    const size_t r = i / size_t(cols);
    return std::fabs(double(w[i]) - mean[r]) * inv_sd[r] * colw[i % size_t(cols)];
  };
  std::nth_element(order.begin(), order.begin() + nnz, order.end(), [&](uint32_t a, uint32_t b) {
    const double sa = score(a), sb = score(b);
    return sa != sb ? sa > sb : a < b;
  });
  order.resize(size_t(nnz));
  std::sort(order.begin(), order.end());
  std::vector<uint8_t> keep(static_cast<size_t>(N), 0);
  std::vector<float> dense(w), kept(w);
  for (uint32_t i : order) {
    keep[i] = 1;
    dense[i] = 0.f;
  }
  TensorRule rd = *args.rule;
  rd.spec.sparse = 0;
  RoundArgs a = args;
  a.rule = &rd;
  a.w = dense.data();
  a.orig_w = w.data();
  a.keep = keep.data();
  a.kept = kept.data();
  QuantizedMatrix qm = find_method(rd.rounding()).round(a);
  // the method may choose the format's variant (llmfp4's format search): its grid, the full spec's outliers
  const std::unique_ptr<Grid> grid = make_grid(qm.spec);
  const int64_t g = qm.group_len();
  qm.spec.sparse = full.sparse;
  qm.sp_idx = order;
  qm.sp_val.resize(order.size());
  for (size_t k = 0; k < order.size(); ++k) {
    const int64_t i = order[k], r = i / cols, c = i % cols;
    const float dq = grid->dequantize_at(qm.q[size_t(i)], qm.params(r, c / g), c % g);
    const float v = f16_to_f32(f32_to_f16(kept[size_t(i)] - dq));
    if (!std::isfinite(v)) fail("", "sparse outlier at row " + std::to_string(r) + ", column " + std::to_string(c) + " beyond the f16 range");
    qm.sp_val[k] = v;
  }
  return qm;
}

// Randomized Hadamard transform (+h): the key naming the activation a tensor reads ("blk.3.attn_in",
// "output_in"): tensors reading one input get the same input signs, so the engine rotates it once.
std::string rht_input_key(const std::string& name) {
  const ArchInfo& ai = arch_info("llama");  // every architecture shares the Llama block
  if (name.rfind("blk.", 0) == 0) {
    const size_t d1 = name.find('.', 4), d2 = name.rfind(".weight");
    if (d1 != std::string::npos && d2 != std::string::npos && d2 > d1) {
      const std::string key = name.substr(d1 + 1, d2 - d1 - 1);
      for (const ArchTensor& at : ai.tensors)
        if (at.input && key == at.key) return name.substr(0, d1) + "." + at.input;
    }
  }
  return name + ".in";
}

// Statistics of an input as the rotated layer sees it (x' = V x): H~ = V H V^T and its diagonal;
// per-channel |x| statistics have no rotated form and are dropped (the rounding methods do not read
// them; TensorRule::stats() asks for H whenever a +h rule needs diag(H)).
InputStats rotated_stats(const InputStats& st, const uint8_t* sin) {
  InputStats o;
  o.n = st.n;
  o.count = st.count;
  o.token_norms = st.token_norms;
  if (!st.H.empty()) {
    o.H = rht_rotate_hessian(st.H, st.n, sin);
    o.diag.resize(size_t(st.n));
    for (int64_t j = 0; j < st.n; ++j) o.diag[size_t(j)] = o.H[size_t(j * st.n + j)];
  }
  o.kinds = st.kinds & (kStatHessian | kStatDiag | kStatTokenNorms);
  if (o.H.empty()) o.kinds &= ~uint32_t(kStatHessian | kStatDiag);
  return o;
}

Rounded compress_tensor(const Tensor& t, const TensorRule& r, const InputStats* stats, ThreadPool& pool,
                        bool tied = false);

// A +h rule: rotate the weights and the input's statistics, round the rotated weights with the rule
// without +h, and store the signs (docs/formats.md "Randomized Hadamard transform").
Rounded compress_rotated(const Tensor& t, const TensorRule& r, const InputStats* stats, ThreadPool& pool) {
  const int64_t rows = t.rows(), cols = t.cols();
  std::vector<uint8_t> sin = rht_random_signs(cols, rht_seed(rht_input_key(t.name)));
  std::vector<uint8_t> sout = r.spec.rht == 1 ? rht_random_signs(rows, rht_seed(t.name + ".out")) : std::vector<uint8_t>();
  std::vector<float> w = t.dtype == DType::Q ? dequantize_ref(t) : tensor_to_f32(t);
  rht_rotate_weights(w.data(), rows, cols, sin.data(), sout.empty() ? nullptr : sout.data(), false);
  const Tensor wt = make_f32_tensor(t.name, {rows, cols}, std::move(w));
  InputStats rs;
  if (stats) rs = rotated_stats(*stats, sin.data());
  TensorRule plain = r;
  plain.spec.rht = false;
  Rounded out = compress_tensor(wt, plain, stats ? &rs : nullptr, pool);
  // the packed tensor with the flag and the signs appended (the RHT part is the last; the report's
  // error is the rotated layer's, equal to the layer's own: U and V are orthogonal)
  QuantSpec spec = format_spec(out.t.format);
  spec.rht = r.spec.rht;
  const PackedGeometry g = packed_geometry(spec, rows, cols);
  LMP_ASSERT(g.rht_offset == int64_t(out.t.nbytes));
  std::vector<uint8_t> bytes(size_t(g.total_bytes));
  std::memcpy(bytes.data(), out.t.data, out.t.nbytes);
  std::memcpy(bytes.data() + g.rht_offset, sin.data(), sin.size());
  if (!sout.empty()) std::memcpy(bytes.data() + g.rht_offset + int64_t(sin.size()), sout.data(), sout.size());
  out.t = make_owned_tensor(t.name, DType::Q, {rows, cols}, std::move(bytes), format_id(spec));
  validate_packed(out.t, t.name);
  out.rep.spec = spec;
  return out;
}

// Compresses one tensor by its rule. stats / H (may be null) describe its input.
// `tied`: t is both the token embedding and the classifier, H the classifier's; gptq then uses
// tied_embedding_hessian(H, emb) (docs/methods.md), and so do slim, mixllm and quantease (its init and its
// objective); the reported proxy error stays the classifier's.
Rounded compress_tensor(const Tensor& t, const TensorRule& r, const InputStats* stats, ThreadPool& pool,
                        bool tied) {
  if (r.quantized() && r.spec.rht && t.name == "token_embd.weight") {
    // the embedding is read by rows (a rotation would mix every row into every lookup): its rule
    // without +h (plan_quantization plans it so)
    TensorRule plain = r;
    plain.spec.rht = false;
    return compress_tensor(t, plain, stats, pool, tied);
  }
  if (r.quantized() && r.spec.rht) {
    const double t0 = now_seconds();
    Rounded o = compress_rotated(t, r, stats, pool);
    o.rep.method = r.method;
    o.rep.seconds = now_seconds() - t0;
    return o;
  }
  Rounded out;
  LayerReport& rep = out.rep;
  rep.name = t.name;
  rep.method = r.method;
  rep.spec = r.spec;
  const double t0 = now_seconds();
  if (r.method == "keep") {
    out.t = t;
  } else if (r.method == "f16" || r.method == "bf16" || r.method == "f32") {
    out.t = convert_tensor(t, r.method == "f16" ? DType::F16 : r.method == "bf16" ? DType::BF16 : DType::F32);
  } else {
    // llama.cpp's block types (GGUF imports) are dequantized and quantized again (the two errors
    // add up: an unquantized source is better); lmpress's own packed formats are refused.
    if (t.dtype == DType::Q && format_spec(t.format).family != FormatFamily::Ggml)
      fail(t.name, "tensor is already quantized; start from an unquantized model");
    try {  // the format takes this shape (e.g. llama.cpp's types need whole blocks per row)
      packed_geometry(r.spec, t.rows(), t.cols());
    } catch (const Error& e) {
      fail(t.name, e.what());
    }
    const std::vector<float> w = t.dtype == DType::Q ? dequantize_ref(t) : tensor_to_f32(t);
    const std::vector<double>* H = stats && !stats->H.empty() ? &stats->H : nullptr;
    std::vector<double> Ht;
    if (tied && H && (r.rounding() == "gptq" || r.rounding() == "quantease" || r.rounding() == "spqr" ||
                      r.rounding() == "vptq" || r.rounding() == "qtip" || r.rounding() == "slim" ||
                      r.rounding() == "mixllm")) {
      Ht = tied_embedding_hessian(*H, t.cols(), r.gptq.emb);
    }
    RoundArgs a;
    a.w = w.data();
    a.rows = t.rows();
    a.cols = t.cols();
    a.rule = &r;
    a.stats = stats;
    a.H = Ht.empty() ? H : &Ht;
    a.pool = &pool;
    QuantizedMatrix qm;
    try {
      if (r.spec.sparse && r.spec.family != FormatFamily::Spqr)  // spqr chooses its own outliers
        qm = round_with_outliers(a, w);
      else
        qm = find_method(r.rounding()).round(a);
    } catch (const Error& e) {
      fail(t.name, e.what());
    }
    // (the reported proxy error is estimated on 256 rows: exact, it costs as much as GPTQ)
    if (H && (qm.spec.family == FormatFamily::Spqr || qm.spec.family == FormatFamily::Vq ||
              qm.spec.family == FormatFamily::Trellis || qm.spec.family == FormatFamily::Mix ||
              qm.spec.family == FormatFamily::Slim))  // no per-group grid
      rep.err = dense_layer_error(w.data(), dequantize_matrix(qm), qm.rows, qm.cols, *H, &rep.rel_err, kErrorRows);
    else if (H)
      rep.err = layer_error(w.data(), qm, *H, &rep.rel_err, kErrorRows);
    out.t = pack_tensor(t.name, qm);
    rep.spec = qm.spec;  // a method may choose the variant (llmfp4's format search)
  }
  out.t.name = t.name;
  rep.seconds = now_seconds() - t0;
  return out;
}

int64_t tensor_bits(const Tensor& t) { return int64_t(t.nbytes) * 8; }

// Hands a finished tensor to the sink and drops its data (keeping name, dtype, shape, format).
void emit(TensorSink* sink, Tensor& t) {
  if (!sink || t.empty()) return;
  sink->put(t);
  t.data = nullptr;
  t.owner.reset();
}

}  // namespace

void make_f32_owned(Tensor& t) {
  if (t.empty()) return;
  const std::string name = t.name;
  const std::vector<int64_t> shape = t.shape;
  t = make_f32_tensor(name, shape, tensor_to_f32(t));
}

std::vector<PlannedTensor> plan_quantization(const Model& src, const Recipe& rc) {
  std::vector<PlannedTensor> plan;
  const bool transforms = rc.has_transforms();
  // quarot unties a tied classifier (quarot.cpp): the output then has its own output.weight, planned
  // from the embedding's shape and rule for that name (LmpressStreamWriter marks the config untied).
  const bool quarot = rc.quarot() != nullptr;
  const bool untie = quarot && src.cfg.tied_embeddings;
  const bool tied = src.cfg.tied_embeddings && !untie;
  std::set<std::string> linear;
  for (const auto& L : src.layers)
    for (const Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) linear.insert(t->name);
  std::vector<std::string> names;
  for (const Tensor* t : src.weight_tensors()) names.push_back(t->name);
  if (src.cfg.tied_embeddings) names.push_back("output.weight");  // the tied classifier answers to its own name too
  rc.check_patterns(names);
  std::vector<const Tensor*> tensors = src.weight_tensors();
  Tensor untied_output;
  if (untie) {
    untied_output = src.tok_embd;
    untied_output.name = "output.weight";
    tensors.push_back(&untied_output);
  }
  for (const Tensor* t : tensors) {
    PlannedTensor p;
    p.name = t->name;
    p.shape = t->shape;
    const bool is_embd = t->name == src.tok_embd.name, is_out = !tied && t->name == "output.weight";
    if (linear.count(t->name) || is_embd || is_out) {
      const TensorRule& r = rc.rule_for(t->name, tied && is_embd);
      if (r.quantized()) {
        // refuses formats lmpress does not produce (llama.cpp's block types), spqr formats to any
        // method but spqr, vq formats to any but vptq and trellis formats to any but qtip and rtn
        // (no per-group grid)
        const bool trellis_ok = r.spec.family == FormatFamily::Trellis && (r.rounding() == "qtip" || r.rounding() == "rtn");
        // (composites: parse_rule admits only their own method and rtn)
        const bool composite = r.spec.family == FormatFamily::Mix || r.spec.family == FormatFamily::Slim;
        if (r.rounding() != "spqr" && r.rounding() != "vptq" && !trellis_ok && !composite) (void)make_grid(r.spec);
        QuantSpec spec = r.spec;
        if (is_embd) spec.rht = false;  // read by rows: never rotated (compress_tensor)
        p.dtype = DType::Q;
        p.format = format_id(spec);
        try {  // the format takes this shape (trellis: multiples of 16; llama.cpp's types: whole blocks)
          p.nbytes = size_t(packed_geometry(spec, t->rows(), t->cols()).total_bytes);
        } catch (const Error& e) {
          fail(t->name, e.what());
        }
      } else {
        p.dtype = r.method == "f16" ? DType::F16 : r.method == "bf16" ? DType::BF16 : r.method == "f32" ? DType::F32 : t->dtype;
        // a transform may leave a reader it does not quantize in f32; quarot rewrites every tensor
        if (transforms && r.method == "keep" && (linear.count(t->name) || quarot)) p.dtype = DType::F32;
        p.format = p.dtype == DType::Q ? t->format : 0;
        p.nbytes = p.dtype == DType::Q ? t->nbytes : size_t(t->numel()) * dtype_size(p.dtype);
      }
    } else {
      // norms and biases: transforms rewrite them in f32
      p.dtype = transforms ? DType::F32 : t->dtype;
      p.format = p.dtype == DType::Q ? t->format : 0;
      p.nbytes = p.dtype == DType::Q ? t->nbytes : size_t(t->numel()) * dtype_size(p.dtype);
    }
    plan.push_back(std::move(p));
  }
  return plan;
}

Model quantize_model(const Model& src, const QuantizeOptions& o, QuantizeReport* report) {
  QuantizeReport rep_local;
  QuantizeReport& rep = report ? *report : rep_local;
  const double t_start = now_seconds();
  Model m = clone_model(src);
  const auto& c = m.cfg;
  const Recipe& rc = o.recipe;
  const bool calib = !o.calib.text_path.empty();
  if (rc.needs_calibration() && !calib)
    fail("recipe", "'" + rc.text + "' uses methods that need calibration data: pass --calib FILE");
  {
    std::vector<std::string> names;
    for (const Tensor* t : m.weight_tensors()) names.push_back(t->name);
    if (c.tied_embeddings) names.push_back("output.weight");
    rc.check_patterns(names);
  }
  ThreadPool pool(o.n_threads > 0 ? o.n_threads : default_threads());
  TensorSink* sink = o.sink;
  const AnonPeakSampler anon_peak;  // samples RssAnon every 5 ms, also inside the methods
  // the source's parameters: quarot's untied classifier adds bytes, not parameters, to the bpw
  const int64_t params = src.n_params();
  // QuaRot: the model-wide part now (untie, rotate the embedding and the classifier), each block's
  // part right before the block is first run (quarot_block below).
  const TensorRule* quarot = rc.quarot();
  QuarotPlan qplan;
  if (quarot) {
    qplan = quarot_plan(c, quarot->quarot);
    quarot_globals(m, qplan, pool);
  }
  double weight_bits = 0;
  auto done = [&](Tensor& t) {
    weight_bits += double(tensor_bits(t));
    emit(sink, t);
  };

  auto rule = [&](const Tensor& t, bool tied_output = false) -> const TensorRule& {
    return rc.rule_for(t.name, tied_output);
  };
  auto emit_block_rest = [&](LayerWeights& L) {
    for (Tensor* t : {&L.attn_norm, &L.bq, &L.bk, &L.bv, &L.ffn_norm})
      if (!t->empty()) {
        if (rc.has_transforms()) make_f32_owned(*t);  // as planned (plan_quantization)
        done(*t);
      }
  };

  if (!calib) {
    // Data-free: every tensor independently.
    Progress prog("quantize", int64_t(m.layers.size()));
    for (size_t l = 0; l < m.layers.size(); ++l) {
      auto& L = m.layers[l];
      if (quarot) quarot_block(m, int(l), qplan, pool);
      for (Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
        Rounded r = compress_tensor(*t, rule(*t), nullptr, pool);
        *t = std::move(r.t);
        rep.layers.push_back(r.rep);
        done(*t);
      }
      emit_block_rest(L);
      if (o.progress) prog.update(int64_t(l + 1));
    }
    prog.finish();
    const bool tied = c.tied_embeddings;
    Rounded e = compress_tensor(m.tok_embd, rule(m.tok_embd, tied), nullptr, pool);
    m.tok_embd = std::move(e.t);
    rep.layers.push_back(e.rep);
    if (tied) {
      m.output = m.tok_embd;
    } else {
      Rounded r = compress_tensor(m.output, rule(m.output), nullptr, pool);
      m.output = std::move(r.t);
      rep.layers.push_back(r.rep);
    }
  } else {
    const double tc0 = now_seconds();
    const auto windows = calibration_windows(m, o.calib);
    const int64_t seqlen = o.calib.seqlen, d = c.dim;
    Engine eng(m, calib_engine_options(pool, seqlen));
    // Residual streams entering the current block, one per window: [seqlen, dim].
    std::vector<std::vector<float>> X = embed_windows(eng, windows, seqlen, d);
    rep.calib_seconds = now_seconds() - tc0;
    const int64_t rows_expected = int64_t(windows.size()) * seqlen;
    const std::vector<Step> S = steps_of(arch_info(c.arch));

    // Captures the statistics `kinds[si]` of the inputs of steps `which` of block l, running the
    // block (as it is now) over every calibration window.
    std::vector<float> scratch;
    auto capture = [&](int l, const std::vector<size_t>& which, const std::vector<uint32_t>& kinds) {
      std::map<std::string, std::unique_ptr<StatsCollector>> acc;
      auto& L = m.layers[size_t(l)];
      for (size_t si : which)
        if (kinds[si])
          acc[S[si].input] = std::make_unique<StatsCollector>((L.*(S[si].tensors[0])).cols(), kinds[si], rows_expected);
      std::map<std::string, InputStats> out;
      if (acc.empty()) return out;
      eng.set_hook([&](const std::string& name, int layer, const float* x, int64_t n, int64_t) {
        if (layer != l) return;
        auto it = acc.find(name);
        if (it != acc.end()) it->second->add(x, n, pool);
      });
      for (size_t w = 0; w < X.size(); ++w) {
        scratch = X[w];
        eng.run_layers(scratch.data(), seqlen, 0, l, l + 1);
      }
      eng.set_hook(nullptr);
      for (auto& [name, col] : acc) out[name] = col->finish();
      return out;
    };

    Progress prog("quantize", c.n_layers);
    for (int l = 0; l < c.n_layers; ++l) {
      auto& L = m.layers[size_t(l)];
      if (quarot) quarot_block(m, l, qplan, pool);
      // 1. Transform pass (methods with a per-input entry: awq, smoothquant).
      {
        std::vector<uint32_t> kinds(S.size(), 0);
        std::vector<const TensorRule*> trule(S.size(), nullptr);
        for (size_t si = 0; si < S.size(); ++si)
          for (auto mp : S[si].tensors) {
            const TensorRule& r = rule(L.*mp);
            for (const auto& mname : r.chain) {
              const MethodInfo& mi = find_method(mname);
              if (mi.rounds || !mi.transform) continue;
              kinds[si] |= mi.stats;
              if (!trule[si]) trule[si] = &r;
            }
          }
        bool any = false;
        for (auto k : kinds) any = any || k;
        if (any) {
          std::vector<size_t> all(S.size());
          for (size_t i = 0; i < S.size(); ++i) all[i] = i;
          const auto stats = capture(l, all, kinds);
          for (size_t si = 0; si < S.size(); ++si) {
            if (!trule[si]) continue;
            StepContext ctx{m};
            ctx.layer = l;
            ctx.input = S[si].input;
            for (auto mp : S[si].tensors) {
              ctx.readers.push_back(&(L.*mp));
              ctx.rules.push_back(&rule(L.*mp));
            }
            ctx.rule = trule[si];
            ctx.stats = &stats.at(S[si].input);
            ctx.norm = S[si].norm ? &(L.*(S[si].norm)) : nullptr;
            const bool mha = c.n_heads == c.n_kv_heads;
            if (S[si].producer && (S[si].producer != &LayerWeights::wv || mha)) {
              ctx.producer = &(L.*(S[si].producer));
              if (S[si].producer_bias && !(L.*(S[si].producer_bias)).empty()) ctx.producer_bias = &(L.*(S[si].producer_bias));
            }
            ctx.pool = &pool;
            for (const auto& mname : trule[si]->chain) {
              const MethodInfo& mi = find_method(mname);
              if (!mi.rounds && mi.transform) mi.transform(ctx);
            }
            if (!ctx.note.empty()) log_debug("blk.%d %s: %s", l, S[si].input, ctx.note.c_str());
          }
        }
      }
      // 2. Quantization passes: true-sequential = one capture pass per step.
      std::vector<std::vector<size_t>> passes;
      if (o.true_sequential)
        passes = {{0}, {1}, {2}, {3}};
      else
        passes = {{0, 1, 2, 3}};
      for (const auto& pass : passes) {
        // H whenever a tensor of the step is quantized (the report's proxy error uses it), plus
        // what the rounding methods ask for.
        std::vector<uint32_t> kinds(S.size(), 0);
        for (size_t si : pass)
          for (auto mp : S[si].tensors) {
            const TensorRule& r = rule(L.*mp);
            if (!r.quantized()) continue;
            kinds[si] |= kStatHessian | find_method(r.rounding()).stats;
          }
        const auto stats = capture(l, pass, kinds);
        for (size_t si : pass) {
          auto it = stats.find(S[si].input);
          const InputStats* st = it == stats.end() ? nullptr : &it->second;
          for (auto mp : S[si].tensors) {
            Tensor& t = L.*mp;
            Rounded r = compress_tensor(t, rule(t), st, pool);
            t = std::move(r.t);
            rep.layers.push_back(r.rep);
          }
        }
      }
      // 3. Propagate: the quantized block's outputs feed the next block; then the block is done.
      for (size_t w = 0; w < X.size(); ++w) eng.run_layers(X[w].data(), seqlen, 0, l, l + 1);
      for (Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) done(*t);
      emit_block_rest(L);
      if (o.progress) prog.update(l + 1, "layer " + std::to_string(l));
    }
    prog.finish();

    // Classifier (and the tied embedding): statistics of the final-norm output. A tied matrix is
    // also the embedding, so its gptq Hessian gets the embedding role's term (tied_embedding_hessian).
    const bool tied = c.tied_embeddings;
    const TensorRule& out_rule = tied ? rule(m.tok_embd, true) : rule(m.output);
    InputStats H;
    if (out_rule.quantized()) {
      StatsCollector acc(d, kStatHessian | find_method(out_rule.rounding()).stats, rows_expected);
      std::vector<float> logits(size_t(seqlen) * size_t(c.vocab_size));
      eng.set_hook([&](const std::string& name, int, const float* x, int64_t n, int64_t) {
        if (name == "output_in") acc.add(x, n, pool);
      });
      for (size_t w = 0; w < X.size(); ++w) eng.final_logits(X[w].data(), seqlen, logits.data());
      eng.set_hook(nullptr);
      H = acc.finish();
    }
    const InputStats* Hp = out_rule.quantized() ? &H : nullptr;
    if (tied) {
      Rounded r = compress_tensor(m.tok_embd, out_rule, Hp, pool, /*tied=*/true);
      m.tok_embd = std::move(r.t);
      m.output = m.tok_embd;
      rep.layers.push_back(r.rep);
    } else {
      Rounded r = compress_tensor(m.output, out_rule, Hp, pool);
      m.output = std::move(r.t);
      rep.layers.push_back(r.rep);
      // Untied embedding: a lookup table with no input activations, so no Hessian. GPTQ with
      // H = I is exactly RTN (tests: Gptq.DiagonalHessianIsRtn), so a gptq rule runs as rtn.
      // spqr has no rtn form: it runs with H = I (its sweep then reduces to its round to nearest,
      // outliers by the same criterion).
      TensorRule er = rule(m.tok_embd);
      InputStats eye;
      if (er.quantized() && (er.rounding() == "spqr" || er.rounding() == "vptq")) {
        const int64_t n = m.tok_embd.cols();
        eye.n = n;
        eye.H.assign(size_t(n * n), 0.0);
        for (int64_t j = 0; j < n; ++j) eye.H[size_t(j * n + j)] = 1.0;
      } else if (er.quantized() && find_method(er.rounding()).stats != 0) {
        er.chain = {"rtn"};
        er.method = "rtn";
      }
      Rounded e = compress_tensor(m.tok_embd, er, eye.H.empty() ? nullptr : &eye, pool);
      m.tok_embd = std::move(e.t);
      rep.layers.push_back(e.rep);
    }
  }

  // The tail: embedding, final norm, classifier (the tied one is the embedding, written once).
  done(m.tok_embd);
  if (rc.has_transforms()) make_f32_owned(m.out_norm);
  done(m.out_norm);
  if (!c.tied_embeddings) done(m.output);
  if (sink) m.output = m.tok_embd;  // (both dropped; keep the tied descriptor consistent)

  rep.params = params;
  rep.weight_bits = weight_bits;
  rep.seconds = now_seconds() - t_start;
  rep.peak_anon_bytes = double(anon_peak.peak());
  m.metadata["recipe"] = rc.text;
  m.metadata["source"] = src.path;
  m.files = src.files;  // kept tensors may still point into the source mapping
  return m;
}


// ---- the variant database (mixed precision under a budget) -----------------------------------------
// One calibration pass over the unquantized model: per block, the four inputs' statistics are
// captured once (the f32 block's activations), every choosable tensor is rounded once per
// candidate from them, and the calibration streams go on through the unquantized block. So no
// variant depends on another tensor's choice (unlike true-sequential GPTQ), which is what lets a
// search swap variants freely; the price is the small gain true-sequential would give.
VariantDb build_variant_db(const Model& src, const std::vector<TensorRule>& cands, const CalibOptions& calib,
                           int n_threads, bool progress) {
  if (calib.text_path.empty()) fail("budget", "a mixed-precision allocation needs calibration data: pass --calib FILE");
  const double t0 = now_seconds();
  VariantDb db;
  db.candidates = cands;
  db.table = budget_table(src, cands);
  std::map<std::string, size_t> idx;
  for (size_t i = 0; i < db.table.names.size(); ++i) idx[db.table.names[i]] = i;
  db.v.assign(db.table.names.size(), std::vector<Variant>(cands.size()));
  uint32_t kinds = kStatHessian;
  for (const auto& c : cands) kinds |= find_method(c.rounding()).stats;
  Model m = clone_model(src);
  const auto& c = m.cfg;
  ThreadPool pool(n_threads > 0 ? n_threads : default_threads());
  const auto windows = calibration_windows(m, calib);
  const int64_t seqlen = calib.seqlen, d = c.dim;
  Engine eng(m, calib_engine_options(pool, seqlen));
  std::vector<std::vector<float>> X = embed_windows(eng, windows, seqlen, d);
  const int64_t rows_expected = int64_t(windows.size()) * seqlen;
  const std::vector<Step> S = steps_of(arch_info(c.arch));
  auto put = [&](const Tensor& t, size_t ci, Rounded&& r) {
    auto it = idx.find(t.name);
    LMP_ASSERT(it != idx.end());
    LMP_ASSERT(int64_t(r.t.nbytes) == db.table.bytes[it->second][ci]);  // the accounting is exact
    db.db_bytes += int64_t(r.t.nbytes);
    db.v[it->second][ci] = Variant{std::move(r.t), std::move(r.rep)};
  };
  Progress prog("database", c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    auto& L = m.layers[size_t(l)];
    std::map<std::string, std::unique_ptr<StatsCollector>> acc;
    for (const auto& st : S) acc[st.input] = std::make_unique<StatsCollector>((L.*(st.tensors[0])).cols(), kinds, rows_expected);
    eng.set_hook([&](const std::string& name, int layer, const float* x, int64_t n, int64_t) {
      if (layer != l) return;
      auto it = acc.find(name);
      if (it != acc.end()) it->second->add(x, n, pool);
    });
    // the streams go through the unquantized block: capture and propagate in one pass
    for (size_t w = 0; w < X.size(); ++w) eng.run_layers(X[w].data(), seqlen, 0, l, l + 1);
    eng.set_hook(nullptr);
    for (const auto& st : S) {
      const InputStats stats = acc.at(st.input)->finish();
      for (auto mp : st.tensors) {
        const Tensor& t = L.*mp;
        for (size_t ci = 0; ci < cands.size(); ++ci) put(t, ci, compress_tensor(t, cands[ci], &stats, pool));
      }
    }
    if (progress) prog.update(l + 1, "layer " + std::to_string(l));
  }
  prog.finish();
  const bool tied = c.tied_embeddings;
  StatsCollector acc(d, kinds, rows_expected);
  std::vector<float> logits(size_t(seqlen) * size_t(c.vocab_size));
  eng.set_hook([&](const std::string& name, int, const float* x, int64_t n, int64_t) {
    if (name == "output_in") acc.add(x, n, pool);
  });
  for (size_t w = 0; w < X.size(); ++w) eng.final_logits(X[w].data(), seqlen, logits.data());
  eng.set_hook(nullptr);
  const InputStats H = acc.finish();
  for (size_t ci = 0; ci < cands.size(); ++ci) {
    if (tied) {
      put(m.tok_embd, ci, compress_tensor(m.tok_embd, cands[ci], &H, pool, /*tied=*/true));
    } else {
      put(m.output, ci, compress_tensor(m.output, cands[ci], &H, pool));
      // untied embedding: no Hessian, so a calibrated rule runs as rtn (spqr / vptq, which have no
      // rtn form, with H = I, as in quantize_model)
      TensorRule er = cands[ci];
      InputStats eye;
      if (er.rounding() == "spqr" || er.rounding() == "vptq") {
        const int64_t n = m.tok_embd.cols();
        eye.n = n;
        eye.H.assign(size_t(n * n), 0.0);
        for (int64_t j = 0; j < n; ++j) eye.H[size_t(j * n + j)] = 1.0;
      } else if (find_method(er.rounding()).stats != 0) {
        er.chain = {"rtn"}, er.method = "rtn";
      }
      put(m.tok_embd, ci, compress_tensor(m.tok_embd, er, eye.H.empty() ? nullptr : &eye, pool));
    }
  }
  for (const auto& row : db.v)
    for (const auto& var : row)
      if (!std::isfinite(var.rep.err)) fail(src.path, "quantizing " + var.rep.name + " gave a non-finite error");
  db.seconds = now_seconds() - t0;
  return db;
}

Model assemble_model(const Model& src, const VariantDb& db, const std::vector<int>& choice,
                     const std::vector<Tensor>* custom) {
  Model m = clone_model(src);
  if (choice.empty()) return m;
  LMP_ASSERT(choice.size() == db.v.size() && (!custom || custom->empty() || custom->size() == choice.size()));
  std::map<std::string, size_t> idx;
  for (size_t i = 0; i < db.table.names.size(); ++i) idx[db.table.names[i]] = i;
  for (Tensor* t : m.weight_tensors()) {
    auto it = idx.find(t->name);
    if (it == idx.end()) continue;
    const bool own = custom && !custom->empty() && !(*custom)[it->second].empty();
    *t = own ? (*custom)[it->second] : db.v[it->second][size_t(choice[it->second])].t;
  }
  if (m.cfg.tied_embeddings) m.output = m.tok_embd;
  return m;
}

std::string allocation_recipe(const VariantDb& db, const std::vector<int>& choice, const std::vector<std::string>* rules) {
  LMP_ASSERT(choice.size() == db.v.size() && (!rules || rules->empty() || rules->size() == choice.size()));
  auto own = [&](size_t i) { return rules && !rules->empty() && !(*rules)[i].empty(); };
  std::vector<int> count(db.candidates.size(), 0);
  for (size_t i = 0; i < choice.size(); ++i)
    if (!own(i)) ++count[size_t(choice[i])];
  const int base = int(std::max_element(count.begin(), count.end()) - count.begin());
  std::string r = db.candidates[size_t(base)].text;
  for (size_t i = 0; i < choice.size(); ++i)
    if (own(i))
      r += ";" + db.table.names[i] + "=" + (*rules)[i];
    else if (choice[i] != base)
      r += ";" + db.table.names[i] + "=" + db.candidates[size_t(choice[i])].text;
  return r;
}

}  // namespace lmpress
