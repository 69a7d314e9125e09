#include <cstdio>
#include <cstdlib>

#include "lmpress/core.h"

namespace lmpress {

void fail(const std::string& where, const std::string& what) {
  if (where.empty()) throw Error(what);
  throw Error(where + ": " + what);
}

void assert_fail(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "lmpress: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace lmpress
