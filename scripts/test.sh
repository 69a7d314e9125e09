#!/usr/bin/env bash
# Install dependencies, build, run the whole test suite (release build), then the sanitizer
# build's tests and a short fuzz run. LMPRESS_QUICK=1 runs only the release tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh release
ctest --preset release
if [ "${LMPRESS_QUICK:-0}" = 1 ]; then exit 0; fi
echo "== AddressSanitizer + UndefinedBehaviorSanitizer build"
bash scripts/build.sh sanitize
# The long end-to-end perplexity sweeps are covered by the release run; under ASan they only cost time.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --preset sanitize \
  -E 'EnginePpl|GptqBeatsRtnOnBabyllama|cli.perplexity_json|AwqGptqRunsEndToEnd|QuantEaseAndSmoothQuantEndToEnd|PbllmEndToEnd|VptqEndToEnd|QtipEndToEnd'
echo "== short fuzz run"
bash scripts/fuzz.sh 20
