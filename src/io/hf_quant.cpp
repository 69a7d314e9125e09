// Hugging Face GPTQ (AutoGPTQ / GPTQModel) and AWQ (AutoAWQ "gemm") checkpoints: import of their
// quantized linear layers into lmpress's int formats, and export of int-format models as GPTQ.
// Layouts and the mapping: docs/formats.md, "Hugging Face GPTQ and AWQ".
//
//   GPTQ  qweight I32 [in*b/32, out]: the codes of output column o form one little-endian bit
//         stream down the column (code i at bits i*b .. i*b+b-1; 3-bit codes cross words);
//         qzeros I32 [groups, out*b/32]: the zeros of group g, one stream along the row;
//         scales [groups, out]; g_idx I32 [in]: the group of every input column.
//         checkpoint_format "gptq" (v1) stores zero - 1, "gptq_v2" the zero itself.
//   AWQ   qweight I32 [in, out/8], qzeros I32 [groups, out/8]: 4-bit nibbles, nibble k of word c
//         holding output column 8c + kAwqOrder[k]; scales [groups, out]; zeros stored as they are.
// Either way w[o][i] = scale[g][o] * (q[i][o] - zero[g][o]), g = g_idx[i] (AWQ: i / group).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "io/hf_internal.h"
#include "lmpress/formats.h"
#include "lmpress/io.h"

namespace lmpress {

using namespace io_detail;
using json = nlohmann::json;

namespace {

// AutoAWQ's nibble order: nibble k of a word holds column kAwqOrder[k] of its eight.
constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
constexpr int kGptqBits[] = {2, 3, 4, 8};

// The nibble of a word that holds column c (0..7) of its eight.
int awq_slot(int64_t c) {
  return int(std::find(std::begin(kAwqOrder), std::end(kAwqOrder), int(c)) - std::begin(kAwqOrder));
}

bool gptq_bits_ok(int b) { return std::find(std::begin(kGptqBits), std::end(kGptqBits), b) != std::end(kGptqBits); }

// Code k (b bits) of a little-endian bit stream of 32-bit words, word j at base + 4 * j * stride.
uint32_t stream_get(const uint8_t* base, int64_t stride, int64_t k, int bits) {
  const int64_t bit = k * bits, w = bit >> 5;
  const int sh = int(bit & 31);
  uint64_t v = load_u32(base + 4 * w * stride);
  if (sh + bits > 32) v |= uint64_t(load_u32(base + 4 * (w + 1) * stride)) << 32;
  return uint32_t(v >> sh) & ((1u << bits) - 1);
}
// The inverse on a zeroed word array.
void stream_put(uint32_t* base, int64_t stride, int64_t k, int bits, uint32_t v) {
  const int64_t bit = k * bits, w = bit >> 5;
  const int sh = int(bit & 31);
  base[w * stride] |= v << sh;
  if (sh + bits > 32) base[(w + 1) * stride] |= v >> (32 - sh);
}

std::string shape_of(const SafetensorsTensor& t) { return shape_str(t.shape); }

// lmpress group lengths, largest first (0 = the whole row).
constexpr int64_t kLmpGroups[] = {0, 128, 64, 32, 16};

}  // namespace

// ---- configuration --------------------------------------------------------------------------------

HfQuantConfig io_detail::parse_hf_quant_config(const json& qc, const std::string& where) {
  if (!qc.is_object()) fail(where, "quantization_config must be a JSON object");
  JsonFields f{qc, where};
  HfQuantConfig q;
  q.where = where;
  const std::string method = f.string("quant_method", "gptq");
  if (method == "gptq") {
    q.method = HfQuantConfig::Method::Gptq;
  } else if (method == "awq") {
    q.method = HfQuantConfig::Method::Awq;
  } else {
    fail(where, "quantization_config quant_method '" + method + "' is not supported (supported: gptq, awq)");
  }
  // bits / group_size (AutoAWQ's own file says w_bit / q_group_size).
  const char* bits_key = f.get("bits") || !f.get("w_bit") ? "bits" : "w_bit";
  const char* group_key = f.get("group_size") || !f.get("q_group_size") ? "group_size" : "q_group_size";
  const json* b = f.get(bits_key);
  if (!b) fail(where, "quantization_config has no \"bits\"");
  if (!b->is_number_integer()) fail(where, std::string("quantization_config \"") + bits_key + "\" must be an integer, got " + json_brief(*b));
  const int64_t bits = b->get<int64_t>();
  if (q.method == HfQuantConfig::Method::Awq ? bits != 4 : !gptq_bits_ok(int(bits)) || bits > 8)
    fail(where, "quantization_config bits " + std::to_string(bits) + " is not supported (" +
                    (q.method == HfQuantConfig::Method::Awq ? "AWQ: 4" : "GPTQ: 2, 3, 4, 8") + ")");
  q.bits = int(bits);
  const json* g = f.get(group_key);
  if (!g) fail(where, "quantization_config has no \"group_size\"");
  if (!g->is_number_integer())
    fail(where, std::string("quantization_config \"") + group_key + "\" must be an integer, got " + json_brief(*g));
  q.group_size = g->get<int64_t>();
  if (q.group_size != -1 && (q.group_size < 1 || q.group_size > (int64_t(1) << 24)))
    fail(where, "quantization_config group_size " + std::to_string(q.group_size) + " is out of range (-1 or 1..2^24)");
  if (q.method == HfQuantConfig::Method::Gptq) {
    // GPTQModel writes "format" (and the legacy "checkpoint_format"); "format" wins.
    std::string fmt = f.string("format", "");
    if (fmt.empty()) fmt = f.string("checkpoint_format", "gptq");
    if (fmt != "gptq" && fmt != "gptq_v2")
      fail(where, "GPTQ checkpoint format '" + fmt + "' is not supported (supported: gptq, gptq_v2)");
    q.v1 = fmt == "gptq";
    const std::string pack = f.string("pack_dtype", "int32");
    if (pack != "int32") fail(where, "GPTQ pack_dtype '" + pack + "' is not supported (only int32)");
    if (const json* d = f.get("dynamic")) {
      if (!d->is_object()) fail(where, "quantization_config \"dynamic\" must be an object or null");
      q.dynamic = !d->empty();
    }
  } else {
    std::string version = f.string("version", "gemm");
    std::transform(version.begin(), version.end(), version.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (version != "gemm")
      fail(where, "AWQ version '" + version + "' is not supported (only gemm, AutoAWQ's default)");
    q.v1 = false;
  }
  return q;
}

bool io_detail::find_hf_quant_config(const json& config, const std::string& dir, bool files, HfQuantConfig* q) {
  if (auto it = config.find("quantization_config"); it != config.end() && !it->is_null()) {
    *q = parse_hf_quant_config(*it, dir + "/config.json");
    return true;
  }
  if (!files) return false;
  for (const char* fn : {"quantize_config.json", "quant_config.json"}) {
    const std::string p = dir + "/" + fn;
    if (!file_exists(p)) continue;
    *q = parse_hf_quant_config(parse_json_text(read_text_file(p), p), p);
    return true;
  }
  return false;
}

// ---- import -------------------------------------------------------------------------------------

Tensor io_detail::import_hf_quant_linear(const HfQuantConfig& q, const std::string& name, const std::string& prefix,
                                         int64_t out, int64_t in, const HfQuantParts& parts, HfQuantDense* dense) {
  const std::string& file = parts.file;
  const bool awq = q.method == HfQuantConfig::Method::Awq;
  auto need = [&](const SafetensorsTensor* t, const char* what, const char* dtype) -> const SafetensorsTensor& {
    if (!t) fail(file, "quantized layer " + prefix + " has no " + prefix + "." + what);
    if (dtype && t->dtype != dtype)
      fail(file, "tensor " + prefix + "." + what + " has dtype " + t->dtype + " (expected " + dtype + ")");
    return *t;
  };
  const SafetensorsTensor& qw = need(parts.qweight, "qweight", "I32");
  const SafetensorsTensor& qz = need(parts.qzeros, "qzeros", "I32");
  const SafetensorsTensor& sc = need(parts.scales, "scales", nullptr);
  if (sc.dtype != "F16" && sc.dtype != "BF16" && sc.dtype != "F32")
    fail(file, "tensor " + prefix + ".scales has dtype " + sc.dtype + " (expected F16, BF16 or F32)");
  if (parts.g_idx && parts.g_idx->dtype != "I32")
    fail(file, "tensor " + prefix + ".g_idx has dtype " + parts.g_idx->dtype + " (expected I32)");
  auto expect_shape = [&](const SafetensorsTensor& t, const char* what, std::vector<int64_t> want) {
    if (t.shape != want)
      fail(file, "tensor " + prefix + "." + what + " has shape " + shape_of(t) + " but " + std::to_string(q.bits) +
                     "-bit codes of a [" + std::to_string(out) + ", " + std::to_string(in) + "] layer need " +
                     shape_str(want));
  };

  // Bits: the configuration's, or (GPTQModel's per-module "dynamic" overrides) the qweight's rows.
  int bits = q.bits;
  if (!awq && q.dynamic && qw.shape.size() == 2 && qw.shape[0] >= 1 && qw.shape[0] <= in && (qw.shape[0] * 32) % in == 0 &&
      gptq_bits_ok(int((qw.shape[0] * 32) / in)))
    bits = int((qw.shape[0] * 32) / in);
  const uint32_t mask = (1u << bits) - 1;
  if (awq) {
    if (out % 8 != 0) fail(file, "AWQ layer " + prefix + " has " + std::to_string(out) + " outputs (not a multiple of 8)");
    expect_shape(qw, "qweight", {in, out / 8});
  } else {
    if ((in * bits) % 32 != 0 || (out * bits) % 32 != 0)
      fail(file, "GPTQ layer " + prefix + " [" + std::to_string(out) + ", " + std::to_string(in) + "] cannot hold " +
                     std::to_string(bits) + "-bit codes in 32-bit words (in and out * bits must be multiples of 32)");
    expect_shape(qw, "qweight", {in * bits / 32, out});
  }

  // Groups: g_idx when the file has one, else runs of group_size columns.
  if (sc.shape.size() != 2 || sc.shape[1] != out || sc.shape[0] < 1 || sc.shape[0] > in)
    fail(file, "tensor " + prefix + ".scales has shape " + shape_of(sc) + " (expected [groups, " + std::to_string(out) +
                   "] with 1 <= groups <= " + std::to_string(in) + ")");
  const int64_t ng = sc.shape[0];
  expect_shape(qz, "qzeros", {ng, awq ? out / 8 : out * bits / 32});
  std::vector<int32_t> gidx(static_cast<size_t>(in));
  if (parts.g_idx && !awq) {
    expect_shape(*parts.g_idx, "g_idx", {in});
    for (int64_t i = 0; i < in; ++i) {
      const int32_t g = int32_t(load_u32(parts.g_idx->data + 4 * i));
      if (g < 0 || g >= ng)
        fail(file, "tensor " + prefix + ".g_idx[" + std::to_string(i) + "] = " + std::to_string(g) +
                       " is not a group of the layer's " + std::to_string(ng) + " scales");
      gidx[size_t(i)] = g;
    }
  } else {
    const int64_t G = q.group_size == -1 ? in : q.group_size;
    if (in % G != 0)
      fail(file, "group_size " + std::to_string(G) + " does not divide the " + std::to_string(in) +
                     " input features of " + prefix);
    if (ng != in / G)
      fail(file, "tensor " + prefix + ".scales has " + std::to_string(ng) + " groups but group_size " +
                     std::to_string(G) + " of " + std::to_string(in) + " input features implies " +
                     std::to_string(in / G));
    for (int64_t i = 0; i < in; ++i) gidx[size_t(i)] = int32_t(i / G);
  }

  // Scales and zeros [ng][out]; codes [out][in] (lmpress's row-major layout).
  std::vector<float> scale(size_t(ng * out));
  bool scales_f16 = true;
  for (int64_t k = 0; k < ng * out; ++k) {
    float s;
    if (sc.dtype == "F32") {
      std::memcpy(&s, sc.data + 4 * k, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, sc.data + 2 * k, 2);
      s = sc.dtype == "F16" ? f16_to_f32(h) : bf16_to_f32(h);
    }
    scale[size_t(k)] = s;
    scales_f16 = scales_f16 && (sc.dtype == "F16" || !std::isfinite(s) || f16_to_f32(f32_to_f16(s)) == s);
  }
  std::vector<int32_t> zero(size_t(ng * out));
  const int32_t zoff = q.v1 ? 1 : 0;
  const int64_t zrow = awq ? out / 8 : out * bits / 32;
  for (int64_t g = 0; g < ng; ++g)
    for (int64_t o = 0; o < out; ++o) {
      const uint8_t* row = qz.data + 4 * g * zrow;
      const uint32_t v = awq ? (load_u32(row + 4 * (o / 8)) >> (4 * awq_slot(o % 8))) & 15u : stream_get(row, 1, o, bits);
      zero[size_t(g * out + o)] = int32_t(v) + zoff;
    }
  std::vector<uint8_t> code(size_t(out * in));
  for (int64_t i = 0; i < in; ++i) {
    if (awq) {
      const uint8_t* row = qw.data + 4 * i * (out / 8);
      for (int64_t c = 0; c < out / 8; ++c) {
        const uint32_t w = load_u32(row + 4 * c);
        for (int k = 0; k < 8; ++k) code[size_t((8 * c + kAwqOrder[k]) * in + i)] = uint8_t((w >> (4 * k)) & 15u);
      }
    } else {
      for (int64_t o = 0; o < out; ++o) code[size_t(o * in + i)] = uint8_t(stream_get(qw.data + 4 * o, out, i, bits) & mask);
    }
  }

  // The lmpress group: the configured group size when its runs of columns each read one GPTQ
  // group (without per-module overrides, so a file lmpress wrote reads back in its own format);
  // else per row for a single group; else the run length of consecutive groups; else the largest
  // lmpress group whose runs each read one GPTQ group. None: the groups are not runs (act-order).
  auto runs_ok = [&](int64_t G) {
    const int64_t L = G == 0 ? in : G;
    for (int64_t i = 0; i < in; ++i)
      if (gidx[size_t(i)] != gidx[size_t(i - i % L)]) return false;
    return true;
  };
  auto listed = [](int64_t G) { return std::find(std::begin(kLmpGroups), std::end(kLmpGroups), G) != std::end(kLmpGroups); };
  int64_t run = 1;
  while (run < in && gidx[size_t(run)] == gidx[0]) ++run;
  bool consecutive = true;
  for (int64_t i = 0; i < in && consecutive; ++i) consecutive = gidx[size_t(i)] == i / run;
  int64_t lg = -1;
  const int64_t declared = q.group_size == -1 ? 0 : q.group_size;
  if (!q.dynamic && listed(declared) && runs_ok(declared))
    lg = declared;
  else if (consecutive && run == in)
    lg = 0;
  else if (consecutive && listed(run))
    lg = run;
  for (int64_t G : kLmpGroups)
    if (lg < 0 && runs_ok(G)) lg = G;
  bool zeros_u8 = true;
  for (int32_t z : zero) zeros_u8 = zeros_u8 && z >= 0 && z <= 255;

  *dense = lg < 0 ? HfQuantDense::ActOrder : !scales_f16 ? HfQuantDense::Scales : !zeros_u8 ? HfQuantDense::Zeros
                                                                                            : HfQuantDense::No;
  if (*dense != HfQuantDense::No) {
    // Exact f32 values: an f16 / bf16 scale times an integer below 2^9 needs at most 20
    // significant bits (f32 scales: one f32 rounding, as the reference kernels do).
    std::vector<float> w(size_t(out * in));
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) {
        const size_t k = size_t(int64_t(gidx[size_t(i)]) * out + o);
        w[size_t(o * in + i)] = scale[k] * float(int32_t(code[size_t(o * in + i)]) - zero[k]);
      }
    return make_f32_tensor(name, {out, in}, std::move(w));
  }
  const int64_t L = lg == 0 ? in : lg;
  const int64_t groups = (in + L - 1) / L;
  bool sym = true;
  for (int64_t o = 0; o < out && sym; ++o)
    for (int64_t j = 0; j < groups && sym; ++j)
      sym = zero[size_t(int64_t(gidx[size_t(j * L)]) * out + o)] == 1 << (bits - 1);
  QuantizedMatrix qm;
  qm.init(QuantSpec{bits, int(lg), sym, FormatFamily::Int, 0}, out, in);
  qm.q = std::move(code);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t j = 0; j < groups; ++j) {
      const size_t k = size_t(int64_t(gidx[size_t(j * L)]) * out + o);
      qm.scales[size_t(o * groups + j)] = scale[k];
      if (!sym) qm.zeros[size_t(o * groups + j)] = zero[k];
    }
  if (sym) qm.zeros.clear();
  try {
    return pack_tensor(name, qm);
  } catch (const Error& e) {
    fail(file, "quantized layer " + prefix + ": " + e.what());
  }
}

// ---- export -------------------------------------------------------------------------------------

namespace {

// Why a packed int tensor [out, in] cannot be a GPTQ layer ("" = it can).
std::string gptq_refusal(const QuantSpec& s, int64_t out, int64_t in) {
  if (s.family != FormatFamily::Int || s.sparse || s.rht)
    return "GPTQ layers are int formats (w2/w3/w4/w8, groups or per row) without sparse outliers or Hadamard transforms";
  if (!gptq_bits_ok(s.bits)) return "GPTQ checkpoints hold 2, 3, 4 or 8 bits";
  if ((in * s.bits) % 32 != 0 || (out * s.bits) % 32 != 0)
    return "its " + std::to_string(s.bits) + "-bit codes do not fill whole 32-bit words (in and out * bits must be multiples of 32)";
  if (s.group != 0 && in % s.group != 0)
    return "group " + std::to_string(s.group) + " does not divide its " + std::to_string(in) +
           " columns (GPTQ loaders need group_size to divide in_features)";
  return "";
}

// "^model\.layers\.0\.self_attn\.q_proj$": a module name as the anchored pattern GPTQModel's
// "dynamic" overrides match.
std::string module_pattern(const std::string& prefix) {
  std::string r = "^";
  for (char c : prefix) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') r += '\\';
    r += c;
  }
  return r + "$";
}

// Source row of every HF row: q/k rows of interleaved models are permuted to the halves order
// (permute_rope_rows applied to the row numbers).
std::vector<int64_t> hf_row_order(int64_t rows, int32_t heads) {
  std::vector<float> idx(static_cast<size_t>(rows));
  std::iota(idx.begin(), idx.end(), 0.f);
  Tensor t = make_f32_tensor("rows", {rows, 1}, std::move(idx));
  if (heads > 0) t = permute_rope_rows(t, heads, true);
  std::vector<int64_t> order(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) order[size_t(r)] = int64_t(t.as<float>()[r]);
  return order;
}

// A byte buffer as a tensor for write_safetensors_lazy (which only reads data and nbytes).
template <class T>
Tensor buffer_tensor(std::vector<T> v) {
  auto store = std::make_shared<std::vector<T>>(std::move(v));
  Tensor t;
  t.dtype = DType::F32;
  t.data = store->data();
  t.nbytes = store->size() * sizeof(T);
  t.owner = store;
  return t;
}

}  // namespace

void write_hf_gptq_model(const Model& m, const std::string& dir, DType dtype, bool overwrite) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    fail(dir, std::string("Hugging Face output type ") + dtype_name(dtype) + " is not supported (use f32, f16 or bf16)");
  m.validate();
  const ArchInfo& ai = arch_info(m.cfg.arch);
  const std::vector<NamedTensor> named = canonical_tensors(m);

  // What each tensor becomes: a GPTQ layer, a dense tensor, or (a packed embedding) exact f32.
  enum class Kind { Dense, Gptq, Dequant };
  struct Item {
    Kind kind = Kind::Dense;
    DType type = DType::F32;
    int32_t permute = 0;
    std::string prefix;  // HF module name of a linear layer ("model.layers.0.self_attn.q_proj")
    QuantSpec spec;
  };
  std::vector<Item> items(named.size());
  bool v1 = true, lm_head = false;
  int n_dequant = 0;
  std::map<std::tuple<int, int64_t, bool>, int> combos;  // (bits, group_size, sym) -> layers
  for (size_t i = 0; i < named.size(); ++i) {
    const NamedTensor& nt = named[i];
    const Tensor& t = *nt.t;
    Item& it = items[i];
    const TensorRole role = arch_tensor(ai, nt.kind).role;
    const std::string hn = hf_name(nt);
    it.permute = rope_permute_heads(m, nt);
    it.type = t.shape.size() == 1 ? DType::F32 : dtype;
    if (role == TensorRole::Linear || role == TensorRole::Classifier) it.prefix = hn.substr(0, hn.size() - 7);
    if (t.dtype != DType::Q) continue;
    it.spec = format_spec(t.format);
    if (role == TensorRole::Embedding) {
      it.kind = Kind::Dequant;
      ++n_dequant;
      continue;
    }
    const int64_t out = t.rows(), in = t.cols();
    const std::string why = gptq_refusal(it.spec, out, in);
    if (!why.empty()) fail(dir, "tensor " + nt.name + " has format " + format_name(it.spec) + ": " + why);
    it.kind = Kind::Gptq;
    lm_head = lm_head || role == TensorRole::Classifier;
    // Zeros must be codes (v2) and, for v1, at least 1: read them from the packed bytes.
    if (!it.spec.sym) {
      const PackedGeometry g = packed_geometry(it.spec, out, in);
      const uint8_t* z = static_cast<const uint8_t*>(t.data) + g.q_bytes + g.scale_bytes;
      for (int64_t k = 0; k < g.zero_bytes; ++k) {
        if (z[k] > (1 << it.spec.bits) - 1)
          fail(dir, "tensor " + nt.name + " has zero point " + std::to_string(z[k]) + " (row " +
                        std::to_string(k / g.groups_per_row) + "), beyond the " + std::to_string(it.spec.bits) +
                        "-bit codes a GPTQ zero holds");
        v1 = v1 && z[k] != 0;
      }
    }
    ++combos[{it.spec.bits, it.spec.group == 0 ? -1 : it.spec.group, it.spec.sym}];
  }
  if (combos.empty())
    fail(dir, "no linear layer of the model is in an int format, nothing to write as GPTQ (use --to hf for a dense model)");

  AtomicDir outdir(dir, overwrite);
  const std::string tmp = outdir.tmp_path();

  // Tensors: a GPTQ layer is <prefix>.g_idx, .qweight, .qzeros, .scales.
  static const char* const kParts[4] = {"g_idx", "qweight", "qzeros", "scales"};
  std::vector<SafetensorsWriteTensor> specs;
  std::vector<std::pair<size_t, int>> source;  // spec -> (item, part; -1 = the tensor itself)
  for (size_t i = 0; i < named.size(); ++i) {
    const Tensor& t = *named[i].t;
    const Item& it = items[i];
    if (it.kind != Kind::Gptq) {
      specs.push_back({hf_name(named[i]), st_dtype_name(it.type), t.shape, nullptr, size_t(t.numel()) * dtype_size(it.type)});
      source.push_back({i, -1});
      continue;
    }
    const int64_t out = t.rows(), in = t.cols(), b = it.spec.bits;
    const int64_t ng = it.spec.group == 0 ? 1 : in / it.spec.group;
    const std::vector<int64_t> shapes[4] = {{in}, {in * b / 32, out}, {ng, out * b / 32}, {ng, out}};
    for (int p = 0; p < 4; ++p) {
      const char* dt = p == 3 ? "F16" : "I32";
      specs.push_back({it.prefix + "." + kParts[p], dt, shapes[p], nullptr,
                       size_t(shapes[p][0] * (p == 0 ? 1 : shapes[p][1])) * (p == 3 ? 2 : 4)});
      source.push_back({i, p});
    }
  }
  // The four parts of one layer are made together, when its first part is written.
  size_t cached = SIZE_MAX;
  Tensor parts[4];
  write_safetensors_lazy(tmp + "/model.safetensors", specs, {{"format", "pt"}}, [&](size_t k) -> Tensor {
    const auto [i, p] = source[k];
    const Tensor& t = *named[i].t;
    const Item& it = items[i];
    if (p < 0) {
      if (it.kind == Kind::Dequant) return make_f32_tensor(t.name, t.shape, dequantize_ref(t));
      Tensor d = it.permute ? permute_rope_rows(t, it.permute, true) : t;
      return d.dtype == it.type ? d : convert_tensor(d, it.type);
    }
    if (cached != i) {
      const QuantizedMatrix qm = unpack_tensor(t);
      const int b = it.spec.bits;
      const int64_t out = qm.rows, in = qm.cols, ng = qm.groups(), G = qm.group_len();
      const std::vector<int64_t> order = hf_row_order(out, it.permute);
      std::vector<int32_t> gi(static_cast<size_t>(in));
      for (int64_t c = 0; c < in; ++c) gi[size_t(c)] = int32_t(c / G);
      std::vector<uint32_t> qw(size_t(in * b / 32 * out), 0), qz(size_t(ng * out * b / 32), 0);
      std::vector<uint16_t> sc(size_t(ng * out));
      const int32_t zoff = v1 ? 1 : 0;
      for (int64_t r = 0; r < out; ++r) {
        const int64_t src = order[size_t(r)];
        const uint8_t* q = qm.q.data() + src * in;
        for (int64_t c = 0; c < in; ++c) stream_put(qw.data() + r, out, c, b, q[c]);
        for (int64_t g = 0; g < ng; ++g) {
          stream_put(qz.data() + g * (out * b / 32), 1, r, b, uint32_t(qm.zeros[size_t(src * ng + g)] - zoff));
          sc[size_t(g * out + r)] = f32_to_f16(qm.scales[size_t(src * ng + g)]);
        }
      }
      parts[0] = buffer_tensor(std::move(gi));
      parts[1] = buffer_tensor(std::move(qw));
      parts[2] = buffer_tensor(std::move(qz));
      parts[3] = buffer_tensor(std::move(sc));
      cached = i;
    }
    return parts[p];
  });

  // quantization_config: the most common (bits, group, sym) as the default, GPTQModel's "dynamic"
  // overrides for the other layers, and "-:" (not quantized) for dense linear layers.
  const auto def = std::max_element(combos.begin(), combos.end(),
                                    [](const auto& a, const auto& b) { return a.second < b.second; })->first;
  nlohmann::ordered_json dynamic = nlohmann::ordered_json::object();
  for (size_t i = 0; i < named.size(); ++i) {
    const Item& it = items[i];
    if (it.prefix.empty()) continue;
    if (it.kind == Kind::Dense) {
      dynamic["-:" + module_pattern(it.prefix)] = nlohmann::ordered_json::object();
    } else if (it.kind == Kind::Gptq) {
      const std::tuple<int, int64_t, bool> mine{it.spec.bits, it.spec.group == 0 ? -1 : it.spec.group, it.spec.sym};
      if (mine != def)
        dynamic["+:" + module_pattern(it.prefix)] = {
            {"bits", std::get<0>(mine)}, {"group_size", std::get<1>(mine)}, {"sym", std::get<2>(mine)}};
    }
  }
  const char* fmt = v1 ? "gptq" : "gptq_v2";
  nlohmann::ordered_json qc;
  qc["quant_method"] = "gptq";
  qc["bits"] = std::get<0>(def);
  qc["group_size"] = std::get<1>(def);
  qc["desc_act"] = false;
  qc["sym"] = std::get<2>(def);
  qc["lm_head"] = lm_head;
  qc["dynamic"] = dynamic.empty() ? nlohmann::ordered_json(nullptr) : dynamic;
  qc["checkpoint_format"] = fmt;
  qc["format"] = fmt;
  qc["pack_dtype"] = "int32";
  qc["true_sequential"] = true;
  qc["static_groups"] = false;
  nlohmann::ordered_json cj = hf_config_json(m, dtype, dir);
  cj["quantization_config"] = qc;
  write_hf_metadata(m, tmp, cj);
  write_hf_text(tmp + "/quantize_config.json", qc.dump(2) + "\n");
  outdir.commit();
  if (n_dequant) log_info("%s: the packed embedding was written dequantized (exact f32): GPTQ quantizes linear layers only", dir.c_str());
  if (!v1)
    log_info("%s: an asymmetric group has zero point 0, which GPTQ's v1 format cannot store: wrote checkpoint_format "
             "gptq_v2 (GPTQModel reads it; AutoGPTQ does not)", dir.c_str());
}

}  // namespace lmpress
