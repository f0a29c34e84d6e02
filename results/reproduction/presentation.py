"""Issue 9: test error against images seen and against training steps, per value of one
model key (the presentation length N by default), mean and s.d. over the seeds given.

    python results/reproduction/presentation.py RUN.h5 [RUN.h5 ...] \
        [--key train.steps_per_image] [--epochs 1,2,5,10] [--steps 100000,1000000] [--last 10]

Three tables, each read from the run files' test passes (read-out at the last test step,
summed over the M test steps in brackets):
- at the same number of epochs (the same images seen), one column per epoch given;
- at the same number of training steps, one column per step count given (a run that
  has no test pass at exactly that step shows "-");
- where each run levels off: the mean of its last `--last` test passes, and its best pass.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import h5py
import numpy as np


def read(paths, key):
    """{value of key: [test-pass arrays of one run, ...]}, the runs in the order given."""
    section, name = key.split(".", 1)
    runs = defaultdict(list)
    for path in paths:
        with h5py.File(path, "r", swmr=True) as f:
            config = json.loads(f.attrs["config"])
            if name not in config.get(section, {}):
                raise SystemExit(f"{path}: its config has no key {key!r}")
            value = config[section][name]
            runs[value].append({k: f["test"][k][...] for k in ("step", "epoch", "error_last", "error_sum")})
    return dict(sorted(runs.items()))


def _cell(values):
    """'mean ± s.d.' in percent ('mean' alone for one run); '-' if any run lacks the point."""
    v = 100 * np.asarray(values, dtype=np.float64)
    if not v.size or np.isnan(v).any():
        return "-"
    return f"{v.mean():.2f}" + (f" ± {v.std(ddof=1):.2f}" if v.size > 1 else "")


def _at(run, column, target, tol):
    hit = np.flatnonzero(np.abs(run[column] - target) <= tol)
    return (run["error_last"][hit[0]], run["error_sum"][hit[0]]) if hit.size else (np.nan, np.nan)


def _table(runs, key, column, points, label, tol):
    head = f"| {key} | seeds | " + " | ".join(label(p) for p in points) + " |"
    lines = [head, "|" + " --- |" * (2 + len(points))]
    for value, rs in runs.items():
        cells = []
        for p in points:
            pairs = [_at(r, column, p, tol) for r in rs]
            cells.append(f"{_cell([a for a, _ in pairs])} ({_cell([b for _, b in pairs])})")
        lines.append(f"| {value} | {len(rs)} | " + " | ".join(cells) + " |")
    return lines


def level(runs, key, last):
    lines = [f"| {key} | seeds | epochs | mean of the last {last} passes | best pass |", "| --- | --- | --- | --- | --- |"]
    for value, rs in runs.items():
        tail_l = [r["error_last"][-last:].mean() for r in rs]
        tail_s = [r["error_sum"][-last:].mean() for r in rs]
        best_l = [r["error_last"].min() for r in rs]
        best_s = [r["error_sum"].min() for r in rs]
        epochs = sorted({f"{r['epoch'][-1]:g}" for r in rs})
        lines.append(f"| {value} | {len(rs)} | {', '.join(epochs)} | {_cell(tail_l)} ({_cell(tail_s)}) | "
                     f"{_cell(best_l)} ({_cell(best_s)}) |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--key", default="train.steps_per_image")
    ap.add_argument("--epochs", default="1,2,5,10")
    ap.add_argument("--steps", default="")
    ap.add_argument("--last", type=int, default=10)
    args = ap.parse_args(argv)
    if args.last < 1:
        ap.error(f"--last must be at least 1, not {args.last}")
    runs = read(args.runs, args.key)
    epochs = [float(e) for e in args.epochs.split(",") if e]
    steps = [int(s) for s in args.steps.split(",") if s]
    print("At the same images seen (test error %, last step (summed)):\n")
    print("\n".join(_table(runs, args.key, "epoch", epochs, lambda e: f"{e:g} epochs", 1e-6)))
    if steps:
        print("\nAt the same training steps:\n")
        print("\n".join(_table(runs, args.key, "step", steps, lambda s: f"{s:,} steps", 0)))
    print("\nWhere each run levels off:\n")
    print("\n".join(level(runs, args.key, args.last)))


if __name__ == "__main__":
    main()
