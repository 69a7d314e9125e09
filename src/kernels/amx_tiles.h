// AMX tile configuration shared by the AMX kernels (src/kernels/x86_amx/*.cpp).
//
// A thread's tile configuration (LDTILECFG) is per-thread state; each kernel shape has an id, and
// a thread reloads the configuration only when the shape it needs is not the one it holds.
// Include only from translation units compiled with -mamx-tile.
// (_tile_stored declares a memory clobber; _tile_loadd and _tile_loadconfig need the help below.)
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <initializer_list>

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

// Repeats body() (a fixed burst of tile products doing ops_per_call operations) for about
// `seconds`; operations per second: the peak loops behind `lmpress bench`'s ceiling line.
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

// GCC 12's _tile_loadd declares no memory input: ordinary stores into a buffer a tile is then
// loaded from (unpacked codes, packed activations) must not sink below it.
inline void stores_before_tile_loads() { __asm__ volatile("" ::: "memory"); }

}  // namespace lmpress::kern::amx
