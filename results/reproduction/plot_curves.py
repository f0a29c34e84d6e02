"""Issue 9: test-error curves of several runs, read from their ``spikefa curve`` CSV files.

    python results/reproduction/plot_curves.py OUT.png LABEL=CURVE.csv [LABEL=CURVE.csv ...]
        [--max-epoch E] [--ymax PERCENT] [--zoom-from E]

Solid: the read-out at the last of the M test steps (the reported error); dotted: spikes
summed over the M steps. A horizontal line marks the paper's 1.8%. ``--zoom-from E`` adds
a second panel from epoch E on, its error axis from 1.5% to 4.5%.
"""

import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _draw(ax, specs, max_epoch, min_epoch=0.0):
    for i, spec in enumerate(specs):
        label, path = spec.split("=", 1)
        with open(path) as f:
            rows = [r for r in csv.DictReader(f) if (max_epoch is None or float(r["epoch"]) <= max_epoch + 1e-9)
                    and float(r["epoch"]) >= min_epoch]
        ep = [float(r["epoch"]) for r in rows]
        ax.plot(ep, [100 * float(r["error_last"]) for r in rows], marker="o", markersize=3, color=f"C{i}",
                label=f"{label} (last step)")
        ax.plot(ep, [100 * float(r["error_sum"]) for r in rows], linestyle=":", color=f"C{i}",
                label=f"{label} (summed over M steps)")
    ax.axhline(1.8, color="0.5", linewidth=0.8)
    ax.text(0.02, 1.9, "paper: 1.8%", fontsize="small", color="0.4", transform=ax.get_yaxis_transform())
    ax.set_xlabel("epochs (60,000 training images each)")


def main(out, specs, max_epoch=None, ymax=12.0, zoom_from=None):
    if zoom_from is None:
        fig, ax = plt.subplots(figsize=(6.5, 4.0))
        axes = [ax]
    else:
        fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.0))
    _draw(axes[0], specs, max_epoch)
    axes[0].set_ylabel("test error on 10,000 images (%)")
    axes[0].set_ylim(0, ymax)
    axes[0].legend(fontsize="x-small", frameon=False)
    if zoom_from is not None:
        _draw(axes[1], specs, max_epoch, zoom_from)
        axes[1].set_ylim(1.5, 4.5)
        axes[1].set_title(f"from epoch {zoom_from:g} on", fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=150)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("curves", nargs="+", metavar="LABEL=CURVE.csv")
    ap.add_argument("--max-epoch", type=float, default=None, help="plot test passes up to this epoch only")
    ap.add_argument("--ymax", type=float, default=12.0, help="top of the error axis in percent (default 12)")
    ap.add_argument("--zoom-from", type=float, default=None, help="add a panel from this epoch on (error 1.5-4.5%%)")
    a = ap.parse_args()
    main(a.out, a.curves, a.max_epoch, a.ymax, a.zoom_from)
