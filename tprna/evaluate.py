"""Score contact predictions of every kind with the same code: a trained network, the two
baselines that learn nothing (coevolution: APC-corrected covariance or precision norms;
thermodynamics: ViennaRNA base-pair probabilities of the query) and published predictions
of other methods read from pair-score files.

**Leakage.**  A checkpoint records the ids it was trained on (``train_ids``).  Scoring it
on entries among them is refused, naming them (``allow_train_overlap=True`` scores anyway
and reports them in a one-line warning).  A checkpoint from before tpRNA recorded its
training ids is checked against the split its configuration names when it was trained on
the same store, and otherwise gets a one-line warning that the check could not be made."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch

from tprna.contract import length_batches
from tprna.data import StoreDataset, collate
from tprna.errors import TprnaError
from tprna.features import FeatureSpec, apc_frobenius, base_pair_probabilities, precision
from tprna.metrics import NEFF_SUBSETS, contact_precisions, summarize
from tprna.models import ContactProbability
from tprna.report import markdown_table, plot_contact_map, plot_precision_vs_neff, write_csv
from tprna.store import open_store
from tprna.train import load_checkpoint, model_from_checkpoint, resolve_device, store_key_of

__all__ = ["Labels", "EvaluationSet", "load_evaluation_set", "predict_with_checkpoint",
           "coevolution_map", "baseline_maps", "read_pair_scores", "peer_maps", "score_maps", "attainable",
           "attainable_line", "BASELINES", "EvaluationResult", "run_evaluation", "check_training_overlap"]

BASELINES = ("APC (covariance)", "APC (precision)", "Thermodynamics (bpp)")


@dataclass
class Labels:
    contacts: np.ndarray
    observed: np.ndarray
    neff: float
    sequence: str


@dataclass
class EvaluationSet:
    """The labelled entries of one store split, and the store/spec they come from."""

    store_path: str
    spec_key: str
    labels: dict[str, Labels] = field(default_factory=dict)


def load_evaluation_set(store_path: str, split: str | None, features: str | None = None,
                        ids: Iterable[str] | None = None) -> EvaluationSet:
    dataset = StoreDataset(store_path, features, split=None if ids else split,
                           ids=list(ids) if ids else None)
    store = open_store(store_path)
    try:
        labels = {}
        for entry_id in dataset.ids:
            contacts, observed = store.read_labels(entry_id)
            feats = store.read_features(entry_id, dataset.spec.key)
            labels[entry_id] = Labels(np.asarray(contacts), np.asarray(observed, bool),
                                      float(feats["neff"]), store.entry_meta(entry_id)["sequence"])
    finally:
        store.close()
    return EvaluationSet(store_path, dataset.spec.key, labels)


def check_training_overlap(ckpt: Mapping, ids: Iterable[str], source: str | Path | None = None,
                           allow: bool = False, warn: Callable[[str], None] | None = None,
                           store_path: str | None = None) -> list[str]:
    """The entries of ``ids`` the checkpoint was trained on.  Any → :class:`TprnaError`
    naming them, or with ``allow`` a one-line ``warn``.  A checkpoint that records no
    training ids (written before tpRNA did) is checked against its training split when it
    was trained on ``store_path`` (a one-line ``warn`` when it cannot be checked)."""
    trained = ckpt.get("train_ids")
    if trained is None:
        trained = _recorded_split_ids(ckpt, store_path)
    if trained is None:
        if warn:
            warn(f"warning: {source or 'the checkpoint'} records no training ids (written before tpRNA "
                 "recorded them): the evaluated entries were not checked against its training data")
        return []
    trained = set(trained)
    shared = [i for i in ids if i in trained]
    if shared:
        names = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
        text = (f"{len(shared)} of the evaluated entries {'was' if len(shared) == 1 else 'were'} among the "
                f"model's training entries: {names}")
        if not allow:
            raise TprnaError(f"{text}; its scores would be inflated. Evaluate on a split the model never saw "
                             "(or pass --allow-train-overlap to score anyway)", source)
        if warn:
            warn(f"warning: {source or 'checkpoint'}: {text} (scored anyway: --allow-train-overlap)")
    return shared


def _recorded_split_ids(ckpt: Mapping, store_path: str | None) -> list[str] | None:
    """An older checkpoint's training entries from its recorded configuration, when it
    was trained on this very store: its ``ids``, or its split less ``exclude``."""
    config = ckpt.get("train_config") or {}
    if store_path is None or ckpt.get("train_store") is None \
            or ckpt["train_store"] != store_key_of(store_path):
        return None
    if config.get("ids"):
        return list(config["ids"])
    split = config.get("split")
    if not isinstance(split, str) or not split:
        return None
    excluded = set(config.get("exclude") or [])
    try:
        with open_store(store_path) as store:
            members = [i for name in split.split(",") if name.strip() for i in store.ids(name.strip())]
    except TprnaError:  # the split is gone from the store
        return None
    return [i for i in members if i not in excluded]


@torch.no_grad()
def predict_with_checkpoint(checkpoint: str | Path, evaluation: EvaluationSet, device: str = "auto",
                            pixel_budget: int = 4 * 128 ** 2, allow_train_overlap: bool = False,
                            warn: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Symmetrized contact probabilities of a trained checkpoint on every entry (refused
    when an entry was among its training entries, see the module doc)."""
    ckpt = load_checkpoint(checkpoint)
    check_training_overlap(ckpt, evaluation.labels, checkpoint, allow_train_overlap, warn, evaluation.store_path)
    spec = FeatureSpec.from_dict(ckpt["feature_spec"])
    if spec.key != evaluation.spec_key:  # by key: a set with derived channels reads its stored set's arrays
        with open_store(evaluation.store_path) as store:
            stored = store.specs[evaluation.spec_key].to_dict()
        raise TprnaError(f"model was trained on feature spec {spec.feature_set} ({ckpt['feature_spec']}) but the "
                         f"store entries have {stored}; rebuild the store with the model's spec", checkpoint)
    dataset = StoreDataset(evaluation.store_path, spec, ids=list(evaluation.labels))
    dev = resolve_device(device)
    net = ContactProbability(model_from_checkpoint(ckpt, checkpoint)).to(dev).eval()
    out = {}
    for batch_indices in length_batches(dataset.lengths, pixel_budget):
        batch = collate([dataset[i] for i in batch_indices])
        prob = net(batch["features"].to(dev), batch["mask"].to(dev)).cpu().numpy()
        for b, entry_id in enumerate(batch["ids"]):
            n = int(batch["mask"][b].sum())
            out[entry_id] = prob[b, :n, :n]
    return out


def coevolution_map(matrix: np.ndarray) -> np.ndarray:
    """APC-corrected Frobenius norms of the (L, L, q, q) blocks over the residue states
    (the gap state left out), the classic coevolution score."""
    return apc_frobenius(matrix)


def baseline_maps(evaluation: EvaluationSet) -> dict[str, dict[str, np.ndarray]]:
    """Scores of the learning-free baselines for every entry: {method: {id: L×L}}."""
    store = open_store(evaluation.store_path)
    maps: dict[str, dict[str, np.ndarray]] = {name: {} for name in BASELINES}
    try:
        spec = store.specs[evaluation.spec_key]
        for entry_id, lab in evaluation.labels.items():
            feats = store.read_features(entry_id, evaluation.spec_key)
            cov = feats.get("cov")
            if cov is not None:
                maps["APC (covariance)"][entry_id] = coevolution_map(cov)
            prec = feats.get("precision")
            if prec is None and cov is not None:
                prec = precision(cov, spec.shrinkage)
            if prec is not None:
                maps["APC (precision)"][entry_id] = coevolution_map(prec)
            if spec.molecule == "rna":
                bpp = feats.get("bpp")
                maps["Thermodynamics (bpp)"][entry_id] = (
                    np.asarray(bpp, np.float32) if bpp is not None else base_pair_probabilities(lab.sequence))
    finally:
        store.close()
    return {name: m for name, m in maps.items() if m}


def read_pair_scores(path: str | Path, length: int) -> np.ndarray:
    """A pair-score file (``i j score`` per line, 1-based, ``#`` comments) as a symmetric
    L×L matrix; pairs not listed score −inf (ranked last)."""
    scores = np.full((length, length), -np.inf)
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise TprnaError(f"cannot read pair scores ({e.strerror})", path) from None
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        try:
            i, j, value = int(fields[0]) - 1, int(fields[1]) - 1, float(fields[2])
        except (ValueError, IndexError):
            raise TprnaError(f"line {lineno}: expected 'i j score'", path) from None
        if not (0 <= i < length and 0 <= j < length):
            raise TprnaError(f"line {lineno}: pair ({i + 1}, {j + 1}) outside a query of length {length}", path)
        scores[i, j] = scores[j, i] = value
    return scores


def peer_maps(compare_dir: str | Path, lengths: Mapping[str, int]) -> dict[str, dict[str, np.ndarray]]:
    """Published predictions under ``compare_dir``: one sub-folder per method holding
    ``<id>*.txt`` pair-score files (or the files directly, named after the folder)."""
    root = Path(compare_dir)
    if not root.is_dir():
        raise TprnaError("--compare must be a folder of pair-score files", root)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) or [root]
    maps: dict[str, dict[str, np.ndarray]] = {}
    for folder in folders:
        method = _method_name(folder.name)
        for entry_id, length in lengths.items():
            hits = sorted(folder.glob(f"{entry_id}_*.txt")) + sorted(folder.glob(f"{entry_id}.txt"))
            if hits:
                maps.setdefault(method, {})[entry_id] = read_pair_scores(hits[0], length)
    return maps


def _method_name(folder: str) -> str:
    known = {"SingleFilterMatrix": "CoCoNet (7x7)", "TwoFilterMatrices": "CoCoNet (2x7x7)",
             "EVC_RAW_DATA_TESTSET": "EVcouplings"}
    return known.get(folder, folder.replace("_RAW_DATA_TESTSET", ""))


def score_maps(maps: Mapping[str, np.ndarray], labels: Mapping[str, Labels]) -> dict:
    """Per-RNA and averaged precisions of one method on the entries it covers."""
    ids = [i for i in labels if i in maps]
    per_rna = [contact_precisions(maps[i], labels[i].contacts, labels[i].observed) for i in ids]
    if not per_rna:
        return {"ids": [], "per_rna": [], "summary": {}}
    return {"ids": ids, "per_rna": per_rna,
            "summary": summarize(per_rna, [labels[i].neff for i in ids])}


def attainable(labels: Mapping[str, Labels]) -> dict:
    """:func:`score_maps` of a perfect predictor (each RNA's labels as its map): top-k
    precision divides by k, so an RNA with fewer than k observed contacts in a range cannot
    reach 1 there, and a subset's mean is capped below 1 by such RNAs."""
    return score_maps({i: lab.contacts.astype(np.float32) for i, lab in labels.items()}, labels)


def attainable_line(result: dict, subset: str) -> str:
    """One line under a subset's table: what a perfect predictor scores there (long range)."""
    summary = result["summary"].get(subset)
    if summary is None:
        return ""
    figures = ", ".join(f"top-{k} {summary['precision'][('long', k)]:.3f}" for k in ("L", "L/2", "L/5", "L/10"))
    return (f"\nAttainable long-range precision (a perfect predictor, these labels): {figures}. "
            "Fewer true contacts than k cap top-k below 1.\n")


@dataclass
class EvaluationResult:
    results: dict  # method → score_maps output
    neff: dict[str, float]
    markdown: str


def run_evaluation(checkpoint: str | None, store_path: str, split: str | None, out: Path,
                   features: str | None = None, name: str | None = None,
                   compare: Path | None = None, baselines: bool = True,
                   map_ids: list[str] | None = None, device: str = "auto",
                   allow_train_overlap: bool = False,
                   warn: Callable[[str], None] | None = None) -> EvaluationResult:
    """Score a checkpoint, the baselines and published peers on one split and write
    ``results.md`` / ``.csv`` / ``.json``, contact-map PNGs and precision-vs-Neff.
    ``warn`` receives one-line warnings (see :func:`check_training_overlap`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    evaluation = load_evaluation_set(store_path, split, features)
    labels = evaluation.labels
    maps: dict[str, dict[str, np.ndarray]] = {}
    if checkpoint:
        row = name or load_checkpoint(checkpoint)["model_config"]["name"]
        maps[row] = predict_with_checkpoint(checkpoint, evaluation, device,
                                            allow_train_overlap=allow_train_overlap, warn=warn)
    if baselines:
        maps.update(baseline_maps(evaluation))
    if compare:
        maps.update(peer_maps(compare, {i: lab.contacts.shape[0] for i, lab in labels.items()}))
    if not maps:
        raise TprnaError("nothing to evaluate: give a checkpoint, --baselines or --compare")
    results = {method: score_maps(m, labels) for method, m in maps.items()}
    neff = {i: lab.neff for i, lab in labels.items()}

    subsets = [s for s in ("all", *NEFF_SUBSETS)
               if any(s in r["summary"] for r in results.values())]
    ceiling = attainable(labels)
    text = "".join(f"\n### {subset} ({split or 'all entries'})\n\n{markdown_table(results, subset)}"
                   f"{attainable_line(ceiling, subset)}" for subset in subsets)
    (out / "results.md").write_text(f"# Contact precision on {store_path}\n{text}")
    write_csv(results, out / "results.csv")
    (out / "results.json").write_text(json.dumps(
        {m: {"ids": r["ids"], "per_rna": [{f"{k[0]}|{k[1]}": v for k, v in p.items()} for p in r["per_rna"]],
             "summary": {s: {"n": v["n"], "precision": {f"{k[0]}|{k[1]}": x for k, x in v["precision"].items()}}
                         for s, v in r["summary"].items()}}
         for m, r in results.items()} | {"_neff": neff}, indent=1))
    shown = next(iter(maps))
    for entry_id in (map_ids or sorted(labels)[:3]):
        if entry_id not in labels or entry_id not in maps[shown]:
            raise TprnaError(f"no entry {entry_id!r} in split {split} to draw", store_path)
        lab = labels[entry_id]
        plot_contact_map(maps[shown][entry_id], lab.contacts, lab.observed, f"{entry_id} ({shown})",
                         out / f"map_{entry_id}.png")
    plot_precision_vs_neff(results, neff, out / "precision_vs_neff.png")
    return EvaluationResult(results, neff, text)
