"""Issue 9: does learning slow down because the units saturate? Read from checkpoints.

    python results/reproduction/saturation.py CKPT [CKPT ...] > saturation.md

Each CKPT is a checkpoint file of a run (``RUN.h5.ckpt``, or a copy taken while it ran).
For every one, per layer: the mean |V| of the forward PSPs at the checkpoint's step, the
mean post-synaptic factor sigma'(V) = sigma(V)(1 - sigma(V)) (0.25 at V = 0: the factor
that scales every weight change of the three-factor rule), the mean |W| of the weights
into the layer and, for hidden layers, the angle between (W^{l+1})^T and B^l in degrees.
One step's state is a snapshot, not an average: read it beside the others.
"""

import sys

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


def main(paths):
    print("| step | epochs | layer | mean abs V | mean sigma'(V) | mean abs W | angle W^T, B (deg) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in paths:
        print("\n".join(rows(path)))


if __name__ == "__main__":
    main(sys.argv[1:])
