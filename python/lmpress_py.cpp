// Python binding (pybind11): load any model lmpress reads, tokenize, logits as numpy arrays,
// quantize with a recipe, perplexity / KL divergence, greedy or sampled generation. A thin layer
// over the C++ API: every error is the library's one-line Error, raised as RuntimeError.
// docs/python.md has the API and examples; tests/python/test_binding.py tests it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "lmpress/compress.h"
#include "lmpress/engine.h"
#include "lmpress/eval.h"
#include "lmpress/formats.h"
#include "lmpress/io.h"
#include "lmpress/tokenizer.h"

namespace py = pybind11;
using namespace pybind11::literals;
using namespace lmpress;

namespace {

struct PyModel {
  std::shared_ptr<Model> m;
  int n_threads = 0;

  const Tokenizer& tok() const {
    if (!m->tokenizer) fail(m->path, "model has no tokenizer");
    return *m->tokenizer;
  }
};

PyModel load(const std::string& path, int threads, bool check) {
  LoadOptions lo;
  lo.check_tensors = check;
  PyModel p;
  p.m = std::make_shared<Model>(load_model(path, lo));
  p.n_threads = threads;
  return p;
}

std::vector<int32_t> as_tokens(const PyModel& p, const std::vector<int32_t>& ids) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= p.m->cfg.vocab_size)
      fail(p.m->path, "token " + std::to_string(ids[i]) + " at index " + std::to_string(i) + " is outside the vocabulary of " +
                          std::to_string(p.m->cfg.vocab_size));
  if (ids.empty()) fail(p.m->path, "no tokens");
  if (int64_t(ids.size()) > p.m->cfg.max_seq_len)
    fail(p.m->path, std::to_string(ids.size()) + " tokens exceed the model's context of " +
                        std::to_string(p.m->cfg.max_seq_len));
  return ids;
}

// Logits [n, vocab] of every position of one sequence (one prefill from position 0).
py::array_t<float> logits(const PyModel& p, const std::vector<int32_t>& ids) {
  const std::vector<int32_t> t = as_tokens(p, ids);
  const int64_t n = int64_t(t.size()), V = p.m->cfg.vocab_size;
  py::array_t<float> out({n, V});
  {
    py::gil_scoped_release nogil;
    EngineOptions eo;
    eo.n_threads = p.n_threads;
    eo.n_ctx = int32_t(n);
    Engine e(*p.m, eo);
    e.forward(t.data(), n, 0, out.mutable_data(), true);
  }
  return out;
}

py::dict perplexity_of(const PyModel& p, const std::string& text, int ctx, const std::string& protocol,
                       const PyModel* base, int64_t chunks) {
  PerplexityOptions po;
  po.n_ctx = ctx;
  po.protocol = protocol;
  po.n_threads = p.n_threads;
  po.max_chunks = chunks;
  po.progress = false;
  po.base = base ? base->m.get() : nullptr;
  PerplexityResult r;
  {
    py::gil_scoped_release nogil;
    const std::vector<int32_t> toks = p.tok().encode(text, true);
    r = perplexity(*p.m, toks, po);
  }
  py::dict d("ppl"_a = r.ppl, "nll"_a = r.nll, "nll_sd"_a = r.nll_sd, "scored_tokens"_a = r.scored_tokens,
             "chunks"_a = r.chunks, "ctx"_a = r.n_ctx, "protocol"_a = r.protocol, "seconds"_a = r.seconds);
  if (r.has_base) {
    d["ppl_base"] = r.ppl_base;
    d["kld"] = r.kld;
    d["kld_sd"] = r.kld_sd;
    d["top1"] = r.top1;
  }
  return d;
}

// Greedy (temp 0) or temperature sampling; stops at EOS or n tokens. Returns the generated ids.
std::vector<int32_t> generate(const PyModel& p, const std::vector<int32_t>& prompt, int n, float temp, uint64_t seed) {
  const std::vector<int32_t> t = as_tokens(p, prompt);
  if (n < 0) fail("generate", "n must be >= 0");
  if (!(temp >= 0.f) || !std::isfinite(temp)) fail("generate", "temp must be a finite number >= 0");
  const int32_t ctx = int32_t(std::min<int64_t>(p.m->cfg.max_seq_len, int64_t(t.size()) + n));
  std::vector<int32_t> out;
  py::gil_scoped_release nogil;
  EngineOptions eo;
  eo.n_threads = p.n_threads;
  eo.n_ctx = ctx;
  Engine e(*p.m, eo);
  const int64_t V = p.m->cfg.vocab_size;
  std::vector<float> lg(static_cast<size_t>(V));
  e.forward(t.data(), int64_t(t.size()), 0, lg.data(), false);
  std::mt19937_64 rng(seed);
  int32_t pos = int32_t(t.size());
  const int32_t eos = p.m->tokenizer ? p.m->tokenizer->vocab().eos_id : -1;
  for (int i = 0; i < n && pos < ctx; ++i) {
    int32_t next = 0;
    if (temp == 0.f) {
      for (int64_t v = 1; v < V; ++v)
        if (lg[size_t(v)] > lg[size_t(next)]) next = int32_t(v);
    } else {
      const float mx = *std::max_element(lg.begin(), lg.end());
      std::vector<double> pr(static_cast<size_t>(V));
      for (int64_t v = 0; v < V; ++v) pr[size_t(v)] = std::exp(double(lg[size_t(v)] - mx) / temp);
      next = int32_t(std::discrete_distribution<int64_t>(pr.begin(), pr.end())(rng));
    }
    out.push_back(next);
    if (next == eos) break;
    e.forward(&next, 1, pos++, lg.data(), false);
  }
  return out;
}

py::dict quantize(const PyModel& p, const std::string& recipe, const std::string& out, const std::string& calib,
                  int nsamples, int seqlen, uint64_t seed, bool force) {
  QuantizeOptions qo;
  qo.recipe = parse_recipe(recipe);
  qo.calib.text_path = calib;
  qo.calib.nsamples = nsamples;
  qo.calib.seqlen = seqlen;
  qo.calib.seed = seed;
  qo.n_threads = p.n_threads;
  qo.progress = false;
  if (calib.empty() && qo.recipe.needs_calibration())
    fail("quantize", "recipe '" + recipe + "' uses methods that need calibration data: pass calib=FILE");
  if (!force && file_exists(out)) fail(out, "output exists; pass force=True to replace it");
  QuantizeReport rep;
  {
    py::gil_scoped_release nogil;
    std::map<std::string, std::string> meta = p.m->metadata;
    meta["recipe"] = qo.recipe.text;
    meta["source"] = p.m->path;
    LmpressStreamWriter writer(out, *p.m, plan_quantization(*p.m, qo.recipe), meta, force);
    qo.sink = &writer;
    quantize_model(*p.m, qo, &rep);
    for (const auto& l : rep.layers)
      if (!std::isfinite(l.err) || !std::isfinite(l.rel_err))
        fail(p.m->path, "quantizing " + l.name + " gave a non-finite error; not writing " + out);
    writer.commit();
  }
  py::list layers;
  for (const LayerReport& l : rep.layers) {
    py::dict d;
    d["name"] = l.name;
    d["method"] = l.method;
    d["format"] = format_name(l.spec);
    d["rel_err"] = l.rel_err;
    d["seconds"] = l.seconds;
    layers.append(d);
  }
  py::dict d;
  d["out"] = out;
  d["bpw"] = rep.bpw();
  d["params"] = rep.params;
  d["seconds"] = rep.seconds;
  d["layers"] = layers;
  return d;
}

}  // namespace

PYBIND11_MODULE(lmpress, mod) {
  mod.doc() = "lmpress: compress LLMs and run them on CPUs (docs/python.md)";
  py::register_exception_translator([](std::exception_ptr e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const Error& err) {
      PyErr_SetString(PyExc_RuntimeError, err.what());
    }
  });
  set_log_level(LogLevel::Quiet);

  py::class_<PyModel>(mod, "Model")
      .def(py::init(&load), py::arg("path"), py::arg("threads") = 0, py::arg("check") = true,
           "Load a llama2.c checkpoint, GGUF file, Hugging Face directory or .lmp file")
      .def_property_readonly("path", [](const PyModel& p) { return p.m->path; })
      .def_property_readonly("config", [](const PyModel& p) {
        const ModelConfig& c = p.m->cfg;
        return py::dict("dim"_a = c.dim, "hidden_dim"_a = c.hidden_dim, "n_layers"_a = c.n_layers,
                        "n_heads"_a = c.n_heads, "n_kv_heads"_a = c.n_kv_heads, "head_dim"_a = c.head_dim,
                        "vocab_size"_a = c.vocab_size, "max_seq_len"_a = c.max_seq_len);
      })
      .def_property_readonly("n_params", [](const PyModel& p) { return p.m->n_params(); })
      .def("tensors", [](const PyModel& p) {
        py::list l;
        for (const Tensor* t : p.m->weight_tensors()) {
          py::dict d;
          d["name"] = t->name;
          d["shape"] = t->shape;
          d["dtype"] = dtype_name(t->dtype);
          d["format"] = t->dtype == DType::Q ? format_name(format_spec(t->format)) : std::string(dtype_name(t->dtype));
          d["bytes"] = t->nbytes;
          l.append(d);
        }
        return l;
      }, "Weight tensors: name, shape, dtype, format, bytes")
      .def("weight", [](const PyModel& p, const std::string& name) {
        for (const Tensor* t : p.m->weight_tensors())
          if (t->name == name) {
            const std::vector<float> w = t->dtype == DType::Q ? dequantize_ref(*t) : tensor_to_f32(*t);
            std::vector<py::ssize_t> shape(t->shape.begin(), t->shape.end());
            py::array_t<float> a(shape);
            std::copy(w.begin(), w.end(), a.mutable_data());
            return a;
          }
        fail(p.m->path, "no tensor named '" + name + "'");
      }, py::arg("name"), "A weight tensor as float32 (quantized tensors dequantized by the reference decoder)")
      .def("tokenize", [](const PyModel& p, const std::string& text, bool bos) { return p.tok().encode(text, bos); },
           py::arg("text"), py::arg("bos") = true)
      .def("detokenize", [](const PyModel& p, const std::vector<int32_t>& ids) { return p.tok().decode(ids); },
           py::arg("ids"))
      .def("logits", &logits, py::arg("tokens"), "Logits [n, vocab] (float32) of every position of one sequence")
      .def("perplexity", [](const PyModel& p, const std::string& text, int ctx, const std::string& protocol,
                            const PyModel* base, int64_t chunks) { return perplexity_of(p, text, ctx, protocol, base, chunks); },
           py::arg("text"), py::arg("ctx") = 128, py::arg("protocol") = "llamacpp", py::arg("base") = nullptr,
           py::arg("chunks") = -1, "Perplexity of a text (and KL divergence, top-1 agreement against `base`)")
      .def("generate", [](const PyModel& p, const std::string& prompt, int n, float temp, uint64_t seed) {
             const std::vector<int32_t> ids = generate(p, p.tok().encode(prompt, true), n, temp, seed);
             return p.tok().decode(ids);
           }, py::arg("prompt"), py::arg("n") = 32, py::arg("temp") = 0.f, py::arg("seed") = 0,
           "Continue a prompt by n tokens (greedy at temp 0); returns the new text")
      .def("generate_ids", &generate, py::arg("tokens"), py::arg("n") = 32, py::arg("temp") = 0.f, py::arg("seed") = 0)
      .def("quantize", &quantize, py::arg("recipe"), py::arg("out"), py::arg("calib") = "", py::arg("nsamples") = 32,
           py::arg("seqlen") = 128, py::arg("seed") = 0, py::arg("force") = false,
           "Quantize by a recipe (docs/recipes.md) into an .lmp file; returns the report")
      .def("save_gguf", [](const PyModel& p, const std::string& path, const std::string& dtype, bool force) {
             const DType dt = dtype == "f32" ? DType::F32 : dtype == "f16" ? DType::F16 : dtype == "bf16" ? DType::BF16
                                                                                           : (fail("save_gguf", "dtype is f32, f16 or bf16"), DType::F32);
             py::gil_scoped_release nogil;
             write_gguf_model(*p.m, path, dt, force);
           }, py::arg("path"), py::arg("dtype") = "f32", py::arg("force") = false);
  mod.def("formats", [] {
    std::vector<std::string> v;
    for (const QuantSpec& s : all_formats()) v.push_back(format_name(s));
    return v;
  }, "Names of every packed format");
  mod.attr("__version__") = LMPRESS_VERSION_STRING;
}
