"""spikefa.alignment and ``spikefa align``: alignment inside the class-error subspace.

Checked on networks whose answer is known: a forward matrix that equals B^T in the
class-error subspace and nothing else sits at the flattened 'ceiling' and at 0 degrees in
the subspace; a random one sits near 90 in both.
"""

from __future__ import annotations

import numpy as np
import pytest

from spikefa import alignment
from spikefa.cli import main
from spikefa.config import load_config
from spikefa.network import init_network
from spikefa.train import train


@pytest.fixture()
def tiny():
    cfg = load_config("tiny")
    return init_network(cfg), init_network(cfg)


def test_class_error_bases_are_orthonormal_and_start_from_the_classes(tiny):
    net, _ = tiny
    Q = alignment.class_error_bases(net)
    for l in range(1, net.m + 1):
        assert Q[l].shape == (int(net.sizes[l]), 10)
        np.testing.assert_allclose(Q[l].T @ Q[l], np.eye(10), atol=1e-10)
    y3 = np.zeros(int(net.sizes[net.m]))   # the target of class 3 (10 output units per class in tiny)
    y3[30:40] = 1.0
    np.testing.assert_allclose(Q[net.m] @ (Q[net.m].T @ y3), y3, atol=1e-10)


def test_fresh_network_is_unaligned(tiny):
    net, start = tiny
    rows = alignment.class_alignment(net, start)
    assert [r["layer"] for r in rows] == ["h1", "h2", "h3"][: net.m - 1]
    for r in rows:
        assert abs(r["flat"] - 90) < 3 and abs(r["subspace"] - 90) < 15
        assert np.isnan(r["flat_dw"]) and np.isnan(r["share"]) and r["growth"] == 0
        assert r["ceiling"] < 90


def test_weights_equal_to_b_in_the_subspace_reach_the_ceiling(tiny):
    net, start = tiny
    Q = alignment.class_error_bases(net)
    for l in range(1, net.m):
        B = net.feedback_matrix(l).astype(np.float64)
        net.W[l][...] = (B @ Q[l + 1] @ Q[l + 1].T).astype(net.W[l].dtype)   # W^{l+1}, stored (n_l, n_{l+1})
    for r in alignment.class_alignment(net, start):
        assert r["subspace"] == pytest.approx(0.0, abs=0.05)
        assert r["flat"] == pytest.approx(r["ceiling"], abs=0.05)
        assert r["ceiling"] > 60      # 10 of 100 directions: arccos(sqrt(0.1)) is about 72 degrees


def test_refuses_another_run_and_moving_feedback(tiny):
    net, start = tiny
    net.wiring.F[0][...] *= -1
    with pytest.raises(ValueError, match="B of h1 differs"):
        alignment.class_alignment(net, start)
    moving = init_network(load_config("tiny").replace(model={"feedback": "transport"}))
    with pytest.raises(ValueError, match="feedback 'transport' has none"):
        alignment.class_alignment(moving)


def test_cli_on_a_run_file_and_a_model(tmp_path, capsys):
    out = tmp_path / "tiny.h5"
    train("tiny", epochs=0.25, out=out, progress=False)
    assert main(["align", "tiny", str(out)]) in (0, None)
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    # several files: a first column names each row's file
    assert lines[0].startswith("| run | step | epochs | layer l | flat |") and len(lines) == 2 + 2 * 2   # tiny: h1, h2
    # every column is explained, on stderr so that the table can be redirected alone
    header = [c.strip() for c in lines[0].strip("|").split("|")][4:]
    assert all(f"\n  {c.split(' (')[0]} " in captured.err for c in header if c != "layer l")
    fresh, trained = lines[2:4], lines[4:6]
    assert all(line.startswith("| tiny | 0 | 0.00 |") for line in fresh)
    assert all(line.startswith(f"| {out} | 2,500 | 0.25 |") for line in trained)       # 500 images x 5 steps
    subspace = [float(line.split("|")[8]) for line in trained]
    flat = [float(line.split("|")[5]) for line in trained]
    assert min(subspace) < 60 and max(subspace) < 85   # a quarter epoch of tiny aligns in the subspace...
    assert min(flat) > 75                               # ...while the flattened angle hardly moves


def test_cli_names_the_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    assert main(["align", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikefa: error: ") and "bad.h5" in err
    # among several, a file that cannot be measured is said and the others are still measured
    (tmp_path / "transport.toml").write_text('[model]\nlayers = [784, 100, 100, 100]\nfeedback = "transport"\n')
    assert main(["align", str(bad), "tiny", str(tmp_path / "transport.toml")]) == 2
    captured = capsys.readouterr()
    assert [line.split("|")[1].strip() for line in captured.out.splitlines()[2:]] == ["tiny", "tiny"]
    assert "feedback 'transport' has none" in captured.err and "2 of 3 could not be measured" in captured.err


def test_error_share_is_the_mean_of_the_per_step_snapshots(tmp_path, capsys):
    """``error_share`` over T steps equals the one-step ``share`` of ``class_alignment``
    taken after each of T single steps of the same inputs and noise, averaged."""
    from spikefa.data import load_subset
    from spikefa.network import input_probabilities

    res = train("tiny", epochs=0.25, out=tmp_path / "tiny.h5", progress=False)
    from spikefa.train import network_from_file

    net = network_from_file(res.path)[0]
    images, labels = load_subset("train")
    T, N = 23, net.config.train.steps_per_image
    mean = alignment.error_share(net, images, labels, steps=T, seed=4)
    rng = np.random.default_rng(4)             # the draws error_share makes, in its order
    idx = np.resize(rng.choice(len(labels), size=-(-T // N), replace=False), -(-T // N))
    u = rng.random((T, net.n_units))
    probs = input_probabilities(images[idx], net.config.model.p_max)
    step = net.copy()
    shares = []
    for t in range(T):
        k = np.array([t // N])
        step.run(u[t:t + 1], probs, k, labels[idx][k], plastic=False, feedback=True)
        shares.append([r["share"] for r in alignment.class_alignment(step)])
    np.testing.assert_allclose(mean, np.mean(shares, axis=0), rtol=1e-9)
    assert len(mean) == net.m - 1 and all(0 < s < 1 for s in mean)
    assert alignment.error_share(net, images, labels, steps=T, seed=5) != mean
    with pytest.raises(ValueError, match="steps must be at least 1, got 0"):
        alignment.error_share(net, images, labels, steps=0)
    # and through the command line: the column says what it holds
    capsys.readouterr()
    assert main(["align", str(res.path), "--share-steps", "50"]) in (0, None)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("| error in Q (mean of 50 steps) |") and len(lines) == 2 + 2
    assert all(0 < float(line.split("|")[10]) < 1 for line in lines[2:])
    assert main(["align", str(res.path), "--share-steps", "-1"]) == 2
    assert "--share-steps must be 0 or more, got -1" in capsys.readouterr().err


def test_learned_feedback_is_measured_against_the_b_it_has_learned(tmp_path, capsys):
    """feedback = 'learned': B moves (node perturbation), so W is compared with B as it is
    at the step measured, the angle the run file records, and not with B(0)."""
    from spikefa.measures import angle_deg
    from spikefa.runfile import Run
    from spikefa.train import network_from_file

    cfg = load_config("tiny").replace(model={"feedback": "learned", "eta_feedback": 1e-4})
    out = train(cfg, epochs=0.1, out=tmp_path / "learned.h5", progress=False).path
    net, steps = network_from_file(out)[:2]
    start = init_network(cfg)
    recorded = Run(out).angles()
    assert recorded["step"][-1] == steps
    rows = alignment.class_alignment(net)
    for l, r in enumerate(rows, start=1):
        B, B0 = net.feedback_matrix(l).astype(np.float64), start.feedback_matrix(l).astype(np.float64)
        W = net.weights(l + 1).astype(np.float64)
        assert not np.array_equal(B, B0)                                   # B has learned
        assert r["flat"] == pytest.approx(angle_deg(W, B), abs=1e-9)
        assert abs(angle_deg(W, B) - angle_deg(W, B0)) > 1e-3              # and that matters
        assert r["flat"] == pytest.approx(recorded["weight"][r["layer"]][-1], abs=1e-3)
        assert r["growth"] == pytest.approx(np.linalg.norm(W - start.weights(l + 1)) / np.linalg.norm(start.weights(l + 1)))
    assert main(["align", str(out)]) in (0, None)
    assert capsys.readouterr().out.count(f"| {steps:,} |") == len(rows)
