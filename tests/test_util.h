// Shared helpers for lmpress tests.
#pragma once
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "lmpress/core.h"
#include "lmpress/engine.h"
#include "lmpress/model.h"

namespace lmpress::test {

inline std::string shared_dir() {
  if (const char* e = std::getenv("LMPRESS_SHARED")) return e;
  return LMPRESS_SHARED_DIR;
}
inline std::string shared(const std::string& rel) { return shared_dir() + "/" + rel; }

// Skips the test loudly when a shared input is missing.
#define LMP_REQUIRE_SHARED(rel)                                                        \
  do {                                                                                 \
    if (!::lmpress::file_exists(::lmpress::test::shared(rel)))                         \
      GTEST_SKIP() << "SKIPPED: shared input missing: " << ::lmpress::test::shared(rel) \
                   << " (set LMPRESS_SHARED or place ../shared beside the repo)";      \
  } while (0)

inline std::string tmp_dir() {
  const char* t = std::getenv("TMPDIR");
  return t ? t : "/tmp";
}

// A fresh directory under tmp_dir(), removed at scope exit; dir / "name" is a path inside it.
struct TempDir {
  std::string path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = tmp_dir() + "/lmpress_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& f) const { return path + "/" + f; }
};

// n normal(0, sigma) floats from a fixed seed.
inline std::vector<float> randn(size_t n, uint32_t seed, float sigma = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Runs `py tests/SCRIPT ARGS` (a Python reference of the test suite). False, with `why` set, when
// `py` is missing or cannot import `module` ("SKIPPED: ... <hint>": the caller skips loudly) or the
// script fails ("FAILED: <command>").
inline bool run_python_ref(const std::string& py, const std::string& module, const std::string& hint,
                           const std::string& script_args, std::string* why) {
  if (!::lmpress::file_exists(py)) {
    *why = "SKIPPED: " + py + " missing (" + hint + ")";
    return false;
  }
  if (std::system((py + " -c 'import " + module + "' >/dev/null 2>&1").c_str()) != 0) {
    *why = "SKIPPED: " + py + " cannot import " + module + " (" + hint + ")";
    return false;
  }
  const std::string cmd = py + " " + LMPRESS_SOURCE_DIR + "/tests/" + script_args;
  if (std::system(cmd.c_str()) != 0) {
    *why = "FAILED: " + cmd;
    return false;
  }
  return true;
}

// The Python of the pinned reference environment (scripts/setup.sh: numpy + the `gguf` package).
inline std::string ref_python() {
  if (const char* e = std::getenv("LMPRESS_TEST_PYTHON")) return e;
  return std::string(LMPRESS_SOURCE_DIR) + "/build/pyenv/bin/python3";
}
// Runs tests/ggml_ref.py with `args` (see run_python_ref).
inline bool run_ggml_ref(const std::string& args, std::string* why) {
  return run_python_ref(ref_python(), "gguf.quants", "run scripts/setup.sh: it installs numpy and the pinned gguf package",
                        "ggml_ref.py " + args, why);
}

// A random symmetric positive definite H [n][n] = X^T X / m of correlated inputs: AR(1) rows
// (coefficient rho) with every loud_every-th channel three times louder.
inline std::vector<double> random_hessian(int64_t n, uint32_t seed, double rho = 0.6, int loud_every = 5) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0, 1);
  const int64_t m = 4 * n;
  std::vector<double> x(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    double prev = 0;
    for (int64_t j = 0; j < n; ++j) {
      prev = rho * prev + nd(rng) * (j % loud_every == 0 ? 3.0 : 1.0);
      x[size_t(i * n + j)] = prev;
    }
  }
  std::vector<double> h(size_t(n * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b) h[size_t(a * n + b)] += x[size_t(i * n + a)] * x[size_t(i * n + b)] / double(m);
  return h;
}

// Lower Cholesky factor L of a symmetric positive definite A = L L^T (plain loops, row-major n x n).
inline std::vector<double> cholesky_lower(const std::vector<double>& A, int64_t n) {
  std::vector<double> L(size_t(n * n), 0.0);
  for (int64_t j = 0; j < n; ++j) {
    double d = A[size_t(j * n + j)];
    for (int64_t k = 0; k < j; ++k) d -= L[size_t(j * n + k)] * L[size_t(j * n + k)];
    L[size_t(j * n + j)] = std::sqrt(d);
    for (int64_t i = j + 1; i < n; ++i) {
      double v = A[size_t(i * n + j)];
      for (int64_t k = 0; k < j; ++k) v -= L[size_t(i * n + k)] * L[size_t(j * n + k)];
      L[size_t(i * n + j)] = v / L[size_t(j * n + j)];
    }
  }
  return L;
}

// A^-1 for symmetric positive definite A: A = L L^T, then L L^T x = e_k per column.
inline std::vector<double> spd_inverse(const std::vector<double>& A, int64_t n) {
  const std::vector<double> L = cholesky_lower(A, n);
  std::vector<double> inv(size_t(n * n), 0.0);
  std::vector<double> y(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) {
    for (int64_t i = 0; i < n; ++i) {
      double v = i == c ? 1.0 : 0.0;
      for (int64_t k = 0; k < i; ++k) v -= L[size_t(i * n + k)] * y[size_t(k)];
      y[size_t(i)] = v / L[size_t(i * n + i)];
    }
    for (int64_t i = n - 1; i >= 0; --i) {
      double v = y[size_t(i)];
      for (int64_t k = i + 1; k < n; ++k) v -= L[size_t(k * n + i)] * inv[size_t(k * n + c)];
      inv[size_t(i * n + c)] = v / L[size_t(i * n + i)];
    }
  }
  return inv;
}

// Layer-wise proxy loss (w - q) H (w - q)^T per row, averaged over rows, in double (q: float or
// double dequantized weights).
template <class Q>
inline double proxy_loss(const float* w, const std::vector<Q>& q, int64_t rows, int64_t cols,
                         const std::vector<double>& H) {
  double t = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t a = 0; a < cols; ++a) {
      const double da = double(w[r * cols + a]) - q[size_t(r * cols + a)];
      for (int64_t b = 0; b < cols; ++b)
        t += da * H[size_t(a * cols + b)] * (double(w[r * cols + b]) - q[size_t(r * cols + b)]);
    }
  return t / double(rows);
}

// All-position logits of one forward pass over toks (2 threads), [toks][vocab].
inline std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& toks) {
  EngineOptions eo;
  eo.n_threads = 2;
  eo.n_ctx = int32_t(toks.size());
  Engine e(m, eo);
  std::vector<float> out(toks.size() * size_t(m.cfg.vocab_size));
  e.forward(toks.data(), int64_t(toks.size()), 0, out.data(), true);
  return out;
}

}  // namespace lmpress::test
