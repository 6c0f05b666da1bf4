#!/usr/bin/env python
"""How long `tprna store ls` (and `store info`) take on a store of many simulated entries.

Builds ``--entries`` simulated families (:func:`tprna.simulate.write_example_dataset`,
short and shallow: the build is not what is measured) into a temporary Zarr store, or
reuses ``--store`` when it already holds them, then times, as medians of ``--repeats``:

* ``store ls`` in process — what the command does: open the store, list the ids and
  read each entry's row (``FeatureStore.ids`` + ``entry_meta``);
* ``store info`` in process (``FeatureStore.info``);
* ``tprna store ls --json`` as a fresh process (interpreter start and imports included).

    .venv/bin/python scripts/bench_store_index.py [--entries 1000] [--store /tmp/ls.zarr] [--jobs 2]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_store import median_time  # noqa: E402  (scripts/)
from tprna.features import FeatureSpec  # noqa: E402
from tprna.simulate import write_example_dataset  # noqa: E402
from tprna.store import build_store, items_from_manifest, open_store  # noqa: E402


def ls(path: Path) -> int:
    with open_store(path) as st:
        return len([(e, st.entry_meta(e)) for e in st.ids()])


def info(path: Path) -> int:
    with open_store(path) as st:
        return st.info()["entries"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--store", type=Path, default=None, help="store to build into / reuse (default: a temp dir)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "ls.zarr"
        data = Path(tmp) / "data"
        manifest = write_example_dataset(data, n_families=args.entries, seed=7, lengths=(20, 30), depths=(4, 8))
        spec = FeatureSpec(feature_set="cov")
        t = time.perf_counter()
        report = build_store(path, items_from_manifest(manifest), spec, jobs=args.jobs, progress=False)
        print(f"build: {report.summary()} ({time.perf_counter() - t:.1f} s)")
        if not report.ok:
            print(report.failed[:3], file=sys.stderr)
            return 1
        n = ls(path)
        t_ls = median_time(lambda: ls(path), args.repeats)
        t_info = median_time(lambda: info(path), args.repeats)
        cmd = [sys.executable, "-m", "tprna", "store", "ls", str(path), "--json"]
        t_cli = median_time(lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL), max(1, args.repeats // 2))
        print(f"{n} entries: store ls in process {t_ls * 1e3:.1f} ms, store info in process "
              f"{t_info * 1e3:.1f} ms, `tprna store ls --json` process {t_cli * 1e3:.0f} ms (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
