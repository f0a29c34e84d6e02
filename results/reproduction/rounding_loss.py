"""Issue 9: how much of the weight change float32 rounding loses, from one checkpoint.

    python results/reproduction/rounding_loss.py CKPT [--steps 20000] [--data DIR]

The checkpoint's network (float32, as trained) trains for ``--steps`` steps. Every step
the kernel subtracts ``eta m^l s^{l-1}`` (through the decay scale) from the float32 weights,
rounding each sum to float32, so that an update smaller than half a unit in the last
place of its weight is lost outright. The script traces every unit's modulator m and
spike at every step and sums the same updates exactly, in float64, beside the weights;
the table compares the change the float32 weights actually made, ``dW32``, with that
exact sum, ``dW_exact``: the ratio of their norms, the angle between them and the norm of
their difference relative to ``|dW_exact|``. Both come from one trajectory, so the
difference is the rounding and nothing else.
"""

import argparse
import time

import numpy as np

from spikefa.network import SEED_NOISE, input_probabilities, rng_for
from spikefa.train import epochs_at, load_data, network_from_file


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--steps", type=int, default=20000, help="training steps (default 20,000)")
    p.add_argument("--block", type=int, default=500, help="steps per call (default 500)")
    p.add_argument("--data", help="folder with the four MNIST files")
    p.add_argument("--seed", type=int, default=7, help="noise and image order of this comparison")
    args = p.parse_args(argv)

    net, steps, _, _ = network_from_file(args.checkpoint)
    cfg = net.config
    if net.W[0].dtype != np.float32:
        raise SystemExit(f"{args.checkpoint} holds a {net.W[0].dtype} network; this measures float32 rounding")
    if cfg.model.feedback == "transport":
        raise SystemExit("feedback 'transport': its feedback is W itself; only fixed-feedback variants are compared")
    images, labels = load_data(cfg, "train", args.data, 0)
    rng = rng_for(args.seed, SEED_NOISE, 99)
    order = rng.permutation(len(labels))
    N, m, eta = cfg.train.steps_per_image, net.m, cfg.model.eta
    learn = [bool(net.wiring.learn[l - 1]) for l in range(1, m + 1)]
    raw0 = [np.array(net.raw_weights(l), dtype=np.float64) for l in range(1, m + 1)]
    exact = [np.zeros_like(w) for w in raw0]
    every = np.arange(net.n_units)
    t0 = time.time()
    done = 0
    while done < args.steps:
        T = min(args.block, args.steps - done)
        idx = order[(done + np.arange(T)) // N % len(order)]
        shown, step_img = np.unique(idx, return_inverse=True)
        in_prob = input_probabilities(images[shown], cfg.model.p_max)
        scale = net.scale.copy()  # changes by eta gamma per step: 1e-11, far below what is measured
        out = net.run(rng.random((T, net.n_units)), in_prob, step_img, labels[idx], plastic=True, rec_idx=every)
        s, mod = out["spikes"], out["modulator"].astype(np.float64)
        for l in range(1, m + 1):
            if learn[l - 1]:
                pre, post = net.layer_slice(l - 1), net.layer_slice(l)
                exact[l - 1] -= (eta / scale[l - 1]) * (s[:, pre].T.astype(np.float64) @ mod[:, post])
        done += T
    wall = time.time() - t0

    name = args.checkpoint.split("/")[-1]
    print(f"<!-- python results/reproduction/rounding_loss.py {name} --steps {args.steps} --seed {args.seed} ({wall:.0f} s) -->")
    print(f"{name}, {epochs_at(cfg, steps):.2f} epochs; {args.steps:,} training steps ({args.steps // N:,} images) "
          f"from it; float32 weight change against the exact sum of the same updates\n")
    print("| layer | abs dW32 / abs dW_exact | angle(dW32, dW_exact) | abs(dW32 - dW_exact) / abs dW_exact |")
    print("| --- | --- | --- | --- |")
    for l in range(1, m + 1):
        if not learn[l - 1]:
            continue
        d32 = np.array(net.raw_weights(l), dtype=np.float64) - raw0[l - 1]
        mask = net.wiring.W_mask[l - 1]
        dex = exact[l - 1] if mask is None else exact[l - 1] * mask  # removed synapses never change
        n32, nex = np.linalg.norm(d32), np.linalg.norm(dex)
        cos = float(np.sum(d32 * dex) / (n32 * nex)) if n32 and nex else float("nan")
        ang = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        rel = np.linalg.norm(d32 - dex) / nex if nex else float("nan")
        print(f"| {net.names[l]} | {n32 / nex:.5f} | {ang:.3f} deg | {rel:.2e} |")


if __name__ == "__main__":
    main()
