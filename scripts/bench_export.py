"""What the export's graph rewrites (tprna.export.optimize) take off a CPU run of MFFnet36.

Exports one MFFnet36 (random weights: the time does not depend on them) twice, with and
without the rewrites, and runs both on onnxruntime's CPU provider with one thread,
alternating, at each length.  It reports the median CPU time of the process per run, so a
machine busy with other work slows both graphs alike instead of skewing the ratio.  Exits
1 when the rewritten graph is not faster at some length.

    .venv/bin/python scripts/bench_export.py [--lengths 100 200] [--repeats 9]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from tprna.export import export_onnx
from tprna.features import FeatureSpec
from tprna.models import build_model, model_config


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cpu_seconds(sess: ort.InferenceSession, feed: dict) -> float:
    start = time.process_time()
    sess.run(None, feed)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mffnet36")
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    spec = FeatureSpec()
    torch.manual_seed(0)
    model = build_model(args.model, in_channels=spec.channels)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = {"model_config": model_config(model).to_dict(), "model": model.state_dict(),
                "feature_spec": spec.to_dict(), "train_store": None, "train_config": {},
                "history": [], "epoch": 0}
        plain = export_onnx(ckpt, root / "plain.onnx", parity_lengths=(17,), optimize=False)
        rewritten = export_onnx(ckpt, root / "rewritten.onnx", parity_lengths=(17,), optimize=True)
        print(f"{args.model}: rewrites applied {rewritten.graph_rewrites}")
        sessions = {"plain": session(plain.path), "rewritten": session(rewritten.path)}
        rng = np.random.default_rng(0)
        slower = []
        for length in args.lengths:
            x = rng.random((1, spec.channels, length, length), dtype=np.float32)
            feed = {"features": (x + x.transpose(0, 1, 3, 2)) / 2, "mask": np.ones((1, length), bool)}
            for sess in sessions.values():  # warm-up
                sess.run(None, feed)
            times: dict[str, list[float]] = {name: [] for name in sessions}
            for _ in range(args.repeats):
                for name, sess in sessions.items():
                    times[name].append(cpu_seconds(sess, feed))
            plain_s, new_s = (statistics.median(times[n]) for n in ("plain", "rewritten"))
            print(f"L={length}: plain {plain_s:.3f} s, rewritten {new_s:.3f} s CPU per run — "
                  f"{new_s / plain_s:.2f}× the time ({100 * (1 - new_s / plain_s):.0f} % off)", flush=True)
            if new_s >= plain_s:
                slower.append(length)
    if slower:
        print(f"FAILED: the rewritten graph is not faster at L = {slower}")
        sys.exit(1)


if __name__ == "__main__":
    main()
