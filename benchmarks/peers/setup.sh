#!/usr/bin/env bash
# Create one virtual environment per peer library under benchmarks/.venvs/<peer>.
# torch is installed first from the CPU build (a bare `torch` would pull the CUDA build),
# then the peer from PyPI with whatever transformers it pins. Re-running skips finished venvs.
# Usage: bash benchmarks/peers/setup.sh [peer ...]   (default: all four)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venvs="$here/.venvs"
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.13.0}"
declare -A PACKAGE=(
  [repeng]="repeng"
  [steering_vectors]="steering-vectors"
  [nnsight]="nnsight"
  [transformer_lens]="transformer-lens"
)
peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(repeng steering_vectors nnsight transformer_lens)
mkdir -p "$venvs"
for peer in "${peers[@]}"; do
  dir="$venvs/$peer"
  if [ -f "$dir/.ready" ]; then echo "$peer: ready"; continue; fi
  echo "$peer: creating $dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip
  "$dir/bin/python" -m pip install -q "$TORCH"   # PIP_FIND_LINKS holds the local CPU wheel here
  "$dir/bin/python" -m pip install -q "${PACKAGE[$peer]}" psutil
  "$dir/bin/python" -m pip freeze > "$dir/freeze.txt"
  touch "$dir/.ready"
  echo "$peer: done ($(grep -iE '^(transformers|torch)==' "$dir/freeze.txt" | tr '\n' ' '))"
done
