"""The analysis scripts of results/reproduction/ (issue 9) that its claims rest on."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parents[1] / "results" / "reproduction"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_extrapolation_finds_a_floor_and_says_when_there_is_none():
    """A curve with a 2% floor is never promised 1.8%, and the floors that fit as well
    include 2%; a curve without a floor is promised 1.8% near where its law reaches it."""
    fit_floor = _script("extrapolate").fit_floor
    rng = np.random.default_rng(0)
    t = np.linspace(3, 60, 170)
    c, A, b, (lo, hi), reach = fit_floor(t, 0.02 + 0.1 * t ** -0.7 + rng.normal(0, 0.001, t.size), 0.018)
    assert math.isinf(reach) and lo < 0.02 < hi and abs(c - 0.02) < 0.002
    c, A, b, (lo, hi), reach = fit_floor(t, 0.09 * t ** -0.3 + rng.normal(0, 0.001, t.size), 0.018)
    assert lo == 0.0 and c < 0.005
    assert 0.5 * (0.09 / 0.018) ** (1 / 0.3) < reach < 2 * (0.09 / 0.018) ** (1 / 0.3)


def test_extrapolate_and_curve_table_read_a_curve(tmp_path, capsys):
    csv = tmp_path / "curve.csv"
    rows = ["step,images,epoch,error,error_last,error_sum,error_prob,n_test,wall_s"]
    for k in range(1, 31):
        e = 0.08 * k ** -0.3
        rows.append(f"{k * 300000},{k * 60000},{k},{e},{e},{e * 0.95},{e},10000,{k * 600}")
    csv.write_text("\n".join(rows) + "\n")
    _script("extrapolate").main([str(csv), "--from-epoch", "3"])
    out = capsys.readouterr().out
    assert "28 test passes, epochs 3.00-30.00" in out and "reaches 1.8% at about 144 epochs" in out
    _script("curve_table").main([str(csv)])
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + 30 and table[2].startswith("| 1.00 | 60,000 | 8.00% | 7.60% |")
    _script("curve_table").main([str(csv), "--means", "3"])
    means = capsys.readouterr().out.splitlines()
    first = sum(0.08 * k ** -0.3 for k in (1, 2, 3)) / 3  # epochs 1, 2 and 3 make the span 0-3
    assert len(means) == 2 + 10 and means[2] == f"| 0-3 | 3 | {first:.2%} | {first * 0.95:.2%} | {first:.2%} |"
    assert means[-1].startswith("| 27-30 | 3 |")
    # a run that ends inside a span: the span is labelled up to the last pass, not past it
    csv.write_text("\n".join(rows[:-1]) + "\n")
    _script("curve_table").main([str(csv), "--means", "3"])
    assert capsys.readouterr().out.splitlines()[-1].startswith("| 27-29 | 2 |")
