// The lmpress container: a safetensors file (standard tools can list it) with lmpress metadata.
//   __metadata__: format="lmpress", lmpress.version="1", lmpress.config=<JSON ModelConfig>,
//                 lmpress.tensors=<JSON {name: {"format": "w4g32", "shape": [rows, cols]}}> for
//                 packed tensors, lmpress.recipe, lmpress.source, lmpress.calib.
//   tensors:      dense weights as F32/F16/BF16; packed weights as U8 [nbytes]; the vocabulary as
//                 U8 tensor "lmpress.vocab" holding JSON.
#include <nlohmann/json.hpp>

#include <set>

#include "io/io_internal.h"
#include "lmpress/compress.h"
#include "lmpress/formats.h"
#include "lmpress/io.h"

namespace lmpress {

namespace {
constexpr const char* kVersion = "1";
using json = nlohmann::json;

const char* st_dtype(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q: return "U8";
    default: return nullptr;
  }
}

json config_json(const ModelConfig& c) {
  return {{"arch", c.arch}, {"dim", c.dim}, {"hidden_dim", c.hidden_dim}, {"n_layers", c.n_layers},
          {"n_heads", c.n_heads}, {"n_kv_heads", c.n_kv_heads}, {"head_dim", c.head_dim},
          {"vocab_size", c.vocab_size}, {"max_seq_len", c.max_seq_len}, {"norm_eps", c.norm_eps},
          {"rope_theta", c.rope_theta},
          {"rope_scaling", {{"type", c.rope_scaling.type}, {"factor", c.rope_scaling.factor},
                            {"low_freq_factor", c.rope_scaling.low_freq_factor},
                            {"high_freq_factor", c.rope_scaling.high_freq_factor},
                            {"original_max_position", c.rope_scaling.original_max_position}}},
          {"rope_style", c.rope_style == RopeStyle::Halves ? "halves" : "interleaved"},
          {"tied_embeddings", c.tied_embeddings}, {"attn_bias", c.attn_bias}, {"sliding_window", c.sliding_window}};
}

ModelConfig config_from_json(const json& j) {
  ModelConfig c;
  c.arch = j.at("arch").get<std::string>();
  c.dim = j.at("dim").get<int32_t>();
  c.hidden_dim = j.at("hidden_dim").get<int32_t>();
  c.n_layers = j.at("n_layers").get<int32_t>();
  c.n_heads = j.at("n_heads").get<int32_t>();
  c.n_kv_heads = j.at("n_kv_heads").get<int32_t>();
  c.head_dim = j.at("head_dim").get<int32_t>();
  c.vocab_size = j.at("vocab_size").get<int32_t>();
  c.max_seq_len = j.at("max_seq_len").get<int32_t>();
  c.norm_eps = j.at("norm_eps").get<float>();
  c.rope_theta = j.at("rope_theta").get<float>();
  const auto& rs = j.at("rope_scaling");
  c.rope_scaling.type = rs.at("type").get<std::string>();
  c.rope_scaling.factor = rs.at("factor").get<float>();
  c.rope_scaling.low_freq_factor = rs.at("low_freq_factor").get<float>();
  c.rope_scaling.high_freq_factor = rs.at("high_freq_factor").get<float>();
  c.rope_scaling.original_max_position = rs.at("original_max_position").get<int32_t>();
  const std::string style = j.at("rope_style").get<std::string>();
  if (style != "halves" && style != "interleaved") throw std::runtime_error("rope_style '" + style + "'");
  c.rope_style = style == "halves" ? RopeStyle::Halves : RopeStyle::Interleaved;
  c.tied_embeddings = j.at("tied_embeddings").get<bool>();
  c.attn_bias = j.at("attn_bias").get<bool>();
  c.sliding_window = j.value("sliding_window", 0);  // (absent in files before it existed)
  if (c.sliding_window < 0) throw std::runtime_error("sliding_window < 0");
  return c;
}

json vocab_json(const Vocab& v) {
  std::vector<int32_t> types;
  for (auto t : v.types) types.push_back(int32_t(t));
  return {{"kind", v.kind == VocabKind::SPM ? "spm" : "bpe"}, {"tokens", v.tokens}, {"scores", v.scores},
          {"types", types}, {"merges", v.merges}, {"bos", v.bos_id}, {"eos", v.eos_id}, {"unk", v.unk_id},
          {"pad", v.pad_id}, {"add_bos", v.add_bos}, {"add_space_prefix", v.add_space_prefix},
          {"byte_fallback", v.byte_fallback}, {"pre", v.pre}};
}

Vocab vocab_from_json(const json& j, const std::string& source) {
  Vocab v;
  const std::string kind = j.at("kind").get<std::string>();
  if (kind != "spm" && kind != "bpe") throw std::runtime_error("vocab kind '" + kind + "'");
  v.kind = kind == "spm" ? VocabKind::SPM : VocabKind::BPE;
  v.tokens = j.at("tokens").get<std::vector<std::string>>();
  v.scores = j.at("scores").get<std::vector<float>>();
  for (int32_t t : j.at("types").get<std::vector<int32_t>>()) v.types.push_back(TokenType(t));
  v.merges = j.at("merges").get<std::vector<std::string>>();
  v.bos_id = j.at("bos").get<int32_t>();
  v.eos_id = j.at("eos").get<int32_t>();
  v.unk_id = j.at("unk").get<int32_t>();
  v.pad_id = j.at("pad").get<int32_t>();
  v.add_bos = j.at("add_bos").get<bool>();
  v.add_space_prefix = j.at("add_space_prefix").get<bool>();
  v.byte_fallback = j.at("byte_fallback").get<bool>();
  v.pre = j.at("pre").get<std::string>();
  v.source = source;
  if (v.types.size() != v.tokens.size() || (!v.scores.empty() && v.scores.size() != v.tokens.size()))
    throw std::runtime_error("vocabulary arrays differ in length");
  for (int32_t id : {v.bos_id, v.eos_id, v.unk_id, v.pad_id})
    if (id < -1 || id >= int32_t(v.tokens.size())) throw std::runtime_error("special token id out of range");
  return v;
}
}  // namespace

void write_lmpress_model(const Model& m, const std::string& path, bool overwrite) {
  std::vector<SafetensorsWriteTensor> ts;
  json qinfo = json::object();
  for (const Tensor* t : m.weight_tensors()) {
    const char* dt = st_dtype(t->dtype);
    if (!dt) fail(path, "cannot store tensor " + t->name + " of dtype " + dtype_name(t->dtype));
    if (t->dtype == DType::Q) {
      ts.push_back({t->name, "U8", {int64_t(t->nbytes)}, t->data, t->nbytes});
      qinfo[t->name] = {{"format", format_name(format_spec(t->format))}, {"shape", t->shape}};
    } else {
      ts.push_back({t->name, dt, t->shape, t->data, t->nbytes});
    }
  }
  std::string vjs;
  if (m.tokenizer) {
    vjs = vocab_json(m.tokenizer->vocab()).dump();
    ts.push_back({"lmpress.vocab", "U8", {int64_t(vjs.size())}, vjs.data(), vjs.size()});
  }
  std::map<std::string, std::string> meta = {{"format", "lmpress"},
                                             {"lmpress.version", kVersion},
                                             {"lmpress.config", config_json(m.cfg).dump()},
                                             {"lmpress.tensors", qinfo.dump()}};
  for (const auto& [k, v] : m.metadata) meta["lmpress." + k] = v;
  write_safetensors(path, ts, meta, overwrite);
}

// ---- streaming writer ------------------------------------------------------------------------------
struct LmpressStreamWriter::Impl {
  std::string path;
  AtomicFile file;
  uint64_t data_start = 0;
  std::map<std::string, std::pair<uint64_t, PlannedTensor>> where;  // name -> (offset, plan)
  std::set<std::string> written;
  Impl(const std::string& p, bool overwrite) : path(p), file(p, overwrite) {}
};

LmpressStreamWriter::LmpressStreamWriter(const std::string& path, const Model& src,
                                         const std::vector<PlannedTensor>& plan,
                                         const std::map<std::string, std::string>& metadata, bool overwrite)
    : impl_(std::make_unique<Impl>(path, overwrite)) {
  std::vector<SafetensorsWriteTensor> ts;
  json qinfo = json::object();
  uint64_t off = 0;
  for (const PlannedTensor& p : plan) {
    const char* dt = st_dtype(p.dtype);
    if (!dt) fail(path, "cannot store tensor " + p.name + " of dtype " + dtype_name(p.dtype));
    if (p.dtype == DType::Q) {
      ts.push_back({p.name, "U8", {int64_t(p.nbytes)}, nullptr, p.nbytes});
      qinfo[p.name] = {{"format", format_name(format_spec(p.format))}, {"shape", p.shape}};
    } else {
      ts.push_back({p.name, dt, p.shape, nullptr, p.nbytes});
    }
    impl_->where[p.name] = {off, p};
    off += p.nbytes;
  }
  std::string vjs;
  if (src.tokenizer) {
    vjs = vocab_json(src.tokenizer->vocab()).dump();
    ts.push_back({"lmpress.vocab", "U8", {int64_t(vjs.size())}, vjs.data(), vjs.size()});
  }
  // a plan with its own classifier for a tied source (quarot unties it) writes an untied model
  ModelConfig cfg = src.cfg;
  if (impl_->where.count("output.weight")) cfg.tied_embeddings = false;
  std::map<std::string, std::string> meta = {{"format", "lmpress"},
                                             {"lmpress.version", kVersion},
                                             {"lmpress.config", config_json(cfg).dump()},
                                             {"lmpress.tensors", qinfo.dump()}};
  for (const auto& [k, v] : metadata) meta["lmpress." + k] = v;
  const std::string head = io_detail::safetensors_header(path, ts, meta);
  impl_->file.write(head);
  impl_->data_start = head.size();
  if (!vjs.empty()) impl_->file.write_at(impl_->data_start + off, vjs.data(), vjs.size());
}

LmpressStreamWriter::~LmpressStreamWriter() = default;

void LmpressStreamWriter::put(const Tensor& t) {
  auto it = impl_->where.find(t.name);
  if (it == impl_->where.end()) fail(impl_->path, "tensor " + t.name + " is not in the planned output");
  const auto& [off, p] = it->second;
  if (t.nbytes != p.nbytes || t.dtype != p.dtype || (p.dtype == DType::Q && t.format != p.format))
    fail(impl_->path, "tensor " + t.name + " does not match its planned layout (" + std::to_string(t.nbytes) +
                          " bytes of " + dtype_name(t.dtype) + ", planned " + std::to_string(p.nbytes) + " of " +
                          dtype_name(p.dtype) + ")");
  if (!impl_->written.insert(t.name).second) fail(impl_->path, "tensor " + t.name + " written twice");
  impl_->file.write_at(impl_->data_start + off, t.data, t.nbytes);
}

void LmpressStreamWriter::commit() {
  for (const auto& [name, wp] : impl_->where)
    if (!impl_->written.count(name)) fail(impl_->path, "tensor " + name + " was never written");
  impl_->file.commit();
}

bool is_lmpress_file(const std::string& path) {
  if (is_directory(path) || !file_exists(path)) return false;
  MappedFile f(path);
  if (f.size() < 16) return false;
  uint64_t hl;
  std::memcpy(&hl, f.data(), 8);
  if (hl < 2 || hl > f.size() - 8 || f.data()[8] != '{') return false;
  const std::string_view head(reinterpret_cast<const char*>(f.data() + 8), size_t(hl));
  return head.find("\"lmpress.version\"") != std::string_view::npos;
}

namespace {
Model load_lmpress_from(SafetensorsFile st, const std::string& path, const LoadOptions& opt);
}  // namespace

Model load_lmpress_model(const std::string& path, const LoadOptions& opt) {
  return load_lmpress_from(read_safetensors(path), path, opt);
}

Model parse_lmpress_buffer(const uint8_t* data, size_t n, const std::string& name, const LoadOptions& opt) {
  SafetensorsFile st;
  parse_safetensors_buffer(data, n, name, st);
  return load_lmpress_from(std::move(st), name, opt);
}

namespace {
Model load_lmpress_from(SafetensorsFile st, const std::string& path, const LoadOptions& opt) {
  auto mi = st.metadata.find("format");
  if (mi == st.metadata.end() || mi->second != "lmpress") fail(path, "safetensors file without lmpress metadata");
  auto vi = st.metadata.find("lmpress.version");
  if (vi == st.metadata.end() || vi->second != kVersion)
    fail(path, "unsupported lmpress file version '" + (vi == st.metadata.end() ? std::string("?") : vi->second) +
                   "' (this build reads version " + kVersion + ")");
  Model m;
  m.path = path;
  m.format = "lmpress";
  if (st.file) {
    m.file_bytes = st.file->size();
    m.files.push_back(st.file);
  }
  json qinfo;
  try {
    m.cfg = config_from_json(json::parse(st.metadata.at("lmpress.config")));
    qinfo = json::parse(st.metadata.at("lmpress.tensors"));
    if (!qinfo.is_object()) throw std::runtime_error("lmpress.tensors is not a JSON object");
  } catch (const std::exception& e) {
    fail(path, std::string("bad lmpress metadata: ") + io_detail::json_error_text(e));
  }
  validate_config(m.cfg, path);
  for (const auto& [k, v] : st.metadata)
    if (k.rfind("lmpress.", 0) == 0 && k != "lmpress.config" && k != "lmpress.tensors" && k != "lmpress.version")
      m.metadata[k.substr(8)] = v;

  std::set<std::string> used;
  auto get = [&](const std::string& name, bool required) -> Tensor {
    const SafetensorsTensor* s = st.find(name);
    if (!s) {
      if (required) fail(path, "missing tensor " + name);
      return Tensor{};
    }
    used.insert(name);
    Tensor t;
    t.name = name;
    t.data = s->data;
    t.nbytes = s->nbytes;
    if (qinfo.contains(name)) {
      if (s->dtype != "U8") fail(path, "packed tensor " + name + " must be stored as U8");
      try {
        const QuantSpec spec = parse_format_name(qinfo[name].at("format").get<std::string>());
        t.dtype = DType::Q;
        t.format = format_id(spec);
        t.shape = qinfo[name].at("shape").get<std::vector<int64_t>>();
      } catch (const Error& e) {
        fail(path, "tensor " + name + ": " + e.what());
      } catch (const std::exception& e) {
        fail(path, "tensor " + name + ": bad format entry: " + io_detail::json_error_text(e));
      }
      if (t.shape.size() != 2 || t.shape[0] <= 0 || t.shape[1] <= 0)
        fail(path, "tensor " + name + ": packed shape must be [rows, cols]");
      validate_packed(t, path);
    } else {
      if (s->dtype == "F32") t.dtype = DType::F32;
      else if (s->dtype == "F16") t.dtype = DType::F16;
      else if (s->dtype == "BF16") t.dtype = DType::BF16;
      else fail(path, "tensor " + name + " has unsupported dtype " + s->dtype);
      t.shape = s->shape;
      // after a packed tensor of odd length the data may sit at an odd offset: an aligned copy
      return io_detail::view_tensor(t.name, t.dtype, t.shape, t.data, t.nbytes);
    }
    return t;
  };
  const auto& c = m.cfg;
  if (c.n_layers <= 0 || c.n_layers > 4096) fail(path, "bad layer count in lmpress.config");
  // every tensor of the architecture table
  const ArchInfo& ai = [&]() -> const ArchInfo& {
    try {
      return arch_info(c.arch);
    } catch (const Error& e) {
      fail(path, e.what());
    }
  }();
  m.layers.resize(size_t(c.n_layers));
  for (const ArchTensor& at : ai.tensors) {
    if (!at.present(c)) continue;
    if (!arch_per_layer(at)) {
      m.*(at.global) = get(arch_tensor_name(at, 0), true);
      continue;
    }
    for (int l = 0; l < c.n_layers; ++l) m.layers[size_t(l)].*(at.member) = get(arch_tensor_name(at, l), true);
  }
  if (c.tied_embeddings) m.output = m.tok_embd;
  used.insert("lmpress.vocab");
  for (const SafetensorsTensor& t : st.tensors)
    if (!used.count(t.name))
      fail(path, "unexpected tensor " + t.name + " (not part of the model its lmpress.config describes: " +
                     std::to_string(c.n_layers) + " layers" + (c.tied_embeddings ? ", tied output" : "") +
                     (c.attn_bias ? ", q/k/v biases" : "") + ")");
  for (const auto& [name, _] : qinfo.items())
    if (!used.count(name)) fail(path, "lmpress.tensors describes " + name + ", which the file does not hold");
  if (const SafetensorsTensor* v = st.find("lmpress.vocab")) {
    try {
      Vocab voc = vocab_from_json(json::parse(std::string_view(reinterpret_cast<const char*>(v->data), v->nbytes)), path);
      m.tokenizer = std::make_unique<Tokenizer>(std::move(voc));
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      fail(path, std::string("bad embedded vocabulary: ") + io_detail::json_error_text(e));
    }
  }
  m.validate();
  if (!opt.tokenizer_path.empty()) {
    Vocab v = io_detail::load_vocab_file(opt.tokenizer_path, c.vocab_size);
    io_detail::check_vocab_fits(v, c, opt.tokenizer_path, true);
    m.tokenizer = std::make_unique<Tokenizer>(std::move(v));
  } else if (m.tokenizer) {
    io_detail::check_vocab_fits(m.tokenizer->vocab(), c, path, false);
  } else if (opt.require_tokenizer) {
    fail(path, "no tokenizer embedded in the lmpress file; pass --tokenizer");
  }
  if (opt.check_tensors) check_tensors_finite(m);
  return m;
}
}  // namespace

}  // namespace lmpress
