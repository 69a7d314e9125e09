// Synthetic models of real shapes with random weights, for speed work. The vocabulary is a valid
// SentencePiece-style one (unk/bos/eos, 256 byte tokens, then distinct pieces) so that GGUF
// exports load in llama.cpp too.
#include <cmath>

#include "lmpress/eval.h"
#include "lmpress/model.h"

namespace lmpress {

namespace {
struct Shape {
  const char* name;
  int dim, hidden, layers, heads, kv_heads, vocab, ctx;
  float theta;
  bool tied;
};
const Shape kShapes[] = {
    {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000, 2048, 10000.f, false},
    {"llama-3.2-1b", 2048, 8192, 16, 32, 8, 128256, 4096, 500000.f, true},
    {"llama-7b", 4096, 11008, 32, 32, 32, 32000, 4096, 10000.f, false},
    {"tiny", 64, 192, 2, 4, 2, 300, 256, 10000.f, false},
};

// splitmix64-driven approximate normal (sum of 4 uniforms, scaled to unit variance).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float normal() {
    double acc = 0;
    for (int i = 0; i < 4; ++i) acc += double(next() >> 11) * 0x1.0p-53;
    return float((acc - 2.0) * std::sqrt(3.0));
  }
};

Tensor random_tensor(const std::string& name, std::vector<int64_t> shape, DType dt, float stdv,
                     Rng& rng, ThreadPool& pool) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  std::vector<uint8_t> bytes(size_t(n) * dtype_size(dt));
  const uint64_t base = rng.next();
  // Parallel fill in blocks with independent streams (deterministic for a seed).
  const int64_t blk = 1 << 16;
  pool.parallel_for((n + blk - 1) / blk, [&](int, int64_t b, int64_t e) {
    for (int64_t bi = b; bi < e; ++bi) {
      Rng r{base ^ (uint64_t(bi) * 0x2545F4914F6CDD1Dull)};
      const int64_t i0 = bi * blk, i1 = std::min(n, i0 + blk);
      for (int64_t i = i0; i < i1; ++i) {
        const float v = r.normal() * stdv;
        if (dt == DType::F32)
          reinterpret_cast<float*>(bytes.data())[i] = v;
        else if (dt == DType::F16)
          reinterpret_cast<uint16_t*>(bytes.data())[i] = f32_to_f16(v);
        else
          reinterpret_cast<uint16_t*>(bytes.data())[i] = f32_to_bf16(v);
      }
    }
  });
  return make_owned_tensor(name, dt, std::move(shape), std::move(bytes));
}

Tensor ones(const std::string& name, int64_t n) {
  return make_f32_tensor(name, {n}, std::vector<float>(size_t(n), 1.0f));
}
}  // namespace

std::vector<std::string> synth_shapes() {
  std::vector<std::string> v;
  for (const auto& s : kShapes) v.push_back(s.name);
  return v;
}

Model synth_model(const std::string& shape, DType dt, uint64_t seed) {
  const Shape* sh = nullptr;
  for (const auto& s : kShapes)
    if (shape == s.name) sh = &s;
  if (!sh) {
    std::string all;
    for (const auto& s : synth_shapes()) all += (all.empty() ? "" : ", ") + s;
    fail("", "unknown synthetic shape '" + shape + "' (known: " + all + ")");
  }
  if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16) fail("", "synth: dtype must be f32, f16 or bf16");
  Model m;
  auto& c = m.cfg;
  c.arch = "llama";
  c.dim = sh->dim;
  c.hidden_dim = sh->hidden;
  c.n_layers = sh->layers;
  c.n_heads = sh->heads;
  c.n_kv_heads = sh->kv_heads;
  c.head_dim = sh->dim / sh->heads;
  c.vocab_size = sh->vocab;
  c.max_seq_len = sh->ctx;
  c.rope_theta = sh->theta;
  c.tied_embeddings = sh->tied;
  c.rope_style = RopeStyle::Interleaved;
  m.path = "synth:" + shape;
  m.format = "synth";

  ThreadPool pool(default_threads());
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 1};
  // Every tensor of the architecture table, layer by layer: norms are ones, matrices random with
  // standard deviation 1/sqrt(columns) (the embedding 1).
  const ArchInfo& ai = arch_info(c.arch);
  auto make = [&](const ArchTensor& at, int layer) {
    const std::vector<int64_t> sh = at.shape(c);
    const std::string name = arch_tensor_name(at, layer);
    if (at.role == TensorRole::Norm) return ones(name, sh[0]);
    LMP_ASSERT(at.role != TensorRole::Bias && sh.size() == 2);
    const float sd = at.role == TensorRole::Embedding ? 1.0f : 1.0f / std::sqrt(float(sh[1]));
    return random_tensor(name, sh, dt, sd, rng, pool);
  };
  for (const ArchTensor& at : ai.tensors)
    if (!arch_per_layer(at) && at.role == TensorRole::Embedding) m.*at.global = make(at, 0);
  m.layers.resize(size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l)
    for (const ArchTensor& at : ai.tensors)
      if (arch_per_layer(at) && at.present(c)) m.layers[size_t(l)].*at.member = make(at, l);
  for (const ArchTensor& at : ai.tensors)
    if (!arch_per_layer(at) && at.role != TensorRole::Embedding && at.present(c)) m.*at.global = make(at, 0);
  if (c.tied_embeddings) m.output = m.tok_embd;

  // Vocabulary: <unk> <s> </s>, 256 byte tokens, then distinct printable pieces.
  Vocab v;
  v.kind = VocabKind::SPM;
  v.source = m.path;
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.types = {TokenType::Unknown, TokenType::Control, TokenType::Control};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    v.tokens.push_back(buf);
    v.types.push_back(TokenType::Byte);
  }
  const char* alpha = "abcdefghijklmnopqrstuvwxyz";
  for (int i = 0; int(v.tokens.size()) < c.vocab_size; ++i) {
    std::string p = "\xE2\x96\x81";  // U+2581
    int x = i;
    do {
      p += alpha[x % 26];
      x /= 26;
    } while (x);
    v.tokens.push_back(p);
    v.types.push_back(TokenType::Normal);
  }
  v.scores.resize(v.tokens.size());
  for (size_t i = 0; i < v.scores.size(); ++i) v.scores[i] = -float(i);
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  m.tokenizer = std::make_unique<Tokenizer>(std::move(v));
  m.validate();
  return m;
}

}  // namespace lmpress
