// llama2.c legacy (version 0) checkpoints.
//
// Layout: 7 x int32 header {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len}
// (vocab_size < 0: separate classifier), then f32 arrays, layers stacked:
//   token_embedding [vocab, dim], rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim],
//   wv [L, kv_dim, dim], wo [L, dim, dim], rms_ffn [L, dim], w1 [L, hidden, dim],
//   w2 [L, dim, hidden], w3 [L, hidden, dim], rms_final [dim],
//   freq_cis_real [seq, hd/2], freq_cis_imag [seq, hd/2]   (legacy RoPE tables, unused),
//   wcls [vocab, dim] when untied.
// w1 = gate, w3 = up, w2 = down; q/k rows rotate adjacent pairs (interleaved RoPE).
#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "io/io_internal.h"
#include "lmpress/io.h"

namespace lmpress {

using namespace io_detail;
namespace fs = std::filesystem;

namespace {

constexpr size_t kHeaderBytes = 7 * 4;

// Element counts (f32) of every region, computed in 64 bits from bounded dims.
struct Layout {
  uint64_t embd, layer_block, rms_final, rope, wcls;
  uint64_t before_rope() const { return embd + layer_block + rms_final; }
  uint64_t with_rope() const { return before_rope() + rope + wcls; }
  uint64_t without_rope() const { return before_rope() + wcls; }
};

Layout layout_of(const ModelConfig& c) {
  const uint64_t dim = uint64_t(c.dim), hidden = uint64_t(c.hidden_dim), L = uint64_t(c.n_layers),
                 kv_dim = uint64_t(c.n_kv_heads) * uint64_t(c.head_dim),
                 vocab = uint64_t(c.vocab_size);
  Layout l;
  l.embd = vocab * dim;
  l.layer_block = L * (2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim);
  l.rms_final = dim;
  l.rope = uint64_t(c.max_seq_len) * uint64_t(c.head_dim);
  l.wcls = c.tied_embeddings ? 0 : vocab * dim;
  return l;
}

// Parses and checks the header; returns whether the file carries the legacy RoPE tables.
bool parse_header(const uint8_t* data, size_t n, const std::string& name, ModelConfig& c) {
  if (n < kHeaderBytes)
    fail(name, "llama2.c checkpoint truncated: " + std::to_string(n) +
                   " bytes, the header alone needs 28 (not a model file?)");
  if (std::memcmp(data, "ak42", 4) == 0)
    fail(name, "llama2.c version 1/2 export (magic \"ak42\") is not supported; export the model "
               "with llama2.c's legacy (version 0) format or convert it to GGUF");
  int32_t h[7];
  std::memcpy(h, data, sizeof h);
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                          "seq_len"};
  const std::string hdr = [&] {
    std::string s = "header {";
    for (int i = 0; i < 7; ++i) s += std::string(i ? ", " : "") + names[i] + " " + std::to_string(h[i]);
    return s + "}";
  }();
  const int64_t limits[7] = {kMaxDim, kMaxDim, kMaxLayers, 1 << 14, 1 << 14, kMaxDim * 4, kMaxDim};
  for (int i = 0; i < 7; ++i) {
    const int64_t v = i == 5 ? std::abs(int64_t(h[i])) : int64_t(h[i]);
    if (v <= 0 || v > limits[i])
      fail(name, std::string("not a llama2.c checkpoint: ") + names[i] + " = " +
                     std::to_string(h[i]) + " is out of range 1.." + std::to_string(limits[i]) +
                     " (" + hdr + ")");
  }
  c = ModelConfig{};
  c.arch = "llama";
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.vocab_size = int32_t(std::abs(int64_t(h[5])));
  c.tied_embeddings = h[5] > 0;
  c.max_seq_len = h[6];
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_style = RopeStyle::Interleaved;
  if (c.dim % c.n_heads != 0)
    fail(name, "not a llama2.c checkpoint: n_heads " + std::to_string(c.n_heads) +
                   " does not divide dim " + std::to_string(c.dim) + " (" + hdr + ")");
  c.head_dim = c.dim / c.n_heads;
  check_config(c, name);

  const Layout l = layout_of(c);
  const uint64_t full = kHeaderBytes + 4 * l.with_rope();
  const uint64_t bare = kHeaderBytes + 4 * l.without_rope();
  if (uint64_t(n) == full) return true;
  if (uint64_t(n) == bare) return false;
  fail(name, "llama2.c checkpoint is " + std::to_string(n) + " bytes but its " + hdr +
                 " implies " + std::to_string(full) + " bytes (" +
                 (uint64_t(n) < full ? "file truncated?" : "trailing data; not a llama2.c v0 file?") +
                 ")");
}

// Finds a tokenizer beside a llama2.c model; returns "" when none is present.
std::string find_tokenizer(const std::string& model_path, int32_t vocab, std::string& looked) {
  const fs::path dir = fs::path(model_path).parent_path().empty()
                           ? fs::path(".")
                           : fs::path(model_path).parent_path();
  looked = "tokenizer.model, tok*.model, tok*.bin in " + dir.string();
  std::vector<std::string> models, bins;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string fn = it->path().filename().string();
    if (!it->is_regular_file(ec)) continue;
    if (fn.rfind("tok", 0) != 0) continue;
    if (fn.size() > 6 && fn.compare(fn.size() - 6, 6, ".model") == 0) models.push_back(fn);
    if (fn.size() > 4 && fn.compare(fn.size() - 4, 4, ".bin") == 0) bins.push_back(fn);
  }
  // Preference: tokenizer.model, tok<vocab>.model, other tok*.model (sorted), then the same for
  // the llama2.c .bin format.
  auto pick = [&](std::vector<std::string>& v, const std::string& ext) -> std::string {
    std::sort(v.begin(), v.end());
    for (const std::string& want : {"tokenizer" + ext, "tok" + std::to_string(vocab) + ext})
      if (std::find(v.begin(), v.end(), want) != v.end()) return want;
    return v.empty() ? "" : v.front();
  };
  std::string fn = pick(models, ".model");
  if (fn.empty()) fn = pick(bins, ".bin");
  return fn.empty() ? "" : (dir / fn).string();
}

}  // namespace

void parse_llama2c_buffer(const uint8_t* data, size_t n, const std::string& name, ModelConfig& cfg) {
  parse_header(data, n, name, cfg);
}

Model load_llama2c(const std::string& path, const LoadOptions& opt) {
  Model m;
  auto file = std::make_shared<MappedFile>(path);
  parse_header(file->data(), file->size(), path, m.cfg);
  const ModelConfig& c = m.cfg;
  const Layout lay = layout_of(c);

  const float* p = reinterpret_cast<const float*>(file->data() + kHeaderBytes);
  const int64_t L = c.n_layers;
  // Takes the next `count` floats as a tensor view.
  auto take = [&](std::string name, std::vector<int64_t> shape) {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    Tensor t = view_tensor(std::move(name), DType::F32, std::move(shape), p, size_t(count) * 4);
    p += count;
    return t;
  };
  // The file's order of the stacked per-layer arrays ([L, shape] each, one view per layer); names
  // and shapes come from the architecture table.
  const ArchInfo& ai = arch_info(c.arch);
  auto row = [&](const char* key) -> const ArchTensor& { return arch_tensor(ai, key); };
  m.layers.resize(size_t(L));
  m.tok_embd = take(arch_tensor_name(row("token_embd"), 0), row("token_embd").shape(c));
  for (const char* key : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
                          "ffn_down", "ffn_up"}) {
    const ArchTensor& at = row(key);
    for (int64_t i = 0; i < L; ++i) m.layers[size_t(i)].*at.member = take(arch_tensor_name(at, int(i)), at.shape(c));
  }
  m.out_norm = take(arch_tensor_name(row("output_norm"), 0), row("output_norm").shape(c));
  const bool has_rope = file->size() == kHeaderBytes + 4 * lay.with_rope();
  if (has_rope) p += lay.rope;
  if (c.tied_embeddings) {
    m.output = m.tok_embd;
  } else {
    m.output = take(arch_tensor_name(row("output"), 0), row("output").shape(c));
  }
  LMP_ASSERT(reinterpret_cast<const uint8_t*>(p) == file->data() + file->size());

  m.path = path;
  m.format = "llama2c";
  m.file_bytes = file->size();
  m.files.push_back(file);
  m.validate();
  if (opt.check_tensors) check_tensors_finite(m);

  std::string tok = opt.tokenizer_path, looked;
  if (tok.empty()) tok = find_tokenizer(path, c.vocab_size, looked);
  if (tok.empty()) {
    if (opt.require_tokenizer)
      fail(path, "no tokenizer found beside the model (looked for " + looked +
                     "); pass --tokenizer");
    return m;
  }
  Vocab v = load_vocab_file(tok, c.vocab_size);
  check_vocab_fits(v, c, tok, !opt.tokenizer_path.empty());
  m.tokenizer = std::make_unique<Tokenizer>(std::move(v));
  return m;
}

}  // namespace lmpress
