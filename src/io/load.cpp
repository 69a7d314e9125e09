// Format detection (load_model) and helpers shared by the model-file parsers.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "io/io_internal.h"
#include "lmpress/formats.h"
#include "lmpress/io.h"

namespace lmpress {

namespace io_detail {

void check_config(const ModelConfig& c, const std::string& where) { validate_config(c, where); }

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

void check_vocab_fits(const Vocab& v, const ModelConfig& c, const std::string& where, bool foreign) {
  if (v.tokens.empty()) fail(where, "tokenizer has no tokens");
  const int64_t n = int64_t(v.tokens.size()), rows = c.vocab_size;
  if (n > rows)
    fail(where, "tokenizer has " + std::to_string(n) + " tokens but the model's embedding has only " +
                    std::to_string(rows) + " rows; wrong tokenizer?");
  const int64_t max_pad = foreign ? std::max<int64_t>(rows / 64, 128) : std::max<int64_t>(rows / 8, 128);
  if (rows - n > max_pad)
    fail(where, "tokenizer has " + std::to_string(n) + " tokens but the model's embedding has " +
                    std::to_string(rows) + " rows (more than " + std::to_string(max_pad) +
                    " rows of padding); wrong tokenizer?");
  for (int32_t id : {v.bos_id, v.eos_id, v.unk_id, v.pad_id})
    if (id < -1 || id >= n)
      fail(where, "special token id " + std::to_string(id) + " is outside the vocabulary of " +
                      std::to_string(n) + " tokens");
}

std::string json_error_text(const std::exception& e) {
  std::string s = e.what();
  if (s.rfind("[json.exception.", 0) == 0) {
    const size_t close = s.find("] ");
    if (close != std::string::npos) s = s.substr(close + 2);
  }
  return s;
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

DType writer_dense_type(const Tensor& t, const WriteOptions& opt) {
  if (t.shape.size() == 1) return DType::F32;
  if (opt.dtype) return *opt.dtype;
  return t.dtype == DType::Q ? DType::F32 : t.dtype;
}

Tensor to_dense(const Tensor& t, DType to) {
  if (t.dtype == to) return t;
  if (t.dtype != DType::Q) return convert_tensor(t, to);
  Tensor f = make_f32_tensor(t.name, t.shape, dequantize_ref(t));
  return to == DType::F32 ? f : convert_tensor(f, to);
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

namespace {
// Index of the first non-finite element of n values (exponent bits all ones), or -1.
int64_t first_nonfinite(const uint8_t* p, int64_t n, DType dt) {
  if (dt == DType::F32) {
    for (int64_t i = 0; i < n; ++i) {
      uint32_t u;
      std::memcpy(&u, p + 4 * i, 4);
      if ((u & 0x7f800000u) == 0x7f800000u) return i;
    }
  } else if (dt == DType::F16 || dt == DType::BF16) {
    const uint16_t mask = dt == DType::F16 ? 0x7c00 : 0x7f80;
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      if ((h & mask) == mask) return i;
    }
  }
  return -1;
}
}  // namespace

void check_tensors_finite(const Model& m) {
  for (const Tensor* t : m.weight_tensors()) {
    if (t->data == nullptr) continue;
    const uint8_t* p = static_cast<const uint8_t*>(t->data);
    if (t->dtype == DType::Q) {
      const PackedGeometry g = packed_geometry(format_spec(t->format), t->rows(), t->cols());
      if (g.total_bytes != int64_t(t->nbytes)) continue;  // validate_packed reports it
      // f16 scales after the codes only (mxfp4's E8M0 bytes and vq's f32 codebook scales are the
      // families' load-time checks, validate_packed)
      if (g.scale_size != 2) continue;
      const int64_t i = first_nonfinite(p + g.q_bytes, g.scale_bytes / 2, DType::F16);
      if (i >= 0)
        fail(m.path, "tensor " + t->name + ": scale " + std::to_string(i) + " (row " +
                         std::to_string(i / std::max<int64_t>(1, g.groups_per_row)) +
                         ") is NaN or infinite; the file is corrupt (--no-check skips this check)");
      continue;
    }
    const size_t es = dtype_size(t->dtype);
    if (es == 0 || t->nbytes != size_t(t->numel()) * es) continue;  // validate() reports it
    const int64_t i = first_nonfinite(p, t->numel(), t->dtype);
    if (i >= 0)
      fail(m.path, "tensor " + t->name + ": element " + std::to_string(i) +
                       " is NaN or infinite; the file is corrupt (--no-check skips this check)");
  }
}

Model load_model(const std::string& path, const LoadOptions& opt) {
  if (is_directory(path)) {
    if (file_exists(path + "/config.json")) return load_hf_model(path, opt);
    fail(path, "is a directory without config.json (expected a Hugging Face model directory)");
  }
  if (!file_exists(path)) fail(path, "no such file or directory");
  uint8_t head[9] = {};
  size_t size = 0;
  {
    MappedFile f(path);
    size = f.size();
    if (size > 0) std::memcpy(head, f.data(), std::min<size_t>(size, sizeof head));
  }
  if (std::memcmp(head, "GGUF", 4) == 0) return load_gguf_model(path, opt);
  // safetensors: u64 header length, then a JSON object.
  uint64_t hl = 0;
  std::memcpy(&hl, head, 8);
  if (size >= 9 && head[8] == '{' && hl >= 2 && hl < (uint64_t(1) << 32)) {
    if (hl > size - 8)
      fail(path, "truncated safetensors/lmpress file: its header alone needs " + std::to_string(hl + 8) +
                     " bytes, the file has " + std::to_string(size));
    if (is_lmpress_file(path)) return load_lmpress_model(path, opt);
    fail(path, "a safetensors file without lmpress metadata; to load a Hugging Face model pass its "
               "directory (with config.json)");
  }
  return load_llama2c(path, opt);
}

}  // namespace lmpress
