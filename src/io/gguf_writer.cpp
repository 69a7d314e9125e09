// GGUF v3 writer for Llama-family models, laid out the way llama.cpp expects: "llama"
// architecture keys, tokenizer.ggml.* vocabulary, q/k rows in the adjacent-pair RoPE order,
// 1-D tensors in F32, tensor data aligned to 32 bytes. Packed weights keep their values: llama.cpp
// block types are copied, lmpress int formats with an exact llama.cpp type are re-encoded as it
// (docs/formats.md, "Writers"), others are refused, re-quantized (--requant) or dequantized (--dtype).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numbers>
#include <optional>
#include <string>
#include <vector>

#include "formats/ggml_family.h"
#include "io/io_internal.h"
#include "kernels/ggml_blocks.h"
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

// How a weight goes out.
enum class Out : uint8_t {
  Dense,    // F32/F16/BF16 (a packed weight dequantized)
  Copy,     // a ggml-family tensor: its blocks as they are
  Exact,    // an lmpress int tensor re-encoded as its exact llama.cpp type (ggml_encode_exact)
  Requant,  // dequantized and re-quantized to WriteOptions::requant
};

// One tensor to write: where its values come from and how they are stored.
struct OutTensor {
  std::string name;
  const Tensor* src = nullptr;  // null: values in `values` (rope_freqs)
  std::vector<float> values;
  std::vector<int64_t> shape;
  Out how = Out::Dense;
  DType dtype = DType::F32;     // Out::Dense: the stored type
  uint32_t ggml_type = 0;       // the GGUF tensor type
  int32_t permute_heads = 0;    // >0: reorder q/k rows halves -> interleaved
  uint64_t offset = 0;
  size_t nbytes = 0;
};

// llama.cpp's LLAMA_FTYPE (include/llama.h) of a file whose most frequent tensor type is `type`.
uint32_t llama_ftype_of(uint32_t type) {
  namespace kg = kern::ggml;
  switch (type) {
    case 0: return 0;             // ALL_F32
    case 1: return 1;             // MOSTLY_F16
    case 30: return 32;           // MOSTLY_BF16
    case kg::kQ4_0: return 2;
    case kg::kQ4_1: return 3;
    case kg::kQ8_0: return 7;
    case kg::kQ5_0: return 8;
    case kg::kQ5_1: return 9;
    case kg::kQ2_K: return 10;
    case kg::kQ3_K: return 12;    // Q3_K_M
    case kg::kQ4_K: return 15;    // Q4_K_M
    case kg::kQ5_K: return 17;    // Q5_K_M
    case kg::kQ6_K: return 18;
    case kg::kIQ4_NL: return 25;
    case kg::kIQ4_XS: return 30;
    default: LMP_ASSERT(false);
  }
}

std::string ggml_name(uint32_t type) { return kern::ggml::type_info(type)->gname; }

// Bits of a packed format's codes (for the nearest exact / re-quantization advice).
int code_bits(const QuantSpec& s) {
  switch (s.family) {
    case FormatFamily::NF4: case FormatFamily::MXFP4: return 4;
    case FormatFamily::FP8: return 8;
    case FormatFamily::Vq: return (s.bits + s.group2 + s.group - 1) / s.group;  // index bits per weight
    default: return s.bits;
  }
}

// Why `s` on rows of `cols` columns has no exact llama.cpp type, and what to do instead.
std::string no_exact_type_advice(const QuantSpec& s, int64_t cols) {
  std::string why;
  if (s.rht) why = " (randomized Hadamard transform: llama.cpp has no rotated tensors)";
  else if (s.sparse) why = " (sparse outliers)";
  else if (s.family == FormatFamily::Trellis) why = " (QTIP trellis codes: llama.cpp has no trellis type)";
  else if (s.family == FormatFamily::Mix || s.family == FormatFamily::Slim)
    why = " (mixed precision inside the tensor: a llama.cpp type has one precision per tensor)";
  else if (s.family == FormatFamily::Int && cols % 32 != 0) why = " (rows of " + std::to_string(cols) + " columns are not whole 32-weight blocks)";
  else if (s.family == FormatFamily::Int && s.group == 16) why = " (two scales per 32-weight block)";
  const int b = code_bits(s);
  const bool asym = s.family == FormatFamily::Int && !s.sym && b <= 5;
  const std::string exact = b <= 4 ? (asym ? "w4g32a (-> Q4_1)" : "w4g32 (-> Q4_0)")
                            : b == 5 ? (asym ? "w5g32a (-> Q5_1)" : "w5g32 (-> Q5_0)")
                                     : "w8g32 (-> Q8_0)";
  const bool k = cols % 256 == 0;
  const std::string requant = b <= 2 ? (k ? "q2_k" : "q4_0") : b == 3 ? (k ? "q3_k" : "q4_0")
                              : b == 4 ? (k ? "q4_k" : "q4_0") : b == 5 ? (k ? "q5_k" : "q5_0")
                              : b == 6 ? (k ? "q6_k" : "q8_0") : "q8_0";
  return format_name(s) + " has no exact llama.cpp type" + why + "; quantize with " + exact + " or pass --requant " +
         requant + " to re-quantize with added error";
}

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
  WriteOptions opt;
  opt.dtype = dtype;
  opt.overwrite = overwrite;
  write_gguf_model(m, path, opt);
}

GgufWriteReport write_gguf_model(const Model& m, const std::string& path, const WriteOptions& opt) {
  if (opt.dtype && *opt.dtype != DType::F32 && *opt.dtype != DType::F16 && *opt.dtype != DType::BF16)
    fail(path, std::string("GGUF output type ") + dtype_name(*opt.dtype) + " is not supported (use f32, f16 or bf16)");
  std::optional<QuantSpec> requant;
  if (!opt.requant.empty()) {
    std::string names;
    for (const QuantSpec& s : all_formats())
      if (s.family == FormatFamily::Ggml) names += (names.empty() ? "" : ", ") + format_name(s);
    QuantSpec s;
    try {
      s = parse_format_name(opt.requant);
    } catch (const Error&) {
      s.family = FormatFamily::Int;
    }
    if (s.family != FormatFamily::Ggml)
      fail(path, "--requant " + opt.requant + " is not a llama.cpp type (one of " + names + ")");
    if (opt.dequantize)
      fail(path, "--requant " + opt.requant + " and dequantizing (--dtype) exclude each other");
    requant = s;
  }
  m.validate();
  const ModelConfig& c = m.cfg;
  GgufWriteReport report;

  // Tensor table. The q/k rows go out in the adjacent-pair order llama.cpp's "llama" graph uses
  // (rows are independent in every stored form: dense rows, llama.cpp blocks).
  std::vector<OutTensor> outs;
  std::map<uint32_t, int> type_count;  // 2-D weights per GGUF type: general.file_type
  for (const NamedTensor& nt : canonical_tensors(m)) {
    const Tensor& t = *nt.t;
    OutTensor o;
    o.name = nt.name;
    o.src = &t;
    o.shape = t.shape;
    o.dtype = writer_dense_type(t, opt);
    o.ggml_type = ggml_type_of(o.dtype);
    if (c.rope_style == RopeStyle::Halves) {
      if (nt.kind == "attn_q" || nt.kind == "attn_q.bias") o.permute_heads = c.n_heads;
      if (nt.kind == "attn_k" || nt.kind == "attn_k.bias") o.permute_heads = c.n_kv_heads;
    }
    if (t.dtype == DType::Q && !opt.dequantize) {
      const QuantSpec s = format_spec(t.format);
      if (s.family == FormatFamily::Ggml) {  // llama.cpp's block types (imported from GGUF): a byte copy
        o.how = Out::Copy;
        o.ggml_type = uint32_t(s.bits);
      } else if (const uint32_t et = ggml_exact_type(s, t.cols())) {
        o.how = Out::Exact;
        o.ggml_type = et;
      } else if (requant) {
        int qk = 0, bytes = 0;
        ggml_type_block(uint32_t(requant->bits), &qk, &bytes);
        if (t.cols() % qk != 0)
          fail(m.path, "tensor " + o.name + ": --requant " + format_name(*requant) + " needs rows of whole " +
                           std::to_string(qk) + "-weight blocks, the tensor has " + std::to_string(t.cols()) + " columns");
        o.how = Out::Requant;
        o.ggml_type = uint32_t(requant->bits);
      } else {
        fail(m.path, "tensor " + o.name + ": " + no_exact_type_advice(s, t.cols()));
      }
      if (o.how != Out::Requant)
        ++report.mapped[format_name(s) + " -> " + ggml_name(o.ggml_type) +
                        (o.how == Out::Exact && s.group != 32 ? " (scale repeated per 32 weights)" : "")];
    } else if (t.dtype == DType::Q) {
      ++report.n_dequantized;
    }
    if (o.shape.size() > 1) ++type_count[o.ggml_type];
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
    if (o.how == Out::Dense) {
      o.nbytes = size_t(numel) * dtype_size(o.dtype);
    } else {
      int qk = 0, bytes = 0;
      LMP_ASSERT(ggml_type_block(o.ggml_type, &qk, &bytes));
      o.nbytes = size_t(numel / qk * bytes);
    }
    o.offset = offset;
    offset += (o.nbytes + kAlign - 1) / kAlign * kAlign;
  }

  // general.file_type: the most frequent 2-D tensor type (as llama.cpp guesses it).
  uint32_t dominant = 0;
  int most = 0;
  bool quantized = false;
  for (const auto& [type, n] : type_count) {
    quantized = quantized || (type != 0 && type != 1 && type != 30);
    if (n > most) dominant = type, most = n;
  }
  report.file_type = llama_ftype_of(dominant);

  Header h;
  h.kv_str("general.architecture", "llama");
  auto name_it = m.metadata.find("name");
  h.kv_str("general.name", name_it != m.metadata.end() ? name_it->second : "lmpress");
  h.kv_u32("general.file_type", report.file_type);
  if (quantized) h.kv_u32("general.quantization_version", 2);
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

  AtomicFile f(path, opt.overwrite);
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
  GgmlExactError asym;            // over every asymmetric exact map
  double rq_sq = 0, rq_ref = 0;   // over every re-quantized tensor
  for (const OutTensor& o : outs) {
    LMP_ASSERT(f.tell() - data_start == o.offset);
    if (!o.src) {
      f.write(o.values.data(), o.values.size() * 4);
      f.pad_to(kAlign);
      continue;
    }
    Tensor t;
    switch (o.how) {
      case Out::Dense: t = to_dense(*o.src, o.dtype); break;
      case Out::Copy: t = *o.src; validate_packed(t, path); break;
      case Out::Exact: {
        GgmlExactError e;
        t = ggml_encode_exact(*o.src, &e, m.path);
        if (!format_spec(o.src->format).sym) {
          ++report.n_asym;
          report.n_asym_changed += e.n_changed > 0;
          asym.max_abs = std::max(asym.max_abs, e.max_abs);
          asym.sum_sq += e.sum_sq;
          asym.sum_ref_sq += e.sum_ref_sq;
        }
        break;
      }
      case Out::Requant: {
        const std::vector<float> w = dequantize_ref(*o.src);
        t = pack_tensor(o.name, quantize_rtn_ref(w.data(), o.src->rows(), o.src->cols(), *requant));
        const std::vector<float> back = dequantize_ref(t);
        double sq = 0, ref = 0;
        for (size_t i = 0; i < w.size(); ++i) {
          const double d = double(back[i]) - double(w[i]);
          sq += d * d;
          ref += double(w[i]) * w[i];
        }
        rq_sq += sq;
        rq_ref += ref;
        report.requant.push_back({o.name, format_name(format_spec(o.src->format)), ggml_name(o.ggml_type),
                                  ref > 0 ? std::sqrt(sq / ref) : 0.0});
        break;
      }
    }
    if (o.permute_heads > 0) t = permute_rope_rows(t, o.permute_heads, false);
    if (t.nbytes != o.nbytes)
      fail(path, "tensor " + o.name + " holds " + std::to_string(t.nbytes) + " bytes, expected " +
                     std::to_string(o.nbytes));
    f.write(t.data, t.nbytes);
    f.pad_to(kAlign);
  }
  f.commit();
  report.asym_max_abs = asym.max_abs;
  report.asym_rel_rms = asym.sum_ref_sq > 0 ? std::sqrt(asym.sum_sq / asym.sum_ref_sq) : 0.0;
  report.requant_rel_rms = rq_ref > 0 ? std::sqrt(rq_sq / rq_ref) : 0.0;
  return report;
}

}  // namespace lmpress
