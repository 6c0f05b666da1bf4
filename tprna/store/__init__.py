"""The feature store: precomputed alignments, features and labels, keyed by content.

    from tprna.store import build_store, open_store, items_from_manifest
    report = build_store("store/coconet.zarr", items_from_manifest("manifest.csv"), spec, jobs=4)
    with open_store("store/coconet.zarr") as store:
        feats = store.read_features(store.ids("train")[0], spec)

A path ending in ``.h5``/``.hdf5`` is an HDF5 file, anything else a Zarr v3 directory;
the logical schema is the same (``store/README.md``).
"""
from tprna.store.build import BuildReport, build_store
from tprna.store.inputs import BuildItem, items_from_manifest, items_from_paths
from tprna.store.schema import NEFF_SPLITS, FeatureStore, open_store
from tprna.store.verify import Problem

__all__ = [
    "BuildItem", "BuildReport", "FeatureStore", "NEFF_SPLITS", "Problem", "build_store",
    "items_from_manifest", "items_from_paths", "open_store", "verify",
]


def verify(path) -> list[Problem]:
    """Every problem found by re-reading every array of every entry of the store at ``path``."""
    with open_store(path) as store:
        return store.verify()
