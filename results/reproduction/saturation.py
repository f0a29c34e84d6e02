"""Issue 9: does learning slow down because the units saturate? Read from checkpoints.

    python results/reproduction/saturation.py CKPT [CKPT ...] > saturation.md

Each CKPT is a checkpoint file of a run (``RUN.h5.ckpt``, or a copy taken while it ran).
For every one, per layer: the mean |V| of the forward PSPs at the checkpoint's step, the
mean post-synaptic factor sigma'(V) = sigma(V)(1 - sigma(V)) (0.25 at V = 0: the factor
that scales every weight change of the three-factor rule), the mean |W| of the weights
into the layer and, for hidden layers, the angle between (W^{l+1})^T and B^l in degrees.
One step's state is a snapshot, not an average: read it beside the others.

    python results/reproduction/saturation.py RUN.h5 --spans 3.8:4.8 9:10

With ``--spans``: the same means from a run file, which records them every
``record.measure_every`` steps (``Run.saturation()``), averaged over each span ``A:B`` of
epochs (samples after A up to B), one row per span as in the results README.
"""

import argparse

import numpy as np

from spikefa.measures import angle_deg
from spikefa.record import saturation
from spikefa.train import network_from_checkpoint


def rows(path):
    net, info = network_from_checkpoint(path)
    n_train = 60000 if net.config.train.dataset == "mnist" else 2000
    epochs = info["step"] / net.config.train.steps_per_image / n_train
    out = []
    # the same means a run file records every record.measure_every steps (spikefa.record)
    for l, (abs_psp, slope, abs_weight) in enumerate(saturation(net), start=1):
        angle = f"{angle_deg(net.weights(l + 1), net.feedback_matrix(l)):.1f}" if l < net.m else ""
        out.append(f"| {info['step']:,} | {epochs:.2f} | {net.names[l]} | {abs_psp:.2f} | "
                   f"{slope:.3f} | {abs_weight:.4f} | {angle} |")
    return out


def span_rows(path, spans):
    """Means of a run file's recorded saturation over spans ``(a, b]`` of epochs."""
    from spikefa.runfile import Run

    run = Run(path)
    sat = run.saturation()
    per_epoch = run.config.train.steps_per_image * int(run.attrs["n_train"])
    epochs = sat["step"] / per_epoch
    names = list(sat["abs_psp"])
    out = []
    for a, b in spans:
        sel = (epochs > a) & (epochs <= b)
        if not sel.any():
            raise SystemExit(f"{path}: no saturation sample in epochs {a:g}-{b:g} "
                             f"(it has {epochs[0]:.2f}-{epochs[-1]:.2f})" if epochs.size else f"{path}: no samples")
        cells = [" / ".join(fmt.format(float(np.mean(sat[what][n][sel]))) for n in names)
                 for what, fmt in (("abs_psp", "{:.2f}"), ("slope", "{:.3f}"), ("abs_weight", "{:.3f}"))]
        out.append(f"| {a:g}-{b:g} | {int(sel.sum())} | " + " | ".join(cells) + " |")
    return names, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="checkpoint files, or one run file with --spans")
    p.add_argument("--spans", nargs="+", metavar="A:B", help="spans of epochs to average a run file's samples over")
    args = p.parse_args(argv)
    if args.spans:
        if len(args.files) != 1:
            p.error("--spans reads one run file")
        try:
            spans = [tuple(float(x) for x in s.split(":")) for s in args.spans]
        except ValueError:
            p.error(f"--spans: expected A:B in epochs, got {args.spans}")
        if any(len(s) != 2 or s[0] >= s[1] for s in spans):
            p.error(f"--spans: expected A:B with A < B, got {args.spans}")
        names, out = span_rows(args.files[0], spans)
        layers = " / ".join(names)
        print(f"| epochs | samples | mean abs V ({layers}) | mean sigma'(V) | mean abs W into the layer |")
        print("| --- | --- | --- | --- | --- |")
        print("\n".join(out))
        return
    print("| step | epochs | layer | mean abs V | mean sigma'(V) | mean abs W | angle W^T, B (deg) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in args.files:
        print("\n".join(rows(path)))


if __name__ == "__main__":
    main()
