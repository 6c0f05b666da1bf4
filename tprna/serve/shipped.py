"""The model shipped inside the package (``tprna/serve/model/``: the ONNX file, ``model.json``
and ``MODEL_CARD.md``), checked against its recorded sha256 before use, and :func:`load`,
the one call a notebook user needs::

    import tprna
    predictor = tprna.load()                         # the shipped model, CPU or CUDA
    [p] = predictor.predict("GGGAGCUCAGCCGGUAGAGCGCAAGGCUCCCAGGC")
    p.top(10)                                        # [(i, j, probability), …], 1-based

``model.json``::

    {"file": "tprna-rna.onnx", "sha256": "<hex>", "name": "...", "version": "...",
     "feature_set": "...", "card": "MODEL_CARD.md",
     "expected_precision": {"single_sequence": {"long|L": 0.7, ...}, "alignment": {...}}}
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from tprna.errors import TprnaError
from tprna.serve.predictor import Predictor

__all__ = ["ModelCard", "CARD_FILE", "shipped_model_dir", "shipped_model", "card_beside", "load"]

CARD_FILE = "model.json"
_REINSTALL = "reinstall tpRNA (pip install --force-reinstall tprna)"


@dataclass(frozen=True)
class ModelCard:
    """What ``model.json`` says about a model file: its checksum, name, version, feature
    set and the precision its model card measured, by regime (``single_sequence``,
    ``alignment``) and ``"range|k"`` (``"long|L"``, ``"long|L/5"`` …)."""

    path: Path  # the ONNX file
    sha256: str
    name: str = ""
    version: str = ""
    feature_set: str = ""
    expected_precision: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    card: Path | None = None  # MODEL_CARD.md, when there is one

    @classmethod
    def read(cls, json_path: str | os.PathLike) -> "ModelCard":
        path = Path(json_path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise TprnaError(f"the model description is missing; {_REINSTALL}", path) from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise TprnaError(f"unreadable model description ({type(e).__name__}); {_REINSTALL}", path) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("file"), str) \
                or not isinstance(doc.get("sha256"), str):
            raise TprnaError(f"the model description lacks 'file' or 'sha256'; {_REINSTALL}", path)
        precision = doc.get("expected_precision") or {}
        try:
            precision = {str(regime): {str(k): float(v) for k, v in table.items()}
                         for regime, table in precision.items()}
        except (AttributeError, TypeError, ValueError):
            raise TprnaError("'expected_precision' must map a regime to {\"range|k\": precision}", path) from None
        card = path.parent / doc["card"] if isinstance(doc.get("card"), str) else None
        return cls(path=path.parent / doc["file"], sha256=doc["sha256"].lower(), name=str(doc.get("name", "")),
                   version=str(doc.get("version", "")), feature_set=str(doc.get("feature_set", "")),
                   expected_precision=precision, card=card if card is not None and card.is_file() else None)

    def verify(self) -> "ModelCard":
        """Raise :class:`TprnaError` unless the model file is there and its sha256 is the
        recorded one (a truncated download, a damaged install, a file swapped by hand)."""
        try:
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise TprnaError(f"the model file is missing; {_REINSTALL}", self.path) from None
        except OSError as e:
            raise TprnaError(f"cannot read the model file ({e.strerror}); {_REINSTALL}", self.path) from None
        if digest != self.sha256:
            raise TprnaError(f"sha256 {digest[:12]}… differs from {self.sha256[:12]}… recorded in "
                             f"{CARD_FILE}: the file is damaged or was replaced; {_REINSTALL}", self.path)
        return self

    def expected(self, regime: str, key: str = "long|L") -> float | None:
        """The model card's precision for ``regime`` (``"single_sequence"``/``"alignment"``)
        and ``key``, or None when it gives none."""
        return self.expected_precision.get(regime, {}).get(key)


def shipped_model_dir() -> Path:
    """The folder of the shipped model inside the installed package."""
    folder = resources.files("tprna.serve").joinpath("model")
    if not isinstance(folder, Path):  # a zip import: onnxruntime needs a real file
        raise TprnaError(f"tpRNA is installed as a zip archive; the shipped model needs a regular "
                         f"install ({_REINSTALL})")
    return folder


def shipped_model() -> ModelCard:
    """The shipped model's card, its file checked against the recorded sha256."""
    return ModelCard.read(shipped_model_dir() / CARD_FILE).verify()


def card_beside(onnx_path: str | os.PathLike) -> ModelCard | None:
    """The card of a model that has a ``model.json`` naming it in its folder (checked), or
    None (an exported model of one's own has no card)."""
    path = Path(onnx_path)
    beside = path.parent / CARD_FILE
    if not beside.is_file():
        return None
    card = ModelCard.read(beside)
    if card.path.resolve() != path.resolve():
        return None
    return card.verify()


def load(path: str | os.PathLike | None = None, **options: Any) -> Predictor:
    """A :class:`~tprna.serve.Predictor` over the shipped model (default) or the ONNX file
    ``path``; ``options`` go to the Predictor (``device``, ``threads``, ``max_length`` …).
    The model card, when there is one, is ``predictor.card``."""
    card = shipped_model() if path is None else card_beside(path)
    predictor = Predictor(card.path if path is None else path, **options)
    if card is not None and card.feature_set and card.feature_set != predictor.spec.feature_set:
        raise TprnaError(f"{CARD_FILE} says feature set {card.feature_set!r} but the model carries "
                         f"{predictor.spec.feature_set!r}: the description belongs to another model; "
                         f"{_REINSTALL}", predictor.model_path)
    predictor.card = card
    return predictor
