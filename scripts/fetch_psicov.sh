#!/usr/bin/env bash
# Fetch the public PSICOV benchmark (150 protein chains with alignments and structures,
# published by UCL's bioinformatics group with the PSICOV paper) and write a manifest that
# `tprna store build --molecule protein` takes, for protein pretraining at the paper's scale.
#
#   bash scripts/fetch_psicov.sh [OUT_DIR]            (default: data/psicov)
#   tprna store build store/psicov.zarr --manifest data/psicov/manifest.csv --molecule protein --jobs 4
#   tprna train store/psicov.zarr --split train --model mffnet36 --out runs/psicov
#
# Needs network access (the machines this project is developed on have none, so this
# script has not been run here). The archive locations can be overridden:
#   PSICOV_BASE_URL   folder holding the supplementary data
#   PSICOV_ALN_TGZ    alignments archive (one <id>.aln per chain, PSICOV format)
#   PSICOV_PDB_TGZ    structures archive (one <id>.pdb per chain)
set -euo pipefail
out=${1:-data/psicov}
base=${PSICOV_BASE_URL:-http://bioinfadmin.cs.ucl.ac.uk/downloads/PSICOV/suppdata}
aln=${PSICOV_ALN_TGZ:-$base/aln.tar.gz}
pdb=${PSICOV_PDB_TGZ:-$base/pdb.tar.gz}
mkdir -p "$out/aln" "$out/pdb"
fetch() { curl -fL --retry 3 -o "$2" "$1" || { echo "fetch_psicov: cannot download $1 (set PSICOV_*_TGZ)" >&2; exit 1; }; }
fetch "$aln" "$out/aln.tar.gz"
fetch "$pdb" "$out/pdb.tar.gz"
tar -xzf "$out/aln.tar.gz" -C "$out/aln" --strip-components=1 --wildcards '*.aln' 2>/dev/null || tar -xzf "$out/aln.tar.gz" -C "$out/aln"
tar -xzf "$out/pdb.tar.gz" -C "$out/pdb" --strip-components=1 --wildcards '*.pdb' 2>/dev/null || tar -xzf "$out/pdb.tar.gz" -C "$out/pdb"
{
    echo "id,split,msa,structure,chain"
    for a in "$out"/aln/*.aln; do
        id=$(basename "$a" .aln)
        [ -f "$out/pdb/$id.pdb" ] && echo "$id,train,aln/$id.aln,pdb/$id.pdb,"
    done
} > "$out/manifest.csv"
echo "fetch_psicov: $(($(wc -l < "$out/manifest.csv") - 1)) chains listed in $out/manifest.csv"
