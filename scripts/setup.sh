#!/usr/bin/env bash
# Installs lmpress's build and test dependencies from Debian 12 packages.
# Idempotent; needs root (or sudo). Nothing is downloaded at build or run time.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config
  libopenblas-dev liblapacke-dev
  nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev libpcre2-dev libbz2-dev bzip2
  clang libclang-rt-14-dev
  python3-venv python3-numpy python3-yaml python3-tqdm
  python3-dev pybind11-dev python3-pytest
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The independent reference of the ggml-format tests (tests/ggml_ref.py): Debian's numpy plus the
# pinned `gguf` package (numpy quantize / dequantize of llama.cpp's types) in a venv under build/.
# Downloaded here only, never at build or test time; tests skip loudly without it.
GGUF_VERSION=0.19.0
pyenv="$(cd "$(dirname "$0")/.." && pwd)/build/pyenv"
if ! "$pyenv/bin/python3" -c "import importlib.metadata as m, gguf.quants; assert m.version('gguf') == '$GGUF_VERSION'" 2>/dev/null; then
  echo "setup: creating $pyenv with gguf==$GGUF_VERSION" >&2
  if ! { /usr/bin/python3 -m venv --clear --system-site-packages "$pyenv" &&
         "$pyenv/bin/pip" install -q --disable-pip-version-check --no-deps "gguf==$GGUF_VERSION"; }; then
    echo "setup: WARNING: could not install gguf==$GGUF_VERSION into $pyenv; the GgmlNumpy tests will skip" >&2
  fi
fi
echo "setup: dependencies present" >&2
