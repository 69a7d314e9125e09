#!/usr/bin/env bash
# Configure and build a CMake preset (default: release). Usage: scripts/build.sh [preset]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
jobs=${LMPRESS_JOBS:-$(nproc)}
extra=()
# LMPRESS_WERROR=1 (CI's release build): warnings are errors.
[ "${LMPRESS_WERROR:-0}" = 1 ] && [ "$preset" = release ] && extra+=(-DLMPRESS_WERROR=ON)
cmake --preset "$preset" "${extra[@]}" >/dev/null
cmake --build --preset "$preset" -j "$jobs"
