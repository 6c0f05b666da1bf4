"""The batch job behind ``tprna infer``: predict every input with a
:class:`~tprna.serve.predictor.Predictor`, write each prediction in the chosen formats
while the model runs on (one writer thread), count progress, and report the run in
``summary.json`` (:class:`InferReport`)."""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tprna.errors import TprnaError
from tprna.search import HomologSearch
from tprna.serve.inputs import InputLike, distinct_ids, expand_inputs, flatten_inputs
from tprna.serve.predictor import (DEFAULT_BATCH_PIXELS, DEFAULT_MAX_BATCH, DEFAULT_MAX_LENGTH,
                                   DEFAULT_MAX_PADDING, RunStats)
from tprna.serve.results import Failure, Prediction
from tprna.serve.shipped import load
from tprna.serve.writers import parse_formats

__all__ = ["InferReport", "infer"]


@dataclass
class InferReport:
    """The outcome of :func:`infer` (also written to ``<out_dir>/summary.json``)."""

    model: str
    model_name: str
    feature_spec_key: str
    out_dir: str
    providers: list[str]
    done: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    rnas_per_second: float = 0.0
    padding_overhead: float = 0.0
    batches: int = 0
    model_seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    neff: dict[str, float | None] = field(default_factory=dict)  # id → Neff of each done RNA
    # the model card's {"single_sequence" | "alignment": {"long|L": precision, …}}, if any
    expected_precision: dict[str, dict[str, float]] | None = None
    homolog_search: str | None = None  # how bare sequences found their alignments, if they did

    @property
    def ok(self) -> bool:
        return not self.failed

    def low_information_notices(self, many: int = 5) -> list[str]:
        """One line per done RNA whose Neff < 1 (one line for all when more than ``many``),
        with the model card's long-range top-L precision for single sequences, if known."""
        low = [(entry, n) for entry, n in self.neff.items() if n is not None and n < 1]
        if not low:
            return []
        figure = (self.expected_precision or {}).get("single_sequence", {}).get("long|L")
        tail = f": expected long-range top-L precision ≈ {figure:.2f} (model card)" if figure is not None else ""
        if len(low) <= many:
            return [f"{entry}: single-sequence mode (Neff {n:.2f} < 1){tail}" for entry, n in low]
        lowest = min(n for _, n in low)
        return [f"{len(low)} RNAs in single-sequence mode (Neff < 1, lowest {lowest:.2f}){tail}"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_done"], d["n_failed"] = len(self.done), len(self.failed)
        return d

    def summary(self) -> str:
        return (f"{len(self.done)} RNAs predicted, {len(self.failed)} failed, "
                f"{self.rnas_per_second:.2f} RNAs/s, padding overhead {100 * self.padding_overhead:.1f}%, "
                f"{self.batches} batches on {', '.join(self.providers)} → {self.out_dir}")


def infer(model_path: str | os.PathLike | None, inputs: Sequence[InputLike] | None, out_dir: str | os.PathLike,
          batch_pixels: int = DEFAULT_BATCH_PIXELS, max_batch: int = DEFAULT_MAX_BATCH,
          store: str | os.PathLike | None = None, split: str | None = None, png: bool = False,
          top: int | None = None, min_separation: int = 6, device: str = "auto",
          max_length: int | None = DEFAULT_MAX_LENGTH, max_padding: float = DEFAULT_MAX_PADDING,
          threads: int | None = None, workers: int | None = None, progress: bool = True,
          formats: Sequence[str] | str | None = None, single: bool = False,
          search: HomologSearch | None = None, memory_limit: int | None = None) -> InferReport:
    """Predict every input and write ``<id>.<format>`` under ``out_dir`` for each of
    ``formats`` (npz, rr, png, txt; default npz + rr, ``png=True`` adds png), plus
    ``summary.json``.

    ``model_path``: an exported ONNX model, or None for the shipped one.  ``inputs``: MSA
    files or folders of them, ``-`` (standard input) and anything :meth:`Predictor.predict`
    takes; with ``single``, each record of a file (or of standard input) is its own RNA
    (:func:`tprna.serve.inputs.expand_inputs`); with ``search``, each bare sequence is
    predicted from the alignment of its homologs that search finds.  A file's outputs are
    named by its name without suffixes, or where files of the job share that, with their
    folders' names before it (``R1107/seq.a3m`` → ``R1107_seq``:
    :func:`~tprna.serve.inputs.distinct_ids`).  ``store``: a feature store — alone, its
    entries (``split`` or all) are predicted from their stored features; with ``inputs``, an
    MSA whose entry is in the store (same file content, the model's spec) is read from the
    store rather than recomputed.  Bad inputs (among them those whose
    features would need more than ``memory_limit`` bytes, by default half the memory
    available) are reported in the summary and skipped."""
    t0 = time.perf_counter()
    chosen = parse_formats(formats, png)
    # the whole job's files are known here: ids that collide take their folders' names
    inputs = distinct_ids([value for _, value in flatten_inputs(expand_inputs(inputs or [], single))])
    if not inputs and store is None:
        raise TprnaError("give sequences, MSA files / folders, or a feature store")
    if split is not None and store is None:
        raise TprnaError("a split names entries of a store: give the store too")
    predictor = load(model_path, device=device, batch_pixels=batch_pixels, max_length=max_length,
                     max_batch=max_batch, threads=threads, workers=workers, max_padding=max_padding,
                     search=search, memory_limit=memory_limit)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TprnaError(f"cannot create the output folder ({e.strerror})", out) from None
    card = predictor.card
    report = InferReport(model=str(predictor.model_path), model_name=predictor.model_name,
                         feature_spec_key=predictor.spec.key, out_dir=str(out),
                         providers=predictor.providers, outputs=list(chosen),
                         expected_precision={k: dict(v) for k, v in card.expected_precision.items()}
                         if card is not None else None,
                         homolog_search=search.describe() if search is not None else None)
    stats = RunStats()

    opened = None
    if store is not None:
        from tprna.store import open_store  # lazy: tprna.store loads zarr and h5py

        if inputs:
            opened = open_store(store)
            stream = predictor.iter_predict(inputs, store=opened, stats=stats)
        else:
            stream = predictor.iter_predict_store(store, split, stats=stats)
    else:
        stream = predictor.iter_predict(inputs, stats=stats)

    def write(pred: Prediction) -> Failure | None:
        try:
            pred.write(out, chosen, top, min_separation)
        except Exception as e:
            why = e.reason if isinstance(e, TprnaError) else e
            return Failure(pred.source, f"writing the outputs failed ({why})", pred.id, pred.index)
        return None

    bar = _ProgressCounter(progress)
    # One writer thread: outputs (compression, PNG) are written while the model runs on.
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="tprna-writer") as writer, bar as task:
            pending: list[tuple[Prediction, Future]] = []
            for result in stream:
                if isinstance(result, Failure):
                    report.failed.append(result.to_dict())
                    task(1)
                    continue
                pending.append((result, writer.submit(write, result)))
                while pending and pending[0][1].done():
                    _collect(pending.pop(0), report)
                    task(1)
            for entry in pending:
                entry[1].result()
                _collect(entry, report)
                task(1)
    finally:
        if opened is not None:
            opened.close()

    report.seconds = round(time.perf_counter() - t0, 3)
    report.rnas_per_second = len(report.done) / report.seconds if report.seconds > 0 else 0.0
    report.padding_overhead = stats.padding_overhead
    report.batches = stats.batches
    report.model_seconds = round(stats.model_seconds, 3)
    (out / "summary.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _collect(entry: tuple[Prediction, Future], report: InferReport) -> None:
    pred, future = entry
    failure = future.result()
    if failure is None:
        report.done.append(pred.id)
        report.neff[pred.id] = None if pred.neff is None else round(float(pred.neff), 4)
    else:
        report.failed.append(failure.to_dict())


class _ProgressCounter:
    """A rich progress counter of finished RNAs (total unknown while folders are read)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # lazy: start-up time

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 TextColumn("{task.completed} RNAs"), TimeElapsedColumn(), transient=True)
        self.progress.__enter__()
        task = self.progress.add_task("predicting", total=None)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)
