"""tpRNA: RNA contact-map prediction from multiple sequence alignments."""
__version__ = "0.1.0"
