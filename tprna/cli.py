"""The ``tprna`` command line: a thin shell over the library (parse options, call, print).

A :class:`~tprna.errors.TprnaError` becomes one red line on stderr and exit status 1.
One idea has one option name in every command: ``--out/-o`` (what a command writes),
``--features`` (a feature-set name or a spec key), ``--device``, ``--max-batch`` (most
RNAs per batch), ``--batch-pixels`` (padded L² pixels per batch), ``--max-length``;
``--jobs`` (store-build processes), ``--workers`` (DataLoader processes) and ``--threads``
(onnxruntime intra-op threads) are three different kinds of parallelism.

Each command imports the library it calls itself, and the choice lists below are spelled
out rather than imported, so that ``tprna infer`` starts without importing torch
(tests/test_cli_options.py keeps the lists equal to the library's registries).
"""
from __future__ import annotations

import contextlib
import json
from enum import Enum
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tprna import __version__
from tprna.errors import TprnaError
from tprna.search import DEFAULT_E_VALUE, DEFAULT_ITERATIONS, DEFAULT_MAX_SEQUENCES, HomologSearch

app = typer.Typer(name="tprna", no_args_is_help=True, add_completion=True,
                  help="RNA contact-map prediction from MSAs: feature store, models, ONNX serving.")
store_app = typer.Typer(no_args_is_help=True, help="Build, inspect and verify feature stores.")
app.add_typer(store_app, name="store")

console = Console()
err_console = Console(stderr=True)

# tprna.models.MODELS, tprna.features.FEATURE_SETS, tprna.losses.LOSSES
MODEL_NAMES = ("mffnet30", "mffnet36", "mffnet42", "resnet34", "resnet36", "resnet38", "resnet40",
               "resnet42", "mobilenet33", "mobilenet33_96")
FEATURE_SET_NAMES = ("cov", "cov+ss", "precision", "precision+ss", "cov+ss+profile",
                     "cov+ss+profile+coupling", "cov+ss+apc", "cov+ss+dca", "cov+ss+alifold",
                     "cov+ss+profile+dca", "cov+ss+plm", "cov+ss+profile+plm", "cov+ss+profile+plm+neff")
LOSS_NAMES = ("ce", "wce", "tploss")
DEVICES = ("auto", "cpu", "cuda")  # and cuda:N


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    return Enum(name, {v: v for v in values}, type=str)


ModelName = _choices("ModelName", MODEL_NAMES)
Loss = _choices("Loss", LOSS_NAMES)
Molecule = _choices("Molecule", ("rna", "protein"))
Dtype = _choices("Dtype", ("float16", "float32"))
VersionPolicy = _choices("VersionPolicy", ("latest", "all"))


def _complete(values: tuple[str, ...]):
    return lambda incomplete: [v for v in values if v.startswith(incomplete)]


# --features and --device stay strings: --features also takes a spec key (12 hex digits)
# and --device cuda:N; the library checks them (an unknown one is a one-line TprnaError).
FEATURES_HELP = f"Feature set ({', '.join(FEATURE_SET_NAMES)}) or spec key"


def features_option(help: str) -> typer.models.OptionInfo:
    return typer.Option(None, "--features", metavar="SET|KEY", help=help,
                        autocompletion=_complete(FEATURE_SET_NAMES))


def device_option() -> typer.models.OptionInfo:
    return typer.Option("auto", "--device", metavar="[auto|cpu|cuda|cuda:N]",
                        help="Where the model runs: auto (CUDA when there is one), cpu, cuda or cuda:N.",
                        autocompletion=_complete(DEVICES))


def database_option(what: str) -> typer.models.OptionInfo:
    return typer.Option(None, "--database", "-d", help=f"FASTA file of nucleotide sequences (gzip or not; repeatable): {what}.")


def evalue_option() -> typer.models.OptionInfo:
    return typer.Option(DEFAULT_E_VALUE, "--evalue", help="Homology search: hits with a larger E-value are left out.")


def iterations_option() -> typer.models.OptionInfo:
    return typer.Option(DEFAULT_ITERATIONS, "--iterations", help="Homology search rounds (from the second on, with a profile of the last round's hits).")


def max_homologs_option() -> typer.models.OptionInfo:
    return typer.Option(DEFAULT_MAX_SEQUENCES, "--max-homologs", help="Homology search: at most this many hits, best first.")


def homolog_search(database: Optional[list[Path]], evalue: float, iterations: int, max_homologs: int):
    """The search the --database options ask for (many queries share every core), or None."""
    if not database:
        return None
    return HomologSearch(database, e_value=evalue, max_sequences=max_homologs, iterations=iterations, cpus=0)


def _version(value: bool) -> None:
    if value:
        console.print(f"tprna {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """tpRNA: RNA base-interaction prediction from multiple sequence alignments."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a TprnaError into one red line on stderr and exit status 1."""
    try:
        yield
    except TprnaError as e:
        err_console.print(f"error: {e}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


# --------------------------------------------------------------------------- store build


@store_app.command("build")
def store_build(
    store: Path = typer.Argument(..., help="Store path: a folder (Zarr) or a .h5 file (HDF5)."),
    inputs: Optional[list[Path]] = typer.Argument(None, help="Alignment files or folders of them."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="CSV with id,msa[,structure,chain,label,split,molecule]."),
    features: Optional[str] = features_option(f"Feature set: {', '.join(FEATURE_SET_NAMES)} (default: cov+ss for RNA, cov for protein)."),
    molecule: Molecule = typer.Option(Molecule("rna"), "--molecule", case_sensitive=False, help="Molecule type."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Processes computing entries."),
    structures: Optional[Path] = typer.Option(None, "--structures", help="Folder of PDB/mmCIF files matched by id."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Folder of label files (contact list / matrix) matched by id."),
    chain: Optional[str] = typer.Option(None, "--chain", help="Chain of the structures (default: the id's _X suffix, or the only chain)."),
    identity: float = typer.Option(0.8, "--identity", help="Sequence-identity threshold of the weights."),
    pseudocount: float = typer.Option(0.0, "--pseudocount", help="Pseudocount of the frequencies."),
    shrinkage: float = typer.Option(0.1, "--shrinkage", help="Ridge of the precision matrix (fraction of mean variance)."),
    dtype: Dtype = typer.Option(Dtype("float16"), "--dtype", help="Storage dtype of the 2-D features."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://host:8786): run the per-entry work on that cluster instead of --jobs local processes. Zarr stores only, on a filesystem every worker mounts (a path or file:// URL); needs the 'dask' extra."),
    max_length: int = typer.Option(2000, "--max-length", min=1, help="Refuse inputs whose query is longer (their L×L features take 100·L² bytes and more)."),
    memory_limit: Optional[float] = typer.Option(None, "--memory-limit", min=0.001, help="Refuse inputs whose features need more GiB than this, by estimate (default: half the memory available)."),
) -> None:
    """Compute features for new or changed inputs into STORE (unchanged ones are skipped)."""
    from tprna.features import FeatureSpec, default_feature_set
    from tprna.store import build_store, items_from_manifest, items_from_paths

    with user_errors():
        if not inputs and manifest is None:
            raise TprnaError("give alignment files / folders, or --manifest CSV")
        molecule = molecule.value
        spec = FeatureSpec(molecule=molecule, feature_set=features or default_feature_set(molecule),
                           identity=identity, pseudocount=pseudocount, shrinkage=shrinkage, dtype=dtype.value)
        items = items_from_manifest(manifest, molecule) if manifest is not None else []
        if inputs:
            items += items_from_paths(inputs, structures, labels, molecule, chain)
        report = build_store(store, items, spec, jobs=jobs, progress=not quiet, scheduler=scheduler,
                             max_length=max_length,
                             memory_limit=None if memory_limit is None else int(memory_limit * 2 ** 30))
    console.print(f"[bold]{escape(str(store))}[/]: spec {report.spec_key} ({spec.feature_set}, {spec.dtype}) — "
                  f"[green]{len(report.built)} built[/] ({len(report.replaced)} replaced), "
                  f"{len(report.skipped_unchanged)} unchanged, "
                  f"[{'red' if report.failed else 'green'}]{len(report.failed)} failed[/] "
                  f"in {report.seconds:.1f} s", highlight=False)
    if report.failed:
        # one unwrapped line per input: a table would truncate long paths to "…"
        for source, reason in report.failed:
            err_console.print(f"skipped {source}: {reason}", style="red", markup=False,
                              highlight=False, soft_wrap=True)
        raise typer.Exit(1)


# --------------------------------------------------------------------------- inspection


def _histogram(values: list[float], width: int = 30) -> list[tuple[str, int, str]]:
    edges = [0, 1, 3, 10, 30, 100, 300, float("inf")]
    counts = [sum(lo <= v < hi for v in values) for lo, hi in zip(edges, edges[1:])]
    top = max(counts) or 1
    labels = [f"{lo:g}–{hi:g}" if hi != float("inf") else f"≥{lo:g}" for lo, hi in zip(edges, edges[1:])]
    return [(lab, c, "█" * round(width * c / top)) for lab, c in zip(labels, counts)]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@store_app.command("info")
def store_info(store: Path = typer.Argument(..., help="Store path."),
               as_json: bool = typer.Option(False, "--json", help="Print the information as JSON.")) -> None:
    """Entries, feature specs, bytes on disk, Neff histogram and splits."""
    from tprna.store import open_store

    with user_errors(), open_store(store) as st:
        info = st.info()
    if as_json:
        print(json.dumps(info, default=str))
        return
    lengths, depths = info["lengths"], info["depths"]
    console.print(f"[bold]{escape(info['path'])}[/] ({info['backend']}, format v{info['format_version']}): "
                  f"{info['entries']} entries, {info['with_labels']} with labels, "
                  f"{_size(info['bytes_on_disk'])} on disk", highlight=False)
    if lengths:
        console.print(f"length {min(lengths)}–{max(lengths)}, depth {min(depths)}–{max(depths)} sequences",
                      highlight=False)
    for key, s in info["specs"].items():
        spec = s["spec"]
        console.print(f"\n[bold]spec {key}[/]: {spec['feature_set']} {spec['molecule']} identity={spec['identity']} "
                      f"pseudocount={spec['pseudocount']} shrinkage={spec['shrinkage']} dtype={spec['dtype']} "
                      f"code v{spec['code_version']} — {s['entries']} entries", highlight=False)
        if s["neff"]:
            table = Table("Neff", "entries", "", box=None, pad_edge=False)
            for label, count, bar in _histogram(s["neff"]):
                table.add_row(label, str(count), bar)
            console.print(table)
    console.print("\n[bold]splits[/]: " + (", ".join(f"{escape(k)} ({n})" for k, n in info["splits"].items()) or "none"),
                  highlight=False)


@store_app.command("ls")
def store_ls(store: Path = typer.Argument(..., help="Store path."),
             split: Optional[str] = typer.Option(None, "--split", help="Only this split's entries."),
             as_json: bool = typer.Option(False, "--json", help="One JSON object per entry, one a line.")) -> None:
    """One row per entry: id, L, N, Neff, specs, labels."""
    from tprna.store import open_store

    with user_errors(), open_store(store) as st:
        rows = [(entry_id, st.entry_meta(entry_id)) for entry_id in st.ids(split)]
    if as_json:
        for entry_id, meta in rows:
            print(json.dumps({"id": entry_id, "length": meta["length"], "depth": meta["depth"],
                              "neff": meta["neff"], "specs": list(meta["specs"]),
                              "has_labels": bool(meta["has_labels"])}))
        return
    table = Table("id", "L", "N", "Neff", "specs", "labels")
    for entry_id, meta in rows:
        neff = " ".join(f"{v:.2f}" for v in meta["neff"].values())
        table.add_row(escape(entry_id), str(meta["length"]), str(meta["depth"]), neff,
                      " ".join(meta["specs"]), "yes" if meta["has_labels"] else "no")
    console.print(table)


@store_app.command("verify")
def store_verify(store: Path = typer.Argument(..., help="Store path.")) -> None:
    """Re-read every array of every entry and compare its checksum; exit 1 on any mismatch."""
    from tprna.store import open_store

    with user_errors(), open_store(store) as st:
        n = len(st.ids())
        problems = st.verify()
    if problems:
        bad = sorted({p.entry or "<store>" for p in problems})
        for p in problems:
            err_console.print(str(p), style="red", markup=False, highlight=False, soft_wrap=True)
        err_console.print(f"{len(bad)} entr{'y' if len(bad) == 1 else 'ies'} failed verification: "
                          f"{', '.join(bad)}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[green]ok[/]: {n} entries verified", highlight=False)


@store_app.command("dump")
def store_dump(
    store: Path = typer.Argument(..., help="Store path."),
    entry_id: str = typer.Argument(..., metavar="ID", help="Entry id."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .npz file."),
    features: Optional[str] = features_option(f"{FEATURES_HELP} of the features to write (default: the store's first spec)."),
) -> None:
    """Write one entry as plain arrays: msa, weights, neff, cov/precision/bpp, contacts, observed."""
    import numpy as np

    from tprna.store import open_store

    with user_errors(), open_store(store) as st:
        arrays = {"msa": st.read_msa(entry_id), **st.read_features(entry_id, features)}
        labels = st.read_labels(entry_id)
        if labels is not None:
            arrays["contacts"], arrays["observed"] = labels
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            np.savez(out, **arrays)
        except OSError as e:
            raise TprnaError(f"cannot write the output ({e.strerror or e}); give --out a file in "
                             "a writable folder", out) from None
    console.print(f"wrote {escape(str(out))}: " + ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in arrays.items()),
                  highlight=False)


@store_app.command("split")
def store_split(
    store: Path = typer.Argument(..., help="Store path."),
    name: Optional[str] = typer.Option(None, "--name", help="Split name."),
    ids_file: Optional[Path] = typer.Option(None, "--ids-file", help="File with one id per line."),
    ids: Optional[str] = typer.Option(None, "--ids", help="Comma-separated ids."),
    by_neff: bool = typer.Option(False, "--by-neff", help="Add neff<1, 1<=neff<10, neff>=10 subsets."),
    features: Optional[str] = features_option(f"{FEATURES_HELP} whose Neff --by-neff uses."),
) -> None:
    """Name a subset of entries (--name with --ids/--ids-file) and/or add the Neff subsets."""
    from tprna.store import open_store

    with user_errors():
        if name is None and not by_neff:
            raise TprnaError("give --name NAME with --ids / --ids-file, or --by-neff")
        if name is not None and (ids is None) == (ids_file is None):
            raise TprnaError("--name needs exactly one of --ids and --ids-file")
        if name is None and (ids or ids_file):
            raise TprnaError("--ids / --ids-file need --name")
        with open_store(store, mode="a") as st:
            if name is not None:
                if ids_file is not None:
                    members = _read_ids(ids_file)
                else:
                    members = [t.strip() for t in (ids or "").split(",") if t.strip()]
                st.set_split(name, members)
                console.print(f"split {escape(name)}: {len(members)} entries", highlight=False)
            if by_neff:
                subsets = st.neff_splits(features)
                st.update_splits(subsets)
                console.print("  ".join(f"{k}: {len(v)}" for k, v in subsets.items()), highlight=False)


# --------------------------------------------------------------------------- example data


@app.command("simulate")
def simulate(
    out: Path = typer.Argument(..., help="Folder for the SIMULATED families (msa/, labels/, manifest.csv)."),
    families: int = typer.Option(12, "--families", help="Number of families."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same bytes)."),
) -> None:
    """Write simulated RNA families whose sequences co-vary at the base pairs of a known structure."""
    from tprna.simulate import write_example_dataset

    with user_errors():
        manifest = write_example_dataset(out, n_families=families, seed=seed)
        console.print(f"wrote {families} simulated families: {escape(str(manifest))}", highlight=False)


# --------------------------------------------------------------------------- models


@app.command("models")
def models(length: int = typer.Option(200, "--length", help="L of the L×L input."),
           in_channels: int = typer.Option(25, "--channels", help="Input channels.")) -> None:
    """Parameters and multiply-accumulates of every model variant beside the paper's Table 2."""
    from tprna.models.complexity import complexity_table

    table = Table(title=f"complexity at {in_channels}×{length}×{length}")
    for col in ("model", "params (M)", "paper", "ratio", "GMACs", "paper", "ratio"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in complexity_table(length=length, in_channels=in_channels):
        table.add_row(row.name, f"{row.params_m:.3f}", f"{row.paper_params_m:.3f}", f"{row.params_ratio:.3f}",
                      f"{row.gmacs:.2f}", f"{row.paper_gmacs:.2f}", f"{row.gmacs_ratio:.3f}")
    console.print(table)


# --------------------------------------------------------------------------- training


@app.command("train")
def train_cmd(
    store: Path = typer.Argument(..., help="Feature store to train on."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints and metrics logs."),
    split: str = typer.Option("train", "--split", help="Store split to train on."),
    features: Optional[str] = features_option(f"{FEATURES_HELP}, if the store has several specs."),
    model: ModelName = typer.Option(ModelName("mffnet36"), "--model", "-m", help="Network variant."),
    loss: Loss = typer.Option(Loss("tploss"), "--loss", help="Cross-entropy, weighted CE or tpLoss."),
    alpha: float = typer.Option(0.2, "--alpha", help="WCE weight α."),
    beta: float = typer.Option(0.1, "--beta", help="tpLoss auxiliary weight β."),
    long_weight: float = typer.Option(1.0, "--long-weight", help="Weight of a long-range pair (|i−j| ≥ 24) in the loss's mean, the others 1."),
    epochs: int = typer.Option(200, "--epochs"),
    lr: float = typer.Option(0.01, "--lr", help="Initial Adam learning rate."),
    lr_milestones: str = typer.Option("100", "--lr-milestones", help="Comma-separated epochs where lr is multiplied by --lr-gamma."),
    lr_gamma: float = typer.Option(0.1, "--lr-gamma"),
    batch_pixels: int = typer.Option(30000, "--batch-pixels", help="Padded L² pixels per batch (batches are filled up to it)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Skip entries longer than this."),
    crop: int = typer.Option(160, "--crop", help="Train longer RNAs on random windows of this length (0 = never crop)."),
    depth_sampling: float = typer.Option(0.0, "--depth-sampling", help="Fraction of alignment examples trained each epoch on a random subset of their rows (the query alone a third of the time): teaches when to trust covariance."),
    homolog_sampling: float = typer.Option(0.0, "--homolog-sampling", help="Fraction of alignment examples trained each epoch as one of their homologs alone, with its own base-pair probabilities and the query's labels: more single-sequence examples per structure."),
    bpp_dropout: float = typer.Option(0.0, "--bpp-dropout", help="Fraction of the examples still on an alignment of ≥ 2 rows trained each epoch without the base-pair-probability channel: the network learns to read covariance on its own."),
    homolog_query: float = typer.Option(0.0, "--homolog-query", help="Fraction of the examples still on an alignment of ≥ 2 rows trained each epoch with one of their homologs as the query: its own base-pair probabilities beside the alignment's couplings on the columns it covers."),
    alignment_repeats: int = typer.Option(1, "--alignment-repeats", min=1, help="Each example on an alignment of ≥ 2 rows this many times an epoch (each copy its own crop and sampling draws), the single sequences once: more of the epoch on couplings."),
    average_from: Optional[int] = typer.Option(None, "--average-from", help="The model is the mean of the weights after each epoch from this one (0-based, like --lr-milestones) to the last: weight averaging over the low-learning-rate epochs."),
    homolog_exclude: Optional[Path] = typer.Option(None, "--homolog-exclude", help="FASTA of the chains you validate or benchmark on: homologs ≥ 70 % identical to one of them are never trained (alone or as a query)."),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help="File of entry ids to leave out."),
    seed: int = typer.Option(0, "--seed"),
    device: str = device_option(),
    workers: int = typer.Option(1, "--workers", help="DataLoader worker processes (0: load in the training process)."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Checkpoint whose trunk seeds this model (transfer)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.ckpt (same options; only --epochs, --workers, --device, --accumulate may change)."),
    accumulate: int = typer.Option(1, "--accumulate", help="Batches (per process) added up per optimiser step."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run already in OUT (without --resume or this, an existing run is refused)."),
) -> None:
    """Train a contact network on a store split (Adam, the paper's step schedule by default).

    Distributed: torchrun --nproc_per_node N -m tprna train … (a step covers N × --accumulate batches)."""
    from tprna.train import TrainConfig, is_main_process, train

    with user_errors():
        excluded = _read_ids(exclude) if exclude else []
        config = TrainConfig(
            store=str(store), out=str(out), split=split, features=features, model=model.value, loss=loss.value,
            alpha=alpha, beta=beta, long_weight=long_weight, epochs=epochs, lr=lr,
            lr_milestones=tuple(int(m) for m in lr_milestones.split(",") if m.strip()),
            lr_gamma=lr_gamma, pixel_budget=batch_pixels, max_length=max_length, crop=crop or None, seed=seed,
            depth_sampling=depth_sampling, homolog_sampling=homolog_sampling, bpp_dropout=bpp_dropout,
            homolog_query=homolog_query, alignment_repeats=alignment_repeats,
            average_from=average_from, homolog_exclude=str(homolog_exclude) if homolog_exclude else None, device=device, workers=workers, init_from=str(init_from) if init_from else None,
            resume=resume, exclude=excluded, accumulate=accumulate, overwrite=overwrite)
        path = train(config, progress=lambda line: console.print(line, highlight=False))
        if is_main_process():
            console.print(f"checkpoint: {escape(str(path))}", highlight=False)


def _read_ids(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except OSError as e:
        raise TprnaError(f"cannot read ids file ({e.strerror})", path) from None
    return [t for line in text.splitlines() for t in line.split("#")[0].split()]


# --------------------------------------------------------------------------- evaluation


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: str = typer.Argument(..., help="Trained checkpoint, or 'none' to score only the baselines and peers."),
    store: Path = typer.Argument(..., help="Feature store with labelled entries."),
    split: str = typer.Option("test", "--split"),
    features: Optional[str] = features_option(f"{FEATURES_HELP}, if the store has several specs."),
    out: Path = typer.Option(Path("results/evaluate"), "--out", "-o", help="Folder for the tables and plots."),
    name: Optional[str] = typer.Option(None, "--name", help="Row name of the model (default: its model name)."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="Folder of published pair-score files, one sub-folder per method."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Add the APC and thermodynamic baselines."),
    maps: Optional[str] = typer.Option(None, "--maps", help="Comma-separated ids to draw contact maps for (default: 3)."),
    device: str = device_option(),
    allow_train_overlap: bool = typer.Option(False, "--allow-train-overlap", help="Score entries the model was trained on anyway (refused by default), with a warning."),
) -> None:
    """Top-L/k precision by range and by Neff for a model, the baselines and published peers."""
    from tprna.evaluate import run_evaluation

    with user_errors():
        result = run_evaluation(None if checkpoint.lower() == "none" else checkpoint, str(store), split,
                                out, features=features, name=name, compare=compare,
                                baselines=baselines, map_ids=maps.split(",") if maps else None,
                                device=device, allow_train_overlap=allow_train_overlap,
                                warn=lambda line: err_console.print(line, style="yellow", markup=False,
                                                                    highlight=False, soft_wrap=True))
        console.print(result.markdown, highlight=False, markup=False, soft_wrap=True)
        console.print(f"wrote {escape(str(out))}/: results.md, results.csv, results.json, plots", highlight=False)


# --------------------------------------------------------------------------- export

export_app = typer.Typer(no_args_is_help=True, help="Export a trained model for serving.")
app.add_typer(export_app, name="export")


@export_app.command("onnx")
def export_onnx_cmd(
    checkpoints: list[Path] = typer.Argument(..., help="Trained checkpoint (tprna train's last.ckpt); several: one graph that averages them (a seed ensemble)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="ONNX file (default export/<run>-<model>.onnx)."),
    fp16: bool = typer.Option(False, "--fp16", help="Half-precision variant for GPUs (float32 inputs and outputs)."),
    opset: int = typer.Option(17, "--opset"),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Largest ONNX-vs-PyTorch difference allowed (1e-4; fp16 1e-2)."),
) -> None:
    """Symmetrized, sigmoid-ended network with dynamic batch and length, checked against PyTorch."""
    from tprna.export import export_ensemble, export_onnx

    with user_errors():
        if len(checkpoints) == 1:
            report = export_onnx(checkpoints[0], out, fp16=fp16, opset=opset, tolerance=tolerance)
        else:
            if out is None:
                raise TprnaError("an ensemble export needs --out FILE.onnx")
            report = export_ensemble(checkpoints, out, fp16=fp16, opset=opset, tolerance=tolerance)
        console.print(report.summary(), highlight=False, soft_wrap=True)


@export_app.command("triton")
def export_triton_cmd(
    model: Path = typer.Argument(..., help="Exported ONNX model."),
    repo: Path = typer.Option(Path("serve/models"), "--repo", help="Triton model repository folder."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name in the repository."),
    max_batch: int = typer.Option(8, "--max-batch", help="Most RNAs per batch (Triton's max_batch_size)."),
    version: Optional[int] = typer.Option(None, "--version", help="Model version folder (default: the next free one, 1 for a new model)."),
    version_policy: VersionPolicy = typer.Option(VersionPolicy("latest"), "--version-policy", help="Serve the newest version (latest) or every version (all)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing version of the model (never done without it)."),
) -> None:
    """Write a Triton Inference Server model version (ONNX Runtime backend, dynamic batching)."""
    from tprna.export import export_triton

    with user_errors():
        path = export_triton(model, repo, name=name, max_batch_size=max_batch, version=version,
                             version_policy=version_policy.value, overwrite=overwrite)
        versions = sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit())
        console.print(f"wrote {escape(str(path))} (versions {', '.join(map(str, versions))})", highlight=False)


# --------------------------------------------------------------------------- inference


@app.command("infer")
def infer_cmd(
    inputs: Optional[list[str]] = typer.Argument(None, help="Alignment files (FASTA, A3M, Stockholm, .aln) or folders of them; '-' reads standard input (alignment text, or with --single one RNA per record / line)."),
    seq: Optional[list[str]] = typer.Option(None, "--seq", help="A sequence to predict: ACGU… (id seq1, seq2…) or NAME=ACGU…; repeatable."),
    single: bool = typer.Option(False, "--single", help="The input files (and '-') hold unrelated sequences, each record its own RNA, not an alignment."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Exported ONNX model (default: the model shipped with tpRNA)."),
    out: Path = typer.Option(Path("results/predictions"), "--out", "-o", help="Output folder."),
    formats: Optional[list[str]] = typer.Option(None, "--format", "-f", help="Outputs: npz, rr (CASP RR), png, txt (L×L matrix); repeat or comma-separate (default: npz,rr)."),
    png: bool = typer.Option(False, "--png", help="Also write a PNG of each map (same as --format png)."),
    max_batch: int = typer.Option(8, "--max-batch", help="Most RNAs per batch."),
    batch_pixels: int = typer.Option(2 ** 18, "--batch-pixels", help="Most padded L² pixels per batch."),
    store: Optional[Path] = typer.Option(None, "--store", help="Feature store to read entries from (alone: predict its entries)."),
    split: Optional[str] = typer.Option(None, "--split", help="Store split to predict."),
    top: Optional[int] = typer.Option(None, "--top", help="Contacts in each RR file (default 2L)."),
    device: str = device_option(),
    max_length: int = typer.Option(1000, "--max-length", help="Skip RNAs longer than this."),
    memory_limit: Optional[float] = typer.Option(None, "--memory-limit", min=0.001, help="Skip inputs whose features need more GiB than this, by estimate, and never compute features needing more together (default: half the memory available)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime intra-op threads."),
    as_json: bool = typer.Option(False, "--json", help="Print the job's summary (summary.json) as JSON."),
    database: Optional[list[Path]] = database_option("a bare sequence is predicted from the alignment of its homologs found there (nhmmer)"),
    evalue: float = evalue_option(),
    iterations: int = iterations_option(),
    max_homologs: int = max_homologs_option(),
) -> None:
    """Contact maps of sequences and alignments (onnxruntime): <id>.npz and <id>.rr by default, summary.json.

    tprna infer --seq GGGAGCUCAGCCGGUAGAGCGCAAGGCUCCCAGGC -o out/      (the shipped model)
    tprna infer --seq GGGAGCUCAGCCGGUAGAGCGCAAGGCUCCCAGGC --database Rfam.fa -o out/
    """
    from tprna.serve import infer
    from tprna.serve.inputs import STDIN, sequence_argument

    with user_errors():
        given = [sequence_argument(s, n) for n, s in enumerate(seq or [], 1)]
        given += [value if value == STDIN else Path(value) for value in inputs or []]
        search = homolog_search(database, evalue, iterations, max_homologs)
        report = infer(model, given, out, batch_pixels=batch_pixels, max_batch=max_batch, store=store, split=split,
                       png=png, formats=formats, single=single, top=top, device=device, max_length=max_length,
                       threads=threads, progress=console.is_terminal, search=search,
                       memory_limit=None if memory_limit is None else int(memory_limit * 2 ** 30))
        if as_json:
            print(json.dumps(report.to_dict()))
        else:
            console.print(report.summary(), highlight=False, markup=False, soft_wrap=True)
        notices = report.low_information_notices()
        if notices and search is None:
            notices.append("an alignment lifts that: give one, or --database FILE to search for homologs")
        for line in notices:  # stderr under --json: stdout stays JSON
            (err_console if as_json else console).print(line, style="yellow", highlight=False, markup=False,
                                                        soft_wrap=True)
        for failure in report.failed:
            err_console.print(f"skipped {failure['file']}: {failure['reason']}", style="yellow",
                              markup=False, highlight=False, soft_wrap=True)
        if report.failed:
            raise typer.Exit(1)


@app.command("search")
def search_cmd(
    inputs: Optional[list[str]] = typer.Argument(None, help="Files of sequences (FASTA or one a line; each record its own RNA), or '-' for standard input."),
    seq: Optional[list[str]] = typer.Option(None, "--seq", help="A sequence to search: ACGU… or NAME=ACGU…; repeatable."),
    database: Optional[list[Path]] = database_option("the sequences to search"),
    out: Path = typer.Option(Path("results/alignments"), "--out", "-o", help="Output folder: <id>.afa per RNA."),
    evalue: float = evalue_option(),
    iterations: int = iterations_option(),
    max_homologs: int = max_homologs_option(),
) -> None:
    """Alignments of sequences' homologs in a database (nhmmer): <id>.afa, aligned FASTA on each query's columns.

    tprna search --seq GGGAGCUCAGCCGGUAGAGCGCAAGGCUCCCAGGC --database Rfam.fa -o alignments/
    """
    from tprna.features import neff
    from tprna.serve.inputs import STDIN, BadInput, expand_inputs, file_stem, sequence_argument

    with user_errors():
        if not database:
            raise TprnaError("give the sequences to search with --database FILE")
        search = homolog_search(database, evalue, iterations, max_homologs)
        queries = [sequence_argument(s, n) for n, s in enumerate(seq or [], 1)]
        queries += list(expand_inputs([v if v == STDIN else Path(v) for v in inputs or []], single=True))
        if not queries:
            raise TprnaError("give sequences: files, '-' or --seq")
        out.mkdir(parents=True, exist_ok=True)
        table = Table("id", "L", "homologs", "Neff", "alignment", title=search.describe())
        failed = 0

        def skip(source: str, why: str) -> None:
            nonlocal failed
            failed += 1
            err_console.print(f"skipped {source}: {why}", style="yellow", markup=False, highlight=False, soft_wrap=True)

        good: dict[str, str] = {}
        for query in queries:
            if isinstance(query, BadInput):
                skip(query.source, query.reason)
            elif query.id in good:
                skip(query.source, f"duplicate id {query.id!r}; rename one of the records")
            else:
                good[query.id] = "".join(query.text.split())

        for query_id, result in search.iter_search(good):
            if isinstance(result, TprnaError):
                skip(query_id, result.reason)
                continue
            path = out / f"{file_stem(query_id)}.afa"
            path.write_text(result.text)
            table.add_row(query_id, str(result.msa.length), str(result.hits), f"{neff(result.msa):.2f}", str(path))
        console.print(table)
        if failed:
            raise typer.Exit(1)
