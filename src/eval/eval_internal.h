// Helpers shared by the evaluation protocols (perplexity, multiple-choice scoring).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace lmpress {

// log(sum_i exp(logits[i])) of one row, in double for a stable reference-quality sum.
inline double log_sum_exp(const float* logits, int64_t nv) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < nv; ++i) mx = std::max(mx, double(logits[i]));
  double s = 0;
  for (int64_t i = 0; i < nv; ++i) s += std::exp(double(logits[i]) - mx);
  return mx + std::log(s);
}

// log-softmax of one row, in double.
inline void log_softmax(const float* logits, int64_t nv, std::vector<double>& out) {
  out.resize(size_t(nv));
  const double lse = log_sum_exp(logits, nv);
  for (int64_t i = 0; i < nv; ++i) out[size_t(i)] = double(logits[i]) - lse;
}

// log p(target) of one row of logits, in double.
inline double token_log_prob(const float* logits, int64_t nv, int32_t target) {
  return double(logits[target]) - log_sum_exp(logits, nv);
}

}  // namespace lmpress
