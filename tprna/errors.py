"""The one exception type a user can cause, and how it names the culprit."""
from __future__ import annotations

import os

__all__ = ["TprnaError"]


class TprnaError(Exception):
    """A problem with the user's input: bad file, wrong alphabet, mismatched lengths,
    missing chain, model/feature-spec mismatch.  The message is one line that names
    the file (when there is one) and the problem; the CLI prints it and exits non-zero."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        text = " ".join(str(message).split())  # always one line
        self.reason = text  # the message without the path, for reports that show it beside
        super().__init__(f"{self.path}: {text}" if self.path else text)
