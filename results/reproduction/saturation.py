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

import numpy as np

from spikefa.measures import angle_deg
from spikefa.train import network_from_checkpoint


def rows(path):
    net, info = network_from_checkpoint(path)
    n_train = 60000 if net.config.train.dataset == "mnist" else 2000
    epochs = info["step"] / net.config.train.steps_per_image / n_train
    out = []
    for l in range(1, net.m + 1):
        sl = net.layer_slice(l)
        v = net.state.psp[sl].astype(np.float64)
        p = 1.0 / (1.0 + np.exp(-v))
        angle = ""
        if l < net.m:
            angle = f"{angle_deg(net.weights(l + 1), net.feedback_matrix(l)):.1f}"
        out.append(f"| {info['step']:,} | {epochs:.2f} | {net.names[l]} | {np.abs(v).mean():.2f} | "
                   f"{(p * (1 - p)).mean():.3f} | {np.abs(net.weights(l)).mean():.4f} | {angle} |")
    return out


def main(paths):
    print("| step | epochs | layer | mean abs V | mean sigma'(V) | mean abs W | angle W^T, B (deg) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in paths:
        print("\n".join(rows(path)))


if __name__ == "__main__":
    main(sys.argv[1:])
