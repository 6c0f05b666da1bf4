#!/usr/bin/env python
"""What the alignment adds: exported models side by side, each with its input's alignment and
with the query alone (an MSA of one), scored by tpRNA's own metrics through the serving path:

1. the 14 coconet test families, per Neff subset, beside the peers and thermodynamics;
2. the RNA-Puzzles targets < 70 % identical to every training RNA (both modes);
3. the same coconet families with their alignments cut to fixed depths (the query plus
   random rows): precision against Neff on the *same* families, which the Neff subsets of
   (1) cannot show (they hold different families);
4. per recipe, the mean and spread over its seeds of the long-range figures above.

Writes ``results/ALIGNMENT.md`` and ``results/alignment_depth.png``, and puts the summary in
``results/REPORT.md`` as its section "What the alignment adds" (between markers that
``scripts/reproduce.py`` keeps when it rewrites the report).

    python scripts/alignment_report.py RECIPE=seed0.onnx[,seed1.onnx…] [RECIPE=… …]

The first model of each recipe fills the full tables; every seed enters the summary.  The
summary rows and depth curves of every recipe ever scored are kept in
``results/alignment_record.json`` (in git, as the runs are not): a recipe scored again replaces
its row (with ``--add-seeds``, its new seeds join the recorded ones, for a recipe whose earlier
runs are gone), the others keep theirs, so the report keeps every option measured.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import pickle
import shlex
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from feature_cache import shared_features  # noqa: E402
from release_benchmarks import (OURS, benchmark_arguments, coconet_benchmark,  # noqa: E402
                                puzzles_benchmark, training_sequences)
from tprna.data import query_and_random_rows  # noqa: E402
from tprna.evaluate import attainable, attainable_line, load_evaluation_set, score_maps  # noqa: E402
from tprna.msa import MSA, read_msa  # noqa: E402
from tprna.report import markdown_table  # noqa: E402
from tprna.serve import Predictor  # noqa: E402
from tprna.store.schema import file_sha256  # noqa: E402
from train_release import CROP, HELD_OUT_FAMILIES, WINDOW_CROP  # noqa: E402

SUBSETS = ("all", "neff<1", "1<=neff<10", "neff>=10")
DEPTHS = (1, 4, 16, 64, 256)  # rows kept (the query included); the full alignment is the last point
DRAWS = 2  # random subsets per family and depth
KEY = "long|L"
SECTION_BEGIN = "<!-- alignment_report.py: begin -->"
SECTION_END = "<!-- alignment_report.py: end -->"


def renamed(results: dict, old: str, new: str) -> dict:
    return {m.replace(old, new): r for m, r in results.items()}


def long_l(result: dict, subset: str = "all") -> float:
    summary = result["summary"].get(subset)
    return float(summary["precision"][("long", "L")]) if summary else math.nan


def subsample(msa: MSA, depth: int, rng: np.random.Generator) -> MSA:
    rows = query_and_random_rows(msa.depth, depth, rng)  # the cut training's depth sampling makes
    return MSA(ids=tuple(msa.ids[r] for r in rows), codes=msa.codes[rows], alphabet=msa.alphabet,
               source=msa.source, query_text=msa.query_text)


def depth_inputs(data: Path, labels: dict) -> list[tuple[str, int, MSA]]:
    """(family, depth, alignment) for every family deeper than each depth, DRAWS subsets each,
    the full alignment last (depth 0 stands for "all rows")."""
    manifest = {r["id"]: r for r in csv.DictReader(open(data / "coconet" / "manifest.csv"))}
    out = []
    for family in labels:
        msa = read_msa(data / "coconet" / manifest[family]["msa"])
        rng = np.random.default_rng(sum(map(ord, family)))  # the same subsets for every model
        for depth in DEPTHS:
            if depth < msa.depth:
                out += [(family, depth, subsample(msa, depth, rng)) for _ in range(DRAWS if depth > 1 else 1)]
        out.append((family, 0, msa))
    return out


def depth_curve(predictor: Predictor, inputs: list, labels: dict) -> dict[int, tuple[float, float, int]]:
    """depth → (mean Neff, mean long top-L precision, n predictions) over the families."""
    named = [(f"{family}~{depth}~{k}", msa) for k, (family, depth, msa) in enumerate(inputs)]
    predictions = {p.id: p for p in predictor.predict(named)}
    by_depth: dict[int, list[tuple[float, float]]] = {}
    for (name, _), (family, depth, _) in zip(named, inputs):
        p = predictions[name]
        result = score_maps({family: p.probabilities}, {family: labels[family]})
        by_depth.setdefault(depth, []).append((float(p.neff), long_l(result)))
    return {d: (float(np.mean([n for n, _ in v])), float(np.mean([q for _, q in v])), len(v))
            for d, v in sorted(by_depth.items(), key=lambda kv: kv[0] or 10 ** 9)}


def spread(values: list[float]) -> str:
    """mean ± half the range over seeds (one seed: the value)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {(max(values) - min(values)) / 2:.3f}"


def summary_table(rows: dict[str, list[dict]]) -> list[str]:
    cols = [("alignment", "coconet test (14)"), ("alone", "query alone"), ("gain", "gain"),
            ("neff<1", "alignment, neff<1"), ("1<=neff<10", "1≤neff<10"), ("neff>=10", "neff≥10"),
            ("puzzles", "RNA-Puzzles, alignment"), ("puzzles_alone", "RNA-Puzzles, alone")]
    lines = ["| recipe | seeds | " + " | ".join(t for _, t in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for recipe, seeds in rows.items():
        cells = [spread([s[k] for s in seeds]) for k, _ in cols]
        lines.append(f"| {recipe} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def stage_agreement(summary: dict[str, list[dict]], choice: dict) -> str:
    """Whether the release's stages chose as the test would have: each ``stage: …`` row's mean
    with alignments beside the validation mean its stage recorded (the held-out families, which
    chose), as a rank correlation; empty with fewer than three such recipes.  A check on the
    validation set, never a choice."""
    from scipy.stats import spearmanr

    # the training stages' rows only: the ensemble stage's score averages of networks, not a recipe's mean
    validation = {recipe: row["mean"] for key, stage in choice.items() if key.endswith("_stage")
                  for recipe, row in stage.get("aligned", {}).items() if "mean" in row}
    pairs = {r: (validation[r], np.mean([s["alignment"] for s in summary[f"stage: {r}"]]))
             for r in validation if f"stage: {r}" in summary}
    if len(pairs) < 3:
        return ""
    rho = spearmanr([v for v, _ in pairs.values()], [t for _, t in pairs.values()]).statistic
    chosen = max(pairs, key=lambda r: pairs[r][0])
    rank = 1 + sum(t > pairs[chosen][1] for _, t in pairs.values())
    return (f"Does validation choose what the test would? Over the {len(pairs)} stage recipes, Spearman ρ = {rho:.2f} between "
            "each recipe's mean on the held-out families with their alignments (`choice.json`, which chose) "
            f"and its `stage:` row above. The best on validation, `{chosen}` ({pairs[chosen][0]:.3f}), is "
            f"number {rank} of {len(pairs)} on the test ({pairs[chosen][1]:.3f}).")


def attainable_text(ceiling: dict, summary: dict[str, list[dict]]) -> str:
    """What a perfect predictor scores on the test families (long top-L, per Neff subset), the
    families that cap it, and the shipped rows' share of it: top-L divides by L, so a family
    with fewer long-range contacts than L cannot reach 1, and a subset holding one is capped."""
    figure = {s: long_l(ceiling, s) for s in SUBSETS}
    capped = [f"{i} ({v:.2f})" for i, r in zip(ceiling["ids"], ceiling["per_rna"]) if (v := r[("long", "L")]) < 1]
    text = (f"A perfect predictor (the labels as the prediction) scores long top-L {figure['all']:.3f} on the "
            f"{len(ceiling['ids'])} families, and {figure['neff<1']:.3f} / {figure['1<=neff<10']:.3f} / {figure['neff>=10']:.3f} on "
            f"the Neff subsets: {len(capped)} families have fewer long-range contacts than L and cap their "
            f"subset ({', '.join(capped)}), so the subsets' figures are not on one scale.")
    for recipe, seeds in summary.items():
        if "(shipped)" in recipe:
            share = {s: np.mean([row["alignment" if s == "all" else s] for row in seeds]) / figure[s]
                     for s in SUBSETS}
            text += (f" The shipped model, with alignments, reaches {share['all']:.2f} of what is attainable on "
                     f"all {len(ceiling['ids'])}, and {share['neff<1']:.2f} / {share['1<=neff<10']:.2f} / {share['neff>=10']:.2f} "
                     "of it on the Neff subsets.")
    return text


def depth_table(curves: dict[str, dict]) -> list[str]:
    depths = list(next(iter(curves.values())))
    head = ["depth"] + [("all" if d == 0 else str(d)) for d in depths]
    lines = ["| recipe | " + " | ".join(head[1:]) + " |", "|---|" + "---:|" * len(depths)]
    first = next(iter(curves.values()))
    lines.append("| mean Neff | " + " | ".join(f"{first[d][0]:.2f}" for d in depths) + " |")
    for recipe, curve in curves.items():
        lines.append(f"| {recipe} | " + " | ".join(f"{curve[d][1]:.3f}" for d in depths) + " |")
    return lines


def plot_depth(curves: dict[str, dict], path: Path) -> None:
    import matplotlib
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab20"].colors  # one colour per recipe: the default cycle repeats after 10
    markers = "osD^v<>ph*"
    for k, (recipe, curve) in enumerate(curves.items()):
        ax.plot([max(v[0], 0.05) for v in curve.values()], [v[1] for v in curve.values()],
                marker=markers[k % len(markers)], color=colors[k % len(colors)], label=recipe)
    ax.set_xscale("log")
    ax.set_xlabel("mean Neff of the cut alignments (log)")
    ax.set_ylabel("long-range top-L precision")
    ax.set_title("coconet test families, alignments cut to fixed depths")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def pooled_curve(curve: dict, n: int, other: dict, m: int) -> dict:
    """The depth curve of ``n`` seeds (``curve``) and ``m`` more (``other``): each depth's
    precision the seed-weighted mean, its other fields from ``other``."""
    return {d: (v[0], (curve[d][1] * n + v[1] * m) / (n + m), v[2]) for d, v in other.items()}


def merge_record(path: Path, summary: dict[str, list[dict]], curves: dict[str, dict], add_seeds: bool = False
                 ) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """The recorded recipes' summary rows and depth curves with this run's in place of theirs
    (recorded order first, new recipes after), or with ``add_seeds`` this run's seeds added to
    the recorded ones (the curve their seed-weighted mean); writes the merged record back to
    ``path``."""
    merged = json.loads(path.read_text()) if path.is_file() else {}
    for r in summary:
        seeds, curve = summary[r], {str(d): list(c) for d, c in curves[r].items()}
        old = merged.get(r) if add_seeds else None
        if old is not None:
            k, m = len(old["seeds"]), len(seeds)
            curve = pooled_curve(old["curve"], k, curve, m)
            seeds = old["seeds"] + seeds
        merged[r] = (old or {}) | {"seeds": seeds, "curve": curve}
    path.write_text(json.dumps(merged, indent=1) + "\n")
    return ({r: v["seeds"] for r, v in merged.items()},
            {r: {int(d): tuple(c) for d, c in v["curve"].items()} for r, v in merged.items()})


def put_section(report: Path, text: str) -> None:
    """Replace (or append) the marked section of ``report``."""
    old = report.read_text() if report.is_file() else ""
    block = f"{SECTION_BEGIN}\n{text.rstrip()}\n{SECTION_END}\n"
    if SECTION_BEGIN in old and SECTION_END in old:
        head, rest = old.split(SECTION_BEGIN, 1)
        new = head + block + rest.split(SECTION_END, 1)[1].lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    report.write_text(new)


def scored(path: str, data: Path, store: Path, trained: dict, inputs: list, labels: dict,
           cache: Path) -> tuple[dict, dict, dict, dict]:
    """(coconet with alignment, coconet both modes, RNA-Puzzles, depth curve) of one model,
    cached by the model's sha256 under ``cache`` (the scores are a function of the model
    and the data)."""
    digest = file_sha256(path)[:16]
    cached = cache / f"{digest}.pkl"
    if cached.is_file():
        return pickle.loads(cached.read_bytes())
    predictor = Predictor(path, device="cpu")
    alignment, single, _ = coconet_benchmark(data, predictor, store)
    found, info = puzzles_benchmark(data, predictor, trained)
    out = (alignment, single, (found, info), depth_curve(predictor, inputs, labels))
    cache.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(pickle.dumps(out))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="RECIPE=seed0.onnx[,seed1.onnx…]")
    parser.add_argument("--report", type=Path, default=REPO / "results" / "REPORT.md",
                        help="Report that gets the summary section")
    parser.add_argument("--record", type=Path, default=REPO / "results" / "alignment_record.json",
                        help="Every recipe's summary rows and depth curve, kept across runs")
    parser.add_argument("--add-seeds", action="store_true",
                        help="Add the models' seeds to their recipe's recorded ones (its earlier runs gone) "
                             "instead of replacing them")
    args = benchmark_arguments(parser, REPO / "results" / "ALIGNMENT.md").parse_args()
    leakage = json.loads((args.work / "leakage.json").read_text())
    choice = json.loads((args.work / "choice.json").read_text()) if (args.work / "choice.json").is_file() else {}
    trained = training_sequences(args.data, leakage)
    labels = load_evaluation_set(str(args.store), "test", "cov+ss").labels
    ceiling = attainable(labels)
    inputs = depth_inputs(args.data, labels)
    coconet: dict = {}
    puzzles: dict = {}
    summary: dict[str, list[dict]] = {}
    curves: dict[str, dict] = {}
    with shared_features(args.work / "feature_cache"):  # the models of one feature set share inputs
        for spec in args.models:
            recipe, _, paths = spec.partition("=")
            for seed, path in enumerate(paths.split(",")):
                print(f"{recipe}: {path}", file=sys.stderr)
                alignment, single, (found, info), curve = scored(path, args.data, args.store, trained, inputs,
                                                                 labels, args.work / "alignment_scores")
                with_msa, alone = single[OURS + ", alignment"], single[OURS + ", query alone"]
                row = {"alignment": long_l(with_msa), "alone": long_l(alone),
                       "puzzles": long_l(found[OURS + ", alignment"]),
                       "puzzles_alone": long_l(found[OURS + ", query alone"])}
                row["gain"] = row["alignment"] - row["alone"]
                row.update({s: long_l(with_msa, s) for s in SUBSETS[1:]})
                summary.setdefault(recipe, []).append(row)
                if seed == 0:
                    if not coconet:  # the peers and baselines once
                        coconet.update({m: r for m, r in alignment.items() if m != OURS})
                    coconet.update(renamed({k: v for k, v in single.items() if k.startswith(OURS)}, OURS, recipe))
                    puzzles.update(renamed({k: v for k, v in found.items() if k.startswith(OURS)}, OURS, recipe))
                    puzzles.setdefault("Thermodynamics (bpp)", found["Thermodynamics (bpp)"])
                    curves[recipe] = curve
                else:  # the depth curve of a recipe: the mean over its seeds
                    curves[recipe] = pooled_curve(curves[recipe], seed, curve, 1)
    summary, curves = merge_record(args.record, summary, curves, args.add_seeds)
    plot = args.out.parent / "alignment_depth.png"
    plot_depth(curves, plot)
    thermo = {"alignment": long_l(coconet["Thermodynamics (bpp)"]),
              "puzzles": long_l(puzzles["Thermodynamics (bpp)"])}
    section = [
        "## What the alignment adds", "",
        "Long-range top-L precision of each training recipe (MFFnet36 unless `/deep` or `/shallow`, tpLoss, "
        "protein transfer, 14 epochs unless `/long`, "
        "`scripts/train_release.py`; seed mean ± half the range), given the family's alignment and the query "
        "alone, on the 14 coconet "
        f"test families (by Neff subset: 5 / 5 / 4 families) and the clean RNA-Puzzles targets "
        f"({', '.join(info['clean'])}). Thermodynamics (ViennaRNA bpp): coconet {thermo['alignment']:.3f}, "
        f"RNA-Puzzles {thermo['puzzles']:.3f}. Recipe options: `/depth`, depth sampling every epoch (half "
        "the alignment examples cut to a random depth each epoch, a third of those to the query alone); "
        "`/homolog`, homolog sampling every epoch (half the alignment examples trained as one of their "
        "homologs alone, with its own bpp and the query's labels); `/more`, the recipe's run continued 3 "
        "epochs at lr 0.001, and `/more+depth`, `/more+homolog` the same 3 epochs with that sampling, so "
        "`/more` is their control; `/search`, each training family also seen with its query's alignment "
        "searched by nhmmer (`tprna.search`) in the training families' sequences; `/spot`, the SPOT-RNA-2D "
        "training chains with a hit in that search seen with their searched alignment too; `/sim`, the run "
        "started from a pretraining on simulated families with planted long-range helices (`tprna.simulate`); "
        "`/bppdrop`, thermodynamics dropout (half the examples still on an alignment trained each epoch "
        "without their bpp channel); `/light`, depth and homolog sampling on a quarter of the alignment "
        "examples each instead of half, `/heavy` on three quarters; `/long`, 21 epochs instead of 14 (the "
        "learning rate stepping down after 14); `/far`, each long-range pair (|i − j| ≥ 24) weighted 3 times in "
        "the loss; `/swa`, the model the mean of the weights after each epoch from the learning-rate step on "
        "(weight averaging); `/hquery`, half the examples still on an alignment trained each epoch with one of "
        "the family's homologs standing in for the query (its own bpp beside the alignment's couplings on the "
        "columns it covers); `/deep`, MFFnet42 (14 MFF blocks instead of 12) instead of MFFnet36, `/shallow` "
        "MFFnet30 (10 blocks), each pretrained on the protein chains likewise; `/repeat`, each example on an "
        "alignment trained twice an epoch (each copy its own crop and draws), the single sequences once; "
        f"`/window`, training windows of {WINDOW_CROP} residues instead of {CROP}. "
        "Feature sets `cov+ss+apc`, "
        "`+dca`, `+plm` (pseudo-likelihood couplings, `tprna.plmdca`), `+alifold`: one coupling map beside "
        "`cov` and `bpp`; `+neff`: the alignment's depth, log10(1 + Neff), as one more channel; "
        "`precision+ss`: the shrunk precision matrix instead of the covariance. Written by "
        "`scripts/alignment_report.py`; full tables in "
        "`results/ALIGNMENT.md`. Levers on the shipped recipe that need no new features (more networks, "
        "alignment filters, test-time depth views and homolog views, windows, a blend with the raw couplings) are "
        "measured on validation families in `results/VALIDATION.md`; what the shipped model leaves of the evidence that "
        "any signal holds on the test families (a diagnosis, not a choice) in `results/HEADROOM.md`.",
        f"Rows of recipes not scored by the last command are kept from `{args.record.name}`; the full "
        "tables hold the recipes that command scored." + (
            " Rows named `stage: …` are runs of the release's coupling, search, spot, sim, bppdrop, light, long, "
            "heavy, far, swa, neff, hquery, deep, shallow, repeat and window stages, "
            f"trained without {HELD_OUT_FAMILIES} coconet train families (fewer training RNAs than the other rows; "
            "`results/release/choice.json`), so they compare with each other." if any(r.startswith("stage: ") for r in summary) else ""), "",
        *summary_table(summary), "",
        *([agreement, ""] if (agreement := stage_agreement(summary, choice)) else []),
        attainable_text(ceiling, summary), "",
        "The Neff subsets hold different families, so they do not show what depth does to one family. "
        f"Below, the same 14 families with their alignments cut to fixed depths (the query plus random rows, "
        f"{DRAWS} draws per depth; families shallower than a depth drop out of that column), long top-L "
        "(seed mean):", "",
        *depth_table(curves), "",
        f"![precision against depth]({plot.name})", ""]
    command = "python scripts/alignment_report.py " + shlex.join(args.models)  # quoted: recipe names have spaces
    lines = ["# What the alignment adds", "", f"Command: `{command}`", "", *section[2:], ""]
    for subset in SUBSETS:
        lines += [f"## coconet test, {subset} (seed 0 of each recipe)", "",
                  markdown_table(coconet, subset) + attainable_line(ceiling, subset)]
    lines += ["## RNA-Puzzles, clean targets (seed 0 of each recipe)", "", markdown_table(puzzles)]
    args.out.write_text("\n".join(lines))
    put_section(args.report, "\n".join(section))
    print("\n".join(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
