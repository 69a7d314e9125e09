// Hugging Face model directories: config.json + model.safetensors (or a sharded index) +
// tokenizer.model / tokenizer.json. q/k rows follow HF's RoPE convention (rotate halves), which
// the model records as RopeStyle::Halves; nothing is permuted at load.
#include <algorithm>
#include <deque>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <unordered_map>

#include "io/hf_internal.h"
#include "io/io_internal.h"
#include "lmpress/io.h"

namespace lmpress {

using namespace io_detail;
using json = nlohmann::json;
namespace fs = std::filesystem;

// A short description of a JSON value for error messages (never a deep dump).
std::string io_detail::json_brief(const json& v) {
  if (v.is_structured()) return std::string("an ") + v.type_name();
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 40) + "...";
  return s;
}

json io_detail::parse_json_text(std::string_view text, const std::string& name) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(name, std::string("malformed JSON: ") + io_detail::json_error_text(e));
  }
}

std::string io_detail::hf_name(const NamedTensor& nt) {
  for (const ArchTensor& at : arch_info("llama").tensors)
    if (nt.kind == at.key) return arch_hf_name(at, nt.layer);
  LMP_ASSERT(false);
  return "";
}

const char* io_detail::st_dtype_name(DType d) {
  return d == DType::F16 ? "F16" : d == DType::BF16 ? "BF16" : "F32";
}

namespace {

struct HfArch {
  const char* arch;
  const char* hf_class;
  const char* model_type;
};
constexpr HfArch kArchs[] = {
    {"llama", "LlamaForCausalLM", "llama"},
    {"mistral", "MistralForCausalLM", "mistral"},
    {"qwen2", "Qwen2ForCausalLM", "qwen2"},
};

ModelConfig parse_hf_config_json(const json& j, const std::string& name) {
  if (!j.is_object()) fail(name, "config.json must contain a JSON object");
  JsonFields f{j, name};
  ModelConfig c;
  // Architecture: the first entry of "architectures", else "model_type".
  std::string arch_name;
  if (const json* a = f.get("architectures")) {
    if (!a->is_array() || a->empty() || !(*a)[0].is_string())
      fail(name, "field \"architectures\" must be a non-empty array of strings");
    arch_name = (*a)[0].get<std::string>();
    c.arch.clear();
    for (const auto& k : kArchs)
      if (arch_name == k.hf_class) c.arch = k.arch;
  } else {
    arch_name = f.string("model_type", "");
    c.arch.clear();
    for (const auto& k : kArchs)
      if (arch_name == k.model_type) c.arch = k.arch;
  }
  if (c.arch.empty())
    fail(name, "unknown architecture '" + arch_name +
                   "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
  const std::string act = f.string("hidden_act", "silu");
  if (act != "silu") fail(name, "hidden_act '" + act + "' is not supported (only silu)");
  if (f.boolean("mlp_bias", false)) fail(name, "mlp_bias=true is not supported");

  c.dim = int32_t(f.integer("hidden_size", 0, true));
  c.hidden_dim = int32_t(f.integer("intermediate_size", 0, true));
  c.n_layers = int32_t(f.integer("num_hidden_layers", 0, true));
  c.n_heads = int32_t(f.integer("num_attention_heads", 0, true));
  c.n_kv_heads = int32_t(f.integer("num_key_value_heads", c.n_heads));
  if (c.n_heads <= 0) fail(name, "num_attention_heads must be positive");
  if (!f.get("head_dim") && c.dim % c.n_heads != 0)
    fail(name, "hidden_size " + std::to_string(c.dim) + " is not a multiple of num_attention_heads " +
                   std::to_string(c.n_heads) + " (and no head_dim is given)");
  c.head_dim = int32_t(f.integer("head_dim", c.dim / c.n_heads));
  c.vocab_size = int32_t(f.integer("vocab_size", 0, true));
  c.max_seq_len = int32_t(f.integer("max_position_embeddings", 2048));
  c.norm_eps = float(f.number("rms_norm_eps", 1e-6));
  c.rope_theta = float(f.number("rope_theta", 10000.0));
  c.tied_embeddings = f.boolean("tie_word_embeddings", false);
  c.attn_bias = c.arch == "qwen2" ? true : f.boolean("attention_bias", false);
  // Mistral attends to the last `sliding_window` positions (null: everything); Qwen2 only when
  // use_sliding_window is set.
  if (const json* sw = f.get("sliding_window"); sw && !sw->is_null() &&
                                                 (c.arch != "qwen2" || f.boolean("use_sliding_window", false))) {
    if (!sw->is_number_integer() || sw->get<int64_t>() < 1 || sw->get<int64_t>() > (int64_t(1) << 30))
      fail(name, "field \"sliding_window\" must be a positive integer or null");
    c.sliding_window = int32_t(sw->get<int64_t>());
  }
  c.rope_style = RopeStyle::Halves;
  if (const json* rs = f.get("rope_scaling")) {
    if (!rs->is_object()) fail(name, "field \"rope_scaling\" must be an object or null");
    JsonFields r{*rs, name};
    std::string type = r.string("rope_type", "");
    if (type.empty()) type = r.string("type", "");
    if (type == "llama3") {
      c.rope_scaling.type = "llama3";
      c.rope_scaling.factor = float(r.number("factor", 8.0));
      c.rope_scaling.low_freq_factor = float(r.number("low_freq_factor", 1.0));
      c.rope_scaling.high_freq_factor = float(r.number("high_freq_factor", 4.0));
      c.rope_scaling.original_max_position =
          int32_t(r.integer("original_max_position_embeddings", 8192));
    } else if (type == "linear") {
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = float(r.number("factor", 1.0));
    } else if (type != "default" && !type.empty()) {
      fail(name, "rope_scaling type '" + type + "' is not supported (supported: llama3, linear)");
    }
  }
  check_config(c, name);
  return c;
}

DType dtype_of_st(const std::string& d) {
  if (d == "F32") return DType::F32;
  if (d == "F16") return DType::F16;
  if (d == "BF16") return DType::BF16;
  return DType::I32;  // sentinel: unsupported
}

// "<s>" or {"content": "<s>", ...} -> "<s>"; "" otherwise.
std::string special_token_text(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return "";
}

// Applies bos/eos/add_bos from config.json and tokenizer_config.json to a vocabulary.
void apply_special_tokens(Vocab& v, const json& config, const std::string& dir) {
  const int32_t n = int32_t(v.tokens.size());
  auto id_of = [&](const json& j, const char* key) -> int32_t {
    auto it = j.find(key);
    if (it == j.end()) return -1;
    const json* x = &*it;
    if (x->is_array() && !x->empty()) x = &(*x)[0];
    if (!x->is_number_integer()) return -1;
    const int64_t id = x->get<int64_t>();
    return id >= 0 && id < n ? int32_t(id) : -1;
  };
  if (int32_t b = id_of(config, "bos_token_id"); b >= 0) v.bos_id = b;
  if (int32_t e = id_of(config, "eos_token_id"); e >= 0) v.eos_id = e;

  const std::string tc_path = dir + "/tokenizer_config.json";
  if (!file_exists(tc_path)) return;
  const json tc = parse_json_text(read_text_file(tc_path), tc_path);
  if (!tc.is_object()) fail(tc_path, "must contain a JSON object");
  std::unordered_map<std::string, int32_t> index;
  auto find_token = [&](const std::string& text) -> int32_t {
    if (index.empty())
      for (int32_t i = 0; i < n; ++i) index.emplace(v.tokens[size_t(i)], i);
    auto it = index.find(text);
    return it == index.end() ? -1 : it->second;
  };
  if (auto it = tc.find("add_bos_token"); it != tc.end() && it->is_boolean()) v.add_bos = it->get<bool>();
  if (std::string s = special_token_text(tc, "bos_token"); !s.empty())
    if (int32_t id = find_token(s); id >= 0) v.bos_id = id;
  if (std::string s = special_token_text(tc, "eos_token"); !s.empty())
    if (int32_t id = find_token(s); id >= 0) v.eos_id = id;
  if (std::string s = special_token_text(tc, "unk_token"); !s.empty())
    if (int32_t id = find_token(s); id >= 0) v.unk_id = id;
  if (std::string s = special_token_text(tc, "pad_token"); !s.empty())
    if (int32_t id = find_token(s); id >= 0) v.pad_id = id;
}

bool plain_file_name(const std::string& s) {
  return !s.empty() && s.find('/') == std::string::npos && s.find('\\') == std::string::npos &&
         s != "." && s != "..";
}

}  // namespace

ModelConfig parse_hf_config(const std::string& json_text, const std::string& name) {
  try {
    return parse_hf_config_json(parse_json_text(json_text, name), name);
  } catch (const json::exception& e) {
    fail(name, std::string("invalid config: ") + io_detail::json_error_text(e));
  }
}

Model load_hf_model(const std::string& dir, const LoadOptions& opt) {
  Model m;
  const std::string cfg_path = dir + "/config.json";
  const json config = parse_json_text(read_text_file(cfg_path), cfg_path);
  try {
    m.cfg = parse_hf_config_json(config, cfg_path);
  } catch (const json::exception& e) {
    fail(cfg_path, std::string("invalid config: ") + io_detail::json_error_text(e));
  }
  const ModelConfig& c = m.cfg;

  // Weight files: one model.safetensors, or shards listed by model.safetensors.index.json.
  std::deque<SafetensorsFile> shards;
  const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json";
  if (file_exists(single)) {
    shards.push_back(read_safetensors(single));
  } else if (file_exists(index)) {
    const json ij = parse_json_text(read_text_file(index), index);
    auto wm = ij.is_object() ? ij.find("weight_map") : ij.end();
    if (wm == ij.end() || !wm->is_object())
      fail(index, "missing \"weight_map\" object");
    std::set<std::string> files;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string() || !plain_file_name(it.value().get<std::string>()))
        fail(index, "weight_map entry for '" + it.key() + "' must be a file name in the directory");
      files.insert(it.value().get<std::string>());
    }
    if (files.empty()) fail(index, "weight_map is empty");
    for (const std::string& fn : files) shards.push_back(read_safetensors(dir + "/" + fn));
  } else if (file_exists(dir + "/pytorch_model.bin") ||
             file_exists(dir + "/pytorch_model.bin.index.json")) {
    fail(dir, "PyTorch .bin checkpoints are not supported; save the model as safetensors");
  } else {
    fail(dir, "no model.safetensors or model.safetensors.index.json in the directory");
  }

  std::unordered_map<std::string, std::pair<const SafetensorsTensor*, const SafetensorsFile*>> by_name;
  for (const SafetensorsFile& s : shards) {
    for (const SafetensorsTensor& t : s.tensors)
      if (!by_name.emplace(t.name, std::make_pair(&t, &s)).second)
        fail(s.file->path(), "tensor " + t.name + " appears in more than one shard");
    m.files.push_back(s.file);
    m.file_bytes += s.file->size();
  }
  std::set<std::string> used;
  auto tensor = [&](const std::string& name, bool required) -> Tensor {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      if (required) fail(dir, "tensor " + name + " is missing from the safetensors files");
      return Tensor{};
    }
    used.insert(name);
    const SafetensorsTensor& t = *it->second.first;
    const DType dt = dtype_of_st(t.dtype);
    if (dt == DType::I32)
      fail(it->second.second->file->path(),
           "tensor " + name + " has dtype " + t.dtype + " (supported: F32, F16, BF16)");
    Tensor r = view_tensor(name, dt, t.shape, t.data, t.nbytes);
    return r.shape.size() == 1 ? small_to_f32(r) : r;
  };

  // Look up every tensor of the canonical layout by its HF name.
  m.layers.resize(size_t(c.n_layers));
  Model& mm = m;
  // GPTQ / AWQ checkpoints: a linear layer stored as <prefix>.qweight, .qzeros, .scales (.g_idx).
  HfQuantConfig qc;
  const bool has_qweight = std::any_of(by_name.begin(), by_name.end(), [](const auto& kv) { return kv.first.ends_with(".qweight"); });
  const bool quantized = find_hf_quant_config(config, dir, has_qweight, &qc);
  int n_quant = 0, n_dense[4] = {0, 0, 0, 0};
  const ArchInfo& ai = arch_info(c.arch);
  for (const NamedTensor& nt : canonical_tensors(mm)) {
    Tensor* dst = const_cast<Tensor*>(nt.t);
    const std::string hn = hf_name(nt);
    const std::string prefix = hn.size() > 7 && hn.ends_with(".weight") ? hn.substr(0, hn.size() - 7) : "";
    auto part = [&](const char* what) -> const SafetensorsTensor* {
      auto it = by_name.find(prefix + "." + what);
      if (it == by_name.end()) return nullptr;
      used.insert(it->first);
      return it->second.first;
    };
    if (prefix.empty() || !by_name.count(prefix + ".qweight")) {
      *dst = tensor(hn, true);
      continue;
    }
    if (!quantized)
      fail(dir, "tensor " + prefix + ".qweight is quantized but config.json has no quantization_config");
    if (by_name.count(hn)) fail(dir, "layer " + prefix + " has both weight and qweight");
    HfQuantParts parts;
    parts.file = by_name.at(prefix + ".qweight").second->file->path();
    parts.qweight = part("qweight");
    parts.qzeros = part("qzeros");
    parts.scales = part("scales");
    parts.g_idx = part("g_idx");
    const std::vector<int64_t> shape = arch_tensor(ai, nt.kind).shape(c);
    HfQuantDense why = HfQuantDense::No;
    *dst = import_hf_quant_linear(qc, nt.name, prefix, shape[0], shape[1], parts, &why);
    ++n_quant;
    ++n_dense[int(why)];
  }
  if (n_dense[int(HfQuantDense::ActOrder)])
    log_info("%s: %d tensors with act-order groups were dequantized (exactly, to f32); lmpress runs them dense",
             dir.c_str(), n_dense[int(HfQuantDense::ActOrder)]);
  if (n_dense[int(HfQuantDense::Scales)])
    log_info("%s: %d tensors with scales outside f16 were dequantized (exactly, to f32); lmpress runs them dense",
             dir.c_str(), n_dense[int(HfQuantDense::Scales)]);
  if (n_dense[int(HfQuantDense::Zeros)])
    log_info("%s: %d tensors with zero points beyond 255 were dequantized (exactly, to f32); lmpress runs them dense",
             dir.c_str(), n_dense[int(HfQuantDense::Zeros)]);
  if (c.tied_embeddings) {
    m.output = m.tok_embd;
    used.insert("lm_head.weight");  // some tied checkpoints store a copy; it is not needed
  }
  for (const auto& [name, _] : by_name)
    if (!used.count(name) && name.find("rotary_emb.inv_freq") == std::string::npos)
      fail(dir, "unexpected tensor " + name + " (not part of the " + c.arch + " architecture)");

  m.path = dir;
  m.format = n_quant == 0 ? "hf" : qc.method == HfQuantConfig::Method::Awq ? "hf-awq" : "hf-gptq";
  m.validate();
  if (opt.check_tensors) check_tensors_finite(m);

  // Tokenizer: override, tokenizer.model (SentencePiece), tokenizer.json.
  std::string tok = opt.tokenizer_path;
  if (tok.empty() && file_exists(dir + "/tokenizer.model")) tok = dir + "/tokenizer.model";
  if (tok.empty() && file_exists(dir + "/tokenizer.json")) tok = dir + "/tokenizer.json";
  if (tok.empty()) {
    if (opt.require_tokenizer)
      fail(dir, "no tokenizer found in the model directory (looked for tokenizer.model, "
                "tokenizer.json); pass --tokenizer");
    return m;
  }
  Vocab v = load_vocab_file(tok, c.vocab_size);
  if (opt.tokenizer_path.empty()) apply_special_tokens(v, config, dir);
  check_vocab_fits(v, c, tok, !opt.tokenizer_path.empty());
  m.tokenizer = std::make_unique<Tokenizer>(std::move(v));
  return m;
}

int32_t io_detail::rope_permute_heads(const Model& m, const NamedTensor& nt) {
  if (m.cfg.rope_style != RopeStyle::Interleaved) return 0;
  if (nt.kind == "attn_q" || nt.kind == "attn_q.bias") return m.cfg.n_heads;
  if (nt.kind == "attn_k" || nt.kind == "attn_k.bias") return m.cfg.n_kv_heads;
  return 0;
}

nlohmann::ordered_json io_detail::hf_config_json(const Model& m, DType dtype, const std::string& dir) {
  const ModelConfig& c = m.cfg;
  const char* hf_class = "LlamaForCausalLM";
  const char* model_type = "llama";
  for (const auto& k : kArchs)
    if (c.arch == k.arch) hf_class = k.hf_class, model_type = k.model_type;
  // HF's Mistral has no attention bias, HF's Qwen2 always has one: fall back to Llama otherwise.
  if ((c.arch == "mistral" && c.attn_bias) || (c.arch == "qwen2" && !c.attn_bias))
    hf_class = "LlamaForCausalLM", model_type = "llama";
  const bool is_llama = std::string(model_type) == "llama";
  const Vocab* v = m.tokenizer ? &m.tokenizer->vocab() : nullptr;
  nlohmann::ordered_json cj;
  cj["architectures"] = {hf_class};
  cj["model_type"] = model_type;
  cj["hidden_size"] = c.dim;
  cj["intermediate_size"] = c.hidden_dim;
  cj["num_hidden_layers"] = c.n_layers;
  cj["num_attention_heads"] = c.n_heads;
  cj["num_key_value_heads"] = c.n_kv_heads;
  cj["head_dim"] = c.head_dim;
  cj["hidden_act"] = "silu";
  cj["max_position_embeddings"] = c.max_seq_len;
  cj["rms_norm_eps"] = clean_float(c.norm_eps);
  cj["rope_theta"] = clean_float(c.rope_theta);
  if (c.rope_scaling.type == "llama3") {
    cj["rope_scaling"] = {{"rope_type", "llama3"},
                          {"factor", clean_float(c.rope_scaling.factor)},
                          {"low_freq_factor", clean_float(c.rope_scaling.low_freq_factor)},
                          {"high_freq_factor", clean_float(c.rope_scaling.high_freq_factor)},
                          {"original_max_position_embeddings", c.rope_scaling.original_max_position}};
  } else if (c.rope_scaling.type == "linear") {
    cj["rope_scaling"] = {{"rope_type", "linear"}, {"factor", clean_float(c.rope_scaling.factor)}};
  } else if (!c.rope_scaling.type.empty()) {
    fail(dir, "cannot write rope scaling type '" + c.rope_scaling.type + "'");
  } else {
    cj["rope_scaling"] = nullptr;
  }
  if (is_llama) {
    cj["attention_bias"] = c.attn_bias;
    cj["mlp_bias"] = false;
  }
  cj["tie_word_embeddings"] = c.tied_embeddings;
  if (c.sliding_window > 0) {
    cj["sliding_window"] = c.sliding_window;
    if (c.arch == "qwen2") cj["use_sliding_window"] = true;
  } else if (c.arch == "mistral") {
    cj["sliding_window"] = nullptr;
  }
  cj["vocab_size"] = c.vocab_size;
  cj["torch_dtype"] = dtype == DType::F32 ? "float32" : dtype == DType::F16 ? "float16" : "bfloat16";
  if (v && v->bos_id >= 0) cj["bos_token_id"] = v->bos_id;
  if (v && v->eos_id >= 0) cj["eos_token_id"] = v->eos_id;
  cj["use_cache"] = true;
  return cj;
}

void io_detail::write_hf_text(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text);
  f.commit();
}

void io_detail::write_hf_metadata(const Model& m, const std::string& tmp, const nlohmann::ordered_json& cj) {
  const ModelConfig& c = m.cfg;
  const Vocab* v = m.tokenizer ? &m.tokenizer->vocab() : nullptr;
  auto write_text = [&](const std::string& fn, const std::string& text) { write_hf_text(tmp + "/" + fn, text); };
  write_text("config.json", cj.dump(2) + "\n");

  nlohmann::ordered_json gen;
  gen["_from_model_config"] = true;
  if (v && v->bos_id >= 0) gen["bos_token_id"] = v->bos_id;
  if (v && v->eos_id >= 0) gen["eos_token_id"] = v->eos_id;
  write_text("generation_config.json", gen.dump(2) + "\n");

  // Tokenizer.
  if (v) {
    auto token = [&](int32_t id) -> nlohmann::ordered_json {
      if (id < 0 || id >= int32_t(v->tokens.size())) return nullptr;
      return v->tokens[size_t(id)];
    };
    nlohmann::ordered_json tc;
    if (v->kind == VocabKind::SPM) {
      write_text("tokenizer.model", serialize_sentencepiece_model(*v));
      tc["tokenizer_class"] = "LlamaTokenizer";
      tc["legacy"] = true;
    } else {
      write_text("tokenizer.json", hf_tokenizer_json(*v));
      tc["tokenizer_class"] = "PreTrainedTokenizerFast";
    }
    tc["add_bos_token"] = v->add_bos;
    tc["add_eos_token"] = false;
    tc["bos_token"] = token(v->bos_id);
    tc["eos_token"] = token(v->eos_id);
    tc["unk_token"] = token(v->unk_id);
    tc["pad_token"] = token(v->pad_id);
    tc["model_max_length"] = c.max_seq_len;
    tc["clean_up_tokenization_spaces"] = false;
    write_text("tokenizer_config.json", tc.dump(2) + "\n");
  }
}

void write_hf_model(const Model& m, const std::string& dir, DType dtype, bool overwrite) {
  WriteOptions opt;
  opt.dtype = dtype;
  opt.overwrite = overwrite;
  write_hf_model(m, dir, opt);
}

void write_hf_model(const Model& m, const std::string& dir, const WriteOptions& opt) {
  if (opt.dtype && *opt.dtype != DType::F32 && *opt.dtype != DType::F16 && *opt.dtype != DType::BF16)
    fail(dir, std::string("Hugging Face output type ") + dtype_name(*opt.dtype) +
                  " is not supported (use f32, f16 or bf16)");
  if (!opt.requant.empty())
    fail(dir, "re-quantizing (--requant) applies to GGUF output only; a Hugging Face directory holds dense weights");
  m.validate();
  AtomicDir out(dir, opt.overwrite);
  const std::string tmp = out.tmp_path();

  // Weights (packed ones dequantized). HF q/k rows rotate halves: permute interleaved models per head.
  std::vector<NamedTensor> named = canonical_tensors(m);
  std::vector<SafetensorsWriteTensor> specs;
  std::vector<int32_t> permute(named.size(), 0);
  std::vector<DType> types(named.size());
  std::map<DType, int> type_count;  // config.json's torch_dtype: the most frequent weight type
  for (size_t i = 0; i < named.size(); ++i) {
    const NamedTensor& nt = named[i];
    const Tensor& t = *nt.t;
    types[i] = writer_dense_type(t, opt);
    if (t.shape.size() > 1) ++type_count[types[i]];
    permute[i] = rope_permute_heads(m, nt);
    specs.push_back({hf_name(nt), st_dtype_name(types[i]), t.shape, nullptr,
                     size_t(t.numel()) * dtype_size(types[i])});
  }
  DType dtype = DType::F32;
  int most = 0;
  for (const auto& [dt, n] : type_count)
    if (n > most) dtype = dt, most = n;
  if (opt.dtype) dtype = *opt.dtype;
  write_safetensors_lazy(tmp + "/model.safetensors", specs, {{"format", "pt"}}, [&](size_t i) {
    Tensor t = to_dense(*named[i].t, types[i]);
    return permute[i] ? permute_rope_rows(t, permute[i], true) : t;
  });

  write_hf_metadata(m, tmp, hf_config_json(m, dtype, dir));
  out.commit();
}

}  // namespace lmpress
