#!/usr/bin/env bash
# The main job end to end on example data the project generates itself (SIMULATED RNA
# families, see examples/sim/README.md once written): store build → a short training →
# ONNX export → batched inference → evaluation table.  A few minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
tprna=.venv/bin/tprna
[ -x "$tprna" ] || { echo "run 'bash scripts/setup.sh' first" >&2; exit 1; }
out=${TPRNA_QUICKSTART_DIR:-results/quickstart}
mkdir -p "$out"

echo "== 1. simulated example families (co-varying base pairs of a known structure)"
$tprna simulate examples/sim --families 16 --seed 0

echo "== 2. feature store (Zarr v3): alignments, cov+ss features, labels, splits"
$tprna store build store/example.zarr --manifest examples/sim/manifest.csv --features cov+ss
$tprna store split store/example.zarr --by-neff
$tprna store info store/example.zarr
$tprna store verify store/example.zarr
