"""tpRNA: RNA contact-map prediction from multiple sequence alignments.

    import tprna
    [p] = tprna.load().predict("GGGAGCUCAGCCGGUAGAGCGCAAGGCUCCCAGGC")   # the shipped model
"""
__version__ = "0.1.0"
__all__ = ["load", "__version__"]


def __getattr__(name: str):
    # PEP 562: `tprna.load` imports the serving code (onnxruntime) on first use, so that
    # `import tprna` stays cheap for the parsers, the store and training.
    if name == "load":
        from tprna.serve.shipped import load

        return load
    raise AttributeError(f"module 'tprna' has no attribute {name!r}")
