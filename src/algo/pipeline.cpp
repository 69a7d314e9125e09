// The quantize pipeline (GPTQ protocol): run the model block by block over calibration windows,
// feeding each block the outputs of the already-quantized blocks before it; capture the inputs of
// every linear layer through the engine's hooks; accumulate H = X^T X per input (shared by q/k/v
// and gate/up); compress each tensor by its recipe rule.
#include <cstdio>
#include <map>
#include <set>

#include "lmpress/compress.h"
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

std::vector<double> diag_of(const std::vector<double>& H, int64_t n) {
  std::vector<double> d(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) d[size_t(i)] = H[size_t(i * n + i)];
  return d;
}

// Compresses one tensor by its rule. H (may be null) is the mean X^T X of its input.
// `tied`: t is both the token embedding and the classifier, H the classifier's; gptq then uses
// tied_embedding_hessian(H, emb) (docs/methods.md); the reported proxy error stays the classifier's.
Tensor compress_tensor(const Tensor& t, const TensorRule& r, const std::vector<double>* H, ThreadPool& pool,
                       LayerReport& rep, bool tied = false) {
  rep.name = t.name;
  rep.method = r.method;
  rep.spec = r.spec;
  const double t0 = now_seconds();
  Tensor out;
  if (r.method == "keep") {
    out = t;
  } else if (r.method == "f16" || r.method == "bf16" || r.method == "f32") {
    out = convert_tensor(t, r.method == "f16" ? DType::F16 : r.method == "bf16" ? DType::BF16 : DType::F32);
  } else {
    if (t.dtype == DType::Q) fail(t.name, "tensor is already quantized; start from an unquantized model");
    const std::vector<float> w = tensor_to_f32(t);
    const int64_t rows = t.rows(), cols = t.cols();
    QuantizedMatrix qm;
    if (r.method == "gptq") {
      if (!H) fail(t.name, "gptq needs calibration data (--calib FILE)");
      qm = tied ? quantize_gptq(w.data(), rows, cols, r.spec, tied_embedding_hessian(*H, cols, r.gptq.emb), r.gptq, pool)
                : quantize_gptq(w.data(), rows, cols, r.spec, *H, r.gptq, pool);
    } else {
      std::vector<double> hd;
      if (H) hd = diag_of(*H, cols);
      qm = quantize_rtn(w.data(), rows, cols, r.spec, r.clip, H ? hd.data() : nullptr, r.gptq.mse);
    }
    // (the reported proxy error is estimated on 256 rows: exact, it costs as much as GPTQ)
    if (H) rep.err = layer_error(w.data(), qm, *H, &rep.rel_err, kErrorRows);
    out = pack_tensor(t.name, qm);
  }
  out.name = t.name;
  rep.seconds = now_seconds() - t0;
  return out;
}

int64_t tensor_bits(const Tensor& t) { return int64_t(t.nbytes) * 8; }

}  // namespace

Model quantize_model(const Model& src, const QuantizeOptions& o, QuantizeReport* report) {
  QuantizeReport rep_local;
  QuantizeReport& rep = report ? *report : rep_local;
  const double t_start = now_seconds();
  Model m = clone_model(src);
  const auto& c = m.cfg;
  const Recipe& rc = o.recipe;
  const bool calib = !o.calib.text_path.empty();
  if (rc.needs_calibration() && !calib) fail("recipe", "'" + rc.text + "' uses gptq: pass --calib FILE");
  ThreadPool pool(o.n_threads > 0 ? o.n_threads : default_threads());

  auto rule = [&](const Tensor& t, bool tied_output = false) -> const TensorRule& {
    return rc.rule_for(t.name, tied_output);
  };

  if (!calib) {
    // Data-free: every tensor independently.
    Progress prog("quantize", int64_t(m.layers.size()));
    for (size_t l = 0; l < m.layers.size(); ++l) {
      auto& L = m.layers[l];
      for (Tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
        LayerReport lr;
        *t = compress_tensor(*t, rule(*t), nullptr, pool, lr);
        rep.layers.push_back(lr);
      }
      if (o.progress) prog.update(int64_t(l + 1));
    }
    prog.finish();
    LayerReport lr;
    const bool tied = c.tied_embeddings;
    m.tok_embd = compress_tensor(m.tok_embd, rule(m.tok_embd, tied), nullptr, pool, lr);
    rep.layers.push_back(lr);
    if (tied) {
      m.output = m.tok_embd;
    } else {
      LayerReport lo;
      m.output = compress_tensor(m.output, rule(m.output), nullptr, pool, lo);
      rep.layers.push_back(lo);
    }
  } else {
    const double tc0 = now_seconds();
    const auto windows = calibration_windows(m, o.calib);
    const int64_t seqlen = o.calib.seqlen, d = c.dim;
    EngineOptions eo;
    eo.n_threads = pool.size();
    eo.n_ctx = int32_t(seqlen);
    Engine eng(m, eo);
    // Residual streams entering the current block, one per window: [seqlen, dim].
    std::vector<std::vector<float>> X(windows.size());
    for (size_t w = 0; w < windows.size(); ++w) {
      X[w].resize(size_t(seqlen * d));
      eng.embed(windows[w].data(), seqlen, X[w].data());
    }
    rep.calib_seconds = now_seconds() - tc0;

    // Input name -> tensors reading it, in true-sequential order.
    struct Step {
      const char* input;
      std::vector<Tensor LayerWeights::*> tensors;
    };
    const std::vector<Step> steps = {
        {"attn_in", {&LayerWeights::wq, &LayerWeights::wk, &LayerWeights::wv}},
        {"attn_out_in", {&LayerWeights::wo}},
        {"ffn_in", {&LayerWeights::w_gate, &LayerWeights::w_up}},
        {"ffn_down_in", {&LayerWeights::w_down}},
    };
    std::vector<float> scratch;
    Progress prog("quantize", c.n_layers);
    for (int l = 0; l < c.n_layers; ++l) {
      auto& L = m.layers[size_t(l)];
      // Which steps run together: true-sequential = one capture pass per step.
      std::vector<std::vector<size_t>> passes;
      if (o.true_sequential)
        passes = {{0}, {1}, {2}, {3}};
      else
        passes = {{0, 1, 2, 3}};
      for (const auto& pass : passes) {
        bool any_needs_h = false;
        for (size_t si : pass)
          for (auto mp : steps[si].tensors) any_needs_h |= rule(L.*mp).quantized();
        std::map<std::string, std::unique_ptr<HessianAccumulator>> acc;
        if (any_needs_h) {
          for (size_t si : pass) {
            const int64_t width = (L.*(steps[si].tensors[0])).cols();
            acc[steps[si].input] = std::make_unique<HessianAccumulator>(width);
          }
          eng.set_hook([&](const std::string& name, int layer, const float* x, int64_t n, int64_t width) {
            if (layer != l) return;
            auto it = acc.find(name);
            if (it != acc.end()) it->second->add(x, n, pool);
          });
          for (size_t w = 0; w < X.size(); ++w) {
            scratch = X[w];
            eng.run_layers(scratch.data(), seqlen, 0, l, l + 1);
          }
          eng.set_hook(nullptr);
        }
        for (size_t si : pass) {
          std::vector<double> H;
          if (any_needs_h) H = acc[steps[si].input]->mean();
          for (auto mp : steps[si].tensors) {
            Tensor& t = L.*mp;
            LayerReport lr;
            t = compress_tensor(t, rule(t), any_needs_h ? &H : nullptr, pool, lr);
            rep.layers.push_back(lr);
          }
        }
      }
      // Propagate: the quantized block's outputs feed the next block.
      for (size_t w = 0; w < X.size(); ++w) eng.run_layers(X[w].data(), seqlen, 0, l, l + 1);
      if (o.progress) prog.update(l + 1, "layer " + std::to_string(l));
    }
    prog.finish();

    // Classifier (and the tied embedding): Hessian of the final-norm output. A tied matrix is also
    // the embedding, so its gptq Hessian gets the embedding role's term (tied_embedding_hessian).
    const bool tied = c.tied_embeddings;
    const TensorRule& out_rule = tied ? rule(m.tok_embd, true) : rule(m.output);
    std::vector<double> H;
    if (out_rule.quantized()) {
      HessianAccumulator acc(d);
      std::vector<float> logits(size_t(seqlen) * size_t(c.vocab_size));
      eng.set_hook([&](const std::string& name, int, const float* x, int64_t n, int64_t) {
        if (name == "output_in") acc.add(x, n, pool);
      });
      for (size_t w = 0; w < X.size(); ++w) eng.final_logits(X[w].data(), seqlen, logits.data());
      eng.set_hook(nullptr);
      H = acc.mean();
    }
    LayerReport lo;
    if (tied) {
      m.tok_embd = compress_tensor(m.tok_embd, out_rule, H.empty() ? nullptr : &H, pool, lo, /*tied=*/true);
      m.output = m.tok_embd;
      rep.layers.push_back(lo);
    } else {
      m.output = compress_tensor(m.output, out_rule, H.empty() ? nullptr : &H, pool, lo);
      rep.layers.push_back(lo);
      // Untied embedding: a lookup table with no input activations, so no Hessian. GPTQ with
      // H = I is exactly RTN (tests: Gptq.DiagonalHessianIsRtn), so a gptq rule runs as rtn.
      LayerReport le;
      TensorRule er = rule(m.tok_embd);
      if (er.method == "gptq") er.method = "rtn";
      m.tok_embd = compress_tensor(m.tok_embd, er, nullptr, pool, le);
      rep.layers.push_back(le);
    }
  }

  // Totals.
  rep.params = m.n_params();
  rep.weight_bits = 0;
  for (const Tensor* t : m.weight_tensors()) rep.weight_bits += double(tensor_bits(*t));
  rep.seconds = now_seconds() - t_start;
  m.metadata["recipe"] = rc.text;
  m.metadata["source"] = src.path;
  m.files = src.files;  // kept tensors may still point into the source mapping
  return m;
}

}  // namespace lmpress
