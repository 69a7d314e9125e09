// Model description helpers: owned tensors, dtype conversion, RoPE row permutation, canonical
// tensor order and shape validation against the configuration.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lmpress/model.h"

namespace lmpress {

namespace {

std::string shape_text(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  return r + "]";
}

bool is_dense(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// Largest dimension accepted from any file (dim, hidden, vocab, heads, context length).
constexpr int64_t kMaxDim = int64_t(1) << 20;
constexpr int64_t kMaxLayers = 4096;

// A float for messages: short ("1e+300", "nan"), never hundreds of digits.
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

void validate_config(const ModelConfig& c, const std::string& where) {
  if (c.arch != "llama" && c.arch != "mistral" && c.arch != "qwen2")
    fail(where, "unknown architecture '" + c.arch + "' (supported: llama, mistral, qwen2)");
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
    fail(where, "RMS norm epsilon " + num(c.norm_eps) + " is not in (0, 1)");
  if (!(c.rope_theta > 0.0f) || !std::isfinite(c.rope_theta))
    fail(where, "RoPE theta " + num(c.rope_theta) + " is not a positive number");
  const RopeScaling& s = c.rope_scaling;
  if (!s.type.empty() && s.type != "llama3" && s.type != "linear")
    fail(where, "rope scaling type '" + s.type + "' is not supported (supported: llama3, linear)");
  if (!s.type.empty()) {
    if (!(s.factor > 0.0f) || !std::isfinite(s.factor))
      fail(where, "rope scaling factor " + num(s.factor) + " is not positive");
    if (s.type == "llama3" &&
        (!(s.high_freq_factor > s.low_freq_factor) || !(s.low_freq_factor > 0.0f) ||
         !std::isfinite(s.high_freq_factor) || s.original_max_position <= 0 ||
         s.original_max_position > kMaxDim * 16))
      fail(where, "llama3 rope scaling needs high_freq_factor > low_freq_factor > 0 and a "
                  "positive original_max_position_embeddings");
  }
}



int64_t Tensor::numel() const {
  if (shape.empty()) return 0;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Tensor make_f32_tensor(std::string name, std::vector<int64_t> shape, std::vector<float> values) {
  Tensor t;
  t.name = std::move(name);
  t.dtype = DType::F32;
  t.shape = std::move(shape);
  LMP_ASSERT(int64_t(values.size()) == t.numel());
  auto store = std::make_shared<std::vector<float>>(std::move(values));
  t.data = store->data();
  t.nbytes = store->size() * sizeof(float);
  t.owner = store;
  return t;
}

Tensor make_owned_tensor(std::string name, DType dt, std::vector<int64_t> shape,
                         std::vector<uint8_t> bytes, uint32_t format) {
  Tensor t;
  t.name = std::move(name);
  t.dtype = dt;
  t.shape = std::move(shape);
  t.format = format;
  auto store = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  t.data = store->data();
  t.nbytes = store->size();
  t.owner = store;
  return t;
}

std::vector<float> tensor_to_f32(const Tensor& t) {
  const int64_t n = t.numel();
  if (t.dtype == DType::Q || !(is_dense(t.dtype) || t.dtype == DType::I32))
    fail(t.name, std::string("cannot read a ") + dtype_name(t.dtype) +
                     " tensor as f32 values (dequantize it first)");
  if (t.data == nullptr || t.nbytes != size_t(n) * dtype_size(t.dtype))
    fail(t.name, "tensor storage (" + std::to_string(t.nbytes) + " bytes) does not match shape " +
                     shape_text(t.shape) + " of " + dtype_name(t.dtype));
  std::vector<float> out(static_cast<size_t>(n));
  switch (t.dtype) {
    case DType::F32: std::memcpy(out.data(), t.data, t.nbytes); break;
    case DType::F16: f16_to_f32_row(t.as<uint16_t>(), out.data(), size_t(n)); break;
    case DType::BF16: bf16_to_f32_row(t.as<uint16_t>(), out.data(), size_t(n)); break;
    case DType::I32:
      for (int64_t i = 0; i < n; ++i) {
        int32_t v;
        std::memcpy(&v, static_cast<const uint8_t*>(t.data) + 4 * i, 4);
        out[size_t(i)] = float(v);
      }
      break;
    default: break;
  }
  return out;
}

Tensor convert_tensor(const Tensor& t, DType to) {
  if (!is_dense(to))
    fail(t.name, std::string("cannot convert to ") + dtype_name(to) + " (only F32, F16, BF16)");
  if (t.dtype == to) {
    const uint8_t* p = static_cast<const uint8_t*>(t.data);
    return make_owned_tensor(t.name, to, t.shape, std::vector<uint8_t>(p, p + t.nbytes));
  }
  std::vector<float> f = tensor_to_f32(t);
  if (to == DType::F32) return make_f32_tensor(t.name, t.shape, std::move(f));
  std::vector<uint8_t> bytes(f.size() * 2);
  uint16_t* dst = reinterpret_cast<uint16_t*>(bytes.data());
  if (to == DType::F16)
    f32_to_f16_row(f.data(), dst, f.size());
  else
    f32_to_bf16_row(f.data(), dst, f.size());
  return make_owned_tensor(t.name, to, t.shape, std::move(bytes));
}

Tensor permute_rope_rows(const Tensor& w, int32_t n_heads, bool to_halves) {
  const int64_t rows = w.rows();
  if (n_heads <= 0 || rows <= 0 || rows % n_heads != 0 || (rows / n_heads) % 2 != 0)
    fail(w.name, "cannot permute RoPE rows: " + std::to_string(rows) + " rows for " +
                     std::to_string(n_heads) + " heads (need an even head size)");
  if (w.data == nullptr || w.nbytes % size_t(rows) != 0)
    fail(w.name, "cannot permute RoPE rows: storage is not a whole number of rows");
  const int64_t hd = rows / n_heads, half = hd / 2;
  const size_t row_bytes = w.nbytes / size_t(rows);
  const uint8_t* src = static_cast<const uint8_t*>(w.data);
  std::vector<uint8_t> out(w.nbytes);
  // Within each head: interleaved keeps the pair (x[2i], x[2i+1]) adjacent, halves stores all
  // first members, then all second members: halves row i <-> interleaved row 2i,
  // halves row half+i <-> interleaved row 2i+1.
  for (int64_t h = 0; h < n_heads; ++h) {
    const int64_t base = h * hd;
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t inter = base + 2 * i + j, halves = base + j * half + i;
        const int64_t from = to_halves ? inter : halves, to = to_halves ? halves : inter;
        std::memcpy(out.data() + size_t(to) * row_bytes, src + size_t(from) * row_bytes, row_bytes);
      }
    }
  }
  return make_owned_tensor(w.name, w.dtype, w.shape, std::move(out), w.format);
}

std::string tensor_name_layer(int layer, const char* what) {
  return "blk." + std::to_string(layer) + "." + what + ".weight";
}

namespace {

// Canonical order of every weight of a model (the architecture table's order); shared by the const
// and non-const accessors.
template <class M, class T>
std::vector<T*> collect_weights(M& m) {
  std::vector<T*> v;
  const ArchInfo& ai = arch_info(m.cfg.arch);
  bool layers_done = false;
  for (const ArchTensor& at : ai.tensors) {
    if (!arch_per_layer(at)) {
      if (at.present(m.cfg)) v.push_back(&(m.*(at.global)));
      continue;
    }
    // per-layer rows are contiguous in the table: emit them layer by layer at the first one
    if (layers_done) continue;
    layers_done = true;
    for (auto& l : m.layers)
      for (const ArchTensor& lt : ai.tensors)
        if (arch_per_layer(lt) && lt.present(m.cfg)) v.push_back(&(l.*(lt.member)));
  }
  return v;
}

}  // namespace

std::vector<Tensor*> Model::weight_tensors() { return collect_weights<Model, Tensor>(*this); }
std::vector<const Tensor*> Model::weight_tensors() const {
  return collect_weights<const Model, const Tensor>(*this);
}

int64_t Model::n_params() const {
  int64_t n = 0;
  for (const Tensor* t : weight_tensors()) n += t->numel();
  return n;
}

void Model::validate() const {
  const ModelConfig& c = cfg;
  validate_config(c, path);
  auto bad_cfg = [&](const std::string& what) { fail(path, "invalid model configuration: " + what); };
  if (c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 ||
      c.head_dim <= 0 || c.vocab_size <= 0)
    bad_cfg("dim " + std::to_string(c.dim) + ", hidden_dim " + std::to_string(c.hidden_dim) +
            ", n_layers " + std::to_string(c.n_layers) + ", n_heads " + std::to_string(c.n_heads) +
            ", n_kv_heads " + std::to_string(c.n_kv_heads) + ", head_dim " +
            std::to_string(c.head_dim) + ", vocab_size " + std::to_string(c.vocab_size) +
            " (all must be positive)");
  if (c.n_heads % c.n_kv_heads != 0)
    bad_cfg("n_kv_heads " + std::to_string(c.n_kv_heads) + " does not divide n_heads " +
            std::to_string(c.n_heads));
  if (c.head_dim % 2 != 0) bad_cfg("head_dim " + std::to_string(c.head_dim) + " is odd");
  if (int64_t(layers.size()) != c.n_layers)
    bad_cfg("config has " + std::to_string(c.n_layers) + " layers but the model holds " +
            std::to_string(layers.size()));

  const int64_t dim = c.dim;
  auto check = [&](const Tensor& t, const std::string& name, std::vector<int64_t> want) {
    const std::string file_name =
        (!t.name.empty() && t.name != name) ? " (" + t.name + " in the file)" : "";
    if (t.data == nullptr) fail(path, "tensor " + name + file_name + " is missing");
    if (t.shape != want)
      fail(path, "tensor " + name + file_name + " has shape " + shape_text(t.shape) +
                     " but the config implies " + shape_text(want));
    if (t.dtype != DType::Q) {
      const size_t es = dtype_size(t.dtype);
      if (es == 0 || t.nbytes != size_t(t.numel()) * es)
        fail(path, "tensor " + name + file_name + " holds " + std::to_string(t.nbytes) +
                       " bytes, expected " + std::to_string(size_t(t.numel()) * es) + " for " +
                       dtype_name(t.dtype) + " " + shape_text(t.shape));
    } else if (t.nbytes == 0) {
      fail(path, "tensor " + name + file_name + " has no data");
    }
  };
  // every tensor of the architecture table, with the shape the config implies
  const ArchInfo& ai = arch_info(c.arch);
  for (const ArchTensor& at : ai.tensors) {
    const bool present = at.present(c);
    if (!arch_per_layer(at)) {
      if (present) check(this->*(at.global), arch_tensor_name(at, 0), at.shape(c));
      continue;
    }
    if (!present) continue;
    for (int i = 0; i < c.n_layers; ++i) check(layers[size_t(i)].*(at.member), arch_tensor_name(at, i), at.shape(c));
  }
  check(output, "output.weight", {c.vocab_size, dim});  // tied: the embedding's descriptor
}

}  // namespace lmpress
