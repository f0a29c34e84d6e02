"""Issue 9: how many epochs would 1.8% take if the test-error curve kept its trend?

    python results/reproduction/extrapolate.py CURVE.csv [--from-epoch 1] [--target 0.018]

CURVE.csv is the output of ``spikefa curve RUN.h5``. Fits ``error = A * epochs^(-b)`` (a
straight line in log-log) to the test passes at or after ``--from-epoch`` by least squares,
for the reported read-out and for the spike count summed over the M test steps, and prints
the fit, its largest residual and the epochs at which the fitted line would reach the target.
This is an extrapolation of a trend, not a measurement: a curve that flattens (saturating
units, a learning rate too large for the final error) would take longer, or never get there.

It then fits the same with a floor, ``error = c + A * epochs^(-b)``, by profiling over the
floor ``c`` (squared residuals in the error itself), and prints the best floor and the
floors the data cannot tell from it (those whose residual sum of squares lies within an
F-test's 95% bound of the best, treating test passes as independent): if that range
reaches above the target, the curve so far cannot promise the target at any length.
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


def fit_floor(epochs, errors, target):
    """Best floor ``c``, the (low, high) floors compatible with the data, and the epochs at
    which the best fit reaches ``target`` (inf if never). Least squares in the error itself:
    for each floor and exponent on a grid the amplitude is solved exactly."""
    n = len(errors)
    grid_c = np.linspace(0.0, 0.999 * errors.min(), 400)
    grid_b = np.linspace(0.01, 2.0, 400)
    X = epochs[None, :] ** (-grid_b[:, None])  # (b, n)
    best = []
    for c in grid_c:
        y = errors - c
        A = (X @ y) / (X * X).sum(axis=1)
        sse = ((y[None, :] - A[:, None] * X) ** 2).sum(axis=1)
        j = int(np.argmin(sse))
        best.append((float(sse[j]), float(A[j]), float(grid_b[j])))
    sse = np.array([b[0] for b in best])
    k = int(np.argmin(sse))
    # F(1, n - 3) at 95%: about 3.84 for large n; 4.2 keeps it safe down to n = 30
    bound = sse[k] * (1 + (3.84 if n > 60 else 4.2) / max(n - 3, 1))
    ok = grid_c[sse <= bound]
    c, (_, A, b) = grid_c[k], best[k]
    reach = (A / (target - c)) ** (1 / b) if target > c else math.inf
    return c, A, b, (float(ok.min()), float(ok.max())), reach


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
        c, A, b, (lo, hi), reach = fit_floor(epochs, errors, args.target)
        when = f"reaches {args.target:.1%} at about {reach:,.0f} epochs" if math.isfinite(reach) else f"never reaches {args.target:.1%}"
        print(f"{'':<10} with a floor: {c:.2%} + {A:.4f} * epochs^-{b:.3f}; {when}; floors {lo:.2%}-{hi:.2%} fit as well")


if __name__ == "__main__":
    main()
