#!/usr/bin/env python
"""Levers on the shipped recipe that need no new features, measured on validation only.

The release's search stage trains the shipped recipe twice (seeds 0 and 1) without 14 coconet
train families (``results/release/choice.json``, ``coupling_stage.held_out``); those runs
(``runs/release/held_out_families``) score each lever here on those families with their Rfam
alignments, long-range top-L, each seed and the average of the two (the shipped model is such
an average).  The test families are never read.

- **Members.** With ``--extra NAME=a.onnx,b.onnx`` (runs of the same recipe trained otherwise,
  e.g. with another crop), the mean over every k-member subset of the pooled runs' averages.
- **Alignment filters at prediction time.** Rows covering less than a fraction of the query's
  residues dropped; a greedy identity filter (hhfilter-like: a row stays when it is below the
  threshold to every row kept so far).
- **Test-time views.** The full alignment averaged with two random half-depth cuts (the query
  kept), the cut the network saw in training (depth sampling).
- **Windows.** RNAs longer than the training crop predicted in crop-sized windows (stride
  half the crop), averaged where they overlap; pairs no window covers keep the whole-RNA map.
- **The raw couplings.** The prediction blended with the input's own plm map (scaled to its
  maximum).
- **Homolog views.** Up to k of the alignment's rows that may stand in for its query
  (``tprna.data.homolog_rows``: ≥ 90 % coverage, < 90 % identity), spread evenly over their
  identity to it, each put first as the query of the same alignment on the columns where it
  has a residue (its own bpp, profile and couplings); its map, on those columns, joins the
  query's own pair by pair: a consensus over the family's sequences instead of one sequence's
  fold.
- **On four networks.** The shipped model averages four, so every lever is measured again on
  the runs of the ensemble stage's recipes (``choice.json``, ``ensemble_stage``: held-out runs
  of seeds 0–3), each run alone and the four averaged.
- **How many networks.** Those runs pooled (two recipes, four seeds each): the average of every
  k of them, for each k, with alignments.

Writes ``results/VALIDATION.md`` and records its rows in ``results/levers_validation.json``;
without the runs (a fresh clone), or with ``--from-record``, the recorded rows are shown again.

    python scripts/validation_levers.py [--extra 'crop 192=a.onnx,b.onnx'] [--data ../shared/data] [--from-record]
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from alignment_report import subsample  # noqa: E402
from feature_cache import shared_features  # noqa: E402
from release_benchmarks import benchmark_arguments  # noqa: E402
from search_benchmark import KEY, family_labels, stage_models  # noqa: E402
from tprna import features  # noqa: E402
from tprna.contract import pad_batch  # noqa: E402
from tprna.data import homolog_rows, query_shares  # noqa: E402
from tprna.evaluate import score_maps  # noqa: E402
from tprna.msa import MSA  # noqa: E402
from tprna.serve import Predictor  # noqa: E402
from tprna.serve.items import serving_input  # noqa: E402
from train_release import CROP, average_maps  # noqa: E402

STRIDE = CROP // 2  # windows of the release's training crop, overlapping by half
VIEW_FRACTION, VIEW_SEEDS = 0.5, (1, 2)
HOMOLOG_VIEWS = (2, 4, 8)  # at most this many homologs each stand in for the query once
BLEND_WEIGHTS = (0.1, 0.2, 0.3)


def rows(msa: MSA, keep: np.ndarray) -> MSA:
    return dataclasses.replace(msa, ids=tuple(msa.ids[i] for i in keep), codes=np.ascontiguousarray(msa.codes[keep]))


def covered(msa: MSA, fraction: float) -> MSA:
    """The rows holding a residue in at least ``fraction`` of the query's residue columns (the
    query always)."""
    share = query_shares(msa.codes, msa.alphabet.gap)[0]
    share[0] = 1.0
    return rows(msa, np.flatnonzero(share >= fraction))


def identity_filtered(msa: MSA, max_identity: float) -> MSA:
    """Greedy redundancy filter in alignment order: a row stays when its identity (share of
    equal columns) to every row kept so far is below ``max_identity``; the query stays."""
    keep = [0]
    for n in range(1, msa.depth):
        if (msa.codes[keep] == msa.codes[n]).mean(axis=1).max() < max_identity:
            keep.append(n)
    return rows(msa, np.array(keep))


def depth_view(msa: MSA, fraction: float, seed: int) -> MSA:
    """The query and a random ``fraction`` of the other rows (alignments of ≤ 8 rows whole)."""
    if msa.depth <= 8:
        return msa
    return subsample(msa, max(2, int(round(msa.depth * fraction))), np.random.default_rng(seed))


def view_rows(msa: MSA, k: int) -> list[int]:
    """Up to ``k`` rows that may stand in for the query (:func:`tprna.data.homolog_rows`),
    spread evenly over their identity to it (least identical first; every one when fewer)."""
    eligible = homolog_rows(msa.codes, msa.alphabet.gap)
    if len(eligible) <= k:
        return [int(r) for r in eligible]
    identity = query_shares(msa.codes, msa.alphabet.gap)[1]
    ranked = eligible[np.argsort(identity[eligible], kind="stable")]
    return [int(ranked[i]) for i in np.unique(np.round(np.linspace(0, len(ranked) - 1, k)).astype(int))]


def homolog_view(msa: MSA, row: int) -> tuple[MSA, np.ndarray]:
    """The alignment seen from ``row``: that row first, as the query, on the (query) columns
    where it has a residue, the other rows after it in their order; and those columns."""
    columns = np.flatnonzero(msa.codes[row] != msa.alphabet.gap)
    order = [row] + [r for r in range(msa.depth) if r != row]
    return dataclasses.replace(msa, ids=tuple(msa.ids[r] for r in order), query_text="",  # not the query's now
                               codes=np.ascontiguousarray(msa.codes[np.ix_(order, columns)])), columns


def with_views(whole: np.ndarray, views: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``whole`` (L, L) averaged, pair by pair, with each view's map on the pairs of its
    columns ((map, columns) as :func:`homolog_view` gives them)."""
    total, count = whole.astype(np.float64), np.ones(whole.shape)
    for prob, columns in views:
        total[np.ix_(columns, columns)] += prob
        count[np.ix_(columns, columns)] += 1
    return (total / count).astype(np.float32)


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Starts of ``crop``-long windows every ``stride``, the last one ending at ``length``."""
    if length <= crop:
        return [0]
    return sorted(set(range(0, length - crop + 1, stride)) | {length - crop})


def windowed(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, whole: np.ndarray,
             crop: int = CROP, stride: int = STRIDE) -> np.ndarray:
    """``predict`` (C, l, l) → (l, l) on each diagonal window of ``x`` (C, L, L), averaged where
    windows overlap; pairs no window covers keep ``whole``."""
    length = x.shape[-1]
    if length <= crop:
        return whole
    total, count = np.zeros((length, length)), np.zeros((length, length))
    for s in window_starts(length, crop, stride):
        part = slice(s, s + crop)
        total[part, part] += predict(np.ascontiguousarray(x[:, part, part]))
        count[part, part] += 1
    return np.where(count > 0, total / np.maximum(count, 1), whole).astype(np.float32)


def blended(prob: np.ndarray, coupling: np.ndarray, weight: float) -> np.ndarray:
    """``(1 − w)·prob + w·coupling / max(coupling)``."""
    return (1 - weight) * prob + weight * coupling / max(float(coupling.max()), 1e-6)


def emptied(filtered: dict[str, MSA]) -> str:
    """How many alignments a filter cut to the query alone (a shallow alignment of fragments)."""
    alone = sorted(i for i, m in filtered.items() if m.depth == 1)
    return f"{len(alone)} alignments cut to the query alone ({', '.join(alone)})" if alone else ""


def measure(models: list[Predictor], extra: list[Predictor], msas: dict,
            score: Callable) -> tuple[dict[str, dict], list[dict]]:
    """{lever: {"seeds": [...], "average": x, "cost": what it adds to a prediction, "note": …}},
    and the models' baseline maps."""
    out: dict[str, dict] = {}

    def lever(name: str, per_model: Callable[[Predictor], dict], cost: str, note: str = "") -> None:
        maps = [per_model(p) for p in models]
        out[name] = {"seeds": [score(m) for m in maps], "average": score(average_maps(maps)), "cost": cost,
                     "note": note}
        print(f"{name}: {out[name]}", file=sys.stderr, flush=True)

    def given(inputs: dict) -> Callable[[Predictor], dict]:
        return lambda p: {r.id: r.probabilities for r in p.predict(list(inputs.items()))}

    full: dict[int, dict] = {}

    def baseline(p: Predictor) -> dict:
        full[id(p)] = given(msas)(p)
        return full[id(p)]
    lever("the Rfam alignment (baseline)", baseline, "")
    for fraction in (0.5, 0.75):
        filtered = {i: covered(m, fraction) for i, m in msas.items()}
        lever(f"rows covering ≥ {fraction:.0%} of the query", given(filtered), "none", emptied(filtered))
    filtered = {i: identity_filtered(m, 0.9) for i, m in msas.items()}
    lever("rows < 90 % identical to each other (greedy)", given(filtered), "none", emptied(filtered))
    views = [{i: depth_view(m, VIEW_FRACTION, s) for i, m in msas.items()} for s in VIEW_SEEDS]
    lever(f"the alignment and {len(views)} half-depth views, averaged",
          lambda p: average_maps([full[id(p)]] + [given(v)(p) for v in views]),
          f"{len(views)} more feature computations (plm fits) and network passes")
    for k in HOMOLOG_VIEWS:
        seen = {f"{i}@{row}": (i, *homolog_view(m, row)) for i, m in msas.items() for row in view_rows(m, k)}

        def joined(p: Predictor, seen: dict = seen) -> dict:
            maps = given({name: view for name, (_, view, _) in seen.items()})(p)
            return {i: with_views(full[id(p)][i], [(maps[n], c) for n, (j, _, c) in seen.items() if j == i])
                    for i in msas}
        lever(f"up to {k} homolog views, joined pair by pair", joined,
              f"up to {k} more feature computations and network passes",
              f"{len(seen)} views, {len({j for j, _, _ in seen.values()})} of {len(msas)} alignments")

    def windows(p: Predictor) -> dict:
        def predict(x: np.ndarray) -> np.ndarray:
            return p.runner.run(*pad_batch([x]))[0]
        return {i: windowed(predict, serving_input(m, p.spec)[0], full[id(p)][i]) for i, m in msas.items()}
    long = sum(m.length > CROP for m in msas.values())
    lever(f"windows of {CROP} (stride {STRIDE}) on longer RNAs", windows, "a network pass per window",
          f"{long} of {len(msas)} RNAs longer than {CROP}")
    plm = {i: features.make_features(m, models[0].spec)["plm"].astype(np.float32) for i, m in msas.items()}
    for w in BLEND_WEIGHTS:
        lever(f"blended with the raw plm map, weight {w}",
              lambda p, w=w: {i: blended(full[id(p)][i], plm[i], w) for i in msas}, "none")
    if extra:  # ensemble size: the mean over every k-member subset of the pooled runs
        pooled = [full[id(p)] for p in models] + [given(msas)(p) for p in extra]
        for k in range(1, len(pooled) + 1):
            figures = subset_figures(pooled, k, score)
            out[f"{k} of {len(pooled)} networks averaged (mean over subsets)"] = {
                "seeds": [], "average": round(float(np.mean(figures)), 4),
                "cost": f"{k - len(models)} more network pass{'es' * (k - len(models) > 1)}" if k > len(models) else "",
                "note": f"{len(figures)} subset{'s' * (len(figures) > 1)}"}
    return out, [full[id(p)] for p in models]


def subset_figures(pooled: list[dict], k: int, score: Callable) -> list[float]:
    """The score of the average of every ``k``-member subset of the pooled runs' maps."""
    return [score(average_maps([pooled[j] for j in c])) for c in itertools.combinations(range(len(pooled)), k)]


def ensemble_sizes(pooled: list[dict], score: Callable) -> dict[str, dict]:
    """{k: {"mean", "low", "high", "subsets"}} over every k-member subset of the pooled runs:
    how far averaging more networks goes."""
    out = {}
    for k in range(1, len(pooled) + 1):
        figures = subset_figures(pooled, k, score)
        out[str(k)] = {"mean": round(float(np.mean(figures)), 4), "low": min(figures), "high": max(figures),
                       "subsets": len(figures)}
    return out


def four_verdict(record: dict[str, dict]) -> str:
    """The best lever on four networks, averaged over the recipes (the stages' rule), in one
    sentence."""
    base = "the Rfam alignment (baseline)"
    gains = {name: round(float(np.mean([rows[name]["average"] - rows[base]["average"] for rows in record.values()])), 4)
             for name in next(iter(record.values())) if name != base}
    best = max(gains, key=gains.get)
    return (f"Averaged over the recipes, the best lever on four networks, {best}, moves their average by "
            f"{gains[best]:+.3f}" + (": none moves it at all." if gains[best] <= 0 else "."))


def sizes_table(sizes: dict[str, dict]) -> list[str]:
    lines = ["| networks averaged | subsets | mean | lowest | highest |", "|---:|---:|---:|---:|---:|"]
    return lines + [f"| {k} | {r['subsets']} | {r['mean']:.3f} | {r['low']:.3f} | {r['high']:.3f} |"
                    for k, r in sizes.items()]


def sizes_verdict(sizes: dict[str, dict], shipped: int) -> str:
    """What ``shipped`` networks give of the gain that all the pooled ones make over one."""
    one, top = sizes["1"]["mean"], sizes[str(max(map(int, sizes)))]["mean"]
    share = (sizes[str(shipped)]["mean"] - one) / (top - one) if top > one else 1.0
    return (f"Averaging {shipped} networks (as the shipped model does) gives {share:.0%} of the "
            f"{top - one:+.3f} that all {max(map(int, sizes))} add over one network.")


def table(rows: dict[str, dict]) -> list[str]:
    base = rows["the Rfam alignment (baseline)"]["average"]
    n = len(rows["the Rfam alignment (baseline)"]["seeds"])
    lines = ["| lever | " + "".join(f"seed {s} | " for s in range(n)) + "average of the seeds | against the baseline | "
             "added to a prediction | note |", "|---|" + "---:|" * (n + 2) + "---|---|"]
    for name, r in rows.items():
        seeds = [f"{s:.3f}" for s in r["seeds"]] or [""] * n
        lines.append(f"| {name} | {' | '.join(seeds)} | {r['average']:.3f} | {r['average'] - base:+.3f} | "
                     f"{r['cost']} | {r['note']} |")
    return lines


def verdict(rows: dict[str, dict]) -> str:
    """The best lever against the baseline, in one sentence."""
    base = rows["the Rfam alignment (baseline)"]["average"]
    name, best = max(((n, r["average"]) for n, r in rows.items() if not n.startswith("the Rfam")),
                     key=lambda t: t[1])
    cost = rows[name]["cost"]
    return (f"The best lever, {name}, moves the average of the seeds by {best - base:+.3f}"
            + (f", at the cost of {cost} per prediction." if cost and cost != "none" else "."))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", action="append", default=[],
                        help="NAME=a.onnx[,b.onnx]: more runs of the recipe for the members rows")
    parser.add_argument("--record", type=Path, default=REPO / "results" / "levers_validation.json")
    parser.add_argument("--from-record", action="store_true", help="show the recorded rows; measure nothing")
    args = benchmark_arguments(parser, REPO / "results" / "VALIDATION.md").parse_args()
    choice = json.loads((args.work / "choice.json").read_text())
    ids = choice["coupling_stage"]["scored"]
    recipe = choice["search_stage"]["chosen_recipe"]
    record = json.loads(args.record.read_text()) if args.record.is_file() else {}
    models = [] if args.from_record else [p for _, p in stage_models(recipe, (0, 1), args.work / "work")]
    ensemble = choice.get("ensemble_stage", {})
    four = {} if args.from_record else {r: [p for _, p in stage_models(r, ensemble["seeds"], args.work / "work")]
                                        for r in ensemble.get("aligned", {})}
    four = {r: m for r, m in four.items() if len(m) == len(ensemble["seeds"])}
    if len(models) == 2 or four:
        labels, msas = family_labels(args.data, args.store, ids)

        def score(maps: dict) -> float:
            return round(float(score_maps(maps, labels)["summary"]["all"]["precision"][KEY]), 4)
        with shared_features(args.work / "feature_cache"):
            if len(models) == 2:
                extra = [Predictor(Path(f), device="cpu") for spec in args.extra
                         for f in spec.partition("=")[2].split(",")]
                record.update(recipe=recipe, families=ids, extra=[spec.partition("=")[0] for spec in args.extra],
                              rows=measure(models, extra, msas, score)[0])
            pooled = []
            for r, runs in four.items():  # the ensemble stage's families are the coupling stage's
                rows, plain = measure(runs, [], msas, score)
                record.setdefault("four_networks", {})[r] = rows
                pooled += plain
                base = rows["the Rfam alignment (baseline)"]["average"]
                if base != ensemble["aligned"][r]["all"]:  # the same runs on the same families
                    print(f"{r}: the baseline {base} is not the ensemble stage's {ensemble['aligned'][r]['all']}",
                          file=sys.stderr)
            if len(four) > 1:
                record["ensemble_sizes"] = {"recipes": list(four), "sizes": ensemble_sizes(pooled, score)}
        args.record.write_text(json.dumps(record, indent=1) + "\n")
    if "rows" not in record:
        print(f"no runs of {recipe} under runs/release/held_out_families and no {args.record}", file=sys.stderr)
        return 2
    if len(models) < 2 and not args.from_record:
        print(f"the search stage's runs of {recipe} are not on disk: showing {args.record.name}", file=sys.stderr)
    text = [
        "# Levers on the shipped recipe, on validation", "",
        f"The search stage's two runs of `{record['recipe']}` (seeds 0 and 1), trained without the "
        f"{len(record['families'])} coconet train families that score them here with their Rfam alignments "
        f"({', '.join(record['families'])}): long-range top-L. The test families are never read. Written by "
        "`python scripts/validation_levers.py" + "".join(f" --extra '{n}=…'" for n in record["extra"]) + "`; "
        "what each lever does is in the script's docstring." + (
            f" Members rows pool those runs with {', '.join(record['extra'])}." if record["extra"] else ""), "",
        *table(record["rows"]), "", verdict(record["rows"]), ""]
    if record.get("four_networks"):
        text += [
            "## The same levers on four networks", "",
            f"The shipped model averages four networks, so every lever is measured again on the ensemble stage's "
            f"held-out runs: seeds {', '.join(map(str, ensemble.get('seeds', (0, 1, 2, 3))))} of each recipe, "
            f"trained without the same {len(record['families'])} families, each run alone and the four averaged. "
            "Every lever acts on the alignment: the single sequences are not scored here."]
        for r, rows in record["four_networks"].items():
            text += ["", f"`{r}`:", "", *table(rows), "", verdict(rows)]
        text += ["", four_verdict(record["four_networks"]), ""]
    if record.get("ensemble_sizes"):
        pooled = record["ensemble_sizes"]
        text += [
            "## How many networks", "",
            f"The same runs pooled ({len(pooled['recipes'])} recipes, {max(map(int, pooled['sizes']))} networks, "
            "the Rfam alignments): the average of every k of them, its mean, lowest and highest over the "
            f"subsets. The {len(pooled['recipes'])} recipes' runs stand in for more seeds of one.", "",
            *sizes_table(pooled["sizes"]), "",
            sizes_verdict(pooled["sizes"], len(ensemble.get("chosen_seeds", ensemble.get("seeds", (0, 1, 2, 3))))), ""]
    args.out.write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
