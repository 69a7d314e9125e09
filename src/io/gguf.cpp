// GGUF v2/v3 reader and the GGUF model loader. The file is untrusted: every count and length is
// checked against the bytes left before anything is allocated or read.
//
// Layout (little endian):
//   u32 magic "GGUF", u32 version, u64 n_tensors, u64 n_kv
//   n_kv x { string key, u32 type, value }          string = u64 length + bytes
//   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   padding to general.alignment (default 32), then the data section; offsets are relative to it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <string>

#include "formats/ggml_family.h"
#include "io/io_internal.h"
#include "lmpress/formats.h"
#include "lmpress/io.h"

namespace lmpress {

using namespace io_detail;

namespace {

constexpr uint32_t kGgmlF32 = 0, kGgmlF16 = 1, kGgmlBF16 = 30;
constexpr uint32_t kMaxDims = 4;

// Bounds-checked cursor over the header bytes.
struct Reader {
  const uint8_t* p;
  size_t n;
  size_t pos = 0;
  const std::string& name;

  size_t left() const { return n - pos; }
  void need(size_t k, const char* what) {
    if (k > left())
      fail(name, std::string("GGUF truncated: ") + what + " needs " + std::to_string(k) +
                     " bytes at offset " + std::to_string(pos) + " but only " +
                     std::to_string(left()) + " remain");
  }
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string str(const char* what) {
    const uint64_t len = get<uint64_t>(what);
    if (len > left())
      fail(name, std::string("GGUF ") + what + " has length " + std::to_string(len) +
                     " at offset " + std::to_string(pos - 8) + " but only " +
                     std::to_string(left()) + " bytes remain");
    std::string s(reinterpret_cast<const char*>(p + pos), size_t(len));
    pos += size_t(len);
    return s;
  }
};

// Bytes of one scalar of a GGUF type, 0 for string/array/unknown.
size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;
  }
}

const char* type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "u8";
    case GgufType::I8: return "i8";
    case GgufType::U16: return "u16";
    case GgufType::I16: return "i16";
    case GgufType::U32: return "u32";
    case GgufType::I32: return "i32";
    case GgufType::F32: return "f32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::U64: return "u64";
    case GgufType::I64: return "i64";
    case GgufType::F64: return "f64";
  }
  return "?";
}

bool is_int_type(GgufType t) {
  return scalar_size(t) != 0 && t != GgufType::F32 && t != GgufType::F64 && t != GgufType::BOOL;
}

// Reads one scalar (not string/array) widened: ints into i and u, floats into f, bool into b.
void read_scalar(Reader& r, GgufType t, GgufValue& v, int64_t* ai, double* af) {
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  switch (t) {
    case GgufType::U8: u = r.get<uint8_t>("u8 value"); i = int64_t(u); break;
    case GgufType::I8: i = r.get<int8_t>("i8 value"); u = uint64_t(i); break;
    case GgufType::U16: u = r.get<uint16_t>("u16 value"); i = int64_t(u); break;
    case GgufType::I16: i = r.get<int16_t>("i16 value"); u = uint64_t(i); break;
    case GgufType::U32: u = r.get<uint32_t>("u32 value"); i = int64_t(u); break;
    case GgufType::I32: i = r.get<int32_t>("i32 value"); u = uint64_t(i); break;
    case GgufType::U64: u = r.get<uint64_t>("u64 value"); i = int64_t(u); break;
    case GgufType::I64: i = r.get<int64_t>("i64 value"); u = uint64_t(i); break;
    case GgufType::F32: f = r.get<float>("f32 value"); break;
    case GgufType::F64: f = r.get<double>("f64 value"); break;
    case GgufType::BOOL: {
      const uint8_t b = r.get<uint8_t>("bool value");
      i = b != 0;
      u = uint64_t(i);
      break;
    }
    default: LMP_ASSERT(false);
  }
  if (ai) *ai = (t == GgufType::F32 || t == GgufType::F64) ? int64_t(0) : i;
  if (af) *af = f;
  if (!ai && !af) {
    v.i = i;
    v.u = u;
    v.f = (t == GgufType::F32 || t == GgufType::F64) ? f : double(i);
    v.b = i != 0;
  }
}

GgufType checked_type(Reader& r, uint32_t t, const std::string& key) {
  if (t > uint32_t(GgufType::F64))
    fail(r.name, "GGUF metadata key '" + key + "' has unknown value type " + std::to_string(t));
  return GgufType(t);
}

void read_value(Reader& r, GgufValue& v, const std::string& key) {
  if (v.type == GgufType::STRING) {
    v.s = r.str("string value");
    return;
  }
  if (v.type != GgufType::ARRAY) {
    read_scalar(r, v.type, v, nullptr, nullptr);
    return;
  }
  v.elem_type = checked_type(r, r.get<uint32_t>("array element type"), key);
  const uint64_t count = r.get<uint64_t>("array length");
  if (v.elem_type == GgufType::ARRAY)
    fail(r.name, "GGUF metadata key '" + key + "' is a nested array (not supported)");
  // Every element takes at least one byte (strings at least 8): cap the count by the bytes left
  // before reserving anything.
  const size_t min_elem = v.elem_type == GgufType::STRING ? 8 : scalar_size(v.elem_type);
  if (count > r.left() / min_elem)
    fail(r.name, "GGUF metadata key '" + key + "': array of " + std::to_string(count) + " " +
                     type_name(v.elem_type) + " does not fit in the " + std::to_string(r.left()) +
                     " bytes left");
  if (v.elem_type == GgufType::STRING) {
    v.as.reserve(size_t(count));
    for (uint64_t k = 0; k < count; ++k) v.as.push_back(r.str("array string"));
  } else if (v.elem_type == GgufType::F32 || v.elem_type == GgufType::F64) {
    v.af.resize(size_t(count));
    for (uint64_t k = 0; k < count; ++k) read_scalar(r, v.elem_type, v, nullptr, &v.af[size_t(k)]);
  } else {
    v.ai.resize(size_t(count));
    for (uint64_t k = 0; k < count; ++k) read_scalar(r, v.elem_type, v, &v.ai[size_t(k)], nullptr);
  }
}

// ggml's tensor type names (ggml.h enum ggml_type), for messages.
std::string ggml_type_name(uint32_t t) {
  static const char* const kNames[] = {
      "F32", "F16", "Q4_0", "Q4_1", "type 4 (removed Q4_2)", "type 5 (removed Q4_3)", "Q5_0",
      "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS",
      "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
      "IQ1_M", "BF16", "type 31 (removed Q4_0_4_4)", "type 32 (removed Q4_0_4_8)",
      "type 33 (removed Q4_0_8_8)", "TQ1_0", "TQ2_0"};
  if (t < sizeof kNames / sizeof kNames[0]) return kNames[t];
  return "unknown type " + std::to_string(t);
}

size_t ggml_type_size(uint32_t t) {
  switch (t) {
    case kGgmlF32: return 4;
    case kGgmlF16: return 2;
    case kGgmlBF16: return 2;
    default: return 0;
  }
}

// The types a tensor may have: F32, F16, BF16 and the block types of the ggml format family.
bool ggml_type_supported(uint32_t t) { return ggml_type_size(t) != 0 || ggml_type_format_name(t) != nullptr; }

std::string supported_types() {
  std::string s = "F32, F16, BF16";
  for (uint32_t t = 0; t < 64; ++t)
    if (ggml_type_format_name(t)) s += ", " + ggml_type_name(t);
  return s;
}

}  // namespace

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv.find(key);
  return it == kv.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

void parse_gguf_buffer(const uint8_t* data, size_t n, const std::string& name, GgufFile& out) {
  Reader r{data, n, 0, name};
  if (n < 4 || std::memcmp(data, "GGUF", 4) != 0)
    fail(name, "not a GGUF file (bad magic; expected \"GGUF\" in the first 4 bytes)");
  r.pos = 4;
  out.version = r.get<uint32_t>("version");
  if (out.version != 2 && out.version != 3)
    fail(name, "unsupported GGUF version " + std::to_string(out.version) + " (supported: 2, 3)");
  const uint64_t n_tensors = r.get<uint64_t>("tensor count");
  const uint64_t n_kv = r.get<uint64_t>("metadata count");
  // Minimum encoded sizes: a key-value pair is a string (8) + type (4) + 1 byte; a tensor info is
  // a string (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
  if (n_kv > r.left() / 13)
    fail(name, "GGUF metadata count " + std::to_string(n_kv) + " cannot fit in a file of " +
                   std::to_string(n) + " bytes");
  if (n_tensors > r.left() / 32)
    fail(name, "GGUF tensor count " + std::to_string(n_tensors) + " cannot fit in a file of " +
                   std::to_string(n) + " bytes");

  out.kv.clear();
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = r.str("metadata key");
    GgufValue v;
    v.type = checked_type(r, r.get<uint32_t>("metadata value type"), key);
    read_value(r, v, key);
    if (out.kv.count(key)) fail(name, "GGUF metadata key '" + key + "' appears twice");
    out.kv.emplace(std::move(key), std::move(v));
  }

  out.alignment = 32;
  if (const GgufValue* a = out.find("general.alignment")) {
    if (!is_int_type(a->type))
      fail(name, std::string("general.alignment has type ") + type_name(a->type) +
                     ", expected an integer");
    if (a->u == 0 || a->u > (1u << 20) || (a->u & (a->u - 1)) != 0)
      fail(name, "general.alignment " + std::to_string(a->i) +
                     " is not a power of two in 1..1048576");
    out.alignment = size_t(a->u);
  }

  out.tensors.clear();
  out.tensors.reserve(size_t(n_tensors));
  std::set<std::string> seen;
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.name = r.str("tensor name");
    const uint32_t n_dims = r.get<uint32_t>("tensor dimension count");
    if (n_dims == 0 || n_dims > kMaxDims)
      fail(name, "tensor '" + t.name + "' has " + std::to_string(n_dims) +
                     " dimensions (expected 1.." + std::to_string(kMaxDims) + ")");
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = r.get<uint64_t>("tensor dimension");
      if (ne == 0 || ne > uint64_t(n))
        fail(name, "tensor '" + t.name + "' has dimension " + std::to_string(ne) +
                       ", impossible for a file of " + std::to_string(n) + " bytes");
      t.ne.push_back(int64_t(ne));
    }
    t.ggml_type = r.get<uint32_t>("tensor type");
    t.offset = r.get<uint64_t>("tensor offset");
    if (!ggml_type_supported(t.ggml_type))
      fail(name, "tensor '" + t.name + "' has unsupported tensor type " + ggml_type_name(t.ggml_type) + " (" +
                     std::to_string(t.ggml_type) + "); supported: " + supported_types());
    if (!seen.insert(t.name).second) fail(name, "tensor '" + t.name + "' appears twice");
    out.tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const size_t header_end = r.pos;
  const size_t data_offset = (header_end + out.alignment - 1) / out.alignment * out.alignment;
  out.data_offset = data_offset;
  const size_t data_bytes = data_offset <= n ? n - data_offset : 0;
  for (GgufTensorInfo& t : out.tensors) {
    // numel * element size must fit in the data section; check the product step by step so it
    // cannot overflow (each ne is <= n, and we stop as soon as the bound is exceeded).
    // Block types: ne[0] (the row) is a whole number of blocks of QK weights, `bytes` each.
    uint64_t bytes = ggml_type_size(t.ggml_type);
    size_t first_dim = 0;
    if (bytes == 0) {
      int qk = 0, bsize = 0;
      ggml_type_block(t.ggml_type, &qk, &bsize);
      if (t.ne[0] % qk != 0)
        fail(name, "tensor '" + t.name + "' of type " + ggml_type_name(t.ggml_type) + " has rows of " +
                       std::to_string(t.ne[0]) + " elements (ne[0]), not a multiple of its " + std::to_string(qk) +
                       "-element block");
      bytes = uint64_t(t.ne[0] / qk) * uint64_t(bsize);  // ne[0] <= file size: no overflow
      if (bytes > uint64_t(n))
        fail(name, "tensor '" + t.name + "' of shape " + shape_str(t.ne) + " is larger than the whole file (" +
                       std::to_string(n) + " bytes)");
      first_dim = 1;
    }
    for (size_t di = first_dim; di < t.ne.size(); ++di) {
      const int64_t ne = t.ne[di];
      if (uint64_t(ne) > uint64_t(n) / bytes)  // then bytes * ne > n: cannot fit, and no overflow
        fail(name, "tensor '" + t.name + "' of shape " + shape_str(t.ne) +
                       " is larger than the whole file (" + std::to_string(n) + " bytes)");
      bytes *= uint64_t(ne);
    }
    if (t.offset % out.alignment != 0)
      fail(name, "tensor '" + t.name + "' offset " + std::to_string(t.offset) +
                     " is not a multiple of the alignment " + std::to_string(out.alignment));
    if (t.offset > data_bytes || bytes > data_bytes - t.offset)
      fail(name, "tensor '" + t.name + "' data [" + std::to_string(t.offset) + ", " +
                     std::to_string(t.offset + bytes) + ") of the data section lies beyond the end "
                     "of the file (data section holds " + std::to_string(data_bytes) +
                     " bytes; file truncated?)");
    t.data = data + data_offset + t.offset;
    t.nbytes = size_t(bytes);
  }
}

GgufFile parse_gguf(std::shared_ptr<MappedFile> file) {
  GgufFile g;
  parse_gguf_buffer(file->data(), file->size(), file->path(), g);
  g.file = std::move(file);
  return g;
}

GgufFile read_gguf(const std::string& path) {
  return parse_gguf(std::make_shared<MappedFile>(path));
}

// ---- model loader ---------------------------------------------------------------------------

namespace {

struct KvReader {
  const GgufFile& g;
  const std::string& path;

  const GgufValue* get(const std::string& key, GgufType want_class) const {
    const GgufValue* v = g.find(key);
    if (!v) return nullptr;
    const bool ok = want_class == GgufType::STRING ? v->type == GgufType::STRING
                    : want_class == GgufType::F32  ? (is_int_type(v->type) ||
                                                     v->type == GgufType::F32 ||
                                                     v->type == GgufType::F64)
                    : want_class == GgufType::BOOL ? (v->type == GgufType::BOOL || is_int_type(v->type))
                                                   : is_int_type(v->type);
    if (!ok)
      fail(path, "metadata key '" + key + "' has type " + type_name(v->type) +
                     (v->type == GgufType::ARRAY ? std::string(" of ") + type_name(v->elem_type) : "") +
                     ", expected " +
                     (want_class == GgufType::STRING ? "a string"
                      : want_class == GgufType::F32  ? "a number"
                      : want_class == GgufType::BOOL ? "a bool"
                                                     : "an integer"));
    return v;
  }
  int64_t integer(const std::string& key, int64_t def, bool required = false) const {
    const GgufValue* v = get(key, GgufType::U32);
    if (!v) {
      if (required) fail(path, "required metadata key '" + key + "' is missing");
      return def;
    }
    if (v->type == GgufType::U64 && v->u > uint64_t(INT64_MAX))
      fail(path, "metadata key '" + key + "' value " + std::to_string(v->u) + " is too large");
    const int64_t x = v->i;
    if (x < 0 || x > INT32_MAX)  // every integer hyper-parameter is a non-negative count
      fail(path, "metadata key '" + key + "' value " + std::to_string(x) + " is out of range");
    return x;
  }
  double number(const std::string& key, double def) const {
    const GgufValue* v = get(key, GgufType::F32);
    if (!v) return def;
    return (v->type == GgufType::F32 || v->type == GgufType::F64) ? v->f : double(v->i);
  }
  std::string string(const std::string& key, const std::string& def) const {
    const GgufValue* v = get(key, GgufType::STRING);
    return v ? v->s : def;
  }
};

DType dtype_of_ggml(uint32_t t) {
  switch (t) {
    case kGgmlF16: return DType::F16;
    case kGgmlBF16: return DType::BF16;
    default: return DType::F32;
  }
}

}  // namespace

Model load_gguf_model(const std::string& path, const LoadOptions& opt) {
  Model m;
  auto file = std::make_shared<MappedFile>(path);
  GgufFile g = parse_gguf(file);
  KvReader kv{g, path};

  const std::string arch = kv.string("general.architecture", "");
  if (arch.empty()) fail(path, "metadata key 'general.architecture' is missing");
  if (arch != "llama" && arch != "qwen2" && arch != "mistral")
    fail(path, "unknown architecture '" + arch + "' (supported: llama, mistral, qwen2)");
  const std::string p = arch + ".";

  ModelConfig& c = m.cfg;
  c.arch = arch;
  c.dim = int32_t(kv.integer(p + "embedding_length", 0, true));
  c.hidden_dim = int32_t(kv.integer(p + "feed_forward_length", 0, true));
  c.n_layers = int32_t(kv.integer(p + "block_count", 0, true));
  c.n_heads = int32_t(kv.integer(p + "attention.head_count", 0, true));
  c.n_kv_heads = int32_t(kv.integer(p + "attention.head_count_kv", c.n_heads));
  c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
  c.head_dim = int32_t(kv.integer(p + "attention.key_length", c.head_dim));
  const int64_t v_len = kv.integer(p + "attention.value_length", c.head_dim);
  if (v_len != c.head_dim)
    fail(path, "attention.key_length " + std::to_string(c.head_dim) +
                   " differs from attention.value_length " + std::to_string(v_len) +
                   " (not supported)");
  if (!g.find(p + "attention.key_length") && c.n_heads > 0 && c.head_dim * c.n_heads != c.dim)
    fail(path, "embedding_length " + std::to_string(c.dim) + " is not a multiple of head_count " +
                   std::to_string(c.n_heads));
  const int64_t n_rot = kv.integer(p + "rope.dimension_count", c.head_dim);
  if (n_rot != c.head_dim)
    fail(path, "rope.dimension_count " + std::to_string(n_rot) + " differs from the head size " +
                   std::to_string(c.head_dim) + " (partial rotary embeddings are not supported)");
  c.norm_eps = float(kv.number(p + "attention.layer_norm_rms_epsilon", 1e-5));
  c.rope_theta = float(kv.number(p + "rope.freq_base", 10000.0));
  c.max_seq_len = int32_t(kv.integer(p + "context_length", 2048));
  // llama.cpp permutes q/k rows of "llama" models to adjacent RoPE pairs at conversion; qwen2
  // GGUF files keep the Hugging Face (NEOX, halves) row order.
  c.rope_style = arch == "qwen2" ? RopeStyle::Halves : RopeStyle::Interleaved;
  c.attn_bias = false;

  // RoPE scaling: llama.cpp's "linear"; llama3-style scaling is stored by llama.cpp as a
  // rope_freqs tensor, and by lmpress additionally as lmpress.rope_scaling.* keys.
  const std::string scaling = kv.string(p + "rope.scaling.type", "");
  const std::string lm_scaling = kv.string("lmpress.rope_scaling.type", "");
  if (lm_scaling == "llama3") {
    c.rope_scaling.type = "llama3";
    c.rope_scaling.factor = float(kv.number("lmpress.rope_scaling.factor", 8.0));
    c.rope_scaling.low_freq_factor = float(kv.number("lmpress.rope_scaling.low_freq_factor", 1.0));
    c.rope_scaling.high_freq_factor = float(kv.number("lmpress.rope_scaling.high_freq_factor", 4.0));
    c.rope_scaling.original_max_position =
        int32_t(kv.integer("lmpress.rope_scaling.original_max_position", 8192));
  } else if (!lm_scaling.empty()) {
    fail(path, "unknown lmpress.rope_scaling.type '" + lm_scaling + "'");
  } else if (g.find_tensor("rope_freqs.weight")) {
    fail(path, "rope_freqs.weight (per-frequency RoPE factors, e.g. Llama 3.1 scaling) without "
               "lmpress.rope_scaling.* metadata is not supported");
  } else if (scaling == "linear") {
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = float(kv.number(p + "rope.scaling.factor", 1.0));
  } else if (!scaling.empty() && scaling != "none") {
    fail(path, "unsupported rope.scaling.type '" + scaling + "'");
  }

  const GgufTensorInfo* embd = g.find_tensor("token_embd.weight");
  int64_t vocab = kv.integer(p + "vocab_size", 0);
  if (vocab == 0) {
    if (const GgufValue* toks = g.find("tokenizer.ggml.tokens"); toks && toks->type == GgufType::ARRAY)
      vocab = int64_t(toks->as.size());
  }
  if (vocab == 0 && embd && embd->ne.size() == 2) vocab = embd->ne[1];
  c.vocab_size = int32_t(std::min<int64_t>(vocab, INT32_MAX));
  check_config(c, path);

  // Tensors: GGUF ne is reversed relative to our row-major shape.
  std::set<std::string> used;
  std::map<std::string, const GgufTensorInfo*> by_name;
  for (const auto& t : g.tensors) by_name.emplace(t.name, &t);
  auto tensor = [&](const std::string& name, bool required) -> Tensor {
    auto it = by_name.find(name);
    const GgufTensorInfo* t = it == by_name.end() ? nullptr : it->second;
    if (!t) {
      if (required) fail(path, "tensor " + name + " is missing");
      return Tensor{};
    }
    used.insert(name);
    std::vector<int64_t> shape(t->ne.rbegin(), t->ne.rend());
    if (ggml_type_size(t->ggml_type) == 0) {
      // A block type: a packed tensor of the ggml family viewing the file's bytes, checked once.
      if (shape.size() != 2)
        fail(path, "tensor " + name + " has type " + ggml_type_name(t->ggml_type) + " with " +
                       std::to_string(shape.size()) + " dimensions; quantized tensors must be 2-D matrices");
      Tensor q = view_tensor(name, DType::Q, std::move(shape), t->data, t->nbytes);
      q.format = format_id(ggml_spec(t->ggml_type));
      validate_packed(q, path + ": tensor " + name);
      return q;
    }
    Tensor r = view_tensor(name, dtype_of_ggml(t->ggml_type), std::move(shape), t->data, t->nbytes);
    return r.shape.size() == 1 ? small_to_f32(r) : r;
  };

  // Every tensor of the architecture table: biases and the classifier are optional (their
  // presence decides attn_bias / tied embeddings), everything else is required.
  const ArchInfo& ai = arch_info(arch);
  m.layers.resize(size_t(c.n_layers));
  bool any_bias = false;
  for (const ArchTensor& at : ai.tensors) {
    const bool required = at.role != TensorRole::Bias && at.role != TensorRole::Classifier;
    if (!arch_per_layer(at)) {
      m.*at.global = tensor(arch_tensor_name(at, 0), required);
      continue;
    }
    for (int i = 0; i < c.n_layers; ++i) {
      Tensor& dst = m.layers[size_t(i)].*at.member;
      dst = tensor(arch_tensor_name(at, i), required);
      if (at.role == TensorRole::Bias && !dst.empty()) any_bias = true;
    }
  }
  c.attn_bias = any_bias;
  // llama.cpp's llama2.c converter writes a copy of the embedding as output.weight; byte-equal
  // copies are treated as tied so the model is not counted (or compressed) twice.
  if (m.output.empty() ||
      (m.output.dtype == m.tok_embd.dtype && m.output.shape == m.tok_embd.shape &&
       m.output.nbytes == m.tok_embd.nbytes &&
       std::memcmp(m.output.data, m.tok_embd.data, m.output.nbytes) == 0)) {
    c.tied_embeddings = true;
    m.output = m.tok_embd;
  } else {
    c.tied_embeddings = false;
  }
  for (const auto& t : g.tensors)
    if (!used.count(t.name) && t.name != "rope_freqs.weight")
      fail(path, "unexpected tensor " + t.name + " (not part of the " + arch + " architecture)");

  m.path = path;
  m.format = "gguf";
  m.file_bytes = file->size();
  m.files.push_back(file);
  if (const GgufValue* v = g.find("general.name"); v && v->type == GgufType::STRING)
    m.metadata["name"] = v->s;
  m.validate();

  // Tokenizer: explicit override, else the embedded vocabulary.
  if (!opt.tokenizer_path.empty()) {
    Vocab v = load_vocab_file(opt.tokenizer_path, c.vocab_size);
    check_vocab_fits(v, c, opt.tokenizer_path, true);
    m.tokenizer = std::make_unique<Tokenizer>(std::move(v));
  } else if (g.find("tokenizer.ggml.tokens")) {
    Vocab v = vocab_from_gguf(g, path);
    check_vocab_fits(v, c, path, false);
    m.tokenizer = std::make_unique<Tokenizer>(std::move(v));
  } else if (opt.require_tokenizer) {
    fail(path, "no tokenizer in the file (tokenizer.ggml.* metadata missing); pass --tokenizer");
  }
  if (opt.check_tensors) check_tensors_finite(m);
  return m;
}

}  // namespace lmpress
