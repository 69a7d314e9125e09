// Format detection (load_model) and helpers shared by the model-file parsers.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "io/io_internal.h"
#include "lmpress/io.h"

namespace lmpress {

namespace io_detail {

void check_config(const ModelConfig& c, const std::string& where) {
  auto need = [&](int64_t v, const char* name, int64_t max) {
    if (v <= 0 || v > max)
      fail(where, std::string(name) + " is " + std::to_string(v) + ", expected 1.." +
                      std::to_string(max));
  };
  need(c.dim, "dim (hidden size)", kMaxDim);
  need(c.hidden_dim, "hidden_dim (feed-forward size)", kMaxDim);
  need(c.n_layers, "n_layers", kMaxLayers);
  need(c.n_heads, "n_heads", 1 << 14);
  need(c.n_kv_heads, "n_kv_heads", 1 << 14);
  need(c.head_dim, "head_dim", 1 << 14);
  need(c.vocab_size, "vocab_size", kMaxDim * 4);
  need(c.max_seq_len, "context length", kMaxDim * 16);
  if (c.n_heads % c.n_kv_heads != 0)
    fail(where, "n_kv_heads " + std::to_string(c.n_kv_heads) + " does not divide n_heads " +
                    std::to_string(c.n_heads));
  if (c.head_dim % 2 != 0)
    fail(where, "head size " + std::to_string(c.head_dim) + " is odd (RoPE needs pairs)");
  if (int64_t(c.n_heads) * c.head_dim > kMaxDim)
    fail(where, "n_heads * head_dim = " + std::to_string(int64_t(c.n_heads) * c.head_dim) +
                    " is too large");
  if (!(c.norm_eps > 0.0f) || !(c.norm_eps < 1.0f))
    fail(where, "RMS norm epsilon " + std::to_string(c.norm_eps) + " is not in (0, 1)");
  if (!(c.rope_theta > 0.0f) || !std::isfinite(c.rope_theta))
    fail(where, "RoPE theta " + std::to_string(c.rope_theta) + " is not a positive number");
  const RopeScaling& s = c.rope_scaling;
  if (!s.type.empty()) {
    if (!(s.factor > 0.0f) || !std::isfinite(s.factor))
      fail(where, "rope scaling factor " + std::to_string(s.factor) + " is not positive");
    if (s.type == "llama3" &&
        (!(s.high_freq_factor > s.low_freq_factor) || !(s.low_freq_factor > 0.0f) ||
         !std::isfinite(s.high_freq_factor) || s.original_max_position <= 0))
      fail(where, "llama3 rope scaling needs high_freq_factor > low_freq_factor > 0 and a "
                  "positive original_max_position_embeddings");
  }
}

Tensor view_tensor(std::string name, DType dt, std::vector<int64_t> shape, const void* data,
                   size_t nbytes) {
  // Files may place a tensor at an offset that is not a multiple of its element size (GGUF with
  // a small general.alignment, safetensors after an odd-length tensor): copy those so consumers
  // can read elements directly.
  const size_t es = dtype_size(dt);
  if (es > 1 && data != nullptr && reinterpret_cast<uintptr_t>(data) % es != 0) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    return make_owned_tensor(std::move(name), dt, std::move(shape), std::vector<uint8_t>(p, p + nbytes));
  }
  Tensor t;
  t.name = std::move(name);
  t.dtype = dt;
  t.shape = std::move(shape);
  t.data = data;
  t.nbytes = nbytes;
  return t;
}

Tensor small_to_f32(const Tensor& t) {
  if (t.data == nullptr || t.dtype == DType::F32) return t;
  Tensor r = make_f32_tensor(t.name, t.shape, tensor_to_f32(t));
  return r;
}

static bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

Vocab load_vocab_file(const std::string& path, int32_t expected_vocab) {
  if (!file_exists(path)) fail(path, "tokenizer file not found");
  if (ends_with(path, ".model")) return load_vocab_sentencepiece(path);
  if (ends_with(path, ".json")) return load_vocab_hf_json(path);
  return load_vocab_llama2c(path, expected_vocab);
}

void check_vocab_fits(const Vocab& v, const ModelConfig& c, const std::string& where) {
  if (v.tokens.empty()) fail(where, "tokenizer has no tokens");
  if (int64_t(v.tokens.size()) > c.vocab_size)
    fail(where, "tokenizer has " + std::to_string(v.tokens.size()) +
                    " tokens but the model's vocabulary (embedding rows) is " +
                    std::to_string(c.vocab_size) + "; wrong tokenizer?");
}

double clean_float(float f) {
  char buf[48];
  for (int prec = 6; prec <= 9; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, double(f));
    if (std::strtof(buf, nullptr) == f) break;
  }
  return std::strtod(buf, nullptr);
}

std::vector<NamedTensor> canonical_tensors(const Model& m) {
  std::vector<NamedTensor> v;
  const ArchInfo& ai = arch_info(m.cfg.arch);
  bool layers_done = false;
  for (const ArchTensor& at : ai.tensors) {
    if (!arch_per_layer(at)) {
      if (at.present(m.cfg)) v.push_back({arch_tensor_name(at, 0), &(m.*(at.global)), -1, at.key});
      continue;
    }
    if (layers_done) continue;  // per-layer rows: all of a layer, layer by layer
    layers_done = true;
    for (size_t i = 0; i < m.layers.size(); ++i)
      for (const ArchTensor& lt : ai.tensors)
        if (arch_per_layer(lt) && lt.present(m.cfg))
          v.push_back({arch_tensor_name(lt, int(i)), &(m.layers[i].*(lt.member)), int(i), lt.key});
  }
  return v;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  return r + "]";
}

}  // namespace io_detail

Model load_model(const std::string& path, const LoadOptions& opt) {
  if (is_directory(path)) {
    if (file_exists(path + "/config.json")) return load_hf_model(path, opt);
    fail(path, "is a directory without config.json (expected a Hugging Face model directory)");
  }
  if (!file_exists(path)) fail(path, "no such file or directory");
  uint8_t magic[4] = {0, 0, 0, 0};
  {
    MappedFile f(path);
    if (f.size() >= 4) std::memcpy(magic, f.data(), 4);
  }
  if (std::memcmp(magic, "GGUF", 4) == 0) return load_gguf_model(path, opt);
  if (is_lmpress_file(path)) return load_lmpress_model(path, opt);
  return load_llama2c(path, opt);
}

}  // namespace lmpress
