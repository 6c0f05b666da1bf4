"""The reliability suite's ledger: every test counts what it tried and what it found, and
the run closes with one summary line computed from those counts (written, with the
details, to ``.pytest_cache/d/tprna-reliability/last_run.json``).  Nothing in the line
is a constant: a test that did not run shows as "none run"/0, a check that failed shows
in its "x of y".

:data:`FIXED_FAULTS` records the bugs this suite's fuzzing found and that were fixed in
the parsers; each is replayed by the test that found it (a hypothesis ``@example``), so a
regression fails the run.  It goes to the details file, not the closing line.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from build_harness import BuildHarness

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
    """What the suite tried and found, filled in by the tests (one per session)."""

    # killed builds (test_store_kills.py)
    kills: Counter = field(default_factory=Counter)  # backend (or "zarr cli -j2") -> builds SIGKILLed
    kills_missed: Counter = field(default_factory=Counter)  # builds that finished before the kill
    kill_kinds: Counter = field(default_factory=Counter)  # fresh / incremental / replacing
    kill_methods: Counter = field(default_factory=Counter)  # event / timer / process group
    kill_states: list = field(default_factory=list)  # every round: where it was killed, what was visible
    resumes: int = 0  # re-runs that finished the job and matched a clean build
    arrays_read_after_kills: int = 0  # arrays read (and checked) right after a kill
    arrays_compared: int = 0  # arrays read after the re-runs and compared with a clean build
    # corruption (test_store_corruption.py): "kind/backend" -> count
    corruptions: Counter = field(default_factory=Counter)
    corruptions_by_verify: Counter = field(default_factory=Counter)
    corruptions_by_reads: Counter = field(default_factory=Counter)
    # reader processes during builds (test_store_readers.py)
    reader_polls: Counter = field(default_factory=Counter)  # backend -> store listings read
    reader_entries: Counter = field(default_factory=Counter)  # build phase -> entries read in full
    partial_entries_seen: int = 0  # reads that failed or saw half an entry
    missing_entries_seen: int = 0  # listed entries that vanished from a later listing
    # full disk (test_store_full_disk.py): "backend:what" -> count
    full_disk: Counter = field(default_factory=Counter)
    # parsers and inference
    fuzzed: Counter = field(default_factory=Counter)  # parser -> inputs tried
    fuzz_outcomes: Counter = field(default_factory=Counter)  # "parser:ok" / "parser:TprnaError"
    inference_faults: Counter = field(default_factory=Counter)  # "kind:reported" / "good:written"
    faults: list = field(default_factory=list)  # new faults this run: (where, what)
    started: float = field(default_factory=time.time)

    def summary(self) -> str:
        def parts(counter: Counter) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none run"

        kills = sum(self.kills.values())
        tried = sum(self.corruptions.values())
        by_kind: Counter = Counter()
        for key, n in self.corruptions.items():
            by_kind[key.split("/")[0]] += n
        disk_tried = sum(v for k, v in self.full_disk.items() if k.endswith(":tried"))
        disk_clean = sum(v for k, v in self.full_disk.items() if k.endswith(":clean"))
        disk_same = sum(v for k, v in self.full_disk.items() if k.endswith(":unchanged"))
        disk_same_of = sum(v for k, v in self.full_disk.items() if k.endswith(":compared"))
        disk_next = sum(v for k, v in self.full_disk.items() if k.endswith(":next ok"))
        disk_next_of = sum(v for k, v in self.full_disk.items() if k.endswith(":next"))
        bad_inputs = sum(v for k, v in self.inference_faults.items() if not k.startswith(("good", "cli")))
        return (
            f"reliability: {kills} builds SIGKILLed ({parts(self.kills)}; {parts(self.kill_kinds)}; "
            f"{parts(self.kill_methods)}; {sum(self.kills_missed.values())} finished first, not counted), "
            f"{self.resumes} re-runs each left exactly the manifest's entries, verified and equal to a "
            f"clean build ({self.arrays_compared} arrays compared, {self.arrays_read_after_kills} read "
            f"right after the kills); "
            f"{sum(self.corruptions_by_verify.values())} of {tried} corruptions found by verify and "
            f"{sum(self.corruptions_by_reads.values())} of {tried} by ordinary reads ({parts(by_kind)}); "
            f"{sum(self.reader_entries.values())} entries read by reader processes during builds "
            f"({parts(self.reader_entries)}), {self.partial_entries_seen} partial, "
            f"{self.missing_entries_seen} missing; "
            f"full disk: {disk_clean} of {disk_tried} builds stopped with a clean error, store unchanged "
            f"{disk_same} of {disk_same_of}, next build ok {disk_next} of {disk_next_of}; "
            f"{sum(self.fuzzed.values())} inputs fuzzed over {len(self.fuzzed)} parsers, "
            f"{len(self.faults)} new faults; {bad_inputs} bad inference inputs reported "
            f"({self.inference_faults.get('good:written', 0)} good ones written)")


_KEY = pytest.StashKey[Ledger]()
_STARTED = pytest.StashKey[float]()


def pytest_sessionstart(session) -> None:
    session.config.stash[_STARTED] = time.time()


@pytest.fixture(scope="session")
def ledger(request) -> Ledger:
    config = request.config
    if _KEY not in config.stash:
        config.stash[_KEY] = Ledger()
    return config.stash[_KEY]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """A warm build server (build_harness.py) for one test module's kill and disk faults."""
    h = BuildHarness(tmp_path_factory.mktemp("harness"))
    yield h
    h.close()


@pytest.fixture(scope="session")
def real_data() -> Path | None:
    """The real data folder, or None (the suite then runs on simulated data only)."""
    return SHARED_DATA if (SHARED_DATA / "coconet" / "manifest.csv").is_file() else None


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    ledger = config.stash.get(_KEY, None)
    if ledger is None:
        return
    seconds = round(time.time() - config.stash.get(_STARTED, ledger.started), 1)
    terminalreporter.write_sep("-", "tpRNA reliability")
    terminalreporter.write_line(f"{ledger.summary()} — in {seconds} s")
    for where, what in ledger.faults:
        terminalreporter.write_line(f"  NEW FAULT: {where}: {what}")
    record = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in vars(ledger).items()}
    record.update(summary=ledger.summary(), fixed_faults=FIXED_FAULTS, seconds=seconds,
                  exitstatus=int(exitstatus))
    if getattr(config, "cache", None) is not None:
        out = Path(config.cache.mkdir("tprna-reliability")) / "last_run.json"
        out.write_text(json.dumps(record, indent=1, default=str))
        terminalreporter.write_line(f"  details: {out}")
