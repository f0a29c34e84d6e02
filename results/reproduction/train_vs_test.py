"""Issue 9: training error beside test error, from checkpoints of one run (Markdown table).

    python results/reproduction/train_vs_test.py CKPT [CKPT ...] [--data DIR] [--n 10000]

For each checkpoint, the network is tested with the paper's protocol (plasticity off, M
steps per image, no reset) on the first ``--n`` training images and on the first ``--n``
test images, with the same test noise stream. A training error close to the test error
means the network has not yet fitted its training set (learning is slow); a training error
far below it means it overfits.
"""

import argparse

from spikefa.train import epochs_at, evaluate, load_data, network_from_file


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", help="folder with the four MNIST files")
    p.add_argument("--n", type=int, default=10000, help="images of each split (default 10,000)")
    args = p.parse_args(argv)
    print("| checkpoint | epochs | training error, last step (summed) | test error, last step (summed) |")
    print("| --- | --- | --- | --- |")
    data = {}
    for ck in args.checkpoints:
        net, steps, _, _ = network_from_file(ck)  # loaded once, tested on both splits
        cfg = net.config
        res = {}
        for split in ("train", "test"):
            if (cfg.train.dataset, split) not in data:
                data[cfg.train.dataset, split] = load_data(cfg, split, args.data, args.n)
            res[split] = evaluate(net, *data[cfg.train.dataset, split])
        tr, te = res["train"], res["test"]
        epochs = epochs_at(cfg, steps)
        print(f"| {ck.split('/')[-1]} | {epochs:.2f} | {tr.error_last:.2%} ({tr.error_sum:.2%}) "
              f"| {te.error_last:.2%} ({te.error_sum:.2%}) |", flush=True)
    print(f"\n(first {args.n:,} images of each split, plasticity off, test noise stream 0)")


if __name__ == "__main__":
    main()
