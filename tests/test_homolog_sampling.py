"""Homolog sampling in training: a homolog of a family trained alone, with its own features
and the query's labels on the columns it covers — checked by hand, against features built
independently from the homolog's own sequence, and on a real family."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import coconet_items, train_one_epoch

from tprna.alphabet import get_alphabet
from tprna.contract import model_input, rounded_features
from tprna.data import LengthBatchSampler, StoreDataset, homolog_example, homolog_rows
from tprna.features import FeatureSpec, make_features
from tprna.msa import parse_msa
from tprna.store import build_store, open_store

RNA = get_alphabet("rna")


def encode(rows: list[str]) -> np.ndarray:
    return parse_msa("".join(f">s{i}\n{r}\n" for i, r in enumerate(rows)), "fasta").codes


def test_eligible_rows_by_hand():
    codes = encode([
        "ACGUACGUAC",  # the query
        "ACGUACGUAC",  # identical: adds nothing
        "ACGUACGUCA",  # 8/10 identical, full coverage: eligible
        "ACGUACGU--",  # 8/10 covered < 0.9: not eligible
        "UGCAUGCAUG",  # 0/10 identical, full coverage: eligible
        "ACGUACGUA-",  # 9/10 covered, 9/10 identical (not < 0.9): not eligible
    ])
    assert homolog_rows(codes, RNA.gap).tolist() == [2, 4]
    assert homolog_rows(codes[:2], RNA.gap).tolist() == []


def test_example_matches_features_built_from_the_homologs_own_sequence():
    spec = FeatureSpec(feature_set="cov+ss+profile")
    # the only eligible row has a deletion at column 3: its sequence is 11 letters long
    query, homolog = "GGGAAACCCUUU", "GGC-AACCGUUA"
    codes = encode([query, homolog])
    assert homolog_rows(codes, RNA.gap).tolist() == [1]
    window = slice(2, 10)
    x, columns, neff = homolog_example(codes, spec, row_seed=7, window=window)
    # independent: the homolog's letters as a one-sequence alignment, then cut to the covered window
    alone = parse_msa(">h\n" + homolog.replace("-", "") + "\n", "fasta")
    full = model_input(rounded_features(make_features(alone, spec), spec), spec)
    covered = [c for c in range(window.start, window.stop) if homolog[c] != "-"]
    assert columns.tolist() == [c - window.start for c in covered] == [0, 2, 3, 4, 5, 6, 7]
    in_homolog = [c - 1 if c > 3 else c for c in covered]  # its own positions skip the deletion
    np.testing.assert_array_equal(x, full[:, in_homolog][:, :, in_homolog])
    assert neff == pytest.approx(float(make_features(alone, spec)["neff"]))
    assert homolog_example(codes[:1], spec, 7, window) is None  # no homolog: no example


def test_dataset_item_carries_the_querys_labels_on_covered_columns(sampling_store):
    dataset = StoreDataset(sampling_store)
    index = max(range(len(dataset)), key=lambda i: dataset.depths[i])
    start, size = 3, 25
    own = dataset[(index, start, size, 0, 0)]
    item = dataset[(index, start, size, 0, 11, 1)]
    x, columns, _ = homolog_example(dataset._store.read_msa(dataset.ids[index]), dataset.spec, 11,
                                    slice(start, start + size))
    n = len(columns)
    assert item["features"].shape == (dataset.spec.channels, n, n)
    np.testing.assert_array_equal(item["features"].numpy(), x)
    cut = np.ix_(columns, columns)
    np.testing.assert_array_equal(item["contacts"].numpy(), own["contacts"].numpy()[cut])
    np.testing.assert_array_equal(item["observed"].numpy(), own["observed"].numpy()[cut])
    assert item["neff"] <= 1.0 < own["neff"]


def test_sampler_draws_homologs_for_alignments_only_and_keeps_depth_draws():
    lengths, depths = [40, 150, 90, 60, 70], [300, 1, 20, 2, 50]

    def keys(epoch: int, **kw) -> list:
        s = LengthBatchSampler(lengths, crop=64, seed=3, depths=depths, **kw)
        s.set_epoch(epoch)
        return sorted(k for batch in s for k in batch)

    drawn = keys(4, homolog_sampling=1.0)
    assert drawn == keys(4, homolog_sampling=1.0) and drawn != keys(5, homolog_sampling=1.0)
    assert {k[0] for k in drawn if len(k) == 6 and k[5] == 1} == {0, 2, 3, 4}  # every entry with depth > 1
    # off, the depth-sampled keys are what they were without the option
    assert keys(4, depth_sampling=0.7) == keys(4, depth_sampling=0.7, homolog_sampling=0.0)
    none = keys(4, homolog_sampling=0.0)
    assert all(len(k) == 3 for k in none)


def test_training_with_homolog_sampling(sampling_store, tmp_path):
    ckpt, record = train_one_epoch(sampling_store, tmp_path / "run", homolog_sampling=0.5)
    assert ckpt["train_config"]["homolog_sampling"] == 0.5
    assert record["homolog_sampling"] == 0.5


def test_real_homologs_fold_like_the_querys_structure(tmp_path):
    """On tRNA (RF00005_1, 955 rows) the homologs' own base-pair probabilities land on the
    transferred contacts as well as the query's do on its own, and far above the same labels
    shifted by four columns (one column is not enough: a helix's neighbours touch too): the
    columns map right and the labels carry over."""
    store = tmp_path / "trna.zarr"
    assert not build_store(store, coconet_items(("RF00005_1",)), FeatureSpec(feature_set="cov+ss"),
                           progress=False).failed
    dataset = StoreDataset(store, split=None)
    length = dataset.lengths[0]

    def top_fifth_precision(bpp: np.ndarray, contacts: np.ndarray) -> float:
        i, j = np.triu_indices(len(bpp), 6)
        order = np.argsort(-bpp[i, j])[: len(bpp) // 5]
        return float(contacts[i[order], j[order]].mean())

    query = dataset[(0, 0, length, 0, 0)]
    on_query = top_fifth_precision(query["features"][-1].numpy(), query["contacts"].numpy())
    hits, shifted = [], []
    for seed in range(8):
        item = dataset[(0, 0, length, 0, seed, 1)]
        bpp, contacts = item["features"][-1].numpy(), item["contacts"].numpy()
        assert bpp.shape == contacts.shape and bpp.shape[0] >= 0.9 * length
        hits.append(top_fifth_precision(bpp, contacts))
        shifted.append(top_fifth_precision(bpp, np.roll(contacts, 4, axis=1)))
    # tRNA's own RNAfold map is no better than its homologs' (0.67 at top-L/5 here)
    assert on_query > 0.5 and np.mean(hits) > 0.7
    assert np.mean(hits) > 4 * np.mean(shifted)


def test_close_to_any_by_hand():
    from tprna.redundancy import close_to_any

    ref = "GGGAAACCCUUUAGGCUAGCAUCGAUCG"  # 28 nt
    close = "".join("A" if i % 5 == 0 else c for i, c in enumerate(ref))
    far = "".join("A" if i % 2 == 0 else c for i, c in enumerate(ref))
    assert sum(a != b for a, b in zip(ref, close)) == 4 and sum(a != b for a, b in zip(ref, far)) == 10
    got = close_to_any([ref, close, far, "UUUUUUUUUUUUUUUUUUUU"], {"r": ref, "s": "CCCCCCCCCCCCCGG"})
    assert got == ["r", "r", None, None]  # 24/28 = 0.86 ≥ 0.7; 18/28 = 0.64 is not
    assert close_to_any([], {"r": ref}) == [] and close_to_any([ref], {}) == [None]


def test_screened_homologs_never_train(sampling_store):
    dataset = StoreDataset(sampling_store)
    index = max(range(len(dataset)), key=lambda i: dataset.depths[i])
    entry = dataset.ids[index]
    store = open_store(sampling_store)
    codes = store.read_msa(entry)
    store.close()
    rows = homolog_rows(codes, RNA.gap)
    banned = int(rows[0])
    sequence = RNA.decode(codes[banned][codes[banned] != RNA.gap])
    eligible, left_out = dataset.screen_homologs({"benchmark": sequence})
    kept = dataset.homologs[entry]
    assert banned not in kept and left_out >= 1 and eligible >= len(kept) + 1
    assert set(kept) <= set(rows)
    window = slice(0, dataset.lengths[index])
    banned_x, _, _ = homolog_example(codes, dataset.spec, 0, window, np.array([banned]))
    for seed in range(30):  # the dataset's draws come from the screened rows only
        item = dataset[(index, 0, dataset.lengths[index], 0, seed, 1)]
        x = item["features"].numpy()
        assert x.shape != banned_x.shape or not np.array_equal(x, banned_x)
