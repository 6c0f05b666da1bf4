"""The reliability suite's ledger: every test records what it tried, and the run closes
with one summary line (also written, with the details, to
``.pytest_cache/d/tprna-reliability/last_run.json``)::

    reliability: 12 kills survived (zarr 8, hdf5 4), 4200 inputs fuzzed (fasta/a3m/...: n, ...),
                 9 byte flips caught, 0 partial entries seen by readers, 5 faults found and fixed

"Faults found and fixed" are the bugs this suite found in the code under test; each one
is listed in :data:`FIXED_FAULTS` and replayed by the test that found it (a hypothesis
``@example``), so a regression fails the run.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"

# Found by this suite, fixed in the parser / store code; each is replayed as a regression.
FIXED_FAULTS = [
    ("msa.read_text", "a gzip stream with a corrupt deflate block raised zlib.error, not TprnaError"),
    ("structure._parse_structure", "a non-ASCII byte in a PDB residue/chain field gave gemmi names "
     "Python cannot decode (UnicodeDecodeError)"),
    ("structure._structure_labels", "a nan/inf coordinate (mmCIF 'nan', '1e999') reached cKDTree "
     "(ValueError: data must be finite)"),
    ("store.inputs.items_from_manifest", "a path '~nosuchuser/...' raised RuntimeError from expanduser"),
    ("store.inputs.items_from_manifest", "a NUL byte in a path cell passed the manifest and crashed "
     "the build's planning (ValueError: embedded null byte)"),
]


@dataclass
class Ledger:
    """What the suite tried, filled in by the tests (one per session)."""

    kills: Counter = field(default_factory=Counter)  # backend -> kills survived
    kills_missed: Counter = field(default_factory=Counter)  # builds that finished before the kill
    kill_states: list = field(default_factory=list)  # entries visible right after each kill
    fuzzed: Counter = field(default_factory=Counter)  # parser -> inputs tried
    fuzz_outcomes: Counter = field(default_factory=Counter)  # "parser:ok" / "parser:TprnaError"
    flips: Counter = field(default_factory=Counter)  # "zarr:caught", "hdf5:harmless", ...
    reader_polls: Counter = field(default_factory=Counter)  # backend -> store listings read
    reader_entries: Counter = field(default_factory=Counter)  # backend -> entries read in full
    partial_entries_seen: int = 0
    inference_faults: Counter = field(default_factory=Counter)  # "kind:reported" / "good:written"
    faults: list = field(default_factory=list)  # new faults this run: (where, what)
    started: float = field(default_factory=time.time)

    def summary(self) -> str:
        kills = sum(self.kills.values())
        fuzzed = sum(self.fuzzed.values())
        per_kill = ", ".join(f"{k} {v}" for k, v in sorted(self.kills.items())) or "none run"
        per_parser = ", ".join(f"{k}: {v}" for k, v in sorted(self.fuzzed.items())) or "none run"
        caught = sum(v for k, v in self.flips.items() if k.endswith(":caught"))
        flips = sum(self.flips.values())
        reads = sum(self.reader_entries.values())
        bad_inputs = sum(v for k, v in self.inference_faults.items() if not k.startswith(("good", "cli")))
        return (f"reliability: {kills} kills survived ({per_kill}), "
                f"{fuzzed} inputs fuzzed ({per_parser}), "
                f"{caught} of {flips} byte flips caught (the rest decoded unchanged), "
                f"{reads} entries read during builds with {self.partial_entries_seen} partial, "
                f"{bad_inputs} bad inference inputs reported "
                f"({self.inference_faults.get('good:written', 0)} good ones written), "
                f"{len(FIXED_FAULTS)} faults found and fixed, {len(self.faults)} new")


_KEY = pytest.StashKey[Ledger]()


@pytest.fixture(scope="session")
def ledger(request) -> Ledger:
    config = request.config
    if _KEY not in config.stash:
        config.stash[_KEY] = Ledger()
    return config.stash[_KEY]


@pytest.fixture(scope="session")
def real_data() -> Path | None:
    """The real data folder, or None (the suite then runs on simulated data only)."""
    return SHARED_DATA if (SHARED_DATA / "coconet" / "manifest.csv").is_file() else None


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    ledger = config.stash.get(_KEY, None)
    if ledger is None:
        return
    terminalreporter.write_sep("-", "tpRNA reliability")
    terminalreporter.write_line(ledger.summary())
    for where, what in FIXED_FAULTS:
        terminalreporter.write_line(f"  fixed: {where}: {what}")
    for where, what in ledger.faults:
        terminalreporter.write_line(f"  NEW FAULT: {where}: {what}")
    record = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in vars(ledger).items()}
    record.update(summary=ledger.summary(), fixed_faults=FIXED_FAULTS,
                  seconds=round(time.time() - ledger.started, 1), exitstatus=int(exitstatus))
    if getattr(config, "cache", None) is not None:
        out = Path(config.cache.mkdir("tprna-reliability")) / "last_run.json"
        out.write_text(json.dumps(record, indent=1, default=str))
        terminalreporter.write_line(f"  details: {out}")
