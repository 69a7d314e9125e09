// Causal (optionally sliding-window) grouped-query attention of n new tokens over the KV cache.
// Two implementations with the same semantics (exact softmax: max-subtracted, f32 exp):
//  - attention_per_token: one task per (token, head), dot products and axpys (decode, and the
//    oracle of the blocked path);
//  - attention_blocked: per kv head and chunk of query tokens, the query heads sharing the kv head
//    stacked into one matrix; scores Q Kᵀ and outputs P V as two sgemm calls (prefill).
#pragma once
#include <cstdint>

#include "lmpress/core.h"

namespace lmpress {

struct AttnArgs {
  const float* q = nullptr;  // [n][n_heads * head_dim], head h at h * head_dim (RoPE applied)
  const float* k = nullptr;  // cache keys [pos + n][n_kv_heads * head_dim] (positions 0 ..)
  const float* v = nullptr;  // cache values, same layout
  float* out = nullptr;      // [n][n_heads * head_dim]
  int64_t n = 0, pos = 0;    // new tokens at positions pos .. pos + n - 1
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int64_t window = 0;  // > 0: token at position p attends to positions (p - window, p] (Mistral)
  float scale = 1.f;   // score scale (1 / sqrt(head_dim))
};

void attention_per_token(const AttnArgs& a, ThreadPool& pool);
void attention_blocked(const AttnArgs& a, ThreadPool& pool);

}  // namespace lmpress
