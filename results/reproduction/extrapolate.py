"""Issue 9: how many epochs would 1.8% take if the test-error curve kept its trend?

    python results/reproduction/extrapolate.py CURVE.csv [--from-epoch 1] [--target 0.018]

CURVE.csv is the output of ``spikefa curve RUN.h5``. Fits ``error = A * epochs^(-b)`` (a
straight line in log-log) to the test passes at or after ``--from-epoch`` by least squares,
for the reported read-out and for the spike count summed over the M test steps, and prints
the fit, its largest residual and the epochs at which the fitted line would reach the target.
This is an extrapolation of a trend, not a measurement: a curve that flattens (saturating
units, a learning rate too large for the final error) would take longer, or never get there.
"""

import argparse
import csv
import math

import numpy as np


def fit(epochs, errors):
    x, y = np.log(epochs), np.log(errors)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    return math.exp(intercept), -slope, float(np.abs(resid).max())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("curve")
    p.add_argument("--from-epoch", type=float, default=1.0)
    p.add_argument("--target", type=float, default=0.018)
    args = p.parse_args(argv)
    with open(args.curve) as f:
        rows = [r for r in csv.DictReader(f) if float(r["epoch"]) >= args.from_epoch]
    if len(rows) < 3:
        raise SystemExit(f"{args.curve}: {len(rows)} test passes at or after epoch {args.from_epoch}; need 3")
    epochs = np.array([float(r["epoch"]) for r in rows])
    print(f"{len(rows)} test passes, epochs {epochs[0]:.2f}-{epochs[-1]:.2f}; target {args.target:.1%}")
    for name in ("error", "error_sum"):
        errors = np.array([float(r[name]) for r in rows])
        A, b, worst = fit(epochs, errors)
        reach = (A / args.target) ** (1 / b) if b > 0 else math.inf
        print(f"{name:<10} last {errors[-1]:.2%}; fit {A:.4f} * epochs^-{b:.3f} (largest residual "
              f"{math.exp(worst) - 1:.1%}); reaches {args.target:.1%} at about {reach:,.0f} epochs")


if __name__ == "__main__":
    main()
