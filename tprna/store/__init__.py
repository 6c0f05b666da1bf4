"""The feature store: precomputed alignments, features and labels, keyed by content.

    from tprna.store import build_store, open_store, items_from_manifest
    report = build_store("store/coconet.zarr", items_from_manifest("manifest.csv"), spec, jobs=4)
    with open_store("store/coconet.zarr") as store:
        feats = store.read_features(store.ids("train")[0], spec)

A path ending in ``.h5``/``.hdf5`` is an HDF5 file, anything else a Zarr v3 directory;
the logical schema is the same (``store/README.md``).  The modules read top-down:
``atomic``, ``location``, ``base`` (the reader / writer protocols) ← ``zarr_format``,
``hdf5_format`` ← ``schema`` ← ``index``, ``verify`` ← ``formats`` ← ``reader`` ←
``tasks``, ``cluster`` ← ``build``.

Before training on one split and scoring on another, refuse a leak::

    with open_store("store/coconet.zarr") as store:
        check_disjoint_splits(store, "train", "test")  # TprnaError naming the shared ids
"""
from tprna.store.atomic import DiskFull
from tprna.store.build import BuildReport, build_store
from tprna.store.inputs import BuildItem, items_from_manifest, items_from_paths
from tprna.store.reader import FeatureStore, open_store
from tprna.store.schema import NEFF_SPLITS
from tprna.store.splits import check_disjoint_splits, overlapping_splits
from tprna.store.verify import Problem

__all__ = [
    "BuildItem", "BuildReport", "DiskFull", "FeatureStore", "NEFF_SPLITS", "Problem", "build_store",
    "check_disjoint_splits", "items_from_manifest", "items_from_paths", "open_store",
    "overlapping_splits", "verify",
]


def verify(path) -> list[Problem]:
    """Every problem found by re-reading every array of every entry of the store at ``path``."""
    with open_store(path) as store:
        return store.verify()
