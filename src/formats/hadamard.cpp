// Randomized Hadamard transforms (QuIP#'s incoherence processing): Hadamard matrices of order
// n = m * 2^k (a base of order m from Paley's constructions times a Sylvester power of two), the fast
// transform, random sign vectors, and the per-tensor rotation W~ = U W V^T of a packed tensor's
// weights (docs/formats.md "Randomized Hadamard transform").
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "kernels/rht_impl.h"
#include "lmpress/formats.h"

namespace lmpress {

namespace {

bool is_prime(int64_t q) {
  if (q < 2) return false;
  for (int64_t d = 2; d * d <= q; ++d)
    if (q % d == 0) return false;
  return true;
}

// Quadratic character of a mod q (q an odd prime): 0, +1 (a nonzero square), -1.
std::vector<int> quadratic_character(int64_t q) {
  std::vector<int> chi(size_t(q), -1);
  chi[0] = 0;
  for (int64_t x = 1; x < q; ++x) chi[size_t(x * x % q)] = 1;
  return chi;
}

// Paley I: q prime, q = 3 mod 4, order q + 1: H = I + S with S = [[0, 1^T], [-1, Q]], Q[i][j] = chi(j - i).
std::vector<int8_t> paley1(int64_t q) {
  const int64_t m = q + 1;
  const std::vector<int> chi = quadratic_character(q);
  std::vector<int8_t> h(size_t(m * m));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) {
      int s;
      if (i == 0 && j == 0)
        s = 0;
      else if (i == 0)
        s = 1;
      else if (j == 0)
        s = -1;
      else
        s = chi[size_t(((j - i) % q + q) % q)];
      h[size_t(i * m + j)] = int8_t(s + (i == j ? 1 : 0));
    }
  return h;
}

// Paley II: q prime, q = 1 mod 4, order 2 (q + 1): H = C (x) [[1, 1], [1, -1]] + I (x) [[1, -1], [-1, -1]]
// with the symmetric conference matrix C = [[0, 1^T], [1, Q]].
std::vector<int8_t> paley2(int64_t q) {
  const int64_t c = q + 1, m = 2 * c;
  const std::vector<int> chi = quadratic_character(q);
  auto C = [&](int64_t i, int64_t j) -> int {
    if (i == 0 && j == 0) return 0;
    if (i == 0 || j == 0) return 1;
    return chi[size_t(((j - i) % q + q) % q)];
  };
  static const int A[2][2] = {{1, 1}, {1, -1}}, B[2][2] = {{1, -1}, {-1, -1}};
  std::vector<int8_t> h(size_t(m * m));
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < c; ++j)
      for (int u = 0; u < 2; ++u)
        for (int v = 0; v < 2; ++v)
          h[size_t((2 * i + u) * m + 2 * j + v)] = int8_t(C(i, j) * A[u][v] + (i == j ? B[u][v] : 0));
  return h;
}

// A Hadamard matrix of order m from Paley's constructions (m = 1 or 2: Sylvester), or empty.
std::vector<int8_t> base_matrix(int64_t m) {
  if (m == 1) return {1};
  if (m == 2) return {1, 1, 1, -1};
  if (m % 4 != 0) return {};
  if (is_prime(m - 1) && (m - 1) % 4 == 3) return paley1(m - 1);
  if (is_prime(m / 2 - 1) && (m / 2 - 1) % 4 == 1) return paley2(m / 2 - 1);
  return {};
}

constexpr int64_t kMaxBase = 128;

std::unique_ptr<HadamardPlan> make_plan(int64_t n) {
  auto P = std::make_unique<HadamardPlan>();
  P->n = n;
  int64_t pow2 = 1;
  while (n % (pow2 * 2) == 0) pow2 *= 2;
  const int64_t odd = n / pow2;
  // the smallest base m = odd * 2^j (j <= the power of two in n) that Paley gives, up to
  // kMaxBase (the base costs m multiply-free adds per value: a larger one costs more than it mixes)
  for (int64_t m = odd; m <= n && m <= kMaxBase && n % m == 0; m *= 2) {
    std::vector<int8_t> b = base_matrix(m);
    if (b.empty()) continue;
    P->m = m;
    P->p = n / m;
    P->blocks = 1;
    P->base = std::move(b);
    break;
  }
  if (P->base.empty()) {  // no Hadamard matrix of order n known here: blocks of the power of two
    P->m = 1;
    P->p = pow2;
    P->blocks = odd;
    P->base = {1};
  }
  // H H^T = m I (a construction error would silently break the transform's exactness)
  const int64_t m = P->m;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) {
      int64_t s = 0;
      for (int64_t k = 0; k < m; ++k) s += int64_t(P->base[size_t(i * m + k)]) * P->base[size_t(j * m + k)];
      LMP_ASSERT(s == (i == j ? m : 0));
    }
  return P;
}

// In-place unnormalized Walsh-Hadamard transform (Sylvester order) of x[0, p).
template <class T>
void fwht(T* x, int64_t p) {
  for (int64_t h = 1; h < p; h *= 2)
    for (int64_t i = 0; i < p; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const T a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

const HadamardPlan& hadamard_plan(int64_t n) {
  if (n < 1) fail("", "Hadamard transform of length " + std::to_string(n));
  static std::mutex mu;
  static std::map<int64_t, std::unique_ptr<HadamardPlan>> cache;
  std::lock_guard<std::mutex> lk(mu);
  auto& slot = cache[n];
  if (!slot) slot = make_plan(n);
  return *slot;
}

namespace {
template <class T>
void apply_t(const HadamardPlan& P, T* x, bool transpose) {
  const int64_t m = P.m, p = P.p, blk = m * p;
  thread_local std::vector<T> tmp;
  const T sc = T(1) / std::sqrt(T(m * p));
  for (int64_t b = 0; b < P.blocks; ++b) {
    T* xb = x + b * blk;
    for (int64_t a = 0; a < m; ++a) fwht(xb + a * p, p);  // I_m (x) H_p (H_p symmetric)
    if (m > 1) {  // H_m (x) I_p (or H_m^T): rows of p values combined with +-1
      tmp.assign(size_t(blk), T(0));
      for (int64_t a = 0; a < m; ++a) {
        T* out = tmp.data() + a * p;
        for (int64_t a2 = 0; a2 < m; ++a2) {
          const int8_t h = transpose ? P.base[size_t(a2 * m + a)] : P.base[size_t(a * m + a2)];
          const T* in = xb + a2 * p;
          if (h > 0)
            for (int64_t j = 0; j < p; ++j) out[j] += in[j];
          else
            for (int64_t j = 0; j < p; ++j) out[j] -= in[j];
        }
      }
      std::memcpy(xb, tmp.data(), size_t(blk) * sizeof(T));
    }
    for (int64_t j = 0; j < blk; ++j) xb[j] *= sc;
  }
}
}  // namespace

namespace {
// The active level's kernel (kernels/rht_impl.h; the double path above is for Hessians).
void apply_kernel(const HadamardPlan& P, const uint8_t* signs, bool backward, float* x) {
  const kern::RhtKernel& k = active_simd_level() == SimdLevel::AVX512 ? kern::rht_kernel_avx512
                             : active_simd_level() == SimdLevel::AVX2 ? kern::rht_kernel_avx2
                                                                      : kern::rht_kernel_scalar;
  thread_local std::vector<float> tmp;
  if (tmp.size() < size_t(P.m * P.p)) tmp.resize(size_t(P.m * P.p));
  k.apply(P.base.data(), P.m, P.p, P.blocks, float(1.0 / std::sqrt(double(P.m * P.p))), signs, backward, x,
          tmp.data());
}
}  // namespace

void hadamard_apply(const HadamardPlan& P, float* x, bool transpose) {
  apply_kernel(P, nullptr, transpose, x);
}

std::vector<double> hadamard_matrix(const HadamardPlan& P) {
  const int64_t n = P.n;
  std::vector<double> M(size_t(n * n), 0.0);
  // entry of H_p (Sylvester): (-1)^popcount(i & j)
  const double sc = 1.0 / std::sqrt(double(P.m * P.p));
  for (int64_t b = 0; b < P.blocks; ++b)
    for (int64_t a = 0; a < P.m; ++a)
      for (int64_t a2 = 0; a2 < P.m; ++a2)
        for (int64_t i = 0; i < P.p; ++i)
          for (int64_t j = 0; j < P.p; ++j) {
            const int64_t r = b * P.m * P.p + a * P.p + i, c = b * P.m * P.p + a2 * P.p + j;
            const double s = (__builtin_popcountll(uint64_t(i & j)) & 1) ? -1.0 : 1.0;
            M[size_t(r * n + c)] = sc * P.base[size_t(a * P.m + a2)] * s;
          }
  return M;
}

std::vector<uint8_t> rht_random_signs(int64_t n, uint64_t seed) {
  std::vector<uint8_t> s(size_t((n + 7) / 8), 0);
  uint64_t st = seed;
  uint64_t bits = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i % 64 == 0) bits = splitmix64(st);
    if ((bits >> (i % 64)) & 1) s[size_t(i / 8)] |= uint8_t(1u << (i % 8));
  }
  return s;
}

uint64_t rht_seed(const std::string& key) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : key) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

void rht_forward(const HadamardPlan& P, const uint8_t* signs, float* x) { apply_kernel(P, signs, false, x); }

void rht_backward(const HadamardPlan& P, const uint8_t* signs, float* x) { apply_kernel(P, signs, true, x); }

void rht_rotate_weights(float* w, int64_t rows, int64_t cols, const uint8_t* sin, const uint8_t* sout,
                        bool inverse) {
  const HadamardPlan& Pc = hadamard_plan(cols);
  const HadamardPlan& Pr = hadamard_plan(rows);
  // forward: W~ = (H_r D_out) W (H_c D_in)^T: row r of W -> H_c D_in w_r; column c -> H_r D_out w_c.
  // inverse: W = D_out H_r^T W~ H_c D_in: row -> D_in H_c^T w~_r; column -> D_out H_r^T w~_c.
  for (int64_t r = 0; r < rows; ++r) {
    if (inverse)
      rht_backward(Pc, sin, w + r * cols);
    else
      rht_forward(Pc, sin, w + r * cols);
  }
  std::vector<float> col(static_cast<size_t>(rows));
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t r = 0; r < rows; ++r) col[size_t(r)] = w[r * cols + c];
    if (inverse)
      rht_backward(Pr, sout, col.data());
    else
      rht_forward(Pr, sout, col.data());
    for (int64_t r = 0; r < rows; ++r) w[r * cols + c] = col[size_t(r)];
  }
}

std::vector<double> rht_rotate_hessian(const std::vector<double>& H, int64_t n, const uint8_t* sin) {
  // H~ = V H V^T with V = H_n D_in (normalized), in double: every row of H through V (= H V^T,
  // H symmetric), transpose, every row again (= V (H V^T)^T^T ... = V H V^T, symmetric).
  const HadamardPlan& P = hadamard_plan(n);
  std::vector<double> A(H), B(size_t(n * n));
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t i = 0; i < n; ++i) {
      double* row = A.data() + i * n;
      for (int64_t j = 0; j < n; ++j)
        if ((sin[j >> 3] >> (j & 7)) & 1) row[j] = -row[j];
      apply_t(P, row, false);
    }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) B[size_t(j * n + i)] = A[size_t(i * n + j)];
    A.swap(B);
  }
  return A;
}

}  // namespace lmpress
