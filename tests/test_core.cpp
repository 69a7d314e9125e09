#include <cstring>
#include <cmath>
#include <thread>

#include "kernels/kernels.h"
#include "test_util.h"

using namespace lmpress;

// Independent reference: half -> float by the formula value = (-1)^s * 2^(e-15) * (1 + m/1024).
static double half_value(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v;
  if (e == 0)
    v = std::ldexp(double(m), -24);
  else if (e == 31)
    v = m ? NAN : INFINITY;
  else
    v = std::ldexp(1.0 + m / 1024.0, e - 15);
  return s ? -v : v;
}

TEST(Core, F16ToF32AllValues) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double ref = half_value(uint16_t(h));
    const float got = f16_to_f32(uint16_t(h));
    if (std::isnan(ref))
      ASSERT_TRUE(std::isnan(got)) << h;
    else
      ASSERT_EQ(double(got), ref) << h;
  }
}

TEST(Core, F32ToF16RoundTripAndNearest) {
  // Every finite half survives float -> half exactly.
  for (uint32_t h = 0; h < 65536; ++h) {
    if (((h >> 10) & 31) == 31) continue;
    ASSERT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << h;
  }
  // Random floats round to the nearest half (ties to even), checked against neighbours.
  uint64_t s = 12345;
  for (int i = 0; i < 200000; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const float x = float(std::ldexp(double(int64_t(s >> 11) % 2000001 - 1000000) / 1e6, int((s >> 40) % 36) - 24));
    const uint16_t h = f32_to_f16(x);
    const double err = std::fabs(half_value(h) - double(x));
    // neighbours' error must not be smaller
    for (int d : {-1, 1}) {
      const uint16_t nb = uint16_t(h + d);
      if (((nb >> 10) & 31) == 31 || (h & 0x7fff) == 0) continue;
      if ((nb & 0x8000) != (h & 0x8000)) continue;
      ASSERT_LE(err, std::fabs(half_value(nb) - double(x)) + 1e-30) << x;
    }
  }
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-1e6f), 0xfc00);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
}

TEST(Core, Bf16Rounding) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  float x;
  uint32_t u = 0x3f808000;  // exactly halfway between 0x3f80 and 0x3f81 -> even (0x3f80)
  std::memcpy(&x, &u, 4);
  EXPECT_EQ(f32_to_bf16(x), 0x3f80);
  u = 0x3f818000;  // halfway, odd below -> rounds up to 0x3f82
  std::memcpy(&x, &u, 4);
  EXPECT_EQ(f32_to_bf16(x), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(Core, ThreadPoolCoversRangeOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 3, 7, 100, 1001}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    for (int rep = 0; rep < 50; ++rep)
      pool.parallel_for(n, [&](int, int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
      });
    for (auto& h : hits) ASSERT_EQ(h.load(), 50);
  }
}

TEST(Core, ThreadPoolDynamicCoversRangeOnce) {
  for (int nt : {1, 2, 3}) {
    ThreadPool pool(nt);
    for (int64_t n : {1, 2, 7, 100, 1001})
      for (int64_t grain : {1, 3, 64, 5000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int64_t> calls{0};
        pool.parallel_for_dynamic(n, grain, [&](int ti, int64_t b, int64_t e) {
          ASSERT_GE(ti, 0);
          ASSERT_LT(ti, nt);
          if (nt > 1) {
            ASSERT_LE(e - b, grain);  // (one thread: the whole range in one call)
          }
          calls++;
          for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
        });
        for (auto& h : hits) ASSERT_EQ(h.load(), 1) << n << " " << grain;
        EXPECT_EQ(calls.load(), nt == 1 ? 1 : (n + grain - 1) / grain);  // every chunk once
      }
  }
}

TEST(Core, AtomicFileLeavesNothingOnError) {
  const std::string p = test::tmp_dir() + "/lmpress_atomic_test.bin";
  std::remove(p.c_str());
  {
    AtomicFile f(p);
    f.write("hello", 5);
    // destroyed without commit
  }
  EXPECT_FALSE(file_exists(p));
  {
    AtomicFile f(p);
    f.write("hello", 5);
    f.commit();
  }
  EXPECT_EQ(read_text_file(p), "hello");
  std::remove(p.c_str());
}

// FileLoad::Copy reads the file into private memory: the same bytes as the mapping, read-only,
// marked copied(); an empty file works in every mode; Auto copies a small file when MemAvailable is
// known. The mode is process-wide: restored at the end.
TEST(Core, MappedFileCopyModeGivesTheSameBytes) {
  const std::string p = test::tmp_dir() + "/lmpress_copy_" + std::to_string(::getpid()) + ".bin";
  std::string bytes(size_t(3) << 20, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = char((i * 2654435761u) >> 13);
  {
    AtomicFile f(p);
    f.write(bytes.data(), bytes.size());
    f.commit();
  }
  const FileLoad before = file_load();
  set_file_load(FileLoad::Mmap);
  MappedFile m(p);
  set_file_load(FileLoad::Copy);
  MappedFile c(p);
  set_file_load(FileLoad::Auto);
  MappedFile a(p);
  set_file_load(before);
  EXPECT_FALSE(m.copied());
  EXPECT_TRUE(c.copied());
  ASSERT_EQ(c.size(), bytes.size());
  EXPECT_EQ(std::memcmp(c.data(), bytes.data(), bytes.size()), 0);
  EXPECT_EQ(std::memcmp(m.data(), c.data(), bytes.size()), 0);
  EXPECT_EQ(std::memcmp(a.data(), c.data(), bytes.size()), 0);
  std::remove(p.c_str());
  const std::string e = p + ".empty";
  { AtomicFile f(e); f.commit(); }
  set_file_load(FileLoad::Copy);
  MappedFile ec(e);
  set_file_load(before);
  EXPECT_EQ(ec.size(), 0u);
  std::remove(e.c_str());
}

TEST(Core, MappedFileErrorsNameThePath) {
  try {
    MappedFile f("/nonexistent/lmpress/file.bin");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/lmpress/file.bin"), std::string::npos);
  }
}
