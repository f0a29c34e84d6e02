"""Issue 9: a test-error curve (``spikefa curve RUN.h5 > CURVE.csv``) as a Markdown table.

    python results/reproduction/curve_table.py CURVE.csv [--every 60000]
    python results/reproduction/curve_table.py CURVE.csv --means 3
    python results/reproduction/curve_table.py CURVE.csv --spans 32.99:35.67 14.99:36.67
    python results/reproduction/curve_table.py "I=CURVE.csv" "I, seed 2=OTHER.csv" --means 3

One row per test pass whose number of training images is a multiple of ``--every`` (and
the last pass), with the error of every read-out on the test set and the run's wall time.
With ``--means E``: one row per span of E epochs, the mean of its test passes (a single
pass varies by a few tenths of a point; the means show the trend). With ``--spans A:B``:
one row per span of epochs (passes after A up to B, as in ``--means`` and saturation.py),
with the lowest and highest pass beside the means, to compare two runs on the same passes.
With several curves (each ``CURVE.csv`` or ``LABEL=CURVE.csv``) and ``--means E``: one
column per curve, the mean of each span's passes at the last step (summed over M in
brackets); a span with fewer passes than another curve's says how many it has.
"""

import argparse
import csv
import math


def _mean(rows, name):
    """The mean of one column over some test passes (the CSV's rows)."""
    return sum(float(r[name]) for r in rows) / len(rows)


def _read(text):
    """A curve argument, ``CURVE.csv`` or ``LABEL=CURVE.csv`` (as plot_curves.py: the label
    ends at the first "="), as its label and its test passes (the CSV's rows)."""
    label, sep, path = text.partition("=")
    if not sep:
        label, path = text, text
    with open(path) as f:
        return label, list(csv.DictReader(f))


def _groups(rows, epochs):
    """Test passes in spans of ``epochs``: a pass at the end of a span belongs to it, (a, a + E]."""
    groups = {}
    for r in rows:
        k = max(math.ceil(float(r["epoch"]) / epochs - 1e-9) - 1, 0)
        groups.setdefault(k, []).append(r)
    return groups


def compare(p, curves, epochs):
    """Several curves side by side, one column each, means over spans of ``epochs``."""
    if not epochs:
        p.error("several curves: give --means E (the spans the columns share)")
    labels, groups = [], []
    for text in curves:
        label, rows = _read(text)
        if not rows:
            p.error(f"{text}: no test passes")
        labels.append(label)
        groups.append(_groups(rows, epochs))
    print("| epochs | " + " | ".join(labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    for k in sorted(set().union(*groups)):
        most = max(len(g.get(k, ())) for g in groups)
        cells = []
        for g in groups:
            rs = g.get(k, [])
            cell = f"{_mean(rs, 'error_last'):.2%} ({_mean(rs, 'error_sum'):.2%})" if rs else ""
            if rs and len(rs) < most:
                cell += f" ({len(rs)} pass{'es' if len(rs) > 1 else ''})"
            cells.append(cell)
        print(f"| {k * epochs:g}-{(k + 1) * epochs:g} | " + " | ".join(cells) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("curve", nargs="+", help="CURVE.csv or LABEL=CURVE.csv; several with --means")
    p.add_argument("--every", type=int, default=60000, help="training images between rows (0: every pass)")
    p.add_argument("--means", type=float, default=0, metavar="E", help="mean of the passes in each span of E epochs")
    p.add_argument("--spans", nargs="+", metavar="A:B", help="mean, lowest and highest pass in each span (A, B] of epochs")
    args = p.parse_args(argv)
    spans = []
    for text in args.spans or ():
        try:
            a, b = (float(x) for x in text.split(":"))
        except ValueError:
            p.error(f"--spans: expected A:B in epochs, got {text!r}")
        if a >= b:
            p.error(f"--spans: expected A:B with A < B, got {text!r}")
        spans.append((text, a, b))
    if len(args.curve) > 1:
        if spans:
            p.error("--spans reads one curve at a time")
        compare(p, args.curve, args.means)
        return
    rows = _read(args.curve[0])[1]
    if spans:
        table = ["| epochs | test passes | mean test error, last step | lowest-highest | summed over M steps | lowest-highest |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for text, a, b in spans:
            rs = [r for r in rows if a < float(r["epoch"]) <= b]
            if not rs:
                p.error(f"--spans: no test pass in {text} (the curve runs to epoch {rows[-1]['epoch'] if rows else 0})")
            cells = [f"{text.replace(':', '-')}", str(len(rs))]
            for name in ("error_last", "error_sum"):
                v = [float(r[name]) for r in rs]
                cells += [f"{_mean(rs, name):.2%}", f"{min(v):.2%}-{max(v):.2%}"]
            table.append("| " + " | ".join(cells) + " |")
        print("\n".join(table))
        return
    if args.means:
        print("| epochs | test passes | mean test error, last step | summed over M steps | sigma(V) |")
        print("| --- | --- | --- | --- | --- |")
        groups = _groups(rows, args.means)
        end = float(rows[-1]["epoch"]) if rows else 0.0
        for k, rs in sorted(groups.items()):
            means = [_mean(rs, name) for name in ("error_last", "error_sum", "error_prob")]
            hi = min((k + 1) * args.means, round(end, 2))  # a run that ends inside a span: up to its last pass
            print(f"| {k * args.means:g}-{hi:g} | {len(rs)} | " + " | ".join(f"{m:.2%}" for m in means) + " |")
        return
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
