"""Benchmark (not a test): size of recorded runs and memory of recording.

    python tests/bench_record.py                 # small preset, 20,000 steps; full net, 2,000 steps
    python tests/bench_record.py --full-steps 0  # skip the full-size network

Prints, for real network activity (training on the bundled subset):

- bytes per recorded step of every unit's spikes, packed rows vs (step, index) events, and
  of the ``fig4`` probes, each scaled to a million steps (measured over the steps run, then
  multiplied: the activity of a longer run differs a little, so take it as an estimate);
- the whole file, and the training speed with and without recording;
- peak RSS of one million steps of synthetic blocks recorded into a run file vs the same
  loop with recording off (the ``slow`` memory test does the same with bounds).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

from spikefa.config import load_config
from spikefa.train import train

HERE = Path(__file__).resolve().parent


def storage(path, prefix) -> int:
    """Bytes on disk of the datasets under ``prefix`` (compressed chunks)."""
    total = 0
    with h5py.File(path, "r", swmr=True) as f:
        if prefix not in f:
            return 0

        def visit(name, obj):
            nonlocal total
            if isinstance(obj, h5py.Dataset):
                total += obj.id.get_storage_size()

        f[prefix].visititems(visit)
    return total


def spike_storage(path) -> int:
    total = 0
    with h5py.File(path, "r", swmr=True) as f:
        for layer, g in f["record/train"].items():
            if "spikes" in g:
                total += sum(ds.id.get_storage_size() for ds in g["spikes"].values())
    return total


def one(model, steps, probes, fmt, tmp):
    base = load_config(model)
    epochs = steps / base.train.steps_per_image / 2000  # the bundled subset's 2,000 training images
    cfg = base.replace(train={"epochs": epochs, "test_every": 0, "dataset": "mnist-subset", "n_train": 0},
                       test={"n_test": 50}, record={"probes": probes, "spike_format": fmt, "measure_every": 1000})
    t = time.perf_counter()
    res = train(cfg, out=Path(tmp) / f"{model}-{fmt}-{len(probes)}.h5", progress=False, overwrite=True)
    wall = time.perf_counter() - t
    return res.path, res.steps, wall


def sizes(model, steps, tmp):
    print(f"\n{model} ({'-'.join(map(str, load_config(model).model.layers))}), {steps:,} training steps")
    one(model, min(steps, 500), [], "packed", tmp)  # compile and load the kernels first
    _, _, wall0 = one(model, steps, [], "packed", tmp)
    print(f"  no probes (rates + angles only): {steps / wall0:,.0f} steps/s")
    for probes, fmt in ((["spikes layers=in", "spikes layers=all"], "packed"),
                        (["spikes layers=in", "spikes layers=all"], "events"),
                        (["fig4"], "packed")):
        path, n, wall = one(model, steps, probes, fmt, tmp)
        sp = spike_storage(path)
        rec = storage(path, "record")
        print(f"  {'+'.join(probes):40s} {fmt:7s}: spikes {sp / n:8.1f} B/step = {sp / n * 1e6 / 2**20:8.1f} MiB per 1e6 steps; "
              f"all recordings {rec / n * 1e6 / 2**20:8.1f} MiB per 1e6 steps; file {path.stat().st_size / 2**20:6.1f} MiB; "
              f"{n / wall:,.0f} steps/s")


def memory(model, n_steps, fmt):
    script = (HERE / "test_record.py").read_text().split('MEMORY_SCRIPT = """')[1].split('"""')[0].format()
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "mem.py"
        p.write_text(script)
        out = {}
        for mode in ("off", "on"):
            r = subprocess.run([sys.executable, str(p), model, str(n_steps), fmt, mode], capture_output=True, text=True,
                               check=True, cwd=tmp)
            out[mode] = [float(x) for x in r.stdout.split()]
    early, late, size, wall = out["on"]
    print(f"  {model} {fmt:7s} {n_steps:,} steps of every unit's spikes: peak RSS off {out['off'][1]:.0f} MB, "
          f"on {early:.0f} MB after {n_steps // 5:,} steps and {late:.0f} MB at the end; file {size / 2**20:.0f} MiB, "
          f"{wall:.0f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small-steps", type=int, default=20_000)
    ap.add_argument("--full-steps", type=int, default=2_000)
    ap.add_argument("--memory-steps", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.small_steps:
            sizes("small", args.small_steps, tmp)
        if args.full_steps:
            sizes("lillicrap2016-fig4", args.full_steps, tmp)
    if args.memory_steps:
        print("\nmemory (synthetic blocks, 30% of units spiking)")
        for fmt in ("packed", "events"):
            memory("small", args.memory_steps, fmt)


if __name__ == "__main__":
    main()
