// Quantized matmul front end: validates the packed tensor, quantizes the activations once per call
// (int8 per 32-column block, qkernels.h), precomputes the zero-point sums X, splits the work over
// the thread pool and calls the active SIMD level's kernel. Also the dequantize + sgemm
// alternative (benchmarks / oracle) and the engine registration.
#include <cblas.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "engine/matmul_ext.h"
#include "formats/formats_internal.h"


namespace lmpress {

namespace {

struct ActBuffers {
  std::vector<int8_t> qa;
  std::vector<float> d, x;
  std::vector<int32_t> hs;
};

// Quantizes x [n][cols] for w (block scales token-minor, see QActs) into the caller's buffers.
kern::QActs quantize_activations(const kern::QuantOps& K, const kern::QWeights& w, const float* x,
                                 int64_t n, ThreadPool& pool, ActBuffers& B) {
  const int64_t nb = w.nb, G = w.groups, cols = w.cols;
  // +64 B per token: strides that are multiples of 4 KiB would put every token of a tile in the
  // same L1 sets.
  const int64_t stride = nb * kern::kQBlock + 64;
  B.qa.resize(size_t(n * stride));
  B.d.assign(size_t(nb * n + 16), 0.f);
  B.hs.resize(size_t(n * 2 * nb));
  B.x.resize(size_t(n * G));
  auto work = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int32_t* hs = B.hs.data() + t * 2 * nb;
      K.quantize_acts(x + t * cols, cols, B.qa.data() + t * stride, B.d.data() + t, n, hs);
      // X[t][g] = sum over the group's 16-halves of d_b * (sum of a over the half).
      float* X = B.x.data() + t * G;
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
  };
  if (n * cols >= (1 << 16) && pool.size() > 1)
    pool.parallel_for(n, [&](int, int64_t b, int64_t e) { work(b, e); });
  else
    work(0, n);
  kern::QActs a;
  a.qa = B.qa.data();
  a.a_stride = stride;
  a.d = B.d.data();
  a.x = B.x.data();
  a.n = n;
  return a;
}

}  // namespace

// Decode-sized products (n <= kBatchMaxTokens) are scheduled dynamically in chunks of rows over
// all products of a batch: each worker streams whole rows, in order, from a shared counter, so a
// thread slowed by a busy machine does not hold the others at the barrier. About 8 chunks per
// thread, 32..256 rows each: every chunk costs a contended atomic (a cache line moving between
// cores, ~4% of decode time at a fixed 32 rows).
constexpr int64_t kBatchMaxTokens = 3;

void quant_matmul_batch(const MatmulJob* jobs, int count, ThreadPool& pool);

void quant_matmul(const Tensor& W, const float* x, int64_t n, float* y, ThreadPool& pool) {
  if (n <= 0) return;
  if (n <= kBatchMaxTokens) {
    const MatmulJob job{&W, x, n, y};
    quant_matmul_batch(&job, 1, pool);
    return;
  }
  validate_packed(W, W.name);
  const kern::QuantOps& K = kern::qops();
  kern::QGemmArgs A;
  A.w = detail::packed_view(W);
  thread_local ActBuffers buf;
  A.a = quantize_activations(K, A.w, x, n, pool, buf);
  A.y = y;
  A.ldy = A.w.rows;
  const int64_t rows = A.w.rows;
  const int nth = pool.size();
  // Rows in chunks of 16 (a multiple of every tile height); with too few rows to go around, split
  // the tokens instead.
  const int64_t chunk = 16, nchunks = (rows + chunk - 1) / chunk;
  // Small products run on the calling thread: waking the pool costs more than ~256K MACs (and much
  // more on an oversubscribed machine).
  if (nth == 1 || rows * A.w.cols * n < (int64_t(1) << 18)) {
    K.gemm(A, 0, rows, 0, n);
    return;
  }
  if (nchunks >= nth || n < 2 * nth) {
    pool.parallel_for(nchunks, [&](int, int64_t b, int64_t e) {
      if (b < e) K.gemm(A, b * chunk, std::min(rows, e * chunk), 0, n);
    });
  } else {
    pool.parallel_for(n, [&](int, int64_t b, int64_t e) {
      if (b < e) K.gemm(A, 0, rows, b, e);
    });
  }
}

void quant_matmul_batch(const MatmulJob* jobs, int count, ThreadPool& pool) {
  bool small = true;
  for (int j = 0; j < count; ++j) small = small && jobs[j].n <= kBatchMaxTokens;
  if (!small) {  // prefill: each product is big enough to keep the pool busy on its own
    for (int j = 0; j < count; ++j) quant_matmul(*jobs[j].W, jobs[j].x, jobs[j].n, jobs[j].y, pool);
    return;
  }
  const kern::QuantOps& K = kern::qops();
  thread_local std::vector<ActBuffers> bufs;
  thread_local std::vector<kern::QGemmArgs> args;
  thread_local std::vector<int64_t> first_chunk;
  if (bufs.size() < size_t(count)) bufs.resize(size_t(count));
  args.resize(size_t(count));
  first_chunk.resize(size_t(count) + 1);
  int64_t macs = 0, total_rows = 0;
  for (int j = 0; j < count; ++j) total_rows += jobs[j].W->rows();
  const int64_t grain = std::clamp<int64_t>(total_rows / (8 * pool.size()) / 16 * 16, 32, 256);
  first_chunk[0] = 0;
  for (int j = 0; j < count; ++j) {
    const MatmulJob& J = jobs[j];
    validate_packed(*J.W, J.W->name);
    kern::QGemmArgs& A = args[size_t(j)];
    A.w = detail::packed_view(*J.W);
    A.a = quantize_activations(K, A.w, J.x, J.n, pool, bufs[size_t(j)]);
    A.y = J.y;
    A.ldy = A.w.rows;
    macs += A.w.rows * A.w.cols * J.n;
    first_chunk[size_t(j) + 1] = first_chunk[size_t(j)] + (A.w.rows + grain - 1) / grain;
  }
  const kern::QGemmArgs* a = args.data();
  const int64_t* fc = first_chunk.data();
  auto body = [&K, a, fc, jobs, grain](int, int64_t c0, int64_t c1) {
    int j = 0;
    for (int64_t c = c0; c < c1; ++c) {
      while (c >= fc[j + 1]) ++j;
      const int64_t r0 = (c - fc[j]) * grain;
      K.gemm(a[j], r0, std::min(a[j].w.rows, r0 + grain), 0, jobs[j].n);
    }
  };
  // Small products run on the calling thread: waking the pool costs more than ~256K MACs.
  if (pool.size() == 1 || macs < (int64_t(1) << 18))
    body(0, 0, fc[count]);
  else
    pool.parallel_for_dynamic(fc[count], 1, body);
}

void quant_matmul_dequant_sgemm(const Tensor& W, const float* x, int64_t n, float* y, ThreadPool& pool) {
  if (n <= 0) return;
  validate_packed(W, W.name);
  const kern::QuantOps& K = kern::qops();
  const kern::QWeights w = detail::packed_view(W);
  const int64_t rows = w.rows, cols = w.cols;
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
      if (b < e) K.dequant_rows(w, r0 + b, r0 + e, panel + b * cols, cols);
    });
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(nr), int(cols), 1.0f, x,
                int(cols), panel, int(cols), 0.0f, y + r0, int(rows));
  }
}

void quant_row(const Tensor& t, int64_t r, float* out) {
  validate_packed(t, t.name);
  if (r < 0 || r >= t.rows())
    fail(t.name, "row " + std::to_string(r) + " out of range [0, " + std::to_string(t.rows()) + ")");
  kern::qops().dequant_rows(detail::packed_view(t), r, r + 1, out, t.cols());
}

void register_quant_kernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    set_quant_matmul(quant_matmul);
    set_quant_matmul_batch(quant_matmul_batch);
    set_quant_row(quant_row);
  });
}

namespace {
// Any program that links this file (the engine's quantized branch references
// register_quant_kernels) has the kernels installed before main().
const bool g_registered = (register_quant_kernels(), true);
}  // namespace

}  // namespace lmpress
