"""Shared fixtures: where the real data lives, and skipping cleanly when it does not."""
from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (a fresh clone has no ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sampling_store(tmp_path_factory) -> Path:
    """Three small simulated families on ``cov+ss+profile`` (read only): the store the
    training-sampling tests (homolog sampling, thermodynamics dropout) draw examples from."""
    from helpers import simulated_store  # helpers imports this module

    return simulated_store(tmp_path_factory.mktemp("sampling"), feature_set="cov+ss+profile", n_families=3,
                           lengths=(30, 45), depths=(40, 80))


@pytest.fixture
def one_torch_thread():
    """PyTorch references on one thread: on a busy two-core machine torch's OpenMP team
    waits on itself and small ops slow down many times over."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_pyhmmer(monkeypatch):
    """pyhmmer (the ``[search]`` extra) cannot be imported, as in a base install."""
    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "pyhmmer" or name.startswith("pyhmmer."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
