#!/usr/bin/env python
"""Feature-store benchmark on real coconet families, both backends, side by side.

Prints, per family and backend:
  (a) stored bytes of the entry's feature group vs the same tensors as float32 .npy
      (target: ratio <= 0.35);
  (b) time to read the entry's features back (unpacked, float32) vs recomputing them
      from its alignment with make_features (target: ratio >= 10), medians of repeats,
      measured in the same run;
  (c) what checking a read costs, against the same read unchecked (a store written
      without chunk checksums, read with verify_reads=False): the chunk checksums every
      read checks (CRC32C / Fletcher-32), and the entry's sha256 over every array read
      (what reads of stores without chunk checksums do).
Exits 1 when any family misses a target (a) or (b).

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
from tprna.store import base, build_store, items_from_manifest, open_store

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


def interleaved_ratios(fns: dict, base: str, repeats: int) -> tuple[dict, dict]:
    """Median time of each function, and the median over rounds of its time over
    ``base``'s in the same round: the functions are called in turns, so a busy machine
    slows all of a round alike and the ratios stay steady where single times do not."""
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    ratios = {k: statistics.median(a / b for a, b in zip(times[k], times[base])) for k in fns}
    return {k: statistics.median(v) for k, v in times.items()}, ratios


def npy_bytes(arrays: dict) -> int:
    return sum(128 + np.asarray(a, dtype=np.float32).nbytes for a in arrays.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with coconet's manifest.csv")
    ap.add_argument("--ids", default=DEFAULT_IDS, help="comma-separated family ids")
    ap.add_argument("--features", default=default_feature_set("rna"), help="feature set")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--check-repeats", type=int, default=41, help="rounds of the read-check comparison (c)")
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
        legacy = {"zarr": Path(tmp) / "legacy.zarr", "hdf5": Path(tmp) / "legacy.h5"}
        for backend, path in list(stores.items()) + list(legacy.items()):
            base.CHUNK_CHECKSUMS = path not in legacy.values()
            try:
                report = build_store(path, items, spec, progress=False)
            finally:
                base.CHUNK_CHECKSUMS = True
            if report.failed:
                print(f"{backend}: build failed for {report.failed}", file=sys.stderr)
                return 2
        opened = {b: open_store(p) for b, p in stores.items()}
        unchecked = {b: open_store(p, verify_reads=False) for b, p in legacy.items()}
        sha256 = {b: open_store(p, verify_reads=True) for b, p in legacy.items()}
        header = (f"{'id':<11}{'L':>5}{'N':>7} {'backend':<6}{'stored':>11}{'f32 npy':>11}{'ratio':>7}"
                  f"{'read ms':>9}{'compute ms':>11}{'speed-up':>9}{'chunk crc':>10}{'sha256':>8}")
        print(header)
        print("-" * len(header))
        worst_size, worst_speed = 0.0, float("inf")
        all_costs = []
        for item in items:
            msa = read_msa(item.msa, item.molecule)
            reference = make_features(msa, spec)
            ref_arrays = {k: v for k, v in reference.items() if k != "neff"}
            # reads first, so BLAS threads still spinning after a computation do not slow them
            reads, check_cost = {}, {}
            for b in opened:
                t, ratio = interleaved_ratios({
                    "none": lambda: unchecked[b].read_features(item.id, spec),
                    "chunks": lambda: opened[b].read_features(item.id, spec),
                    "sha256": lambda: sha256[b].read_features(item.id, spec)}, "none", args.check_repeats)
                reads[b] = t["chunks"]
                check_cost[b] = (ratio["chunks"] - 1, ratio["sha256"] - 1)
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
                crc, sha = check_cost[backend]
                all_costs.append((backend, crc, sha))
                print(f"{item.id:<11}{msa.length:>5}{msa.depth:>7} {backend:<6}{stored:>11,}{raw:>11,}"
                      f"{size_ratio:>7.3f}{read * 1e3:>9.2f}{compute * 1e3:>11.1f}{speed:>8.1f}x"
                      f"{crc:>+9.1%}{sha:>+8.1%}{flag}")
        for store in [*opened.values(), *unchecked.values(), *sha256.values()]:
            store.close()
    print(f"\nworst size ratio {worst_size:.3f} (target <= {SIZE_TARGET}); "
          f"worst read speed-up {worst_speed:.1f}x (target >= {SPEED_TARGET:g}x)")
    for backend in stores:
        crc = [c for b, c, _ in all_costs if b == backend]
        sha = [s for b, _, s in all_costs if b == backend]
        print(f"{backend}: checking a read costs (median over families) {statistics.median(crc):+.1%} "
              f"with chunk checksums, {statistics.median(sha):+.1%} with the sha256 of every array")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
