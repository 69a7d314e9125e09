// Private helpers shared by the Hugging Face reader and writer (hf.cpp) and its quantized
// checkpoints, GPTQ and AWQ (hf_quant.cpp).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "io/io_internal.h"

namespace lmpress::io_detail {

// A short description of a JSON value for error messages (never a deep dump).
std::string json_brief(const nlohmann::json& v);
// Parses JSON text; malformed text is an Error naming `name`.
nlohmann::json parse_json_text(std::string_view text, const std::string& name);

// Typed access to config.json fields with errors naming the file and the field.
struct JsonFields {
  const nlohmann::json& j;
  const std::string& name;

  const nlohmann::json* get(const char* key) const {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return nullptr;
    return &*it;
  }
  int64_t integer(const char* key, int64_t def, bool required = false) const {
    const nlohmann::json* v = get(key);
    if (!v) {
      if (required) fail(name, std::string("required field \"") + key + "\" is missing");
      return def;
    }
    if (!v->is_number_integer())
      fail(name, std::string("field \"") + key + "\" must be an integer, got " + json_brief(*v));
    const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)
                          ? INT64_MAX
                          : v->get<int64_t>();
    if (x < 0 || x > INT32_MAX)
      fail(name, std::string("field \"") + key + "\" = " + std::to_string(x) + " is out of range");
    return x;
  }
  double number(const char* key, double def) const {
    const nlohmann::json* v = get(key);
    if (!v) return def;
    if (!v->is_number()) fail(name, std::string("field \"") + key + "\" must be a number, got " + json_brief(*v));
    return v->get<double>();
  }
  bool boolean(const char* key, bool def) const {
    const nlohmann::json* v = get(key);
    if (!v) return def;
    if (!v->is_boolean()) fail(name, std::string("field \"") + key + "\" must be true or false, got " + json_brief(*v));
    return v->get<bool>();
  }
  std::string string(const char* key, const std::string& def) const {
    const nlohmann::json* v = get(key);
    if (!v) return def;
    if (!v->is_string()) fail(name, std::string("field \"") + key + "\" must be a string, got " + json_brief(*v));
    return v->get<std::string>();
  }
};

// HF tensor name of a canonical tensor ("model.layers.3.self_attn.q_proj.weight").
std::string hf_name(const NamedTensor& nt);
// safetensors dtype name of a dense dtype.
const char* st_dtype_name(DType d);
// Heads whose q/k rows (or biases) are permuted to HF's halves order when writing `nt`; 0 = none.
int32_t rope_permute_heads(const Model& m, const NamedTensor& nt);

// ---- writing ------------------------------------------------------------------------------------
// config.json of a model (torch_dtype from `dtype`); errors name `dir`.
nlohmann::ordered_json hf_config_json(const Model& m, DType dtype, const std::string& dir);
// Writes `cj` as config.json, generation_config.json and the tokenizer files into `tmp`.
void write_hf_metadata(const Model& m, const std::string& tmp, const nlohmann::ordered_json& cj);
// One text file, written atomically.
void write_hf_text(const std::string& path, const std::string& text);

// ---- GPTQ / AWQ checkpoints (hf_quant.cpp, docs/formats.md "Hugging Face GPTQ and AWQ") ----------
struct HfQuantConfig {
  enum class Method { Gptq, Awq } method = Method::Gptq;
  int bits = 4;
  int64_t group_size = 128;  // -1: one group per output channel
  bool v1 = true;            // GPTQ checkpoint_format "gptq": stored zero = zero - 1
  bool dynamic = false;      // GPTQModel's per-module overrides: each tensor's shapes give its bits
  std::string where;         // the file the configuration came from
};
// The quantization configuration of an HF directory: config.json's "quantization_config", else
// quantize_config.json (AutoGPTQ / GPTQModel), else quant_config.json (AutoAWQ) when `files` (the
// directory holds quantized layers). False when none.
bool find_hf_quant_config(const nlohmann::json& config, const std::string& dir, bool files, HfQuantConfig* q);
// The same checks on one JSON object (also the fuzz target's entry); errors name `where`.
HfQuantConfig parse_hf_quant_config(const nlohmann::json& qc, const std::string& where);

// The tensors of one quantized linear layer (null when absent) and the file holding qweight.
struct HfQuantParts {
  const SafetensorsTensor* qweight = nullptr;
  const SafetensorsTensor* qzeros = nullptr;
  const SafetensorsTensor* scales = nullptr;
  const SafetensorsTensor* g_idx = nullptr;
  std::string file;
};
// Why a quantized layer became a dense f32 tensor (its values stay exact).
enum class HfQuantDense { No, ActOrder, Scales, Zeros };
// One linear layer [out, in] of a GPTQ / AWQ checkpoint as a packed lmpress int tensor when its
// groups are runs of consecutive columns lmpress has (exact: the codes, scales and zeros move as
// they are), otherwise as its exact f32 values; `dense` says which and why.
Tensor import_hf_quant_linear(const HfQuantConfig& q, const std::string& name, const std::string& prefix,
                              int64_t out, int64_t in, const HfQuantParts& parts, HfQuantDense* dense);

}  // namespace lmpress::io_detail
