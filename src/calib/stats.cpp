// Statistics collectors of a linear layer's input over the calibration rows: only the kinds some
// method of the recipe asked for (compress.h StatKind). The Hessian goes through
// HessianAccumulator (double, dsyrk); the per-channel moments are summed in double; samples keep
// every k-th row so that at most kMaxSampleRows rows, spread over all windows, are stored.
#include <algorithm>
#include <cmath>

#include "lmpress/compress.h"

namespace lmpress {

std::string stat_kind_names(uint32_t k) {
  std::string s;
  const std::pair<uint32_t, const char*> names[] = {{kStatHessian, "hessian"},   {kStatDiag, "diag"},
                                                    {kStatMeanAbs, "mean_abs"},  {kStatMaxAbs, "max_abs"},
                                                    {kStatTokenNorms, "token_norms"}, {kStatSamples, "samples"},
                                                    {kStatFisher, "fisher"}};
  for (const auto& [bit, n] : names)
    if (k & bit) s += (s.empty() ? "" : ",") + std::string(n);
  return s.empty() ? "none" : s;
}

StatsCollector::StatsCollector(int64_t n, uint32_t kinds, int64_t expected_rows) {
  if (n <= 0) fail("statistics", "input width must be positive, got " + std::to_string(n));
  if (kinds & kStatFisher)
    fail("statistics", "Fisher information needs gradients, which lmpress does not compute yet "
                       "(use a method that works from activations)");
  s_.n = n;
  s_.kinds = kinds;
  if (kinds & kStatHessian) h_ = std::make_unique<HessianAccumulator>(n);
  if (kinds & kStatDiag) s_.diag.assign(size_t(n), 0.0);
  if (kinds & kStatMeanAbs) s_.mean_abs.assign(size_t(n), 0.0);
  if (kinds & kStatMaxAbs) s_.max_abs.assign(size_t(n), 0.0);
  if (kinds & kStatSamples) {
    sample_every_ = std::max<int64_t>(1, (expected_rows + InputStats::kMaxSampleRows - 1) / InputStats::kMaxSampleRows);
    s_.samples.reserve(size_t(std::min(expected_rows, InputStats::kMaxSampleRows) * n));
  }
}

void StatsCollector::add(const float* x, int64_t rows, ThreadPool& pool) {
  const int64_t n = s_.n;
  if (h_) h_->add(x, rows, pool);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    if (!s_.diag.empty())
      for (int64_t j = 0; j < n; ++j) s_.diag[size_t(j)] += double(xr[j]) * double(xr[j]);
    if (!s_.mean_abs.empty())
      for (int64_t j = 0; j < n; ++j) s_.mean_abs[size_t(j)] += std::fabs(double(xr[j]));
    if (!s_.max_abs.empty())
      for (int64_t j = 0; j < n; ++j) s_.max_abs[size_t(j)] = std::max(s_.max_abs[size_t(j)], std::fabs(double(xr[j])));
    if (s_.kinds & kStatTokenNorms) {
      double ss = 0;
      for (int64_t j = 0; j < n; ++j) ss += double(xr[j]) * double(xr[j]);
      s_.token_norms.push_back(std::sqrt(ss));
    }
    if ((s_.kinds & kStatSamples) && seen_ % sample_every_ == 0 && s_.sample_rows < InputStats::kMaxSampleRows) {
      s_.samples.insert(s_.samples.end(), xr, xr + n);
      ++s_.sample_rows;
    }
    for (int64_t j = 0; j < n && (s_.kinds & (kStatDiag | kStatMeanAbs | kStatMaxAbs)); ++j)
      if (!std::isfinite(xr[j]))
        fail("statistics", "non-finite activation at row " + std::to_string(s_.count + r) + ", column " +
                               std::to_string(j) + " (did the calibration forward pass overflow?)");
    ++seen_;
  }
  s_.count += rows;
}

InputStats StatsCollector::finish() {
  if (s_.count == 0)
    fail("statistics", "no calibration rows were accumulated (layer never reached in calibration?)");
  const double inv = 1.0 / double(s_.count);
  for (double& v : s_.diag) v *= inv;
  for (double& v : s_.mean_abs) v *= inv;
  if (h_) {
    s_.H = h_->take_mean();
    h_.reset();
  }
  return std::move(s_);
}

}  // namespace lmpress
