// The one entry point for linear layers: y[n, rows] = x[n, cols] * W^T.
//  - n < kGemmMinTokens: matrix-vector kernels (decode), rows split over the thread pool;
//  - otherwise GEMM: f32 weights go straight to OpenBLAS sgemm; f16/bf16 weights take AMX bf16
//    tiles where the CPU has them (operands split into bf16 high + low parts: f32-class accuracy,
//    kernels/x86_amx/dense.cpp; 16-bit limbs on int8 tiles by default, dense_i16.cpp), else go
//    through the register-blocked AVX2 / AVX-512 GEMM that converts them in L1-sized panels
//    (kernels/dense_x86.h gemm16); at the scalar level (or LMPRESS_F16_PREFILL=sgemm) they are
//    converted to f32 in row panels (kPanelRows rows, a few MB, stays in cache), one sgemm each.
// Packed (quantized) weights go to the formats front end (src/formats/qmatmul.cpp), which picks
// the format family's kernels from the format traits.
#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/matmul_ext.h"
#include "formats/formats_internal.h"
#include "kernels/kernels.h"
#include "lmpress/engine.h"
#include "lmpress/formats.h"

extern "C" void openblas_set_num_threads(int);

namespace lmpress {

bool f16_prefill_sgemm() {
  static const bool v = [] {
    const char* e = std::getenv("LMPRESS_F16_PREFILL");
    return e && std::string(e) == "sgemm";
  }();
  return v;
}

bool f16_prefill_register_gemm() { return active_simd_level() != SimdLevel::Scalar && !f16_prefill_sgemm(); }

namespace {
constexpr int64_t kGemmMinTokens = 4;
constexpr int64_t kPanelRows = 256;

void gemv_dense(const Tensor& W, const float* x, int64_t n, float* y, ThreadPool& pool) {
  const int64_t rows = W.rows(), cols = W.cols();
  const auto& k = kern::ops();
  // Chunks of 16 rows keep the 4-row kernel busy and balance the threads.
  const int64_t nchunks = (rows + 15) / 16;
  // Small products are not worth a wake-up of the pool (and an oversubscribed machine makes a
  // wake-up expensive): below ~256K multiply-adds run on the calling thread.
  const bool serial = rows * cols * n < (int64_t(1) << 18);
  auto body = [&](int, int64_t b, int64_t e) {
    const int64_t r0 = b * 16, r1 = std::min(rows, e * 16);
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * cols;
      float* yt = y + t * rows + r0;
      switch (W.dtype) {
        case DType::F32: k.gemv_f32(W.as<float>() + r0 * cols, cols, xt, cols, yt, r1 - r0); break;
        case DType::F16: k.gemv_f16(W.as<uint16_t>() + r0 * cols, cols, xt, cols, yt, r1 - r0); break;
        case DType::BF16: k.gemv_bf16(W.as<uint16_t>() + r0 * cols, cols, xt, cols, yt, r1 - r0); break;
        default: LMP_ASSERT(false);
      }
    }
  };
  if (serial)
    body(0, 0, nchunks);
  else
    pool.parallel_for(nchunks, body);
}

// OpenBLAS runs single-threaded inside our pool: each worker multiplies its own slice of W's rows
// (two thread pools spinning on two cores oversubscribe the machine). f16/bf16 rows are converted
// to f32 in per-thread panels of kPanelRows rows that stay in cache.
void gemm_dense(const Tensor& W, const float* x, int64_t n, float* y, ThreadPool& pool) {
  const int64_t rows = W.rows(), cols = W.cols();
  static const bool once = (openblas_set_num_threads(1), true);
  (void)once;
  const int64_t work = rows * cols * n;
  const int nt = work < (int64_t(1) << 20) ? 1 : pool.size();
  if (W.dtype != DType::F32 && f16_prefill_int16()) {
    // AMX int8 tiles on 16-bit fixed-point limbs: activations packed once, row tiles over threads.
    thread_local std::vector<int8_t> xh, xl;
    thread_local std::vector<float> sx;
    xh.resize(size_t(kern::amx_i16_acts_size(n, cols)));
    xl.resize(xh.size());
    sx.resize(size_t(kern::amx_i16_scales_size(n, cols)));
    kern::amx_i16_pack_acts(x, n, cols, xh.data(), xl.data(), sx.data());
    const bool f16 = W.dtype == DType::F16;
    const int64_t tiles = (rows + 15) / 16;
    const int8_t* ph = xh.data();  // (the calling thread's panels: thread_local is not captured)
    const int8_t* pl = xl.data();
    const float* ps = sx.data();
    auto body = [&, ph, pl, ps](int, int64_t b, int64_t e) {
      if (b < e)
        kern::amx_i16_gemm_rows(W.as<uint16_t>(), f16, cols, ph, pl, ps, n, y, rows, b * 16, std::min(rows, e * 16));
    };
    if (nt == 1) body(0, 0, tiles);
    else pool.parallel_for_dynamic(tiles, std::max<int64_t>(4, tiles / (6 * pool.size()) / 4 * 4), body);
    return;
  }
  if (W.dtype != DType::F32 && amx_bf16_active()) {
    // AMX: activations split into bf16 high/low pair panels once, row tiles over the threads.
    thread_local std::vector<uint16_t> xh, xl;
    const int64_t sz = kern::amx_bf16_acts_size(n, cols);
    xh.resize(size_t(sz));
    xl.resize(size_t(sz));
    kern::amx_bf16_pack_acts(x, n, cols, xh.data(), xl.data());
    const bool f16 = W.dtype == DType::F16;
    const int64_t tiles = (rows + 15) / 16;
    const uint16_t* ph = xh.data();  // (the calling thread's panels: thread_local is not captured)
    const uint16_t* pl = xl.data();
    auto body = [&, ph, pl](int, int64_t b, int64_t e) {
      if (b < e)
        kern::amx_bf16_gemm_rows(W.as<uint16_t>(), f16, cols, ph, pl, n, y, rows, b * 16, std::min(rows, e * 16));
    };
    if (nt == 1) body(0, 0, tiles);
    else pool.parallel_for_dynamic(tiles, std::max<int64_t>(4, tiles / (6 * pool.size()) / 4 * 4), body);
    return;
  }
  // Slices aligned to 16 rows.
  const int64_t nslices = std::min<int64_t>(nt, (rows + 15) / 16);
  auto body = [&](int, int64_t sb, int64_t se) {
    for (int64_t s = sb; s < se; ++s) {
      const int64_t per = ((rows + nslices - 1) / nslices + 15) / 16 * 16;
      const int64_t r0 = s * per, r1 = std::min(rows, r0 + per);
      if (r0 >= r1) continue;
      if (W.dtype == DType::F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(r1 - r0), int(cols), 1.0f, x,
                    int(cols), W.as<float>() + r0 * cols, int(cols), 0.0f, y + r0, int(rows));
        continue;
      }
      const auto& k = kern::ops();
      if (f16_prefill_register_gemm()) {
        (W.dtype == DType::F16 ? k.gemm_f16 : k.gemm_bf16)(W.as<uint16_t>(), cols, x, n, y, rows, r0, r1);
        continue;
      }
      thread_local std::vector<float> panel;
      for (int64_t p0 = r0; p0 < r1; p0 += kPanelRows) {
        const int64_t nr = std::min(kPanelRows, r1 - p0);
        panel.resize(size_t(nr * cols));
        const uint16_t* src = W.as<uint16_t>() + p0 * cols;
        if (W.dtype == DType::F16)
          k.f16_to_f32(src, panel.data(), size_t(nr * cols));
        else
          k.bf16_to_f32(src, panel.data(), size_t(nr * cols));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(nr), int(cols), 1.0f, x, int(cols),
                    panel.data(), int(cols), 0.0f, y + p0, int(rows));
      }
    }
  };
  if (nslices <= 1)
    body(0, 0, 1);
  else
    pool.parallel_for(nslices, body);
}

}  // namespace

void matmul_batch(const MatmulJob* jobs, int count, ThreadPool& pool) {
  bool all_q = count > 0;
  for (int j = 0; j < count; ++j) all_q = all_q && jobs[j].W->dtype == DType::Q;
  if (all_q) {
    quant_matmul_batch(jobs, count, pool);
    return;
  }
  for (int j = 0; j < count; ++j) matmul(*jobs[j].W, jobs[j].x, jobs[j].n, jobs[j].y, pool);
}

void matmul(const Tensor& W, const float* x, int64_t n, float* y, ThreadPool& pool) {
  if (n <= 0) return;
  switch (W.dtype) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      if (n < kGemmMinTokens)
        gemv_dense(W, x, n, y, pool);
      else
        gemm_dense(W, x, n, y, pool);
      return;
    case DType::Q:
      quant_matmul(W, x, n, y, pool);
      return;
    default:
      fail(W.name, std::string("unsupported weight dtype ") + dtype_name(W.dtype));
  }
}

}  // namespace lmpress
