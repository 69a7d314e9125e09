// Quantized matmul front end for every format family: picks the family's kernels at the active SIMD
// level (format traits), quantizes the activations once per distinct input (int8 per 32-column
// block, qkernels.h; f32 families read them as they are), precomputes the int family's zero-point
// sums X and splits the work over the thread pool. Also the dequantize + sgemm alternative
// (benchmarks / oracle).
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "formats/composite.h"
#include "formats/formats_internal.h"
#include "formats/traits.h"
#include "kernels/qrepack.h"


namespace lmpress {

namespace {

// Kernels of a packed tensor at the active level: the int family's QuantOps, or the family's
// FormatKernels (a level a family has no kernel for falls back to the next lower one).
struct Dispatch {
  const FormatTraits* traits;
  void (*gemm)(const kern::QGemmArgs&, int64_t, int64_t, int64_t, int64_t);
  void (*dequant_rows)(const kern::QWeights&, int64_t, int64_t, float*, int64_t);
};

Dispatch dispatch_of(const QuantSpec& s) {
  const FormatTraits& t = format_traits(s);
  if (s.family == FormatFamily::Int) {
    const kern::QuantOps& K = kern::qops();
    return {&t, K.gemm, K.dequant_rows};
  }
  int l = int(active_simd_level());
  while (l > 0 && !t.kernels[l]) --l;
  return {&t, t.kernels[l]->gemm, t.kernels[l]->dequant_rows};
}

// Int8 block activations of n tokens (qkernels.h): built once per distinct input of a batch.
struct ActBuffers {
  std::vector<int8_t> qa, panel;  // panel: qa in AMX tile order (QActs::panel), when AMX runs
  std::vector<float> d;
  std::vector<int32_t> hs;
  int64_t stride = 0, nb = 0, n = 0;
};

void quantize_block_acts(const float* x, int64_t n, int64_t cols, ThreadPool& pool, ActBuffers& B) {
  const kern::QuantOps& K = kern::qops();
  const int64_t nb = (cols + kern::kQBlock - 1) / kern::kQBlock;
  // +64 B per token: strides that are multiples of 4 KiB would put every token of a tile in the
  // same L1 sets.
  const int64_t stride = nb * kern::kQBlock + 64;
  B.qa.resize(size_t(n * stride));
  B.d.assign(size_t(nb * n + 16), 0.f);
  B.hs.resize(size_t(n * 2 * nb));
  B.stride = stride;
  B.nb = nb;
  B.n = n;
  auto work = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      K.quantize_acts(x + t * cols, cols, B.qa.data() + t * stride, B.d.data() + t, n, B.hs.data() + t * 2 * nb);
  };
  const bool par = n * cols >= (1 << 16) && pool.size() > 1;
  if (par)
    pool.parallel_for(n, [&](int, int64_t b, int64_t e) { work(b, e); });
  else
    work(0, n);
  // AMX A-tile order (the repacked AMX kernel's activations): 16 tokens x 32 bytes per block.
  // (LMPRESS_AMX_PANEL=0: without it, the kernel reads qa's rows; for measurements)
  static const bool use_panel = [] {
    const char* e = std::getenv("LMPRESS_AMX_PANEL");
    return !(e && std::string(e) == "0");
  }();
  if (use_panel && amx_active() && n >= 16) {
    const int64_t ntb = (n + 15) / 16;
    B.panel.resize(size_t(kern::act_panel_bytes(n, nb)));
    auto pack = [&](int64_t b0, int64_t b1) { kern::build_act_panel(B.qa.data(), stride, n, nb, B.panel.data(), b0, b1); };
    if (par && ntb > 1)
      pool.parallel_for(ntb, [&](int, int64_t b, int64_t e) { pack(b, e); });
    else
      pack(0, ntb);
  } else {
    B.panel.clear();
  }
}

// The kernel's view of the activations for w: int8 blocks plus (int family) the zero-point sums
// X[t][g] = sum over the group's 16-halves of d_b * (sum of a over the half), into xbuf.
// The ggml and spqr families' offsets use X per 16-column half instead: X[t][h] = d_b * hs[h], [n][2 nb].
kern::QActs block_acts(const kern::QWeights& w, FormatFamily family, const ActBuffers& B, std::vector<float>& xbuf) {
  kern::QActs a;
  a.qa = B.qa.data();
  a.a_stride = B.stride;
  a.d = B.d.data();
  a.n = B.n;
  a.panel = B.panel.empty() ? nullptr : B.panel.data();
  if (family == FormatFamily::Ggml || family == FormatFamily::Spqr) {
    const int64_t nh = 2 * B.nb, n = B.n;
    xbuf.resize(size_t(n * nh));
    for (int64_t t = 0; t < n; ++t) {
      const int32_t* hs = B.hs.data() + t * nh;
      float* X = xbuf.data() + t * nh;
      for (int64_t h = 0; h < nh; ++h) X[h] = B.d[size_t((h >> 1) * n + t)] * float(hs[h]);
    }
    a.x = xbuf.data();
    return a;
  }
  if (family != FormatFamily::Int && family != FormatFamily::Trellis) return a;  // trellis: one whole-row group
  const int64_t nb = B.nb, G = w.groups, n = B.n;
  xbuf.resize(size_t(n * G));
  for (int64_t t = 0; t < n; ++t) {
    const int32_t* hs = B.hs.data() + t * 2 * nb;
    float* X = xbuf.data() + t * G;
    if (w.g16()) {
      for (int64_t u = 0; u < G; ++u) X[u] = B.d[size_t((u >> 1) * n + t)] * float(hs[u]);
    } else {
      const int64_t bpg = w.blocks_per_group();
      for (int64_t g = 0; g < G; ++g) {
        float s = 0.f;
        for (int64_t b = g * bpg; b < std::min(nb, (g + 1) * bpg); ++b)
          s += B.d[size_t(b * n + t)] * float(hs[2 * b] + hs[2 * b + 1]);
        X[g] = s;
      }
    }
  }
  a.x = xbuf.data();
  return a;
}

// The kernel view of a packed tensor. Tensors are validated once, when made or loaded
// (pack_tensor, the loaders' validate_packed); here only an O(1) size check, no strings built
// unless it fails (then validate_packed says what is wrong).
kern::QWeights checked_view(const Tensor& W, QuantSpec* spec, PackedGeometry* geo = nullptr) {
  if (W.dtype != DType::Q || !format_id_valid(W.format) || W.shape.size() != 2 || !W.data) validate_packed(W, W.name);
  const QuantSpec s = format_spec(W.format);
  const FormatTraits& t = format_traits(s);
  const PackedGeometry g = fmt::with_sparse(t.geometry(s, W.shape[0], W.shape[1]), s);
  if (int64_t(W.nbytes) != g.total_bytes || W.shape[0] < 1 || W.shape[1] < 1) validate_packed(W, W.name);
  if (!spec) return {};
  *spec = s;
  if (geo) *geo = g;
  return t.view(static_cast<const uint8_t*>(W.data), s, g);
}

// ---- repacked prefill layout (kernels/qrepack.h) -----------------------------------------------
// Built once per tensor, at the first prefill product that can use it (AVX2 or AVX-512 level, int
// and ggml families), and kept for the life of the process beside the stored layout (decode keeps
// streaming that one).
// Keyed by the tensor's data pointer and checked against its size, format id, owner (when the
// storage is owned) and a fingerprint of sampled bytes, so a tensor freed and replaced by another
// at the same address is never served a stale copy; entries of expired owners are dropped.
struct RepackEntry {
  size_t nbytes = 0;
  uint32_t format = 0;
  bool owned = false;
  std::weak_ptr<void> owner;
  uint64_t fp = 0;
  std::unique_ptr<uint8_t, void (*)(void*)> buf{nullptr, std::free};
  kern::QRepacked p;
};

std::mutex g_repack_mu;
std::unordered_map<const void*, std::unique_ptr<RepackEntry>>& repack_cache() {
  static std::unordered_map<const void*, std::unique_ptr<RepackEntry>> m;
  return m;
}
int64_t g_repack_bytes = 0;

uint64_t fingerprint(const Tensor& W) {
  const auto* b = static_cast<const uint8_t*>(W.data);
  uint64_t h = 1469598103934665603ull;
  const size_t n = W.nbytes, step = std::max<size_t>(64, n / 97);
  for (size_t o = 0; o < n; o += step)
    for (size_t i = o; i < std::min(n, o + 64); ++i) h = (h ^ b[i]) * 1099511628211ull;
  for (size_t i = n > 256 ? n - 256 : 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

bool repack_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("LMPRESS_REPACK");
    return !(e && e[0] == '0');
  }();
  return on;
}

// Which repacked layout a family's tensor takes (qrepack.h): int, llama.cpp blocks, int8 tables.
enum class RepackKind { None, Int, Ggml, Table };
RepackKind repack_kind(FormatFamily f, const kern::QWeights& w) {
  if (f == FormatFamily::Int) return kern::repack_supported(w) ? RepackKind::Int : RepackKind::None;
  if (f == FormatFamily::Ggml) return kern::repack_ggml_supported(w) ? RepackKind::Ggml : RepackKind::None;
  if (f != FormatFamily::Spqr && f != FormatFamily::Vq && f != FormatFamily::Trellis && kern::repack_table_supported(w))
    return RepackKind::Table;
  return RepackKind::None;
}

const kern::QRepacked* repacked_of(const Tensor& W, const kern::QWeights& w, ThreadPool& pool) {
  const RepackKind kind = repack_kind(format_spec(W.format).family, w);
  const bool ggml = kind == RepackKind::Ggml;
  if (!repack_enabled() || kind == RepackKind::None) return nullptr;
  std::lock_guard<std::mutex> lk(g_repack_mu);
  auto& m = repack_cache();
  auto it = m.find(W.data);
  if (it != m.end()) {
    RepackEntry& e = *it->second;
    const bool alive = !e.owned || (!e.owner.expired() && e.owner.lock() == W.owner);
    if (alive && e.nbytes == W.nbytes && e.format == W.format && e.owned == bool(W.owner) && e.fp == fingerprint(W))
      return e.p.data ? &e.p : nullptr;  // (null: the build was refused, not retried)
    g_repack_bytes -= kern::repack_total_bytes(e.p);
    m.erase(it);
  }
  for (auto i = m.begin(); i != m.end();) {  // drop copies of freed tensors
    if (i->second->owned && i->second->owner.expired()) {
      g_repack_bytes -= kern::repack_total_bytes(i->second->p);
      i = m.erase(i);
    } else {
      ++i;
    }
  }
  auto e = std::make_unique<RepackEntry>();
  e->nbytes = W.nbytes;
  e->format = W.format;
  e->owned = bool(W.owner);
  e->owner = W.owner;
  e->fp = fingerprint(W);
  e->p = ggml ? kern::repack_geometry_ggml(w) : kind == RepackKind::Table ? kern::repack_geometry_table(w) : kern::repack_geometry(w);
  const int64_t total = kern::repack_total_bytes(e->p);
  e->buf.reset(static_cast<uint8_t*>(std::aligned_alloc(64, size_t(total))));
  if (!e->buf) return nullptr;
  uint8_t* out = e->buf.get();
  const kern::QRepacked geo = e->p;
  // tiles in parallel: each tile is its own 16 rows
  std::atomic<bool> ok{true};
  pool.parallel_for(geo.tiles, [&](int, int64_t k0, int64_t k1) {
    if (k0 >= k1) return;
    if (ggml) {
      if (!kern::repack_ggml_tiles(w, out, k0, k1)) ok = false;
    } else if (kind == RepackKind::Table) {
      kern::repack_table_tiles(w, geo, out, k0, k1);
    } else {
      kern::repack_int_tiles(w, out, k0, k1);
    }
  });
  if (!ok) {  // a value outside its container: keep the stored-layout kernels for this tensor
    e->buf.reset();
    e->p.tiles = 0;
    m[W.data] = std::move(e);
    return nullptr;
  }
  e->p.data = out;
  g_repack_bytes += total;
  const kern::QRepacked* res = &e->p;
  m[W.data] = std::move(e);
  return res;
}

// Which kernel path a product of W with n tokens takes at the active level (bench reports it).
const char* level_tag(SimdLevel l) {
  return l == SimdLevel::AVX512 ? "avx512" : l == SimdLevel::AVX2 ? "avx2" : "scalar";
}

// One product prepared for the kernels.
struct Prepared {
  Dispatch k;
  kern::QGemmArgs args;
  // Sparse outliers (nnz 0: none): added to the rows / tokens a kernel call just wrote, by the
  // same thread (the dense rows are not read twice).
  kern::SparseArgs sp;
  kern::SparseAddFn sparse = nullptr;
  const kern::QRepacked* rp = nullptr;  // prefill on the repacked layout (AVX-512 VNNI or AVX2)
  kern::RepackedGemmFn rgemm = nullptr;
};

// The repacked prefill kernel of the active level (null: the stored-layout kernels).
kern::RepackedGemmFn repacked_kernel() {
  if (amx_active()) return kern::repacked_gemm_amx;
  switch (active_simd_level()) {
    case SimdLevel::AVX512: return kern::repacked_gemm_avx512;
    case SimdLevel::AVX2: return avxvnni_active() ? kern::repacked_gemm_avxvnni : kern::repacked_gemm_avx2;
    default: return nullptr;
  }
}

kern::SparseAddFn sparse_kernel() {
  switch (active_simd_level()) {
    case SimdLevel::AVX512: return kern::sparse_add_avx512;
    case SimdLevel::AVX2: return kern::sparse_add_avx2;
    default: return kern::sparse_add_scalar;
  }
}

void add_sparse(const Prepared& P, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (P.sp.nnz) P.sparse(P.sp, r0, r1, t0, t1);
}

void run_gemm(const Prepared& P, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
  if (P.rp)
    P.rgemm(*P.rp, P.args.a, P.args.y, P.args.ldy, r0, r1, t0, t1);
  else
    P.k.gemm(P.args, r0, r1, t0, t1);
  add_sparse(P, r0, r1, t0, t1);
}

}  // namespace

// Decode-sized products (n <= kBatchMaxTokens) are scheduled dynamically in chunks of rows over
// all products of a batch: each worker streams whole rows, in order, from a shared counter, so a
// thread slowed by a busy machine does not hold the others at the barrier. About 8 chunks per
// thread, 32..256 rows each: every chunk costs a contended atomic (a cache line moving between
// cores, ~4% of decode time at a fixed 32 rows).
constexpr int64_t kBatchMaxTokens = 3;

// Packed tensors are validated once, when they are made or loaded (pack_tensor, the loaders'
// validate_packed): the front end only decodes the format id and the geometry.
void quant_matmul_batch_core(const MatmulJob* jobs, int count, ThreadPool& pool) {
  bool small = true;
  for (int j = 0; j < count; ++j) small = small && jobs[j].n <= kBatchMaxTokens;
  thread_local std::vector<ActBuffers> acts;  // one per distinct input of the batch
  thread_local std::vector<std::vector<float>> xbufs;
  thread_local std::vector<Prepared> prep;
  if (acts.size() < size_t(count)) acts.resize(size_t(count));
  if (xbufs.size() < size_t(count)) xbufs.resize(size_t(count));
  prep.resize(size_t(count));
  // Transposed activations for the sparse outliers' prefill path, one per distinct input.
  thread_local std::vector<std::vector<float>> xTs;
  int n_xt = 0;
  const float* last_xt = nullptr;
  int64_t last_xt_cols = -1, last_xt_n = -1;
  // Inputs shared by consecutive jobs (q/k/v, gate/up) are quantized once.
  int n_acts = 0;
  const float* last_x = nullptr;
  int64_t last_cols = -1, last_n = -1;
  for (int j = 0; j < count; ++j) {
    const MatmulJob& J = jobs[j];
    Prepared& P = prep[size_t(j)];
    QuantSpec s;
    PackedGeometry g;
    P.args.w = checked_view(*J.W, &s, &g);
    P.k = dispatch_of(s);
    P.args.y = J.y;
    P.args.ldy = P.args.w.rows;
    P.rp = nullptr;
    P.rgemm = repacked_kernel();
    if (!small && P.rgemm && repack_kind(s.family, P.args.w) != RepackKind::None) P.rp = repacked_of(*J.W, P.args.w, pool);
    P.sp = kern::SparseArgs{};
    if (g.sparse_nnz) {
      const uint8_t* base = static_cast<const uint8_t*>(J.W->data);
      P.sp.idx = reinterpret_cast<const uint32_t*>(base + g.sparse_offset);
      P.sp.val = reinterpret_cast<const uint16_t*>(base + g.sparse_offset + 4 * g.sparse_nnz);
      P.sp.nnz = g.sparse_nnz;
      P.sp.cols = g.cols;
      P.sp.x = J.x;
      P.sp.y = J.y;
      P.sp.ldy = P.args.ldy;
      P.sparse = sparse_kernel();
      // Prefill on a SIMD level: the activations transposed once (shared by consecutive jobs on
      // the same input) so the sparse kernels load tokens contiguously.
      if (J.n >= 8 && active_simd_level() != SimdLevel::Scalar) {
        if (!(J.x == last_xt && J.W->cols() == last_xt_cols && J.n == last_xt_n)) {
          if (xTs.size() < size_t(n_xt + 1)) xTs.resize(size_t(n_xt + 1));
          std::vector<float>& xT = xTs[size_t(n_xt++)];
          xT.resize(size_t(J.n * g.cols));
          constexpr int64_t B = 16;  // blocked transpose: both sides stay in L1
          for (int64_t t0 = 0; t0 < J.n; t0 += B)
            for (int64_t c0 = 0; c0 < g.cols; c0 += B)
              for (int64_t c = c0; c < std::min(g.cols, c0 + B); ++c)
                for (int64_t t = t0; t < std::min(J.n, t0 + B); ++t) xT[size_t(c * J.n + t)] = J.x[t * g.cols + c];
          last_xt = J.x;
          last_xt_cols = g.cols;
          last_xt_n = J.n;
        }
        P.sp.xT = xTs[size_t(n_xt - 1)].data();
        P.sp.n_all = J.n;
      }
    }
    if (P.k.traits->acts == ActKind::F32) {
      P.args.a.xf = J.x;
      P.args.a.n = J.n;
      continue;
    }
    if (!(J.x == last_x && J.W->cols() == last_cols && J.n == last_n)) {
      quantize_block_acts(J.x, J.n, J.W->cols(), pool, acts[size_t(n_acts++)]);
      last_x = J.x;
      last_cols = J.W->cols();
      last_n = J.n;
    }
    // (table families on the repacked layout: the group sums X for its corr terms, as the int family)
    P.args.a = block_acts(P.args.w, P.rp && P.args.w.lut ? FormatFamily::Int : s.family, acts[size_t(n_acts - 1)],
                          xbufs[size_t(j)]);
  }
  if (!small) {
    // Prefill: each product is big enough to keep the pool busy on its own. Rows in chunks of 16
    // (a multiple of every tile height); with too few rows to go around, split the tokens.
    for (int j = 0; j < count; ++j) {
      const Prepared& P = prep[size_t(j)];
      const kern::QGemmArgs& A = P.args;
      const int64_t rows = A.w.rows, n = jobs[j].n;
      const int nth = pool.size();
      const int64_t chunk = 16, nchunks = (rows + chunk - 1) / chunk;
      // Small products run on the calling thread: waking the pool costs more than ~256K MACs
      // (and much more on an oversubscribed machine).
      if (nth == 1 || rows * A.w.cols * n < (int64_t(1) << 18)) {
        run_gemm(P, 0, rows, 0, n);
      } else if (nchunks >= nth || n < 2 * nth) {
        // Ranges of row chunks from a shared counter (about 6 per thread): a thread slowed by a
        // busy machine does not leave the others waiting at the end.
        static const bool dyn = !std::getenv("LMPRESS_PREFILL_STATIC");
        if (dyn && nchunks >= 4 * nth)
          pool.parallel_for_dynamic(nchunks, std::max<int64_t>(1, nchunks / (6 * nth)), [&](int, int64_t b, int64_t e) {
            if (b < e) run_gemm(P, b * chunk, std::min(rows, e * chunk), 0, n);
          });
        else
          pool.parallel_for(nchunks, [&](int, int64_t b, int64_t e) {
            if (b < e) run_gemm(P, b * chunk, std::min(rows, e * chunk), 0, n);
          });
      } else {
        pool.parallel_for(n, [&](int, int64_t b, int64_t e) {
          if (b < e) run_gemm(P, 0, rows, b, e);
        });
      }
    }
    if (std::getenv("LMPRESS_REPACK_CHECK"))
      for (int j = 0; j < count; ++j) {
        const Prepared& P = prep[size_t(j)];
        if (!P.rp) continue;
        const int64_t rows = P.args.w.rows, n = jobs[j].n;
        std::vector<float> y2(size_t(rows * n));
        kern::QGemmArgs A2 = P.args;
        A2.y = y2.data();
        P.k.gemm(A2, 0, rows, 0, n);
        double md = 0, mv = 0;
        for (size_t i = 0; i < y2.size(); ++i) {
          md = std::max(md, double(std::fabs(y2[i] - P.args.y[i])));
          mv = std::max(mv, double(std::fabs(y2[i])));
        }
        std::fprintf(stderr, "REPACK_CHECK %s %lldx%lld n=%lld maxdiff %g maxv %g\n", jobs[j].W->name.c_str(),
                     (long long)rows, (long long)P.args.w.cols, (long long)n, md, mv);
      }
    return;
  }
  thread_local std::vector<int64_t> first_chunk;
  first_chunk.resize(size_t(count) + 1);
  int64_t macs = 0, total_rows = 0;
  for (int j = 0; j < count; ++j) total_rows += jobs[j].W->rows();
  const int64_t grain = std::clamp<int64_t>(total_rows / (8 * pool.size()) / 16 * 16, 32, 256);
  first_chunk[0] = 0;
  for (int j = 0; j < count; ++j) {
    const kern::QGemmArgs& A = prep[size_t(j)].args;
    macs += A.w.rows * A.w.cols * jobs[j].n;
    first_chunk[size_t(j) + 1] = first_chunk[size_t(j)] + (A.w.rows + grain - 1) / grain;
  }
  const Prepared* pp = prep.data();
  const int64_t* fc = first_chunk.data();
  auto body = [pp, fc, jobs, grain](int, int64_t c0, int64_t c1) {
    int j = 0;
    for (int64_t c = c0; c < c1; ++c) {
      while (c >= fc[j + 1]) ++j;
      const int64_t r0 = (c - fc[j]) * grain;
      run_gemm(pp[j], r0, std::min(pp[j].args.w.rows, r0 + grain), 0, jobs[j].n);
    }
  };
  // Small products run on the calling thread: waking the pool costs more than ~256K MACs.
  if (pool.size() == 1 || macs < (int64_t(1) << 18))
    body(0, 0, fc[count]);
  else
    pool.parallel_for_dynamic(fc[count], 1, body);
}

// ---- randomized Hadamard transform (spec.rht) around the kernels -----------------------------------
// The codes hold W~ = U W V^T: y = W x = D_out H^T (W~ (H D_in x)). Inputs are rotated once per distinct
// (input, sign vector) of a batch (q/k/v and gate/up share their input's signs), outputs per job.
namespace {
const uint8_t* rht_signs_of(const Tensor& W, bool out) {
  const QuantSpec s = format_spec(W.format);
  const PackedGeometry g = packed_geometry(s, W.rows(), W.cols());
  const uint8_t* p = static_cast<const uint8_t*>(W.data) + g.rht_offset;
  return out ? p + (g.cols + 7) / 8 : p;
}

template <class F>
void over_tokens(int64_t n, int64_t width, ThreadPool& pool, F&& f) {
  if (n > 1 && n * width >= (int64_t(1) << 15) && pool.size() > 1)
    pool.parallel_for(n, [&](int, int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) f(t);
    });
  else
    for (int64_t t = 0; t < n; ++t) f(t);
}
}  // namespace

// ---- composite formats (mix, slim; formats/composite.h): each job becomes its parts' jobs ------------
namespace {
bool is_composite_tensor(const Tensor& W) {
  return format_id_valid(W.format) && composite::is_composite(format_spec(W.format));
}

void composite_batch(const MatmulJob* jobs, int count, ThreadPool& pool) {
  struct Sub {
    int job;
    size_t part;
    size_t buf;  // output buffer (and, slim, input buffer) index
  };
  std::vector<std::shared_ptr<const composite::Layout>> L(static_cast<size_t>(count));
  std::vector<Tensor> parts;
  parts.reserve(size_t(3 * count));
  std::vector<MatmulJob> J;
  std::vector<Sub> subs;
  thread_local std::vector<std::vector<float>> xb, yb;
  size_t nb = 0;
  for (int j = 0; j < count; ++j) {
    const Tensor& W = *jobs[j].W;
    if (!is_composite_tensor(W)) {
      J.push_back(jobs[j]);
      continue;
    }
    checked_view(W, nullptr);  // size (and, once per tensor, content) checks
    L[size_t(j)] = composite::layout_cached(W);
    const composite::Layout& Lj = *L[size_t(j)];
    const bool mix = format_spec(W.format).family == FormatFamily::Mix;
    const int64_t n = jobs[j].n, cols = W.cols();
    for (size_t p = 0; p < Lj.parts.size(); ++p) {
      const composite::Part& P = Lj.parts[p];
      if (P.rows * P.cols == 0) continue;
      parts.push_back(composite::part_tensor(W, Lj, p));
      if (xb.size() <= nb) xb.resize(nb + 1), yb.resize(nb + 1);
      yb[nb].resize(size_t(n * P.rows));
      const float* x = jobs[j].x;
      if (!mix) {  // the part's columns of every token
        xb[nb].resize(size_t(n * P.cols));
        const std::vector<int64_t>& idx = Lj.index[p];
        float* dst = xb[nb].data();
        const float* src = jobs[j].x;
        const int64_t pc = P.cols;
        over_tokens(n, pc, pool, [&](int64_t t) {
          for (size_t i = 0; i < idx.size(); ++i) dst[t * pc + int64_t(i)] = src[t * cols + idx[i]];
        });
        x = dst;
      }
      J.push_back(MatmulJob{&parts.back(), x, n, yb[nb].data()});
      subs.push_back(Sub{j, p, nb});
      ++nb;
    }
  }
  quant_matmul_batch(J.data(), int(J.size()), pool);
  // Outputs: mix scatters each part's rows; slim sums its parts (the first part's sum starts from it).
  for (int j = 0; j < count; ++j) {
    if (!L[size_t(j)]) continue;
    const MatmulJob& jb = jobs[j];
    const composite::Layout& Lj = *L[size_t(j)];
    const int64_t rows = jb.W->rows();
    const bool mix = format_spec(jb.W->format).family == FormatFamily::Mix;
    // (the buffers by plain pointer: a worker thread's thread_local yb is another, empty, vector)
    std::vector<std::pair<size_t, const float*>> mine;  // (part, its outputs)
    for (const Sub& s : subs)
      if (s.job == j) mine.emplace_back(s.part, yb[s.buf].data());
    over_tokens(jb.n, rows, pool, [&](int64_t t) {
      float* y = jb.y + t * rows;
      if (mix) {
        for (const auto& [part, out] : mine) {
          const std::vector<int64_t>& idx = Lj.index[part];
          const int64_t pr = Lj.parts[part].rows;
          const float* src = out + t * pr;
          for (int64_t i = 0; i < pr; ++i) y[idx[size_t(i)]] = src[i];
        }
        return;
      }
      const float* a = mine[0].second + t * rows;
      const float* b = mine.size() > 1 ? mine[1].second + t * rows : nullptr;
      const float* c = mine.size() > 2 ? mine[2].second + t * rows : nullptr;
      if (c)
        for (int64_t i = 0; i < rows; ++i) y[i] = a[i] + b[i] + c[i];
      else if (b)
        for (int64_t i = 0; i < rows; ++i) y[i] = a[i] + b[i];
      else
        std::copy(a, a + rows, y);
    });
  }
}
}  // namespace

void quant_matmul_batch(const MatmulJob* jobs, int count, ThreadPool& pool) {
  for (int j = 0; j < count; ++j)
    if (is_composite_tensor(*jobs[j].W)) return composite_batch(jobs, count, pool);
  bool any = false;
  for (int j = 0; j < count; ++j) any = any || (format_id_valid(jobs[j].W->format) && format_spec(jobs[j].W->format).rht);
  if (!any) return quant_matmul_batch_core(jobs, count, pool);
  thread_local std::vector<std::vector<float>> xr;  // rotated inputs
  thread_local std::vector<MatmulJob> J2;
  J2.assign(jobs, jobs + count);
  if (xr.size() < size_t(count)) xr.resize(size_t(count));
  std::vector<const uint8_t*> sin(size_t(count), nullptr);
  for (int j = 0; j < count; ++j) {
    const Tensor& W = *jobs[j].W;
    if (!format_spec(W.format).rht) continue;
    sin[size_t(j)] = rht_signs_of(W, false);
    const int64_t cols = W.cols(), n = jobs[j].n;
    int same = -1;
    for (int i = 0; i < j && same < 0; ++i)
      if (sin[size_t(i)] && jobs[i].x == jobs[j].x && jobs[i].n == n && jobs[i].W->cols() == cols &&
          std::memcmp(sin[size_t(i)], sin[size_t(j)], size_t((cols + 7) / 8)) == 0)
        same = i;
    if (same >= 0) {
      J2[size_t(j)].x = J2[size_t(same)].x;
      continue;
    }
    std::vector<float>& buf = xr[size_t(j)];
    buf.assign(jobs[j].x, jobs[j].x + n * cols);
    const HadamardPlan& P = hadamard_plan(cols);
    const uint8_t* sg = sin[size_t(j)];
    over_tokens(n, cols, pool, [&](int64_t t) { rht_forward(P, sg, buf.data() + t * cols); });
    J2[size_t(j)].x = buf.data();
  }
  quant_matmul_batch_core(J2.data(), count, pool);
  for (int j = 0; j < count; ++j) {
    if (!sin[size_t(j)]) continue;
    const Tensor& W = *jobs[j].W;
    if (format_spec(W.format).rht != 1) continue;  // input side only
    const int64_t rows = W.rows();
    const HadamardPlan& P = hadamard_plan(rows);
    const uint8_t* so = rht_signs_of(W, true);
    float* y = jobs[j].y;
    over_tokens(jobs[j].n, rows, pool, [&](int64_t t) { rht_backward(P, so, y + t * rows); });
  }
}

void quant_matmul(const Tensor& W, const float* x, int64_t n, float* y, ThreadPool& pool) {
  if (n <= 0) return;
  const MatmulJob job{&W, x, n, y};
  quant_matmul_batch(&job, 1, pool);
}

void quant_matmul_dequant_sgemm(const Tensor& W, const float* x_in, int64_t n, float* y, ThreadPool& pool) {
  if (n <= 0) return;
  if (is_composite_tensor(W)) {  // the whole matrix through the parts' row access, one sgemm
    std::vector<float> w(static_cast<size_t>(W.rows() * W.cols()));
    for (int64_t r = 0; r < W.rows(); ++r) quant_row(W, r, w.data() + r * W.cols());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(W.rows()), int(W.cols()), 1.0f, x_in, int(W.cols()),
                w.data(), int(W.cols()), 0.0f, y, int(W.rows()));
    return;
  }
  QuantSpec s;
  PackedGeometry g;
  const kern::QWeights w = checked_view(W, &s, &g);
  std::vector<float> xrot;
  const float* x = x_in;
  if (s.rht) {  // rotate the inputs here, the outputs at the end
    xrot.assign(x_in, x_in + n * W.cols());
    const HadamardPlan& P = hadamard_plan(W.cols());
    const uint8_t* sg = rht_signs_of(W, false);
    over_tokens(n, W.cols(), pool, [&](int64_t t) { rht_forward(P, sg, xrot.data() + t * W.cols()); });
    x = xrot.data();
  }
  const Dispatch K = dispatch_of(s);
  const int64_t rows = w.rows, cols = w.cols;
  const uint8_t* base = static_cast<const uint8_t*>(W.data);
  constexpr int64_t kPanelRows = 256;
  // (a thread_local buffer must not be named inside the workers' lambda: each worker would see
  // its own, empty, instance; hence the plain pointer)
  thread_local std::vector<float> panel_buf;
  panel_buf.resize(size_t(std::min(rows, kPanelRows) * cols));
  float* const panel = panel_buf.data();
  const ScopedBlasThreads blas_threads(pool.size(), 2.0 * double(n) * double(rows) * double(cols));
  for (int64_t r0 = 0; r0 < rows; r0 += kPanelRows) {
    const int64_t nr = std::min(kPanelRows, rows - r0);
    pool.parallel_for(nr, [&](int, int64_t b, int64_t e) {
      if (b < e) {
        K.dequant_rows(w, r0 + b, r0 + e, panel + b * cols, cols);
        add_sparse_rows(base, g, r0 + b, r0 + e, panel + b * cols, cols);
      }
    });
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(nr), int(cols), 1.0f, x,
                int(cols), panel, int(cols), 0.0f, y + r0, int(rows));
  }
  if (s.rht == 1) {
    const HadamardPlan& P = hadamard_plan(rows);
    const uint8_t* so = rht_signs_of(W, true);
    over_tokens(n, rows, pool, [&](int64_t t) { rht_backward(P, so, y + t * rows); });
  }
}

void quant_row(const Tensor& t, int64_t r, float* out) {
  if (r < 0 || r >= t.rows())
    fail(t.name, "row " + std::to_string(r) + " out of range [0, " + std::to_string(t.rows()) + ")");
  if (is_composite_tensor(t)) {
    checked_view(t, nullptr);
    const auto L = composite::layout_cached(t);
    if (format_spec(t.format).family == FormatFamily::Mix) {  // the row's part and its index there
      const std::vector<int64_t>& hi = L->index[1];
      const auto it = std::lower_bound(hi.begin(), hi.end(), r);
      const bool in_hi = it != hi.end() && *it == r;
      const int64_t i = in_hi ? int64_t(it - hi.begin()) : r - int64_t(it - hi.begin());
      quant_row(composite::part_tensor(t, *L, in_hi ? 1 : 0), i, out);
      return;
    }
    thread_local std::vector<float> tmp;
    for (size_t p = 0; p < L->parts.size(); ++p) {
      if (L->parts[p].cols == 0) continue;
      tmp.resize(size_t(L->parts[p].cols));
      quant_row(composite::part_tensor(t, *L, p), r, tmp.data());
      for (size_t i = 0; i < tmp.size(); ++i) out[L->index[p][i]] = tmp[i];
    }
    return;
  }
  QuantSpec s;
  PackedGeometry g;
  const kern::QWeights w = checked_view(t, &s, &g);
  if (s.rht)
    fail(t.name, "a tensor with a randomized Hadamard transform (+h) has no row access (every stored row mixes "
                 "into every row); the token embedding cannot be +h");
  dispatch_of(s).dequant_rows(w, r, r + 1, out, t.cols());
  add_sparse_rows(static_cast<const uint8_t*>(t.data), g, r, r + 1, out, t.cols());
}

std::string quant_kernel_path(const Tensor& W, int64_t n) {
  if (is_composite_tensor(W)) {  // its parts' paths
    checked_view(W, nullptr);
    const auto L = composite::layout_cached(W);
    std::string r = format_name(format_spec(W.format)) + " = ";
    bool first = true;
    for (size_t p = 0; p < L->parts.size(); ++p) {
      if (L->parts[p].rows * L->parts[p].cols == 0) continue;
      r += (first ? "" : " + ") + quant_kernel_path(composite::part_tensor(W, *L, p), n);
      first = false;
    }
    return r;
  }
  QuantSpec s;
  checked_view(W, &s);
  if (s.rht) {  // the same kernels as without the transform, plus the rotations
    Tensor plain = W;
    const char* tag = s.rht == 1 ? " +rht" : " +rht-in";
    s.rht = 0;
    plain.format = format_id(s);
    plain.nbytes = size_t(packed_geometry(s, W.rows(), W.cols()).total_bytes);
    return quant_kernel_path(plain, n) + tag;
  }
  const kern::QWeights w = checked_view(W, &s);
  const FormatTraits& t = format_traits(s);
  const SimdLevel act = active_simd_level();
  std::string fam = format_name(s);
  const char* rtag = act == SimdLevel::AVX512 && amx_active() ? " repacked-16row-amx-int8"
                     : act == SimdLevel::AVX512 ? " repacked-16row-avx512-vnni-zmm"
                     : act == SimdLevel::AVX2 && avxvnni_active() ? " repacked-16row-avxvnni-ymm"
                     : act == SimdLevel::AVX2   ? " repacked-16row-avx2-maddubs"
                                                : nullptr;
  if (s.family == FormatFamily::Int) {
    if (n > kBatchMaxTokens && rtag && repack_enabled() && kern::repack_supported(w)) return fam + rtag;
    const char* k = act == SimdLevel::AVX512 ? "avx512-vnni-ymm" : act == SimdLevel::AVX2 ? "avx2-maddubs" : "scalar";
    return fam + (n > kBatchMaxTokens ? " tiles-" : " rows-") + k;
  }
  if (n > kBatchMaxTokens && rtag && repack_enabled() && repack_kind(s.family, w) != RepackKind::None)
    return fam + rtag + (repack_kind(s.family, w) == RepackKind::Table ? " (int8 table values)" : "");
  int l = int(act);
  while (l > 0 && !t.kernels[l]) --l;
  return fam + " family-kernels-" + level_tag(SimdLevel(l)) + (n > kBatchMaxTokens ? " (prefill)" : " (decode)");
}

int64_t prefill_layout_bytes() {
  std::lock_guard<std::mutex> lk(g_repack_mu);
  return g_repack_bytes;
}

}  // namespace lmpress
