"""Issue 9: test error of one checkpoint against the test presentation length M (Markdown).

    python results/reproduction/test_length.py CKPT [--m 5 10 50] [--data DIR] [--n 10000]

The paper's Methods test each image for M = 5 steps; its Fig. 4 caption shows images for
50 steps. Longer presentations average more of the spike noise of every layer. This is a
diagnostic of the trained weights (how much of the error is noise of a short look), not
the paper's protocol, which stays M = 5.
"""

import argparse

from spikefa.train import epochs_at, evaluate, load_data, network_from_file


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--m", type=int, nargs="+", default=[5, 10, 50], help="test steps per image")
    p.add_argument("--data", help="folder with the four MNIST files")
    p.add_argument("--n", type=int, default=10000, help="test images (default all 10,000)")
    args = p.parse_args(argv)
    net, steps, _, _ = network_from_file(args.checkpoint)
    epochs = epochs_at(net.config, steps)
    images, labels = load_data(net.config, "test", args.data, args.n)
    print(f"{args.checkpoint.split('/')[-1]}, {epochs:.2f} epochs, first {len(labels):,} test images, test noise stream 0\n")
    print("| M (test steps per image) | last step | summed over M | sigma(V) at the last step |")
    print("| --- | --- | --- | --- |")
    base = net.config
    for M in args.m:
        net.config = base.replace(test={"steps_per_image": M})
        res = evaluate(net, images, labels)
        print(f"| {M} | {res.error_last:.2%} | {res.error_sum:.2%} | {res.error_prob:.2%} |", flush=True)


if __name__ == "__main__":
    main()
