"""Issue 9: one table row per run file given, every read-out, from the files themselves.

    python results/reproduction/table.py RUN.h5 [RUN.h5 ...] > table.md

Columns: what was changed from the model's defaults, epochs trained, test error with each
read-out at the last test pass (last step / sum over M steps / sigma(V) at the last
step), test images, wall time.
"""

import json
import sys

import h5py

from spikefa.config import config_from_dict, load_config


def changes(cfg, base):
    a, b = cfg.to_dict(), load_config(base).to_dict()
    out = []
    for section in ("model", "train", "test", "run"):
        for key, value in a[section].items():
            if key in ("n_test", "test_every", "seed", "block_steps", "checkpoint_minutes", "backend") or b[section].get(key) == value:
                continue
            out.append(f"{section}.{key}={value}")
    return ", ".join(out) or "(defaults)"


def row(path, base):
    with h5py.File(path, "r", swmr=True) as f:
        cfg = config_from_dict(json.loads(f.attrs["config"]))
        t = {k: f["test"][k][...] for k in f["test"]}
    if not t["step"].size:
        return None
    pct = lambda k: f"{100 * t[k][-1]:.2f}" if k in t else "-"
    return (f"| {cfg.name} | {changes(cfg, base)} | seed {cfg.run.seed} | {t['epoch'][-1]:.2f} | "
            f"{pct('error_last')} | {pct('error_sum')} | {pct('error_prob')} | {int(t['n_test'][-1])} | "
            f"{t['wall_s'][-1] / 60:.1f} |")


if __name__ == "__main__":
    base = "small"
    paths = sys.argv[1:]
    if paths and paths[0].startswith("--base="):
        base, paths = paths[0].split("=", 1)[1], paths[1:]
    print("| run | changed from the base model | seed | epochs | error % (last) | error % (sum) | error % (prob) | test images | wall min |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for p in paths:
        r = row(p, base)
        if r:
            print(r)
