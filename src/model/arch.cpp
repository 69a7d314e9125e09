// THE architecture table (model.h ArchInfo): every tensor of the Llama block and the globals,
// with names in both conventions, shapes from the config and the activation feeding each linear
// layer. Llama, Mistral and Qwen2 share the block; Qwen2 adds q/k/v biases (cfg.attn_bias),
// Mistral a sliding attention window (cfg.sliding_window, applied by the engine).
#include "lmpress/model.h"

namespace lmpress {

namespace {

using S = std::vector<int64_t>;
int64_t qd(const ModelConfig& c) { return int64_t(c.n_heads) * c.head_dim; }
int64_t kvd(const ModelConfig& c) { return int64_t(c.n_kv_heads) * c.head_dim; }
bool always(const ModelConfig&) { return true; }
bool biases(const ModelConfig& c) { return c.attn_bias; }
bool untied(const ModelConfig& c) { return !c.tied_embeddings; }

std::vector<ArchTensor> llama_block() {
  using L = LayerWeights;
  return {
      {"token_embd", TensorRole::Embedding, nullptr, &Model::tok_embd, "model.embed_tokens.weight", nullptr,
       [](const ModelConfig& c) { return S{c.vocab_size, c.dim}; }, always},
      {"attn_norm", TensorRole::Norm, &L::attn_norm, nullptr, "input_layernorm.weight", nullptr,
       [](const ModelConfig& c) { return S{c.dim}; }, always},
      {"attn_q", TensorRole::Linear, &L::wq, nullptr, "self_attn.q_proj.weight", "attn_in",
       [](const ModelConfig& c) { return S{qd(c), c.dim}; }, always},
      {"attn_k", TensorRole::Linear, &L::wk, nullptr, "self_attn.k_proj.weight", "attn_in",
       [](const ModelConfig& c) { return S{kvd(c), c.dim}; }, always},
      {"attn_v", TensorRole::Linear, &L::wv, nullptr, "self_attn.v_proj.weight", "attn_in",
       [](const ModelConfig& c) { return S{kvd(c), c.dim}; }, always},
      {"attn_q.bias", TensorRole::Bias, &L::bq, nullptr, "self_attn.q_proj.bias", nullptr,
       [](const ModelConfig& c) { return S{qd(c)}; }, biases},
      {"attn_k.bias", TensorRole::Bias, &L::bk, nullptr, "self_attn.k_proj.bias", nullptr,
       [](const ModelConfig& c) { return S{kvd(c)}; }, biases},
      {"attn_v.bias", TensorRole::Bias, &L::bv, nullptr, "self_attn.v_proj.bias", nullptr,
       [](const ModelConfig& c) { return S{kvd(c)}; }, biases},
      {"attn_output", TensorRole::Linear, &L::wo, nullptr, "self_attn.o_proj.weight", "attn_out_in",
       [](const ModelConfig& c) { return S{c.dim, qd(c)}; }, always},
      {"ffn_norm", TensorRole::Norm, &L::ffn_norm, nullptr, "post_attention_layernorm.weight", nullptr,
       [](const ModelConfig& c) { return S{c.dim}; }, always},
      {"ffn_gate", TensorRole::Linear, &L::w_gate, nullptr, "mlp.gate_proj.weight", "ffn_in",
       [](const ModelConfig& c) { return S{c.hidden_dim, c.dim}; }, always},
      {"ffn_up", TensorRole::Linear, &L::w_up, nullptr, "mlp.up_proj.weight", "ffn_in",
       [](const ModelConfig& c) { return S{c.hidden_dim, c.dim}; }, always},
      {"ffn_down", TensorRole::Linear, &L::w_down, nullptr, "mlp.down_proj.weight", "ffn_down_in",
       [](const ModelConfig& c) { return S{c.dim, c.hidden_dim}; }, always},
      {"output_norm", TensorRole::Norm, nullptr, &Model::out_norm, "model.norm.weight", nullptr,
       [](const ModelConfig& c) { return S{c.dim}; }, always},
      {"output", TensorRole::Classifier, nullptr, &Model::output, "lm_head.weight", "output_in",
       [](const ModelConfig& c) { return S{c.vocab_size, c.dim}; }, untied},
  };
}

std::vector<ArchInput> llama_inputs() {
  return {
      {"attn_in", "attn_norm", nullptr, nullptr},
      // o reads the attention output, whose channels are v's rows only without GQA (checked at use)
      {"attn_out_in", nullptr, "attn_v", "attn_v.bias"},
      {"ffn_in", "ffn_norm", nullptr, nullptr},
      // down reads silu(gate) * up: linear in up's rows
      {"ffn_down_in", nullptr, "ffn_up", nullptr},
  };
}

}  // namespace

const ArchInfo& arch_info(const std::string& arch) {
  static const std::vector<ArchInfo> kArchs = {
      {"llama", "Llama: RMSNorm, RoPE, GQA attention, SwiGLU FFN", llama_block(), llama_inputs()},
      {"mistral", "Mistral: the Llama block with a sliding attention window", llama_block(), llama_inputs()},
      {"qwen2", "Qwen2: the Llama block with q/k/v biases", llama_block(), llama_inputs()},
  };
  for (const auto& a : kArchs)
    if (arch == a.name) return a;
  fail("", "unknown architecture '" + arch + "' (llama, mistral, qwen2)");
}

const ArchTensor& arch_tensor(const ArchInfo& a, const std::string& key) {
  for (const ArchTensor& t : a.tensors)
    if (key == t.key) return t;
  fail("", std::string("architecture ") + a.name + " has no tensor '" + key + "'");
}

bool arch_per_layer(const ArchTensor& t) { return t.member != nullptr; }

std::string arch_tensor_name(const ArchTensor& t, int layer) {
  const std::string key = t.key;
  const bool bias = t.role == TensorRole::Bias;
  if (!arch_per_layer(t)) return key + ".weight";
  return "blk." + std::to_string(layer) + "." + key + (bias ? "" : ".weight");
}

std::string arch_hf_name(const ArchTensor& t, int layer) {
  if (!arch_per_layer(t)) return t.hf;
  return "model.layers." + std::to_string(layer) + "." + t.hf;
}

}  // namespace lmpress
