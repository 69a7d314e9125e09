// The parts the SIMD Viterbi runs of the trellis encoder share (x86_avx512/trellis_fp16.cpp,
// x86_avx512/trellis.cpp, x86_avx2/trellis_viterbi.cpp; docs/methods.md, QTIP "Encoder"): the
// chunk-transposed layout, the state value tables in it, and the run around a level's step (start,
// end, backtrace through the compare masks). Included by TUs built with different flags: everything
// is in an anonymous namespace, one copy per TU.
#pragma once
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/trellis_rows.h"

namespace lmpress::kern {
namespace {

// Position of entry h (a group, or a state) in the chunk-transposed order: in each chunk of W 2^K
// entries, entry a 2^K + b is stored at b W + a, so the W groups g0 + i of a block, for one l, are
// the contiguous vector of their predecessors' minima and of their states' values.
template <int K, int W>
inline int64_t viterbi_tpos(int64_t h) {
  constexpr int64_t C = int64_t(W) << K;
  return (h & ~(C - 1)) + (h & ((int64_t(1) << K) - 1)) * W + ((h & (C - 1)) >> K);
}

// Where level lev's compare masks start among a block's 2^K - 1 (level 0 first: 2^(K-1) of them,
// then 2^(K-2), ...); mask p of level lev has bit i set where the right subtree (l's bit lev = 1)
// won for group g0 + i.
constexpr int viterbi_mask_offset(int n, int lev) { return n - (n >> lev); }

// The code's state values times `scale`, as E, in the layout.
template <int K, int W, class E>
const E* viterbi_values(int code, float scale) {
  auto make = [scale](int c) {
    std::vector<E> t(static_cast<size_t>(trellis::kStates));
    for (int64_t s = 0; s < trellis::kStates; ++s)
      t[size_t(viterbi_tpos<K, W>(s))] = E(float(trellis::code_value(c, uint32_t(s))) * scale);
    return t;
  };
  static const std::vector<E> v0 = make(0), v1 = make(1);
  return code ? v1.data() : v0.data();
}

// A chunk's 2^K output vectors (block t: groups c0 + W t + i in lane i) into the transposed order
// (row r: entries c0 + W r + a, group c0 + a 2^K + r): K rounds of even / odd lane splits of pairs,
// even(a, b) / odd(a, b) = the even / odd lanes of the 2W-lane concatenation a | b.
template <int K, class V, class Even, class Odd>
inline void viterbi_untranspose(V* out, Even even, Odd odd) {
  constexpr int N = 1 << K;
#pragma GCC unroll 4
  for (int lev = 0; lev < K; ++lev) {
    V nx[N];
#pragma GCC unroll 8
    for (int p = 0; p < N / 2; ++p) {
      nx[p] = even(out[2 * p], out[2 * p + 1]);
      nx[N / 2 + p] = odd(out[2 * p], out[2 * p + 1]);
    }
#pragma GCC unroll 16
    for (int p = 0; p < N; ++p) out[p] = nx[p];
  }
}

template <class E, class Word>
struct ViterbiScratch {
  std::vector<E> a, b;
  std::vector<Word> bp;
};

// One run (trellis_viterbi_generic's contract) around step(i, m_prev, m_next, masks of step i):
// group minima in the layout (E), 2^K - 1 mask words of W bits per block of W groups and step.
// Start: a state s is allowed iff s mod G = overlap (all when overlap < 0); end: the last state's
// group is the overlap (the smallest minimum when overlap < 0). Returns that group's final minimum
// as a float (+inf when no path exists); states[] holds the path.
template <int K, int W, class E, class Word, class Step>
float viterbi_run(int T, int64_t overlap, uint32_t* states, ViterbiScratch<E, Word>& sc, Step&& step) {
  constexpr int64_t G = int64_t(1) << (trellis::kL - K);
  constexpr int N = 1 << K;
  constexpr size_t kWords = size_t(G / W) * (N - 1);  // mask words per step
  const float inf = std::numeric_limits<float>::infinity();
  sc.a.resize(size_t(G));
  sc.b.resize(size_t(G));
  sc.bp.resize(size_t(T) * kWords);
  E* mprev = sc.a.data();
  E* mnext = sc.b.data();
  for (int64_t g = 0; g < G; ++g) mprev[viterbi_tpos<K, W>(g)] = overlap < 0 || g == overlap ? E(0.f) : E(inf);
  for (int i = 0; i < T; ++i) {
    step(i, static_cast<const E*>(mprev), mnext, sc.bp.data() + size_t(i) * kWords);
    std::swap(mprev, mnext);
  }
  float m = inf;
  int64_t gbest = -1;
  if (overlap >= 0) {
    const float f = float(mprev[viterbi_tpos<K, W>(overlap)]);
    if (f < inf) m = f, gbest = overlap;
  } else {
    for (int64_t g = 0; g < G; ++g) {
      const float f = float(mprev[viterbi_tpos<K, W>(g)]);
      if (f < m) m = f, gbest = g;
    }
  }
  if (gbest < 0) return inf;
  // the argmin l of group g at step i: the masks from the tree's root down
  auto argmin = [&](int i, int64_t g) {
    const Word* w = sc.bp.data() + size_t(i) * kWords + size_t(g / W) * (N - 1);
    const int lane = int(g % W);
    int node = 0;
    for (int lev = K - 1; lev >= 0; --lev) node = 2 * node + int((w[viterbi_mask_offset(N, lev) + node] >> lane) & 1u);
    return uint32_t(node);
  };
  uint32_t s = uint32_t(gbest << K) | argmin(T - 1, gbest);
  states[T - 1] = s;
  for (int i = T - 1; i > 0; --i) {
    const uint32_t g = s & uint32_t(G - 1);
    s = g << K | argmin(i - 1, int64_t(g));
    states[i - 1] = s;
  }
  return m;
}

}  // namespace
}  // namespace lmpress::kern
