// QuaRot (Ashkboos et al. 2024, "QuaRot: Outlier-Free 4-Bit Inference in Rotated LLMs"), weight
// side, on SliceGPT's computational invariance (Ashkboos et al. 2024): an RMSNorm with unit weight
// commutes with any orthogonal Q (||Qx|| = ||x||), so once every norm weight is folded into the
// layers reading its output, the residual stream can be rotated, x' = V x with V orthogonal, without
// changing what the float model computes:
//   embedding rows      e <- V e                      (E <- E V^T)
//   readers             W <- W V^T                    (q, k, v, gate, up, classifier)
//   writers             W <- V W,  b <- V b           (attn output, ffn down)
// V = H_dim D: the normalized Hadamard of order dim (src/formats/hadamard.cpp, the one +h uses: Paley
// constructions for orders m * 2^k, block-diagonal otherwise) times random signs D from the seed.
// A rotated weight has its outlier channels spread over all columns, which is what the rounding
// methods that follow (quarot+gptq) quantize better. With `heads` (default, QuaRot's rotate_ov_proj)
// each head's value space is rotated too by V_h = H_head_dim D_h (the same for every head, so GQA's
// shared kv heads stay consistent): v's rows per kv head V_h W_v[h], v's bias likewise, o's columns
// per query head W_o[:, h] V_h^T (attention mixes tokens, not channels within a head).
// Deviations (docs/methods.md): weight-only, so the paper's online Hadamards (on the down_proj input
// and across heads before o_proj, for activation quantization) are not inserted; `+hi` on ffn_down /
// attn_output gives the down_proj one per tensor. The tied classifier is untied: folding the final
// norm's weight g makes it E diag(g) V^T, no longer the embedding E V^T, so it is stored on its own
// (vocab x dim more weights, counted in the output's bytes).
#include <algorithm>
#include <cstring>

#include "algo/pipeline_internal.h"

namespace lmpress {

namespace {

std::vector<float> f32_of(const Tensor& t) {
  if (t.dtype == DType::Q && format_spec(t.format).family != FormatFamily::Ggml)
    fail(t.name, "tensor is already quantized; start from an unquantized model");
  return t.dtype == DType::Q ? dequantize_ref(t) : tensor_to_f32(t);
}

// w [rows][cols]: every row x <- V x with V = H_cols D(s) (readers: W <- W V^T; embedding rows).
void rotate_rows(float* w, int64_t rows, int64_t cols, const uint8_t* s, ThreadPool& pool) {
  const HadamardPlan& P = hadamard_plan(cols);
  pool.parallel_for(rows, [&](int, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) rht_forward(P, s, w + r * cols);
  });
}

// w [rows][cols]: every column c <- V c with V = H_rows D(s) (writers: W <- V W). Columns are
// gathered 16 at a time into contiguous rows (a strided column per transform would miss the cache).
void rotate_cols(float* w, int64_t rows, int64_t cols, const uint8_t* s, ThreadPool& pool) {
  const HadamardPlan& P = hadamard_plan(rows);
  constexpr int64_t kB = 16;
  pool.parallel_for((cols + kB - 1) / kB, [&](int, int64_t b0, int64_t b1) {
    std::vector<float> buf(size_t(kB * rows));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c0 = b * kB, nc = std::min(kB, cols - c0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < nc; ++j) buf[size_t(j * rows + r)] = w[r * cols + c0 + j];
      for (int64_t j = 0; j < nc; ++j) rht_forward(P, s, buf.data() + j * rows);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < nc; ++j) w[r * cols + c0 + j] = buf[size_t(j * rows + r)];
    }
  });
}

// W [rows][cols] <- W diag(g)
void fold_norm(std::vector<float>& w, int64_t cols, const std::vector<float>& g) {
  for (size_t i = 0; i < w.size(); ++i) w[i] *= g[i % size_t(cols)];
}

void set_f32(Tensor& t, std::vector<float> w) { t = make_f32_tensor(t.name, t.shape, std::move(w)); }
void set_ones(Tensor& t) { set_f32(t, std::vector<float>(size_t(t.numel()), 1.f)); }

}  // namespace

QuarotPlan quarot_plan(const ModelConfig& c, const QuarotOptions& o) {
  QuarotPlan P;
  P.o = o;
  P.signs = rht_random_signs(c.dim, rht_seed("quarot.residual." + std::to_string(o.seed)));
  if (o.heads) P.head_signs = rht_random_signs(c.head_dim, rht_seed("quarot.heads." + std::to_string(o.seed)));
  return P;
}

void quarot_globals(Model& m, const QuarotPlan& P, ThreadPool& pool) {
  const int64_t vocab = m.cfg.vocab_size, d = m.cfg.dim;
  std::vector<float> E = f32_of(m.tok_embd);
  std::vector<float> W = m.cfg.tied_embeddings ? E : f32_of(m.output);
  fold_norm(W, d, f32_of(m.out_norm));
  rotate_rows(E.data(), vocab, d, P.signs.data(), pool);
  rotate_rows(W.data(), vocab, d, P.signs.data(), pool);
  m.tok_embd = make_f32_tensor(m.tok_embd.name, {vocab, d}, std::move(E));
  m.output = make_f32_tensor("output.weight", {vocab, d}, std::move(W));
  m.cfg.tied_embeddings = false;
  set_ones(m.out_norm);
}

void quarot_block(Model& m, int layer, const QuarotPlan& P, ThreadPool& pool) {
  const ModelConfig& c = m.cfg;
  LayerWeights& L = m.layers[size_t(layer)];
  const int64_t d = c.dim, hd = c.head_dim;
  const uint8_t* s = P.signs.data();
  auto readers = [&](Tensor& norm, std::initializer_list<Tensor*> ts) {
    const std::vector<float> g = f32_of(norm);
    for (Tensor* t : ts) {
      std::vector<float> w = f32_of(*t);
      fold_norm(w, d, g);
      rotate_rows(w.data(), t->rows(), d, s, pool);
      set_f32(*t, std::move(w));
    }
    set_ones(norm);
  };
  readers(L.attn_norm, {&L.wq, &L.wk, &L.wv});
  readers(L.ffn_norm, {&L.w_gate, &L.w_up});
  for (Tensor* t : {&L.wo, &L.w_down}) {
    std::vector<float> w = f32_of(*t);
    rotate_cols(w.data(), d, t->cols(), s, pool);
    set_f32(*t, std::move(w));
  }
  if (!P.o.heads) return;
  const HadamardPlan& Ph = hadamard_plan(hd);
  const uint8_t* hs = P.head_signs.data();
  {  // v: each kv head's rows [h*hd, (h+1)*hd) <- V_h rows (its columns rotated), and its bias
    std::vector<float> w = f32_of(L.wv);
    for (int64_t h = 0; h < c.n_kv_heads; ++h) rotate_cols(w.data() + h * hd * d, hd, d, hs, pool);
    set_f32(L.wv, std::move(w));
    if (!L.bv.empty()) {
      std::vector<float> b = f32_of(L.bv);
      for (int64_t h = 0; h < c.n_kv_heads; ++h) rht_forward(Ph, hs, b.data() + h * hd);
      set_f32(L.bv, std::move(b));
    }
  }
  {  // o: each query head's columns <- W_o[:, h] V_h^T (every row's head segments through V_h)
    std::vector<float> w = f32_of(L.wo);
    const int64_t cols = L.wo.cols();
    pool.parallel_for(L.wo.rows(), [&](int, int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t h = 0; h < c.n_heads; ++h) rht_forward(Ph, hs, w.data() + r * cols + h * hd);
    });
    set_f32(L.wo, std::move(w));
  }
}

void quarot_rotate_model(Model& m, const QuarotOptions& o, ThreadPool& pool) {
  const QuarotPlan P = quarot_plan(m.cfg, o);
  quarot_globals(m, P, pool);
  for (int l = 0; l < m.cfg.n_layers; ++l) quarot_block(m, l, P, pool);
}

}  // namespace lmpress
