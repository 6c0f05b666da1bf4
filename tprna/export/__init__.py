"""Checkpoint → ONNX (dynamic batch and length, parity-checked, metadata-carrying) and the
Triton Inference Server model repository for it.

    from tprna.export import export_onnx, read_model_metadata, export_triton
    report = export_onnx("runs/mff36/last.ckpt")          # export/mff36-mffnet36.onnx
    print(report.summary())
    export_triton(report.path, "serve/models")

``export/README.md`` says what an exported model carries.
"""
from tprna.contract import INPUT_FEATURES, INPUT_MASK, OUTPUT_CONTACTS
from tprna.export.ensemble import export_ensemble
from tprna.export.onnx_export import (DEFAULT_EXPORT_DIR, ExportReport, default_export_path, export_model,
                                      export_onnx, onnx_io, read_model_metadata)
from tprna.export.triton import export_triton, triton_config

__all__ = [
    "ExportReport", "export_onnx", "export_ensemble", "export_model", "read_model_metadata", "onnx_io",
    "default_export_path", "export_triton", "triton_config",
    "INPUT_FEATURES", "INPUT_MASK", "OUTPUT_CONTACTS", "DEFAULT_EXPORT_DIR",
]
