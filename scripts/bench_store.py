#!/usr/bin/env python
"""Feature-store benchmark on real coconet families, both backends, side by side.

Prints, per family and backend:
  (a) stored bytes of the entry's feature group vs the same tensors as float32 .npy
      (target: ratio <= 0.35);
  (b) time to read the entry's features back (unpacked, float32) vs recomputing them
      from its alignment with make_features (target: ratio >= 10), medians of repeats,
      measured in the same run.
Exits 1 when any family misses a target.

    .venv/bin/python scripts/bench_store.py [--data ../shared/data/coconet] [--ids RF00005_1,...]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tprna.features import FeatureSpec, default_feature_set, make_features
from tprna.msa import read_msa
from tprna.store import build_store, items_from_manifest, open_store

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "coconet"
# A handful across lengths (41–496) and depths (666–6,479 sequences).
DEFAULT_IDS = "RF01763,RF00005_1,RF00234,RF00010,RF00168,RF02540"
SIZE_TARGET, SPEED_TARGET = 0.35, 10.0


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (JIT, caches, file system)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def npy_bytes(arrays: dict) -> int:
    return sum(128 + np.asarray(a, dtype=np.float32).nbytes for a in arrays.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with coconet's manifest.csv")
    ap.add_argument("--ids", default=DEFAULT_IDS, help="comma-separated family ids")
    ap.add_argument("--features", default=default_feature_set("rna"), help="feature set")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    manifest = args.data / "manifest.csv"
    if not manifest.exists():
        print(f"no manifest at {manifest}; pass --data", file=sys.stderr)
        return 2
    wanted = [s.strip() for s in args.ids.split(",") if s.strip()]
    items = [i for i in items_from_manifest(manifest) if i.id in wanted]
    missing = set(wanted) - {i.id for i in items}
    if missing:
        print(f"ids not in the manifest: {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    # Labels are not what is measured here; leave the structures out.
    items = [type(i)(id=i.id, msa=i.msa, molecule=i.molecule) for i in items]
    spec = FeatureSpec(molecule="rna", feature_set=args.features)
    print(f"spec {spec.key}: {spec.feature_set}, storage {spec.dtype}; repeats={args.repeats} (medians)")

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"zarr": Path(tmp) / "bench.zarr", "hdf5": Path(tmp) / "bench.h5"}
        for backend, path in stores.items():
            report = build_store(path, items, spec, progress=False)
            if report.failed:
                print(f"{backend}: build failed for {report.failed}", file=sys.stderr)
                return 2
        opened = {b: open_store(p) for b, p in stores.items()}
        header = (f"{'id':<11}{'L':>5}{'N':>7} {'backend':<6}{'stored':>11}{'f32 npy':>11}{'ratio':>7}"
                  f"{'read ms':>9}{'compute ms':>11}{'speed-up':>9}")
        print(header)
        print("-" * len(header))
        worst_size, worst_speed = 0.0, float("inf")
        for item in items:
            msa = read_msa(item.msa, item.molecule)
            reference = make_features(msa, spec)
            ref_arrays = {k: v for k, v in reference.items() if k != "neff"}
            # reads first, so BLAS threads still spinning after a computation do not slow them
            reads = {b: median_time(lambda: s.read_features(item.id, spec), args.repeats)
                     for b, s in opened.items()}
            compute = median_time(lambda: make_features(read_msa(item.msa, item.molecule), spec),
                                  args.repeats)
            for backend, store in opened.items():
                got = store.read_features(item.id, spec)
                for name, ref in ref_arrays.items():  # the numbers read back are the computed ones
                    # float16 rounding; the float32 inverse (precision) is itself symmetric only
                    # to ~1e-5 of its largest value, and its lower triangle is read as the mirror
                    atol = 1e-4 * float(np.abs(ref).max()) if name == "precision" else 1e-6
                    np.testing.assert_allclose(got[name], ref, rtol=2 ** -10, atol=atol)
                stored = store.feature_bytes(item.id, spec)
                raw = npy_bytes(ref_arrays)
                read = reads[backend]
                size_ratio, speed = stored / raw, compute / read
                worst_size, worst_speed = max(worst_size, size_ratio), min(worst_speed, speed)
                flag = "" if size_ratio <= SIZE_TARGET and speed >= SPEED_TARGET else "  <-- misses target"
                ok &= not flag
                print(f"{item.id:<11}{msa.length:>5}{msa.depth:>7} {backend:<6}{stored:>11,}{raw:>11,}"
                      f"{size_ratio:>7.3f}{read * 1e3:>9.2f}{compute * 1e3:>11.1f}{speed:>8.1f}x{flag}")
        for store in opened.values():
            store.close()
    print(f"\nworst size ratio {worst_size:.3f} (target <= {SIZE_TARGET}); "
          f"worst read speed-up {worst_speed:.1f}x (target >= {SPEED_TARGET:g}x)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
