// GPTQ layer benchmark: seconds for one layer (w4g128 by default) on Llama-like shapes, with the
// Hessian accumulation and RTN alongside for scale. Inputs are synthetic: W ~ N(0, 0.02) with a
// few outliers, X [2048, cols] with AR(1)-correlated columns of unequal scale, H = X^T X / 2048.
// Usage: lmpress_bench_gptq [--threads N] [--bits B] [--group G] [--act-order] [--quick]
//                           [--shape ROWS COLS] [-v]
// Prints a markdown table (one row per shape) after the BLAS / CPU line.
#include <sys/resource.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "lmpress/compress.h"

using namespace lmpress;

namespace {

struct Shape {
  int64_t rows, cols;
  const char* what;
};

// Process CPU seconds (all threads): on a shared machine wall time overstates the cost, and CPU
// time / threads is the better estimate of the unloaded wall time.
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

std::vector<float> make_inputs(int64_t nrows, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<float> ud(0.2f, 3.0f);
  std::vector<float> sc(n), x(nrows * n);
  for (auto& s : sc) s = ud(rng);
  for (int64_t r = 0; r < nrows; ++r) {
    float prev = 0;
    for (int64_t j = 0; j < n; ++j) {
      prev = 0.8f * prev + nd(rng);
      x[r * n + j] = sc[j] * prev;
    }
  }
  return x;
}

std::vector<float> make_weights(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> w(rows * cols);
  for (auto& v : w) v = nd(rng);
  for (int64_t k = 0; k < rows * cols / 500; ++k) w[rng() % w.size()] *= 8.f;
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  QuantSpec spec{4, 128, true};
  GptqOptions opt;
  bool quick = false;
  int64_t only_rows = 0, only_cols = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
    if (a == "--threads") threads = next();
    else if (a == "--bits") spec.bits = next();
    else if (a == "--group") spec.group = next();
    else if (a == "--act-order") opt.act_order = true;
    else if (a == "--quick") quick = true;
    else if (a == "--shape" && i + 2 < argc) {
      only_rows = std::atoll(argv[++i]);
      only_cols = std::atoll(argv[++i]);
    }
    else if (a == "-v") set_log_level(LogLevel::Debug);
    else {
      std::fprintf(stderr,
                   "usage: %s [--threads N] [--bits B] [--group G] [--act-order] [--quick] "
                   "[--shape ROWS COLS] [-v]\n",
                   argv[0]);
      return 2;
    }
  }
  if (threads <= 0) threads = default_threads();
  std::printf("BLAS: %s\nCPU: %s\nthreads: %d, format: %s, act_order: %d, block: %lld, "
              "calibration rows: 2048\n\n",
              blas_info().c_str(), cpu_feature_string().c_str(), threads,
              format_name(spec).c_str(), int(opt.act_order), (long long)opt.block);

  std::vector<Shape> shapes = {{4096, 4096, "attn 7B"}, {2048, 5632, "down 1B"},
                               {5632, 2048, "gate/up 1B"}};
  if (quick) shapes = {{1024, 1024, "quick"}};
  if (only_rows > 0 && only_cols > 0) shapes = {{only_rows, only_cols, "custom"}};
  ThreadPool pool(threads);
  std::printf("| rows x cols | layer | hessian s | gptq s | gptq cpu s | rtn s | layer_error s "
              "| gptq rel err | rtn rel err |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  try {
    for (const Shape& sh : shapes) {
      const int64_t nx = 2048;
      const auto x = make_inputs(nx, sh.cols, 1);
      const auto w = make_weights(sh.rows, sh.cols, 2);
      double t0 = now_seconds();
      HessianAccumulator acc(sh.cols);
      acc.add(x.data(), nx, pool);
      const auto H = acc.mean();
      const double t_h = now_seconds() - t0;
      t0 = now_seconds();
      const double c0 = cpu_seconds();
      const auto qg = quantize_gptq(w.data(), sh.rows, sh.cols, spec, H, opt, pool);
      const double t_g = now_seconds() - t0, c_g = cpu_seconds() - c0;
      t0 = now_seconds();
      const auto qr = quantize_rtn(w.data(), sh.rows, sh.cols, spec, false, nullptr);
      const double t_r = now_seconds() - t0;
      double rel_g = 0, rel_r = 0;
      t0 = now_seconds();
      layer_error(w.data(), qg, H, &rel_g);
      const double t_e = now_seconds() - t0;
      layer_error(w.data(), qr, H, &rel_r);
      std::printf("| %lld x %lld | %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.5f | %.5f |\n",
                  (long long)sh.rows, (long long)sh.cols, sh.what, t_h, t_g, c_g, t_r, t_e, rel_g,
                  rel_r);
      std::fflush(stdout);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
