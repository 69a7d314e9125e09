// AMX tile configuration shared by the AMX kernels (src/kernels/x86_amx/*.cpp).
//
// A thread's tile configuration (LDTILECFG) is per-thread state; each kernel shape has an id, and
// a thread reloads the configuration only when the shape it needs is not the one it holds.
// Include only from translation units compiled with -mamx-tile.
// (_tile_stored declares a memory clobber; _tile_loadd and _tile_loadconfig need the help below.)
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "kernels/peak_rate.h"
#include "lmpress/core.h"

namespace lmpress::kern::amx {

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

inline thread_local int g_loaded = 0;  // id of the shape this thread's tiles hold (0: none)

// Shape ids: 1 = int8 K 32 (A 16x32, B 8x64), 2 = int8 K 16 (A 16x16, B 4x64), 3 = bf16 (all 16x64).
inline void load(int id) {
  if (g_loaded == id) return;
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  if (id == 1 || id == 2) {  // tiles 0/3: A, 1/4: B, 2/5: C
    const int k = id == 1 ? 32 : 16;
    for (int t : {0, 3}) c.colsb[t] = uint16_t(k);
    for (int t : {1, 4}) c.rows[t] = uint8_t(k / 4);
  }
  // (not _tile_loadconfig: GCC 12's declares only 8 bytes of the 64-byte configuration as read, so
  // the compiler may drop the other stores into it)
  __asm__ volatile("ldtilecfg %0" ::"m"(c));
  g_loaded = id;
}

using kern::peak_rate;  // (kernels/peak_rate.h)

// The f16/bf16 GEMMs (dense.cpp, dense_i16.cpp) convert weights one group of rows at a time into a
// scratch; the next group's conversion (nu units of work) is spread over the current group's
// `steps` tile steps, and the group after that is prefetched into L2 (rows_begin..rows_end, a
// contiguous byte range of the weights). step(convert) once per tile step; finish(convert) after
// the last (covers groups converted with no tile steps, e.g. n = 0).
struct NextGroupWork {
  int64_t nu, steps, u = 0, done_steps = 0;
  const char* pf;
  const char* pf_end;
  int64_t pf_per_step;
  NextGroupWork(int64_t units, int64_t tile_steps, const void* rows_begin, const void* rows_end)
      : nu(units),
        steps(tile_steps > 0 ? tile_steps : 1),
        pf(static_cast<const char*>(rows_begin)),
        pf_end(static_cast<const char*>(rows_end)),
        pf_per_step(((pf_end - pf) / 64 + steps - 1) / steps) {}
  template <class Convert>
  void step(Convert&& convert) {
    if (u < nu) {
      const int64_t ue = std::min(nu, (++done_steps * nu + steps - 1) / steps);
      if (ue > u) convert(u, ue);
      u = ue;
    }
    for (int64_t q = 0; q < pf_per_step && pf < pf_end; ++q, pf += 64) _mm_prefetch(pf, _MM_HINT_T1);
  }
  template <class Convert>
  void finish(Convert&& convert) {
    if (u < nu) convert(u, nu);
    u = nu;
  }
};

// One row tile's f32 results for one or two token tiles, acc[h][row i][token j], written transposed
// into y[t * ldy + r] for rows rb.. (nr of them) and tokens (tt + h) * 16 + j < n.
inline void store_transposed(const float (&acc)[2][16][16], int ntiles, float* y, int64_t ldy, int64_t rb, int nr,
                             int64_t tt, int64_t n) {
  for (int h = 0; h < ntiles; ++h) {
    const int64_t tb = (tt + h) * 16;
    const int nt = int(std::min<int64_t>(16, n - tb));
    for (int j = 0; j < nt; ++j) {
      float* yt = y + (tb + j) * ldy + rb;
      for (int i = 0; i < nr; ++i) yt[i] = acc[h][i][j];
    }
  }
}

// GCC 12's _tile_loadd declares no memory input: ordinary stores into a buffer a tile is then
// loaded from (unpacked codes, packed activations) must not sink below it.
inline void stores_before_tile_loads() { __asm__ volatile("" ::: "memory"); }

}  // namespace lmpress::kern::amx
