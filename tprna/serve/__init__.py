"""Batched contact-map inference with onnxruntime on exported tpRNA models.

    import tprna
    predictor = tprna.load()                                 # the shipped model (package data)
    [p] = predictor.predict("GGGAGCUCAGCCGGUAGAGCGCAAGGCUCCCAGGC")
    p.top(10); p.write("predictions/", format=["rr", "txt"])

    from tprna.serve import Predictor, infer
    predictor = Predictor("export/mffnet36.onnx")           # CUDA when available
    for p in predictor.predict(["a.fasta", ("query1", "GGGAAACCC")]):
        print(p.id, p.probabilities.shape)
    report = infer(None, ["msas/"], "predictions/")         # None: the shipped model
    remote = TritonClient("localhost:8000", "mffnet36")     # the model on a Triton server

Features come from :mod:`tprna.features` with the feature spec the model carries (or from
a feature store built with that spec), and the network input from :mod:`tprna.contract`, so
serving computes exactly what training saw.  Nothing here imports torch.

Modules: ``inputs`` (what a user hands in), ``items`` (inputs → work items or failures),
``predictor`` (batches → onnxruntime → predictions), ``results`` (Prediction, Failure),
``job`` (``infer``: write outputs and summary.json), ``session``, ``writers``, ``shipped``,
``triton_client``.
"""
from tprna.serve.inputs import NamedInput, read_sequences
from tprna.serve.items import serving_input
from tprna.serve.job import InferReport, infer
from tprna.serve.predictor import DEFAULT_BATCH_PIXELS, DEFAULT_MAX_BATCH, DEFAULT_MAX_LENGTH, Predictor
from tprna.serve.results import Failure, Prediction
from tprna.serve.session import SessionRunner, available_providers, make_session
from tprna.serve.shipped import ModelCard, load, shipped_model
from tprna.serve.triton_client import TritonClient, triton_predictor
from tprna.serve.writers import (OUTPUT_FORMATS, read_rr, top_contacts, write_npz, write_png, write_rr,
                                 write_txt)

__all__ = [
    "load", "Predictor", "Prediction", "Failure", "InferReport", "infer", "serving_input",
    "NamedInput", "read_sequences", "ModelCard", "shipped_model",
    "make_session", "available_providers", "SessionRunner",
    "TritonClient", "triton_predictor",
    "write_npz", "write_rr", "read_rr", "write_png", "write_txt", "top_contacts", "OUTPUT_FORMATS",
    "DEFAULT_BATCH_PIXELS", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_LENGTH",
]
