// lmpress model: the in-memory description of a Llama-family transformer, independent of the
// file it came from. Weights are Tensors that usually point into a memory-mapped file.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lmpress/core.h"
#include "lmpress/tokenizer.h"

namespace lmpress {

// A dense or packed tensor. Row-major; shape[0] is the outer (row) dimension.
// Linear weights are [out_features, in_features] (PyTorch layout = GGUF ne {in, out}).
struct Tensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
  uint32_t format = 0;          // DType::Q: format id (formats.h); 0 otherwise
  std::shared_ptr<void> owner;  // keeps owned storage alive (null when data is in a mapped file)

  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t cols() const { return shape.size() < 2 ? 1 : shape[1]; }
  int64_t numel() const;
  bool empty() const { return data == nullptr; }
  template <class T>
  const T* as() const { return static_cast<const T*>(data); }
};

// Owned f32 tensor.
Tensor make_f32_tensor(std::string name, std::vector<int64_t> shape, std::vector<float> values);
// Owned tensor of raw bytes.
Tensor make_owned_tensor(std::string name, DType dt, std::vector<int64_t> shape,
                         std::vector<uint8_t> bytes, uint32_t format = 0);
// Any dense tensor as f32 values.
std::vector<float> tensor_to_f32(const Tensor& t);
// Convert dense tensor to dtype (F32/F16/BF16) as a new owned tensor.
Tensor convert_tensor(const Tensor& t, DType to);

// How q/k rows pair up for RoPE. GGUF and llama2.c rotate adjacent pairs (x[2i], x[2i+1]);
// HF checkpoints rotate halves (x[i], x[i + head_dim/2]) - "NEOX" in llama.cpp's terms.
enum class RopeStyle : uint8_t { Interleaved = 0, Halves = 1 };

struct RopeScaling {
  std::string type;  // "" (none), "llama3", "linear"
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int32_t original_max_position = 8192;
};

struct ModelConfig {
  std::string arch = "llama";  // llama | mistral | qwen2 (all the Llama block)
  int32_t dim = 0;
  int32_t hidden_dim = 0;
  int32_t n_layers = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t vocab_size = 0;
  int32_t max_seq_len = 2048;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  RopeStyle rope_style = RopeStyle::Interleaved;
  bool tied_embeddings = true;
  bool attn_bias = false;  // q/k/v biases (Qwen2)
  int32_t sliding_window = 0;  // Mistral: attend to the last `sliding_window` positions; 0 = all
};

struct LayerWeights {
  Tensor attn_norm;             // [dim]
  Tensor wq, wk, wv, wo;        // [n_heads*hd, dim], [n_kv*hd, dim] x2, [dim, n_heads*hd]
  Tensor bq, bk, bv;            // optional biases
  Tensor ffn_norm;              // [dim]
  Tensor w_gate, w_up, w_down;  // [hidden, dim] x2, [dim, hidden]
};

struct Model {
  ModelConfig cfg;
  Tensor tok_embd;  // [vocab, dim]
  std::vector<LayerWeights> layers;
  Tensor out_norm;  // [dim]
  Tensor output;    // [vocab, dim]; when tied, a copy of tok_embd's descriptor
  std::unique_ptr<Tokenizer> tokenizer;

  std::string path;         // what the user passed
  std::string format;       // "llama2c" | "gguf" | "hf" | "lmpress"
  uint64_t file_bytes = 0;  // total bytes of weight files on disk
  std::vector<std::shared_ptr<MappedFile>> files;
  std::map<std::string, std::string> metadata;  // free-form (recipe, source, ...)

  // Every weight tensor in a canonical order with canonical names ("blk.0.attn_q.weight" ...).
  std::vector<Tensor*> weight_tensors();
  std::vector<const Tensor*> weight_tensors() const;
  int64_t n_params() const;  // tied output counted once
  void validate() const;     // shapes consistent with cfg; throws Error naming path
};

// Receives every finished tensor of the output as soon as it is final (streaming output): the
// pipeline then keeps no finished tensor in memory longer than the calibration needs it.
class TensorSink {
 public:
  virtual ~TensorSink() = default;
  virtual void put(const Tensor& t) = 0;
};
// The tensors a quantization will write, in canonical order, with their output dtype, format and
// byte size (known from the recipe and the config before any work).
struct PlannedTensor {
  std::string name;
  DType dtype = DType::F32;
  uint32_t format = 0;
  std::vector<int64_t> shape;
  size_t nbytes = 0;
};
// ---- architecture table ----------------------------------------------------------------------------
// One row per tensor of an architecture (src/model/arch.cpp): its kind, canonical (GGUF) name,
// Hugging Face name, shape from the config, and which named activation feeds it (linear layers).
// Loaders, writers, validation, the engine's hooks and the quantize pipeline read it instead of
// their own lists. Llama, Mistral (sliding window) and Qwen2 (q/k/v biases) share the Llama block.
enum class TensorRole : uint8_t { Embedding, Norm, Linear, Bias, Classifier };
struct ArchTensor {
  const char* key;                 // GGUF infix: "attn_q", "attn_q.bias", "token_embd", "output_norm"
  TensorRole role;
  Tensor LayerWeights::*member;    // per-layer tensors (null for the model's globals)
  Tensor Model::*global;           // globals (null for per-layer tensors)
  const char* hf;                  // HF name (after "model.layers.N." for per-layer tensors)
  const char* input;               // activation feeding a linear layer ("attn_in" ...), else null
  std::vector<int64_t> (*shape)(const ModelConfig&);
  bool (*present)(const ModelConfig&);  // biases only with attn_bias, output only untied
};
// A named activation read by linear layers of a block, and where a per-channel scale of it folds
// (transforms): into the RMSNorm producing it, or into the rows of the linear layer whose outputs
// are its channels (v for the attention output without GQA, up for silu(gate) * up).
struct ArchInput {
  const char* name;           // "attn_in", "attn_out_in", "ffn_in", "ffn_down_in"
  const char* norm;           // key of the producing RMSNorm, or null
  const char* producer;       // key of the producing linear layer, or null
  const char* producer_bias;  // key of its bias, or null
};
struct ArchInfo {
  const char* name;
  const char* summary;
  std::vector<ArchTensor> tensors;  // canonical order: globals first/last as in GGUF files
  std::vector<ArchInput> inputs;    // the block's linear-layer inputs in true-sequential order
};
// The row of `key` ("attn_q", "output_norm"); throws Error when the architecture has none.
const ArchTensor& arch_tensor(const ArchInfo& a, const std::string& key);
const ArchInfo& arch_info(const std::string& arch);  // throws Error for unknown architectures
// Canonical name of a table row: "token_embd.weight", "blk.3.attn_q.weight", "blk.3.attn_q.bias".
std::string arch_tensor_name(const ArchTensor& t, int layer);
// Hugging Face name: "model.embed_tokens.weight", "model.layers.3.self_attn.q_proj.weight".
std::string arch_hf_name(const ArchTensor& t, int layer);
bool arch_per_layer(const ArchTensor& t);
// The one configuration check every loader applies (and Model::validate): known architecture,
// positive and bounded sizes, heads that divide, finite positive norm epsilon (< 1) and RoPE
// theta, a usable context length, sane RoPE scaling. Throws Error("<where>: ...") naming the field.
void validate_config(const ModelConfig& c, const std::string& where);

// Canonical (GGUF-style) tensor names.
std::string tensor_name_layer(int layer, const char* what);  // "blk.{L}.{what}.weight"

// Reorders q/k projection rows (and biases) between RoPE conventions, per head.
// to_halves=true: interleaved -> halves (what HF conversion does); false: the inverse.
Tensor permute_rope_rows(const Tensor& w, int32_t n_heads, bool to_halves);

}  // namespace lmpress
