#!/usr/bin/env bash
# The main job end to end on example data the project generates itself (SIMULATED RNA
# families, see examples/sim/README.md once written): store build → a short training →
# ONNX export → batched inference → evaluation table, then a real RNA predicted with the model
# shipped in the package.  A few minutes on a 2-core CPU.
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

echo "== 3. a short training (MFFnet36, tpLoss) on the train split"
$tprna train store/example.zarr --split train --model mffnet36 --loss tploss --epochs 8 \
    --lr-milestones 6 --workers 0 --out "$out/run" --overwrite

echo "== 4. ONNX export (dynamic batch and length, checked against PyTorch)"
$tprna export onnx "$out/run/last.ckpt" -o "$out/model.onnx"

echo "== 5. batched inference on onnxruntime"
$tprna infer --model "$out/model.onnx" examples/sim/msa --max-batch 8 --out "$out/predictions" --png

echo "== 6. evaluation on the test split (network vs coevolution and thermodynamics)"
$tprna evaluate "$out/run/last.ckpt" store/example.zarr --split test --out "$out/evaluation"
echo "== 7. a real RNA (yeast tRNA-Phe, a bare sequence) with the model shipped in the package"
$tprna infer --seq tRNA-Phe=GCGGAUUUAGCUCAGUUGGGAGAGCGCCAGACUGAAGAUCUGGAGGUCCUGUGUUCGAUCCACAGAAUUCGCACCA \
    -o "$out/shipped" --format npz,rr,png,txt
echo "done: $out (predictions/, evaluation/results.md, shipped/tRNA-Phe.*)"
