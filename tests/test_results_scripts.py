"""The analysis scripts of results/reproduction/ (issue 9) that its claims rest on."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

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
    # spans (A, B]: the passes after A up to B, with the lowest and highest beside the mean
    _script("curve_table").main([str(csv), "--spans", "2:5", "0:29"])
    spans = capsys.readouterr().out.splitlines()
    e3, e4, e5 = (0.08 * k ** -0.3 for k in (3, 4, 5))
    assert spans[2] == (f"| 2-5 | 3 | {(e3 + e4 + e5) / 3:.2%} | {e5:.2%}-{e3:.2%} | "
                        f"{(e3 + e4 + e5) / 3 * 0.95:.2%} | {e5 * 0.95:.2%}-{e3 * 0.95:.2%} |")
    assert spans[3].startswith("| 0-29 | 29 |")
    for bad in ("5:2", "a:b", "30:31"):  # backwards, not numbers, past the curve's end
        with pytest.raises(SystemExit):
            _script("curve_table").main([str(csv), "--spans", bad])
    assert bad in capsys.readouterr().err
    # several curves side by side: one column each, means at the last step (summed), and a
    # curve that ends earlier says how many passes its last span has
    full = tmp_path / "full.csv"
    full.write_text("\n".join(rows) + "\n")
    _script("curve_table").main([f"A={full}", str(csv), "--means", "3"])
    cols = capsys.readouterr().out.splitlines()
    assert cols[0] == f"| epochs | A | {csv} |" and len(cols) == 2 + 10
    assert cols[2] == f"| 0-3 | {first:.2%} ({first * 0.95:.2%}) | {first:.2%} ({first * 0.95:.2%}) |"
    e28, e29 = (0.08 * k ** -0.3 for k in (28, 29))
    assert cols[-1].endswith(f"| {(e28 + e29) / 2:.2%} ({(e28 + e29) / 2 * 0.95:.2%}) (2 passes) |")
    _script("curve_table").main([f"A={full}", "--means", "3"])  # one labelled curve: its own table
    assert capsys.readouterr().out.splitlines()[2] == f"| 0-3 | 3 | {first:.2%} | {first * 0.95:.2%} | {first:.2%} |"
    for extra in ([], ["--means", "3", "--spans", "2:5"]):  # several curves need --means, not --spans
        with pytest.raises(SystemExit):
            _script("curve_table").main([str(full), str(csv)] + extra)


def _tiny_run(tmp_path, **model):
    from spikefa.config import load_config
    from spikefa.train import train

    cfg = load_config("tiny").replace(train={"epochs": 0.5}, test={"n_test": 100}, **({"model": model} if model else {}))
    return train(cfg, out=tmp_path / "tiny.h5", progress=False).path


def test_wrong_images_reads_the_last_test_step(tmp_path, capsys):
    """The per-unit probabilities the script groups are those of the last test step: summed
    per class they give the test's own sigma(V) read-out, image for image."""
    from spikefa.train import load_data, network_from_file

    mod = _script("wrong_images")
    run = _tiny_run(tmp_path)
    net, _, _, _ = network_from_file(run)
    images, labels = load_data(net.config, "train", None, 300)
    res, p = mod.last_step_probabilities(net, images, labels)
    assert p.shape == (300, net.n_units - net.sizes[0])
    out = p[:, -net.sizes[-1]:].astype(np.float64).reshape(300, 10, -1).sum(axis=2)
    assert np.mean(np.argmax(out, axis=1) != labels) == res.error_prob
    mod.main([str(run), "--n", "300"])
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith(("| right", "| wrong"))]
    counts = [int(r.split("|")[2].replace(",", "")) for r in rows[:2]]
    assert sum(counts) == 300 and counts[-1] == round(res.error * 300)


def test_rounding_loss_compares_the_float32_change_with_the_exact_sum(tmp_path, capsys):
    """The exact float64 sum of the traced updates is the change the float32 weights made,
    to float32 rounding (tiny's eta is large, so little is lost), and a float64 network,
    which has nothing to compare, is refused."""
    import pytest

    mod = _script("rounding_loss")
    mod.main([_tiny_run(tmp_path).as_posix(), "--steps", "400", "--block", "100"])
    rows = [r.split("|") for r in capsys.readouterr().out.splitlines() if r.startswith("| h") or r.startswith("| out")]
    assert len(rows) == 3
    for r in rows:
        assert abs(float(r[2]) - 1) < 1e-4 and float(r[4]) < 1e-4
    with pytest.raises(SystemExit, match="float64"):
        mod.main([str(_tiny_run(tmp_path / "f64", dtype="float64")), "--steps", "10"])


def test_presentation_compares_runs_at_equal_images_equal_steps_and_their_level(tmp_path, capsys):
    """Runs are grouped by the key's value; a cell is the mean ± s.d. over seeds of the pass
    at exactly that epoch or step, '-' where a run has none; the level is the mean of the
    last passes and the best pass."""
    import json

    import h5py
    import pytest

    def run(name, n, seed, errors):
        k = np.arange(1, len(errors) + 1)
        with h5py.File(tmp_path / name, "w") as f:
            f.attrs["config"] = json.dumps({"train": {"steps_per_image": n}, "run": {"seed": seed}})
            g = f.create_group("test")
            g["step"], g["epoch"] = k * 1000 * n, k.astype(float)
            g["error_last"], g["error_sum"] = np.array(errors), np.array(errors) - 0.01
        return str(tmp_path / name)

    paths = [run("a.h5", 5, 1, [0.5, 0.3, 0.2, 0.2]), run("b.h5", 5, 2, [0.4, 0.3, 0.2, 0.1]),
             run("c.h5", 10, 1, [0.3, 0.2])]
    mod = _script("presentation")
    mod.main(paths + ["--epochs", "1,3", "--steps", "10000,15000", "--last", "2"])
    lines = capsys.readouterr().out.splitlines()
    rows = [r for r in lines if r.startswith(("| 5 |", "| 10 |"))]
    assert rows[0] == "| 5 | 2 | 45.00 ± 7.07 (44.00 ± 7.07) | 20.00 ± 0.00 (19.00 ± 0.00) |"
    assert rows[1] == "| 10 | 1 | 30.00 (29.00) | - (-) |"
    assert rows[2] == "| 5 | 2 | 30.00 ± 0.00 (29.00 ± 0.00) | 20.00 ± 0.00 (19.00 ± 0.00) |"
    assert rows[3] == "| 10 | 1 | 30.00 (29.00) | - (-) |"
    assert rows[4] == "| 5 | 2 | 4 | 17.50 ± 3.54 (16.50 ± 3.54) | 15.00 ± 7.07 (14.00 ± 7.07) |"
    with pytest.raises(SystemExit):
        mod.main(paths + ["--last", "0"])
    with pytest.raises(SystemExit, match="no key 'train.stepsperimage'"):
        mod.main(paths + ["--key", "train.stepsperimage"])


def test_saturation_spans_average_a_run_files_samples(tmp_path, capsys):
    """``saturation.py RUN --spans A:B``: each row is the mean of the run file's recorded
    samples after A and up to B epochs, per layer; a span with no sample is an error."""
    import pytest

    from spikefa.runfile import Run

    path = _tiny_run(tmp_path)
    run = Run(path)
    sat = run.saturation()
    ep = sat["step"] / (run.config.train.steps_per_image * int(run.attrs["n_train"]))
    assert ep.size >= 4
    mid = float(ep[ep.size // 2])
    _script("saturation").main([str(path), "--spans", f"0:{mid}", f"{mid}:0.5"])
    rows = [r.split("|") for r in capsys.readouterr().out.splitlines()[2:]]
    assert len(rows) == 2
    for r, sel in zip(rows, ((ep > 0) & (ep <= mid), ep > mid)):  # (a, b]: a sample at 0 is in neither
        assert int(r[2]) == sel.sum()
        want = [float(np.mean(sat["slope"][n][sel])) for n in sat["slope"]]
        assert [float(x) for x in r[4].split("/")] == pytest.approx(want, abs=5e-4)
    with pytest.raises(SystemExit, match="no saturation sample"):
        _script("saturation").main([str(path), "--spans", "3:4"])
    with pytest.raises(SystemExit):
        _script("saturation").main([str(path), "--spans", "4:3"])
