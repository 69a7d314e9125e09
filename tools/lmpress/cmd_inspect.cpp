#include <cstdio>
#include <map>

#include "common.h"
#include "lmpress/formats.h"

namespace lmpress::cli {

void add_inspect(CLI::App& app) {
  auto* sub = app.add_subcommand("inspect", "Architecture, shapes, dtypes, size and bits per weight");
  struct Opt {
    Common c;
    bool tensors = false;
  };
  auto o = std::make_shared<Opt>();
  add_common(sub, o->c);
  sub->add_flag("--tensors", o->tensors, "List every tensor");
  sub->callback([o] {
    Model m = load(o->c, false);
    const auto& c = m.cfg;
    const int64_t params = m.n_params();
    uint64_t weight_bytes = 0;
    std::map<std::string, int64_t> dtypes;
    nlohmann::json tl = nlohmann::json::array();
    // A tensor's type: the dtype, or the packed format's name ("w4g32") for quantized tensors.
    auto type_of = [](const Tensor* t) -> std::string {
      if (t->dtype != DType::Q) return dtype_name(t->dtype);
      return format_id_valid(t->format) ? format_name(format_spec(t->format)) : "q?";
    };
    for (const Tensor* t : m.weight_tensors()) {
      weight_bytes += t->nbytes;
      dtypes[type_of(t)] += t->numel();
      tl.push_back({{"name", t->name}, {"shape", t->shape}, {"dtype", type_of(t)}, {"bytes", t->nbytes}});
    }
    const double bpw = params ? 8.0 * double(weight_bytes) / double(params) : 0.0;
    nlohmann::json j = {
        {"path", m.path}, {"format", m.format}, {"arch", c.arch}, {"dim", c.dim},
        {"hidden_dim", c.hidden_dim}, {"n_layers", c.n_layers}, {"n_heads", c.n_heads},
        {"n_kv_heads", c.n_kv_heads}, {"head_dim", c.head_dim}, {"vocab_size", c.vocab_size},
        {"max_seq_len", c.max_seq_len}, {"rope_theta", c.rope_theta}, {"norm_eps", c.norm_eps},
        {"rope_style", c.rope_style == RopeStyle::Halves ? "halves" : "interleaved"},
        {"rope_scaling", c.rope_scaling.type}, {"tied_embeddings", c.tied_embeddings},
        {"attn_bias", c.attn_bias}, {"params", params}, {"file_bytes", m.file_bytes},
        {"weight_bytes", weight_bytes}, {"bpw", bpw}, {"dtypes", dtypes},
        {"tokenizer", m.tokenizer ? nlohmann::json{{"kind", m.tokenizer->vocab().kind == VocabKind::SPM ? "spm" : "bpe"},
                                                   {"n_vocab", m.tokenizer->n_vocab()},
                                                   {"source", m.tokenizer->vocab().source}}
                                  : nlohmann::json(nullptr)},
        {"metadata", m.metadata}};
    if (o->tensors) j["tensors"] = tl;
    if (o->c.json) {
      print_json(j);
      return;
    }
    std::printf("%s (%s)\n", m.path.c_str(), m.format.c_str());
    std::printf("  arch %s: dim %d, hidden %d, %d layers, %d heads / %d kv heads (head dim %d), vocab %d, ctx %d\n",
                c.arch.c_str(), c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim,
                c.vocab_size, c.max_seq_len);
    std::printf("  rope theta %g (%s%s), rms eps %g, %s classifier%s\n", c.rope_theta,
                c.rope_style == RopeStyle::Halves ? "halves" : "interleaved",
                c.rope_scaling.type.empty() ? "" : (", scaling " + c.rope_scaling.type).c_str(), c.norm_eps,
                c.tied_embeddings ? "tied" : "untied", c.attn_bias ? ", q/k/v bias" : "");
    std::printf("  params %lld, weights %s, file %s, %.3f bits per weight\n", (long long)params,
                human_bytes(double(weight_bytes)).c_str(), human_bytes(double(m.file_bytes)).c_str(), bpw);
    {
      // quarot untied a tied classifier: say what it costs (docs/methods.md, QuaRot)
      auto it = m.metadata.find("recipe");
      if (it != m.metadata.end() && it->second.find("quarot") != std::string::npos && !c.tied_embeddings)
        std::printf("  quarot: residual stream rotated; the classifier is stored apart from the embedding (%s)\n",
                    human_bytes(double(m.output.nbytes)).c_str());
    }
    for (auto& [k, v] : dtypes) std::printf("  dtype %-6s %lld weights\n", k.c_str(), (long long)v);
    if (m.tokenizer)
      std::printf("  tokenizer %s, %d tokens (%s)\n", m.tokenizer->vocab().kind == VocabKind::SPM ? "spm" : "bpe",
                  m.tokenizer->n_vocab(), m.tokenizer->vocab().source.c_str());
    if (o->tensors)
      for (const Tensor* t : m.weight_tensors()) {
        std::string sh;
        for (auto s : t->shape) sh += (sh.empty() ? "" : " x ") + std::to_string(s);
        std::printf("  %-32s %-7s [%s]\n", t->name.c_str(), type_of(t).c_str(), sh.c_str());
      }
  });
}

}  // namespace lmpress::cli
