#!/usr/bin/env bash
# Build the libFuzzer targets (clang) and run each for N seconds (default 60), seeded from the
# shared test files when present. Crashes leave reproducers in build/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
only=${2:-}  # optional: run only the targets whose name contains this
bash scripts/build.sh fuzz
mkdir -p build/fuzz/artifacts
shared=../shared
status=0
for t in build/fuzz/fuzz/fuzz_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  [ -n "$only" ] && [[ $name != *$only* ]] && continue
  corpus=build/fuzz/corpus/$name
  mkdir -p "$corpus"
  seeds=()
  case $name in
    fuzz_gguf)
      [ -d $shared ] && seeds=($shared/tokenizers/ggml-vocab-llama-spm.gguf)
      # blocks of every llama.cpp type lmpress runs (tests/ggml_ref.py, when setup.sh made its venv)
      if [ -x build/pyenv/bin/python3 ] && [ ! -f build/fuzz/seeds/ggml-blocks.gguf ]; then
        mkdir -p build/fuzz/seeds
        build/pyenv/bin/python3 tests/ggml_ref.py blocks build/fuzz/seeds/ggml-blocks.gguf 1 256 || true
      fi
      [ -f build/fuzz/seeds/ggml-blocks.gguf ] && seeds+=(build/fuzz/seeds/ggml-blocks.gguf)
      ;;
    fuzz_llama2c) [ -d $shared ] && seeds=() ;;
    fuzz_hf_quant)
      # one 3-bit GPTQ layer with its quantization_config (tests/hf_gptq_ref.py, Debian's numpy)
      if [ ! -f build/fuzz/seeds/gptq-layer.safetensors ]; then
        mkdir -p build/fuzz/seeds
        /usr/bin/python3 tests/hf_gptq_ref.py seed build/fuzz/seeds/gptq-layer.safetensors || true
      fi
      seeds=(build/fuzz/seeds/gptq-layer.safetensors) ;;
    fuzz_tokenizer) [ -d $shared ] && seeds=($shared/models/tinystories-279k/tok512.bin $shared/models/babyllama-936k/tok105.model) ;;
    fuzz_lmpress)
      # A small quantized model (2-bit, every tensor) made with the fuzz build's own tool.
      if [ -x build/fuzz/lmpress ] && [ ! -f build/fuzz/seeds/tiny-w2.lmp ]; then
        mkdir -p build/fuzz/seeds
        build/fuzz/lmpress synth --shape tiny --dtype f32 -o build/fuzz/seeds/tiny.gguf --force -q &&
          build/fuzz/lmpress quantize -m build/fuzz/seeds/tiny.gguf -r "rtn:w2g32" -o build/fuzz/seeds/tiny-w2.lmp --force -q >/dev/null || true
      fi
      # and one of SpQR's format (two-level statistics, outliers), calibrated on the README
      if [ -x build/fuzz/lmpress ] && [ -f build/fuzz/seeds/tiny.gguf ] && [ ! -f build/fuzz/seeds/tiny-spqr.lmp ]; then
        build/fuzz/lmpress quantize -m build/fuzz/seeds/tiny.gguf -r "spqr:spqr3g16+s0.50" --calib README.md \
          --nsamples 4 --seqlen 64 -o build/fuzz/seeds/tiny-spqr.lmp --force -q >/dev/null || true
      fi
      # and the composite formats (row bitmap, class map and int / binary parts)
      if [ -x build/fuzz/lmpress ] && [ -f build/fuzz/seeds/tiny.gguf ] && [ ! -f build/fuzz/seeds/tiny-mix.lmp ]; then
        build/fuzz/lmpress quantize -m build/fuzz/seeds/tiny.gguf -r "rtn:mixw2g32_w4g32a_p300;*.ffn_*=rtn:slim2g32,beta=1" \
          -o build/fuzz/seeds/tiny-mix.lmp --force -q >/dev/null || true
      fi
      # and the minifloats and the hashed-table trellis code (format variants in the id's bits 12..13)
      if [ -x build/fuzz/lmpress ] && [ -f build/fuzz/seeds/tiny.gguf ] && [ ! -f build/fuzz/seeds/tiny-fp.lmp ]; then
        build/fuzz/lmpress quantize -m build/fuzz/seeds/tiny.gguf -r "rtn:fp3e1m1g32;*.ffn_*=rtn:trellis2h;*.attn_q.*=rtn:fp4e3m0g32" \
          -o build/fuzz/seeds/tiny-fp.lmp --force -q >/dev/null || true
      fi
      seeds=(build/fuzz/seeds/tiny-w2.lmp)
      [ -f build/fuzz/seeds/tiny-fp.lmp ] && seeds+=(build/fuzz/seeds/tiny-fp.lmp)
      [ -f build/fuzz/seeds/tiny-spqr.lmp ] && seeds+=(build/fuzz/seeds/tiny-spqr.lmp)
      [ -f build/fuzz/seeds/tiny-mix.lmp ] && seeds+=(build/fuzz/seeds/tiny-mix.lmp) ;;
    fuzz_recipe)
      mkdir -p build/fuzz/seeds
      printf '%s' 'gptq:w4g32,act_order,damp=0.01;token_embd.weight=rtn:w8g32;blk.*.ffn_down.weight=gptq:w3g128a,static_groups' >build/fuzz/seeds/recipe1.txt
      printf '%s' '{"default": "rtn:w4g64,clip", "overrides": [{"pattern": "output.weight", "rule": "keep"}]}' >build/fuzz/seeds/recipe2.json
      seeds=(build/fuzz/seeds/recipe1.txt build/fuzz/seeds/recipe2.json docs/recipes.md) ;;
    fuzz_tasks)
      # two HellaSwag tasks (plain and bzip2) and a JSONL task file
      mkdir -p build/fuzz/seeds
      if [ -f $shared/data/hellaswag/hellaswag_val_full.txt.bz2 ] && [ ! -f build/fuzz/seeds/hellaswag2.txt ]; then
        bzcat $shared/data/hellaswag/hellaswag_val_full.txt.bz2 | head -12 >build/fuzz/seeds/hellaswag2.txt || true
        bzip2 -kf build/fuzz/seeds/hellaswag2.txt || true
      fi
      printf '%s\n' '{"context": "The sky is", "choices": ["blue", "green"], "gold": 0, "id": "q1"}' \
        '{"context": "", "choices": ["a", "b", "c"], "gold": 2, "id": 7}' >build/fuzz/seeds/tasks.jsonl
      seeds=(build/fuzz/seeds/hellaswag2.txt build/fuzz/seeds/hellaswag2.txt.bz2 build/fuzz/seeds/tasks.jsonl) ;;
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
