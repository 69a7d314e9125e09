// GGUF v3 writer for Llama-family models, laid out the way llama.cpp expects: "llama"
// architecture keys, tokenizer.ggml.* vocabulary, q/k rows in the adjacent-pair RoPE order,
// 1-D tensors in F32, tensor data aligned to 32 bytes.
#include <cmath>
#include <cstring>
#include <numbers>
#include <string>
#include <vector>

#include "io/io_internal.h"
#include "lmpress/formats.h"
#include "lmpress/io.h"

namespace lmpress {

using namespace io_detail;

namespace {

constexpr size_t kAlign = 32;

// Appends GGUF-encoded values to a header buffer.
struct Header {
  std::string buf;
  uint64_t n_kv = 0;

  void raw(const void* p, size_t n) { buf.append(static_cast<const char*>(p), n); }
  void u32(uint32_t v) { raw(&v, 4); }
  void u64(uint64_t v) { raw(&v, 8); }
  void str(const std::string& s) {
    u64(s.size());
    buf += s;
  }
  void key(const std::string& k, GgufType t) {
    str(k);
    u32(uint32_t(t));
    ++n_kv;
  }
  void kv_u32(const std::string& k, uint32_t v) {
    key(k, GgufType::U32);
    u32(v);
  }
  void kv_f32(const std::string& k, float v) {
    key(k, GgufType::F32);
    raw(&v, 4);
  }
  void kv_bool(const std::string& k, bool v) {
    key(k, GgufType::BOOL);
    const uint8_t b = v;
    raw(&b, 1);
  }
  void kv_str(const std::string& k, const std::string& v) {
    key(k, GgufType::STRING);
    str(v);
  }
  void kv_strs(const std::string& k, const std::vector<std::string>& v) {
    key(k, GgufType::ARRAY);
    u32(uint32_t(GgufType::STRING));
    u64(v.size());
    for (const auto& s : v) str(s);
  }
  void kv_f32s(const std::string& k, const std::vector<float>& v) {
    key(k, GgufType::ARRAY);
    u32(uint32_t(GgufType::F32));
    u64(v.size());
    raw(v.data(), v.size() * 4);
  }
  void kv_i32s(const std::string& k, const std::vector<int32_t>& v) {
    key(k, GgufType::ARRAY);
    u32(uint32_t(GgufType::I32));
    u64(v.size());
    raw(v.data(), v.size() * 4);
  }
};

uint32_t ggml_type_of(DType t) {
  switch (t) {
    case DType::F16: return 1;
    case DType::BF16: return 30;
    default: return 0;
  }
}

// One tensor to write: where its values come from and how they are stored.
struct OutTensor {
  std::string name;
  const Tensor* src = nullptr;  // null: values in `values` (rope_freqs)
  std::vector<float> values;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;     // Q: a ggml-family tensor written as its block type, bytes as they are
  uint32_t ggml_type = 0;       // the GGUF tensor type
  int32_t permute_heads = 0;    // >0: reorder q/k rows halves -> interleaved
  uint64_t offset = 0;
  size_t nbytes = 0;
};

// Per-frequency divisors of llama3-style RoPE scaling, as llama.cpp reads them from
// rope_freqs.weight: frequency i is divided by the returned factor.
std::vector<float> llama3_rope_factors(const ModelConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  const double low_wavelen = s.original_max_position / double(s.low_freq_factor);
  const double high_wavelen = s.original_max_position / double(s.high_freq_factor);
  std::vector<float> f(size_t(c.head_dim / 2));
  for (size_t i = 0; i < f.size(); ++i) {
    const double freq = std::pow(double(c.rope_theta), -2.0 * double(i) / c.head_dim);
    const double wavelen = 2.0 * std::numbers::pi / freq;
    if (wavelen < high_wavelen) {
      f[i] = 1.0f;
    } else if (wavelen > low_wavelen) {
      f[i] = s.factor;
    } else {
      const double smooth = (s.original_max_position / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      f[i] = float(1.0 / ((1.0 - smooth) / s.factor + smooth));
    }
  }
  return f;
}

void write_vocab(Header& h, const Vocab& v0, int32_t model_vocab) {
  Vocab v = v0;
  // llama.cpp takes the vocabulary size from the token list and checks it against the
  // embedding: pad a shorter tokenizer with unused placeholder tokens.
  for (int32_t i = int32_t(v.tokens.size()); i < model_vocab; ++i) {
    v.tokens.push_back("<lmpress_pad_" + std::to_string(i) + ">");
    v.types.push_back(TokenType::Unused);
    if (!v.scores.empty()) v.scores.push_back(-1e9f);
  }
  const bool spm = v.kind == VocabKind::SPM;
  h.kv_str("tokenizer.ggml.model", spm ? "llama" : "gpt2");
  h.kv_str("tokenizer.ggml.pre", spm ? "default" : v.pre);
  h.kv_strs("tokenizer.ggml.tokens", v.tokens);
  if (spm || !v.scores.empty()) {
    std::vector<float> scores = v.scores;
    scores.resize(v.tokens.size(), 0.0f);
    h.kv_f32s("tokenizer.ggml.scores", scores);
  }
  std::vector<int32_t> types(v.tokens.size(), int32_t(TokenType::Normal));
  for (size_t i = 0; i < v.types.size() && i < types.size(); ++i) types[i] = int32_t(v.types[i]);
  h.kv_i32s("tokenizer.ggml.token_type", types);
  if (!spm) h.kv_strs("tokenizer.ggml.merges", v.merges);
  if (v.bos_id >= 0) h.kv_u32("tokenizer.ggml.bos_token_id", uint32_t(v.bos_id));
  if (v.eos_id >= 0) h.kv_u32("tokenizer.ggml.eos_token_id", uint32_t(v.eos_id));
  if (v.unk_id >= 0) h.kv_u32("tokenizer.ggml.unknown_token_id", uint32_t(v.unk_id));
  if (v.pad_id >= 0) h.kv_u32("tokenizer.ggml.padding_token_id", uint32_t(v.pad_id));
  h.kv_bool("tokenizer.ggml.add_bos_token", v.add_bos);
  h.kv_bool("tokenizer.ggml.add_eos_token", false);
  if (spm) h.kv_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
}

}  // namespace

void write_gguf_model(const Model& m, const std::string& path, DType dtype, bool overwrite) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    fail(path, std::string("GGUF output type ") + dtype_name(dtype) +
                   " is not supported (use f32, f16 or bf16)");
  m.validate();
  const ModelConfig& c = m.cfg;

  Header h;
  h.kv_str("general.architecture", "llama");
  auto name_it = m.metadata.find("name");
  h.kv_str("general.name", name_it != m.metadata.end() ? name_it->second : "lmpress");
  h.kv_u32("general.file_type", dtype == DType::F32 ? 0 : dtype == DType::F16 ? 1 : 32);
  h.kv_u32("general.alignment", uint32_t(kAlign));
  h.kv_u32("llama.vocab_size", uint32_t(c.vocab_size));
  h.kv_u32("llama.context_length", uint32_t(c.max_seq_len));
  h.kv_u32("llama.embedding_length", uint32_t(c.dim));
  h.kv_u32("llama.block_count", uint32_t(c.n_layers));
  h.kv_u32("llama.feed_forward_length", uint32_t(c.hidden_dim));
  h.kv_u32("llama.rope.dimension_count", uint32_t(c.head_dim));
  h.kv_u32("llama.attention.head_count", uint32_t(c.n_heads));
  h.kv_u32("llama.attention.head_count_kv", uint32_t(c.n_kv_heads));
  if (int64_t(c.head_dim) * c.n_heads != c.dim) {
    h.kv_u32("llama.attention.key_length", uint32_t(c.head_dim));
    h.kv_u32("llama.attention.value_length", uint32_t(c.head_dim));
  }
  h.kv_f32("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
  h.kv_f32("llama.rope.freq_base", c.rope_theta);
  if (c.rope_scaling.type == "linear") {
    h.kv_str("llama.rope.scaling.type", "linear");
    h.kv_f32("llama.rope.scaling.factor", c.rope_scaling.factor);
  } else if (c.rope_scaling.type == "llama3") {
    h.kv_str("lmpress.rope_scaling.type", "llama3");
    h.kv_f32("lmpress.rope_scaling.factor", c.rope_scaling.factor);
    h.kv_f32("lmpress.rope_scaling.low_freq_factor", c.rope_scaling.low_freq_factor);
    h.kv_f32("lmpress.rope_scaling.high_freq_factor", c.rope_scaling.high_freq_factor);
    h.kv_u32("lmpress.rope_scaling.original_max_position",
             uint32_t(c.rope_scaling.original_max_position));
  } else if (!c.rope_scaling.type.empty()) {
    fail(path, "cannot write rope scaling type '" + c.rope_scaling.type + "' to GGUF");
  }
  if (m.tokenizer) write_vocab(h, m.tokenizer->vocab(), c.vocab_size);

  // Tensor table. The q/k rows go out in the adjacent-pair order llama.cpp's "llama" graph uses.
  std::vector<OutTensor> outs;
  for (const NamedTensor& nt : canonical_tensors(m)) {
    OutTensor o;
    o.name = nt.name;
    o.src = nt.t;
    o.shape = nt.t->shape;
    o.dtype = o.shape.size() == 1 ? DType::F32 : dtype;
    o.ggml_type = ggml_type_of(o.dtype);
    if (c.rope_style == RopeStyle::Halves) {
      if (nt.kind == "attn_q" || nt.kind == "attn_q.bias") o.permute_heads = c.n_heads;
      if (nt.kind == "attn_k" || nt.kind == "attn_k.bias") o.permute_heads = c.n_kv_heads;
    }
    // llama.cpp's block types (imported from GGUF) go out as they came in: a byte copy.
    if (nt.t->dtype == DType::Q && format_id_valid(nt.t->format) &&
        format_spec(nt.t->format).family == FormatFamily::Ggml) {
      if (o.permute_heads > 0)
        fail(path, "tensor " + o.name + " (" + format_name(format_spec(nt.t->format)) +
                       ") would need its RoPE rows reordered for GGUF; convert from an unquantized model");
      o.dtype = DType::Q;
      o.ggml_type = uint32_t(format_spec(nt.t->format).bits);
    }
    outs.push_back(std::move(o));
  }
  if (c.rope_scaling.type == "llama3") {
    OutTensor o;
    o.name = "rope_freqs.weight";
    o.values = llama3_rope_factors(c);
    o.shape = {int64_t(o.values.size())};
    outs.push_back(std::move(o));
  }
  uint64_t offset = 0;
  for (OutTensor& o : outs) {
    int64_t numel = 1;
    for (int64_t d : o.shape) numel *= d;
    o.nbytes = o.dtype == DType::Q ? o.src->nbytes : size_t(numel) * dtype_size(o.dtype);
    o.offset = offset;
    offset += (o.nbytes + kAlign - 1) / kAlign * kAlign;
  }

  AtomicFile f(path, overwrite);
  f.write("GGUF", 4);
  const uint32_t version = 3;
  f.write(&version, 4);
  const uint64_t n_tensors = outs.size();
  f.write(&n_tensors, 8);
  f.write(&h.n_kv, 8);
  f.write(h.buf);
  Header ti;
  for (const OutTensor& o : outs) {
    ti.str(o.name);
    ti.u32(uint32_t(o.shape.size()));
    for (auto it = o.shape.rbegin(); it != o.shape.rend(); ++it) ti.u64(uint64_t(*it));
    ti.u32(o.ggml_type);
    ti.u64(o.offset);
  }
  f.write(ti.buf);
  f.pad_to(kAlign);
  const size_t data_start = f.tell();
  for (const OutTensor& o : outs) {
    LMP_ASSERT(f.tell() - data_start == o.offset);
    if (!o.src) {
      f.write(o.values.data(), o.values.size() * 4);
    } else {
      Tensor t = o.permute_heads > 0 ? permute_rope_rows(*o.src, o.permute_heads, false) : *o.src;
      if (o.dtype == DType::Q) validate_packed(t, path);
      else if (t.dtype != o.dtype) t = convert_tensor(t, o.dtype);
      if (t.nbytes != o.nbytes)
        fail(path, "tensor " + o.name + " holds " + std::to_string(t.nbytes) + " bytes, expected " +
                       std::to_string(o.nbytes));
      f.write(t.data, t.nbytes);
    }
    f.pad_to(kAlign);
  }
  f.commit();
}

}  // namespace lmpress
