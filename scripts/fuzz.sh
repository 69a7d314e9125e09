#!/usr/bin/env bash
# Build the libFuzzer targets (clang) and run each for N seconds (default 60), seeded from the
# shared test files when present. Crashes leave reproducers in build/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
bash scripts/build.sh fuzz
mkdir -p build/fuzz/artifacts
shared=../shared
status=0
for t in build/fuzz/fuzz/fuzz_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  corpus=build/fuzz/corpus/$name
  mkdir -p "$corpus"
  seeds=()
  case $name in
    fuzz_gguf) [ -d $shared ] && seeds=($shared/tokenizers/ggml-vocab-llama-spm.gguf) ;;
    fuzz_llama2c) [ -d $shared ] && seeds=() ;;
    fuzz_tokenizer) [ -d $shared ] && seeds=($shared/models/tinystories-279k/tok512.bin $shared/models/babyllama-936k/tok105.model) ;;
  esac
  for s in "${seeds[@]}"; do [ -f "$s" ] && cp -f "$s" "$corpus/" || true; done
  echo "fuzz: $name for ${secs}s"
  if ! "$t" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -artifact_prefix=build/fuzz/artifacts/ "$corpus" >build/fuzz/$name.log 2>&1; then
    echo "fuzz: $name FAILED (see build/fuzz/$name.log)"; tail -30 build/fuzz/$name.log; status=1
  else
    grep -E "^Done [0-9]+ runs" build/fuzz/$name.log | tail -1 || true
  fi
done
exit $status
