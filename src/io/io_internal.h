// Private helpers shared by the model-file parsers and writers in src/io/.
#pragma once
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lmpress/io.h"
#include "lmpress/model.h"

namespace lmpress::io_detail {

// Largest dimension we accept from any file (dim, hidden, vocab, heads, context length).
constexpr int64_t kMaxDim = int64_t(1) << 20;
constexpr int64_t kMaxLayers = 4096;

// Checks that a configuration read from a file is usable (positive, bounded, heads divide);
// throws Error("<where>: ...") naming the offending field.
void check_config(const ModelConfig& c, const std::string& where);

// A tensor that points into memory owned elsewhere (a mapped file); an owned copy when the
// address is not a multiple of the element size.
Tensor view_tensor(std::string name, DType dt, std::vector<int64_t> shape, const void* data,
                   size_t nbytes);

// 1-D tensors (norm weights, biases) are tiny: keep them as owned f32 so every consumer sees
// one dtype, whatever the file stored.
Tensor small_to_f32(const Tensor& t);

// Loads a vocabulary file chosen by its name: *.model (SentencePiece), *.json (HF tokenizer.json),
// anything else as a llama2.c tokenizer.bin.
Vocab load_vocab_file(const std::string& path, int32_t expected_vocab);

// Fails when the tokenizer does not match the model's embedding rows: more tokens than rows, or
// fewer by more than padding (a model's own tokenizer may be padded up to 1/8 of the rows, e.g.
// Qwen2's 151665 tokens for 151936 rows; a foreign --tokenizer at most 1/64 or 128 rows).
void check_vocab_fits(const Vocab& v, const ModelConfig& c, const std::string& where, bool foreign);

// A JSON library error without its "[json.exception.type_error.302] " prefix.
std::string json_error_text(const std::exception& e);

// Shortest decimal text that reads back as the same float ("1e-05", not 9.99999974e-06).
double clean_float(float f);

// Every weight of a model with its canonical GGUF-style name ("blk.3.attn_q.weight",
// "blk.3.attn_q.bias" ...), in Model::weight_tensors() order; the tied output is left out.
struct NamedTensor {
  std::string name;
  const Tensor* t;
  int layer;         // -1 for non-layer tensors
  std::string kind;  // "attn_q", "attn_q.bias", "token_embd", "output" ...
};
std::vector<NamedTensor> canonical_tensors(const Model& m);

// The dense type a writer stores weight `t` in (WriteOptions): 1-D tensors F32; otherwise
// opt.dtype when given, else the tensor's own dtype (a packed tensor, when dequantized: F32).
DType writer_dense_type(const Tensor& t, const WriteOptions& opt);
// `t` as a dense tensor of type `to` (F32/F16/BF16): `t` itself when it already is one, else an
// owned conversion; a packed tensor through the reference dequantization (sparse outliers included).
Tensor to_dense(const Tensor& t, DType to);

// safetensors writer that asks for each tensor's bytes only when it is written, so a converted
// copy of the whole model never has to exist in memory. specs[i].data is ignored; produce(i)
// returns a tensor holding exactly specs[i].nbytes bytes (it may own them).
// The 8-byte length and the JSON header of a safetensors file holding `specs` in order (data
// offsets consecutive from 0); the data region starts right after it.
std::string safetensors_header(const std::string& path, const std::vector<SafetensorsWriteTensor>& specs,
                               const std::map<std::string, std::string>& metadata);
void write_safetensors_lazy(const std::string& path, const std::vector<SafetensorsWriteTensor>& specs,
                            const std::map<std::string, std::string>& metadata,
                            const std::function<Tensor(size_t)>& produce, bool overwrite = true);

// "[64, 32]"
std::string shape_str(const std::vector<int64_t>& s);

// Little-endian loads from possibly unaligned memory.
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace lmpress::io_detail
