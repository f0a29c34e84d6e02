"""Issue 9: a test-error curve (``spikefa curve RUN.h5 > CURVE.csv``) as a Markdown table.

    python results/reproduction/curve_table.py CURVE.csv [--every 60000]

One row per test pass whose number of training images is a multiple of ``--every`` (and
the last pass), with the error of every read-out on the test set and the run's wall time.
"""

import argparse
import csv


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("curve")
    p.add_argument("--every", type=int, default=60000, help="training images between rows (0: every pass)")
    args = p.parse_args(argv)
    with open(args.curve) as f:
        rows = list(csv.DictReader(f))
    print("| epochs | training images | test error, last step | summed over M steps | sigma(V) | wall time (h) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i, r in enumerate(rows):
        images = int(r["images"])
        if args.every and images % args.every and i != len(rows) - 1:
            continue
        print(f"| {float(r['epoch']):.2f} | {images:,} | {float(r['error_last']):.2%} | {float(r['error_sum']):.2%} | "
              f"{float(r['error_prob']):.2%} | {float(r['wall_s']) / 3600:.2f} |")


if __name__ == "__main__":
    main()
