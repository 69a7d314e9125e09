// Shared helpers for lmpress tests.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "lmpress/core.h"

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

}  // namespace lmpress::test
