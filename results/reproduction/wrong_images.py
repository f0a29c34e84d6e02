"""Issue 9: are the images a checkpoint gets wrong ones its output layer can still learn from?

    python results/reproduction/wrong_images.py CKPT [--split train] [--n 10000] [--data DIR]

The network is tested with the paper's protocol (plasticity off, M steps per image, no
reset, read-out at the last step). At the last step of every image it takes the output
units' firing probabilities p = sigma(V) and groups the images into right and wrong. For
the true class's 100 units and for the rival's (the other class with the highest mean p)
it gives the mean p and the mean post-synaptic factor sigma'(V) = p (1 - p), which scales
every output-layer update in the three-factor rule. If the wrong images are ones where the
rival fires near p = 1 and the true class near p = 0, sigma'(V) there is near 0: the output
layer learns almost nothing from exactly the images it gets wrong (the sigmoid with squared
error's known weakness), and only the hidden layers, whose top-down signal carries no
output sigma'(V), can move them.
"""

import argparse

import numpy as np

from spikefa.train import epochs_at, evaluate, load_data, network_from_file


def last_step_probabilities(net, images, labels):
    """Test result and p = sigma(V) of every non-input unit at the last step of every
    image, (n, units of layers 1..m)."""
    M = net.config.test.steps_per_image
    idx = np.arange(net.layer_slice(1).start, net.n_units)
    p_last = np.zeros((len(labels), idx.size), np.float32)

    def grab(net_, step0, outputs):
        v = outputs["psp"][M - 1::M].astype(np.float64)  # (k, units): our traces
        i0 = step0 // M
        p_last[i0:i0 + v.shape[0]] = 1.0 / (1.0 + np.exp(-v))

    res = evaluate(net, images, labels, on_block=grab, rec_idx=idx)
    return res, p_last


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--n", type=int, default=10000, help="first N images of the split (default 10,000)")
    p.add_argument("--data", help="folder with the four MNIST files")
    args = p.parse_args(argv)

    net, steps, _, _ = network_from_file(args.checkpoint)
    cfg = net.config
    images, labels = load_data(cfg, args.split, args.data, args.n)
    res, p_all = last_step_probabilities(net, images, labels)
    first = net.layer_slice(1).start
    hidden = {net.names[l]: p_all[:, net.layer_slice(l).start - first:net.layer_slice(l).stop - first]
              for l in range(1, net.m)}
    prob = p_all[:, net.layer_slice(net.m).start - first:].astype(np.float64)
    n_cls = cfg.model.n_classes
    per = prob.reshape(len(labels), n_cls, -1)  # (n, class, unit)
    mean_p = per.mean(axis=2)
    rows = np.arange(len(labels))
    others = mean_p.copy()
    others[rows, labels] = -1.0
    rival = np.argmax(others, axis=1)
    wrong = res.guesses != labels

    def stats(sel):
        t, r = per[rows[sel], labels[sel]], per[rows[sel], rival[sel]]
        return dict(n=int(sel.sum()), p_true=t.mean(), p_rival=r.mean(),
                    d_true=(t * (1 - t)).mean(), d_rival=(r * (1 - r)).mean(),
                    confident=np.mean((t.mean(axis=1) < 0.1) & (r.mean(axis=1) > 0.9)),
                    sat=np.mean((per[rows[sel]] < 0.01) | (per[rows[sel]] > 0.99)))

    name = args.checkpoint.split("/")[-1]
    print(f"<!-- python results/reproduction/wrong_images.py {name} --split {args.split} --n {args.n} -->")
    print(f"{name}, {epochs_at(cfg, steps):.2f} epochs; first {len(labels):,} {args.split} images, "
          f"error {res.error:.2%} (read-out {cfg.test.readout}), last test step of each image\n")
    print("| images | count | mean p, true class | mean p, rival class | sigma'(V), true class | "
          "sigma'(V), rival | true p < 0.1 and rival p > 0.9 | output units with p < 0.01 or > 0.99 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, sel in (("right", ~wrong), ("wrong", wrong)):
        if not sel.any():
            continue
        s = stats(sel)
        print(f"| {label} | {s['n']:,} | {s['p_true']:.3f} | {s['p_rival']:.3f} | {s['d_true']:.4f} | "
              f"{s['d_rival']:.4f} | {s['confident']:.1%} | {s['sat']:.1%} |")
    print("\nmean sigma'(V) of the hidden units at the last step (the factor that scales their updates)\n")
    print("| images | " + " | ".join(hidden) + " |")
    print("| --- |" + " --- |" * len(hidden))
    for label, sel in (("right", ~wrong), ("wrong", wrong)):
        if sel.any():
            print(f"| {label} | " + " | ".join(f"{np.mean(h[sel] * (1 - h[sel])):.4f}" for h in hidden.values()) + " |")


if __name__ == "__main__":
    main()
