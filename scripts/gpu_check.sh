#!/usr/bin/env bash
# The GPU check in one command (see scripts/gpu_check.py for the phases and the JSON it writes).
#
#   bash scripts/gpu_check.sh [full] [--size 3b|7b]   one CUDA GPU, no internet: random Qwen2.5-VL-3B (or 7B),
#                                                     ~5 GRPO steps with Unsloth and with TRL + PEFT, batched
#                                                     generation, QLoRA; writes results/bench/grpo_gpu.json in < 9 min
#   bash scripts/gpu_check.sh smoke [--out F]         the same phases on the tiny architecture, on CPU (test suite)
#   bash scripts/gpu_check.sh wheels                  here, with registry access: pack what a GPU machine with its
#                                                     own torch/transformers lacks (unsloth, TRL 1.15, ...) into
#                                                     .gpu_carry/site.tar.xz, at the versions of constraints/gpu.txt
#
# `full` unpacks .gpu_carry/site.tar.xz when present and puts it first on PYTHONPATH: the machine keeps its own torch,
# transformers and CUDA stack, and takes the rest of the GPU set from the carried folder.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-full}"
[ $# -gt 0 ] && shift
PY="${PYTHON:-python3}"

# Packages the GPU path needs beyond a CUDA machine's torch / transformers / accelerate / numpy / pandas / pyarrow
# (versions from the lock). vLLM (hundreds of MB) and xformers (built for one torch) are not carried.
CARRY=(unsloth unsloth_zoo trl peft datasets dill multiprocess bitsandbytes torchao cut_cross_entropy msgspec
       nest_asyncio tyro docstring_parser shtab typeguard)

case "$mode" in
  wheels)
    out=.gpu_carry
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    specs=()
    for name in "${CARRY[@]}"; do
      pat="^$(echo "$name" | sed 's/[-_]/[-_]/g')=="
      pin="$(grep -iE "$pat" constraints/gpu.txt | head -1 | cut -d' ' -f1)"
      [ -n "$pin" ] || { echo "gpu_check: $name is not pinned in constraints/gpu.txt" >&2; exit 1; }
      specs+=("$pin")
    done
    # Python 3.12, x86-64 manylinux: the lent GPU machines' interpreter (see README, The GPU extra).
    "$PY" -m pip install -q --no-deps --no-compile --only-binary=:all: --target "$tmp/site" \
      --python-version 3.12 --implementation cp --abi cp312 \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
      --platform any "${specs[@]}"
    # Not needed to train: unsloth's web studio and CLI, bitsandbytes builds for other CUDA / ROCm versions.
    rm -rf "$tmp/site/studio" "$tmp/site/unsloth_cli" "$tmp/site/bin"
    find "$tmp/site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name '*cuda130*' ! -name '*cpu*' -delete
    mkdir -p "$out"
    tar -C "$tmp/site" -cJf "$out/site.tar.xz" .
    printf '%s\n' "${specs[@]}" > "$out/PINS.txt"
    du -h "$out/site.tar.xz"
    exit 0 ;;
  full)
    if [ -f .gpu_carry/site.tar.xz ]; then
      site=/tmp/globe-gpu-site
      rm -rf "$site" && mkdir -p "$site" && tar -C "$site" -xJf .gpu_carry/site.tar.xz
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi ;;
  smoke) ;;
  *) echo "usage: bash scripts/gpu_check.sh [full|smoke|wheels] [--size 3b|7b] [--out PATH] [--budget S]" >&2; exit 2 ;;
esac

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false WANDB_DISABLED=true
# The driver keeps its own deadlines (phases are skipped or killed); this is the backstop past them.
exec timeout --kill-after=15 660 "$PY" scripts/gpu_check.py --mode "$mode" "$@"
