// Causal GQA attention over the KV cache (engine/attention.h).
#include "engine/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/kernels.h"

extern "C" void openblas_set_num_threads(int);

namespace lmpress {

namespace {
// Positions token t (0-based among the new tokens) attends to: [lo, hi).
inline int64_t key_lo(const AttnArgs& a, int64_t t) {
  return a.window > 0 ? std::max<int64_t>(0, a.pos + t + 1 - a.window) : 0;
}
inline int64_t key_hi(const AttnArgs& a, int64_t t) { return a.pos + t + 1; }

// Work of an attention call, in multiply-adds (both products).
inline int64_t attn_work(const AttnArgs& a) { return a.n * a.n_heads * (a.pos + a.n) * a.head_dim; }
}  // namespace

void attention_per_token(const AttnArgs& a, ThreadPool& pool) {
  const int64_t hd = a.head_dim, nh = a.n_heads, group = nh / a.n_kv_heads;
  const int64_t q_dim = nh * hd, kv_dim = a.n_kv_heads * hd;
  const auto& K = kern::ops();
  auto attend = [&](int, int64_t b, int64_t e) {
    thread_local std::vector<float> scores;  // one per worker: [pos + n]
    scores.resize(size_t(a.pos + a.n));
    float* sc = scores.data();
    for (int64_t task = b; task < e; ++task) {
      const int64_t t = task / nh, h = task % nh, kvh = h / group;
      const int64_t p_begin = key_lo(a, t), p_end = key_hi(a, t);
      const float* qv = a.q + t * q_dim + h * hd;
      float mx = -INFINITY;
      for (int64_t p = p_begin; p < p_end; ++p) {
        sc[p] = K.dot_f32(qv, a.k + p * kv_dim + kvh * hd, size_t(hd)) * a.scale;
        mx = std::max(mx, sc[p]);
      }
      double sum = 0;
      for (int64_t p = p_begin; p < p_end; ++p) {
        sc[p] = std::exp(sc[p] - mx);
        sum += sc[p];
      }
      const float inv = float(1.0 / sum);
      float* o = a.out + t * q_dim + h * hd;
      std::fill(o, o + hd, 0.f);
      for (int64_t p = p_begin; p < p_end; ++p) K.axpy_f32(sc[p] * inv, a.v + p * kv_dim + kvh * hd, o, size_t(hd));
    }
  };
  // Small problems stay on the calling thread.
  if (attn_work(a) < (int64_t(1) << 17))
    attend(0, 0, a.n * nh);
  else
    pool.parallel_for(a.n * nh, attend);
}

// One task = one kv head x one chunk of tq query tokens [t0, t1). Its G query heads are stacked
// into Qp [G * m][hd] (row g * m + i = head kvh * G + g, token t0 + i) so the shared keys and
// values are read by one product each:
//   S [G * m][L] = scale * Qp Kᵀ over the chunk's key range [k0, k1) (sgemm, K rows kv_dim apart),
//   each row: outside its own causal / window range -> 0, inside -> exp(s - row max), sum,
//   O [G * m][hd] = S V (sgemm), scattered to out with the row's 1 / sum.
// Chunks keep S within ~2 MB per thread at n_ctx 2048 and skip most of the causal upper triangle
// (a chunk reads keys only up to its last token).
void attention_blocked(const AttnArgs& a, ThreadPool& pool) {
  const int64_t hd = a.head_dim, nh = a.n_heads, nkv = a.n_kv_heads, G = nh / nkv;
  const int64_t q_dim = nh * hd, kv_dim = nkv * hd;
  // OpenBLAS single-threaded: the sgemm calls run inside our pool's workers (OpenBLAS's own
  // threads would oversubscribe the cores; its default is all of them until someone sets it).
  static const bool once = (openblas_set_num_threads(1), true);
  (void)once;
  const int64_t tq = std::clamp<int64_t>(256 / G, 1, a.n);
  const int64_t nchunks = (a.n + tq - 1) / tq;
  const auto& K = kern::ops();
  auto body = [&](int, int64_t b, int64_t e) {
    thread_local std::vector<float> qp, s, o, inv;  // one set per worker
    for (int64_t task = b; task < e; ++task) {
      // the longest chunks (last tokens: most keys) first, for the dynamic schedule
      const int64_t chunk = nchunks - 1 - task / nkv, kvh = task % nkv;
      const int64_t t0 = chunk * tq, t1 = std::min(a.n, t0 + tq), m = t1 - t0, rows = G * m;
      const int64_t k0 = key_lo(a, t0), k1 = key_hi(a, t1 - 1), L = k1 - k0;
      qp.resize(size_t(rows * hd));
      s.resize(size_t(rows * L));
      o.resize(size_t(rows * hd));
      inv.resize(size_t(rows));
      for (int64_t g = 0; g < G; ++g)
        for (int64_t i = 0; i < m; ++i)
          std::copy_n(a.q + (t0 + i) * q_dim + (kvh * G + g) * hd, hd, qp.data() + (g * m + i) * hd);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(L), int(hd), a.scale, qp.data(), int(hd),
                  a.k + k0 * kv_dim + kvh * hd, int(kv_dim), 0.f, s.data(), int(L));
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = t0 + r % m, lo = key_lo(a, t) - k0, hi = key_hi(a, t) - k0;
        float* row = s.data() + r * L;
        std::fill(row, row + lo, 0.f);
        std::fill(row + hi, row + L, 0.f);
        inv[size_t(r)] = 1.f / K.softmax_unnorm_f32(row + lo, size_t(hi - lo));
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(hd), int(L), 1.f, s.data(), int(L),
                  a.v + k0 * kv_dim + kvh * hd, int(kv_dim), 0.f, o.data(), int(hd));
      for (int64_t g = 0; g < G; ++g)
        for (int64_t i = 0; i < m; ++i) {
          const float f = inv[size_t(g * m + i)];
          const float* src = o.data() + (g * m + i) * hd;
          float* dst = a.out + (t0 + i) * q_dim + (kvh * G + g) * hd;
          for (int64_t c = 0; c < hd; ++c) dst[c] = src[c] * f;
        }
    }
  };
  const int64_t tasks = nkv * nchunks;
  if (attn_work(a) < (int64_t(1) << 17) || pool.size() == 1 || tasks == 1)
    body(0, 0, tasks);
  else
    pool.parallel_for_dynamic(tasks, 1, body);
}

}  // namespace lmpress
