// Llama forward pass: RMSNorm -> q/k/v -> RoPE -> causal GQA attention over the KV cache -> wo ->
// residual -> RMSNorm -> SwiGLU FFN -> residual; final RMSNorm -> classifier.
// Activations are f32 row-major [n_tokens, width]. Every linear layer's input passes a named hook.
#include "lmpress/engine.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "engine/attention.h"
#include "engine/matmul_ext.h"
#include "formats/formats_internal.h"
#include "kernels/kernels.h"

namespace lmpress {

namespace {
// A norm weight or bias as f32, read through the model's tensor at every call (a transform may
// have rewritten it since the engine was made): f32 tensors directly, others converted into buf.
const float* vec_f32(const Tensor& t, std::vector<float>& buf) {
  if (t.empty()) return nullptr;
  if (t.dtype == DType::F32) return t.as<float>();
  buf = tensor_to_f32(t);
  return buf.data();
}

void rmsnorm(const float* x, const float* w, float* out, int64_t n, int64_t d, float eps) {
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * d;
    float* o = out + t * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(xr[i]) * xr[i];
    const float scale = float(1.0 / std::sqrt(ss / double(d) + double(eps)));
    for (int64_t i = 0; i < d; ++i) o[i] = xr[i] * scale * w[i];
  }
}
}  // namespace

void tensor_row_f32(const Tensor& t, int64_t r, float* out) {
  const int64_t c = t.cols();
  switch (t.dtype) {
    case DType::F32: std::memcpy(out, t.as<float>() + r * c, size_t(c) * 4); return;
    case DType::F16: f16_to_f32_row(t.as<uint16_t>() + r * c, out, size_t(c)); return;
    case DType::BF16: bf16_to_f32_row(t.as<uint16_t>() + r * c, out, size_t(c)); return;
    case DType::Q:
      quant_row(t, r, out);
      return;
    default: fail(t.name, std::string("unsupported dtype ") + dtype_name(t.dtype));
  }
}

const char* linear_input_name(const std::string& s) {
  for (const ArchTensor& at : arch_info("llama").tensors)
    if (s == at.key) return at.input;
  return nullptr;
}

KvCache::KvCache(int32_t n_layers, int32_t n_ctx, int64_t kv_dim) : n_ctx_(n_ctx), kv_dim_(kv_dim) {
  k_.assign(size_t(n_layers) * size_t(n_ctx) * size_t(kv_dim), 0.f);
  v_.assign(k_.size(), 0.f);
}

void KvCache::store(int layer, int32_t pos, int64_t n, const float* k, const float* v) {
  LMP_ASSERT(pos >= 0 && int64_t(pos) + n <= n_ctx_);
  const size_t off = (size_t(layer) * size_t(n_ctx_) + size_t(pos)) * size_t(kv_dim_);
  std::memcpy(k_.data() + off, k, size_t(n * kv_dim_) * sizeof(float));
  std::memcpy(v_.data() + off, v, size_t(n * kv_dim_) * sizeof(float));
}

struct Engine::State {
  std::unique_ptr<KvCache> kv;
  std::vector<float> inv_freq;          // [head_dim/2], after rope scaling
  std::vector<float> norm_buf, bias_buf[3];  // non-f32 norms / biases converted per call
  // scratch, grown on demand
  std::vector<float> xn, q, k, v, att, ffn_g, ffn_u, tmp, cosb, sinb;
};

Engine::Engine(const Model& m, const EngineOptions& opt)
    : m_(m), st_(std::make_unique<State>()) {
  const auto& c = m.cfg;
  n_ctx_ = opt.n_ctx > 0 ? opt.n_ctx : c.max_seq_len;
  attn_ = opt.attention;
  if (attn_ == AttnPath::Auto) {  // LMPRESS_ATTN=pertoken|blocked: benchmarks compare the paths
    const char* e = std::getenv("LMPRESS_ATTN");
    if (e && std::string(e) == "pertoken") attn_ = AttnPath::PerToken;
    if (e && std::string(e) == "blocked") attn_ = AttnPath::Blocked;
  }
  pool_ = std::make_unique<ThreadPool>(opt.n_threads > 0 ? opt.n_threads : default_threads());
  const int64_t kv_dim = int64_t(c.n_kv_heads) * c.head_dim;
  st_->kv = std::make_unique<KvCache>(c.n_layers, n_ctx_, kv_dim);
  // RoPE frequencies: theta_i = base^(-2i/d); Llama-3 scaling divides low frequencies by `factor`
  // and interpolates smoothly between the low/high-frequency wavelength bounds.
  const int half = c.head_dim / 2;
  st_->inv_freq.resize(size_t(half));
  for (int i = 0; i < half; ++i) {
    double f = std::pow(double(c.rope_theta), -2.0 * i / double(c.head_dim));
    const auto& rs = c.rope_scaling;
    if (rs.type == "llama3") {
      const double low_wl = rs.original_max_position / rs.low_freq_factor;
      const double high_wl = rs.original_max_position / rs.high_freq_factor;
      const double wl = 2.0 * M_PI / f;
      if (wl > low_wl) {
        f = f / rs.factor;
      } else if (wl >= high_wl) {
        const double smooth = (rs.original_max_position / wl - rs.low_freq_factor) /
                              (rs.high_freq_factor - rs.low_freq_factor);
        f = (1.0 - smooth) * f / rs.factor + smooth * f;
      }
    } else if (rs.type == "linear" && rs.factor > 0) {
      f = f / rs.factor;
    }
    st_->inv_freq[size_t(i)] = float(f);
  }
}

Engine::~Engine() = default;

// The cache needs no clearing: forward() at position pos overwrites positions pos.. before any
// read of them, and attention reads only positions below the current one. So reset() only says
// the next forward() must start at position 0.
void Engine::reset() {}

const KvCache& Engine::kv_cache() const { return *st_->kv; }

void Engine::embed(const int32_t* tokens, int64_t n, float* x) const {
  const int64_t d = m_.cfg.dim;
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = tokens[t];
    if (id < 0 || id >= m_.cfg.vocab_size)
      fail(m_.path, "token id " + std::to_string(id) + " outside the vocabulary (size " +
                        std::to_string(m_.cfg.vocab_size) + ")");
    tensor_row_f32(m_.tok_embd, id, x + t * d);
  }
}

void Engine::layer_forward(int il, float* x, int64_t n, int32_t pos) {
  const auto& c = m_.cfg;
  const auto& L = m_.layers[size_t(il)];
  State& s = *st_;
  const int64_t d = c.dim, hd = c.head_dim, nh = c.n_heads, nkv = c.n_kv_heads;
  const int64_t q_dim = nh * hd, kv_dim = nkv * hd, hidden = c.hidden_dim;
  ThreadPool& pool = *pool_;

  s.xn.resize(size_t(n * d));
  s.q.resize(size_t(n * q_dim));
  s.k.resize(size_t(n * kv_dim));
  s.v.resize(size_t(n * kv_dim));
  s.att.resize(size_t(n * q_dim));
  s.tmp.resize(size_t(n * std::max(d, hidden)));

  // ---- attention ----
  rmsnorm(x, vec_f32(L.attn_norm, s.norm_buf), s.xn.data(), n, d, c.norm_eps);
  if (hook_) hook_("attn_in", il, s.xn.data(), n, d);
  const MatmulJob qkv[3] = {{&L.wq, s.xn.data(), n, s.q.data()},
                            {&L.wk, s.xn.data(), n, s.k.data()},
                            {&L.wv, s.xn.data(), n, s.v.data()}};
  matmul_batch(qkv, 3, pool);
  auto add_bias = [n](std::vector<float>& y, const float* b, int64_t w) {
    if (!b) return;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < w; ++i) y[size_t(t * w + i)] += b[size_t(i)];
  };
  add_bias(s.q, vec_f32(L.bq, s.bias_buf[0]), q_dim);
  add_bias(s.k, vec_f32(L.bk, s.bias_buf[1]), kv_dim);
  add_bias(s.v, vec_f32(L.bv, s.bias_buf[2]), kv_dim);

  // RoPE on q and k; cos/sin per token were computed once per forward call (s.cosb/s.sinb).
  const int64_t half = hd / 2;
  const bool halves = c.rope_style == RopeStyle::Halves;
  auto rope = [&](float* v, int64_t nheads, int64_t t) {
    const float* cs = s.cosb.data() + t * half;
    const float* sn = s.sinb.data() + t * half;
    for (int64_t h = 0; h < nheads; ++h) {
      float* p = v + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = halves ? i : 2 * i, b = halves ? i + half : 2 * i + 1;
        const float x0 = p[a], x1 = p[b];
        p[a] = x0 * cs[i] - x1 * sn[i];
        p[b] = x0 * sn[i] + x1 * cs[i];
      }
    }
  };
  for (int64_t t = 0; t < n; ++t) {
    rope(s.q.data() + t * q_dim, nh, t);
    rope(s.k.data() + t * kv_dim, nkv, t);
  }
  s.kv->store(il, pos, n, s.k.data(), s.v.data());

  // Causal attention: per (token, head) for decode, blocked (two sgemm per kv head and query
  // chunk) for prefill; the same semantics (engine/attention.h).
  AttnArgs aa;
  aa.q = s.q.data();
  aa.k = s.kv->keys(il);
  aa.v = s.kv->values(il);
  aa.out = s.att.data();
  aa.n = n;
  aa.pos = pos;
  aa.n_heads = nh;
  aa.n_kv_heads = nkv;
  aa.head_dim = hd;
  aa.window = c.sliding_window;  // Mistral: the last `window` positions, 0 = all
  aa.scale = 1.0f / std::sqrt(float(hd));
  const bool blocked = attn_ == AttnPath::Blocked || (attn_ == AttnPath::Auto && n >= kBlockedAttnMinTokens);
  if (blocked)
    attention_blocked(aa, pool);
  else
    attention_per_token(aa, pool);
  if (hook_) hook_("attn_out_in", il, s.att.data(), n, q_dim);
  matmul(L.wo, s.att.data(), n, s.tmp.data(), pool);
  for (int64_t i = 0; i < n * d; ++i) x[i] += s.tmp[size_t(i)];

  // ---- feed-forward (SwiGLU) ----
  rmsnorm(x, vec_f32(L.ffn_norm, s.norm_buf), s.xn.data(), n, d, c.norm_eps);
  if (hook_) hook_("ffn_in", il, s.xn.data(), n, d);
  s.ffn_g.resize(size_t(n * hidden));
  s.ffn_u.resize(size_t(n * hidden));
  const MatmulJob gate_up[2] = {{&L.w_gate, s.xn.data(), n, s.ffn_g.data()},
                                {&L.w_up, s.xn.data(), n, s.ffn_u.data()}};
  matmul_batch(gate_up, 2, pool);
  kern::ops().silu_mul_f32(s.ffn_g.data(), s.ffn_u.data(), size_t(n * hidden));
  if (hook_) hook_("ffn_down_in", il, s.ffn_g.data(), n, hidden);
  matmul(L.w_down, s.ffn_g.data(), n, s.tmp.data(), pool);
  for (int64_t i = 0; i < n * d; ++i) x[i] += s.tmp[size_t(i)];
}

void Engine::run_layers(float* x, int64_t n, int32_t pos, int begin, int end) {
  if (pos < 0 || int64_t(pos) + n > n_ctx_)
    fail(m_.path, "context overflow: positions " + std::to_string(pos) + ".." +
                      std::to_string(pos + n - 1) + " exceed the KV cache of " +
                      std::to_string(n_ctx_) + " tokens (raise --ctx)");
  const int64_t half = m_.cfg.head_dim / 2;
  st_->cosb.resize(size_t(n * half));
  st_->sinb.resize(size_t(n * half));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < half; ++i) {
      const float ang = float(pos + t) * st_->inv_freq[size_t(i)];
      st_->cosb[size_t(t * half + i)] = std::cos(ang);
      st_->sinb[size_t(t * half + i)] = std::sin(ang);
    }
  for (int il = begin; il < end; ++il) layer_forward(il, x, n, pos);
}

void Engine::final_logits(const float* x, int64_t n, float* logits) {
  const int64_t d = m_.cfg.dim;
  st_->xn.resize(size_t(n * d));
  rmsnorm(x, vec_f32(m_.out_norm, st_->norm_buf), st_->xn.data(), n, d, m_.cfg.norm_eps);
  if (hook_) hook_("output_in", -1, st_->xn.data(), n, d);
  matmul(m_.output, st_->xn.data(), n, logits, *pool_);
}

void Engine::forward(const int32_t* tokens, int64_t n, int32_t pos, float* logits, bool all_logits) {
  if (n <= 0) return;
  const int64_t d = m_.cfg.dim;
  std::vector<float> x(size_t(n * d));
  embed(tokens, n, x.data());
  run_layers(x.data(), n, pos, 0, m_.cfg.n_layers);
  if (!logits) return;
  if (all_logits)
    final_logits(x.data(), n, logits);
  else
    final_logits(x.data() + (n - 1) * d, 1, logits);
}

// ---- sampler ----
Sampler::Sampler(const SamplerOptions& o) : o_(o), rng_(o.seed) {}

int32_t Sampler::sample(const float* logits, int32_t nv) {
  if (o_.temperature <= 0.f) return int32_t(std::max_element(logits, logits + nv) - logits);
  std::vector<std::pair<float, int32_t>> p(static_cast<size_t>(nv));
  const float mx = *std::max_element(logits, logits + nv);
  double sum = 0;
  for (int32_t i = 0; i < nv; ++i) {
    const float e = std::exp((logits[i] - mx) / o_.temperature);
    p[size_t(i)] = {e, i};
    sum += e;
  }
  std::sort(p.begin(), p.end(), [](auto& a, auto& b) { return a.first > b.first; });
  // nucleus: smallest prefix with mass >= top_p
  double cum = 0;
  size_t keep = p.size();
  for (size_t i = 0; i < p.size(); ++i) {
    cum += p[i].first / sum;
    if (cum >= o_.top_p) {
      keep = i + 1;
      break;
    }
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += p[i].first;
  std::uniform_real_distribution<double> u(0.0, kept);
  double r = u(rng_), acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[i].first;
    if (r < acc) return p[i].second;
  }
  return p[keep - 1].second;
}

}  // namespace lmpress
