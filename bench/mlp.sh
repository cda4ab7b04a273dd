#!/usr/bin/env bash
# NML vs PyTorch on examples/fashion_mlp.nml: same model, batch, data and thread count.
set -euo pipefail

usage() { echo "usage: $0 [BUILD_DIR] [--threads N] [--epochs E] [--repeat R]" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build threads=$(nproc) epochs=1 repeat=1
while (($#)); do
  case $1 in
    --threads) threads=${2:?}; shift 2 ;;
    --epochs) epochs=${2:?}; shift 2 ;;
    --repeat) repeat=${2:?}; shift 2 ;;
    -*) usage ;;
    *) build=$1; shift ;;
  esac
done
nmlc=$build/compiler/nmlc
py=/usr/bin/python3

[[ -f $root/examples/fashion_mlp.nml ]] || { echo "error: $root/examples/fashion_mlp.nml not found" >&2; exit 1; }
[[ -x $nmlc ]] || { echo "error: $nmlc not found or not executable (build first: meson compile -C $build)" >&2; exit 1; }
"$py" -c 'import torch' 2>/dev/null || { echo "error: $py cannot import torch (apt install python3-torch)" >&2; exit 1; }

# nmlc picks OpenBLAS's AVX-512 (or AVX2) kernels when Debian's OpenBLAS 0.3.21 does not recognize
# the CPU and falls back to its SSE3 ones; PyTorch's matrix products go through the same library,
# so both sides get the same kernels.
if [[ -z ${OPENBLAS_CORETYPE:-} ]]; then
  if grep -qw avx512bw /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo; then
    export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then
    export OPENBLAS_CORETYPE=Haswell
  fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run_nml() {
  local log=$tmp/nml.jsonl
  rm -f "$log"
  if ! OPENBLAS_NUM_THREADS=$threads "$nmlc" run "$root/examples/fashion_mlp.nml" \
      --epochs "$epochs" --threads "$threads" --log "$log" >"$tmp/nml.out" 2>&1; then
    echo "error: nmlc run failed; last output:" >&2; tail -n 20 "$tmp/nml.out" >&2; exit 1
  fi
  "$py" - "$log" >>"$tmp/nml.res" 2>/dev/null <<'PY' || { echo "error: no samples_per_sec in $log" >&2; exit 1; }
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
r = json.loads(lines[-1])
print(float(r["samples_per_sec"]), float(r["test_accuracy"]))
PY
}

run_torch() {
  local out
  out=$(cd "$root" && OMP_NUM_THREADS=$threads "$py" bench/torch_mlp.py --threads "$threads" --epochs "$epochs" | tail -n 1) \
    || { echo "error: bench/torch_mlp.py failed" >&2; exit 1; }
  [[ $out =~ samples_per_sec=([0-9.]+)\ test_accuracy=([0-9.]+) ]] \
    || { echo "error: unexpected torch output: $out" >&2; exit 1; }
  echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}" >>"$tmp/torch.res"
}

for ((i = 1; i <= repeat; i++)); do
  echo "run $i/$repeat: NML..." >&2; run_nml
  echo "run $i/$repeat: PyTorch..." >&2; run_torch
done

"$py" - "$tmp/nml.res" "$tmp/torch.res" "$threads" "$epochs" "$repeat" <<'PY'
import statistics, sys
def med(path):
    rows = [list(map(float, l.split())) for l in open(path)]
    return [statistics.median(c) for c in zip(*rows)]
(ns, na), (ts, ta) = med(sys.argv[1]), med(sys.argv[2])
print(f"fashion_mlp: {sys.argv[3]} threads, {sys.argv[4]} epoch(s), median of {sys.argv[5]} run(s)")
print(f"{'':12}{'samples/s':>12}{'test_acc':>10}")
print(f"{'NML':12}{ns:12.1f}{na:10.4f}")
print(f"{'PyTorch':12}{ts:12.1f}{ta:10.4f}")
print(f"{'NML/PyTorch':12}{ns / ts:12.2f}")
PY
