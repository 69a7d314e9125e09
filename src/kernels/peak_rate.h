// The timed loop behind the measured compute peaks (`lmpress bench`'s ceiling line): repeats body()
// (a fixed burst of multiply-accumulates doing ops_per_call operations) for about `seconds` and returns
// operations per second. Each ISA's peak function supplies its own register-only burst.
#pragma once
#include "lmpress/core.h"

namespace lmpress::kern {

template <class Body>
double peak_rate(double seconds, double ops_per_call, Body body) {
  int64_t calls = 0;
  const double t0 = now_seconds();
  double el = 0;
  do {
    body();
    ++calls;
    el = now_seconds() - t0;
  } while (el < seconds);
  return double(calls) * ops_per_call / el;
}

}  // namespace lmpress::kern
