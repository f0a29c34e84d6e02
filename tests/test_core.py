"""The step kernels, the protocol and the run file (issue 2).

Tolerances are multiples of the working dtype's machine epsilon; stochastic checks state
their binomial bounds in their docstrings.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import spikefa
from spikefa.config import ConfigError, available_models, config_from_dict, load_config
from spikefa.data import DataError, load_subset
from spikefa.network import init_network, input_probabilities
from spikefa.runfile import Run, RunFileError, checkpoint_path
from spikefa.train import check_images, evaluate, test_run, train

VARIANTS = ["fa", "transport", "dfa", "shallow", "sparse-fa", "learned"]


def small_cfg(**model):
    model.setdefault("layers", [784, 40, 30, 20, 20])
    model.setdefault("n_classes", 10)
    return config_from_dict({"model": model, "train": {"dataset": "mnist-subset"}})


def block_inputs(net, T, seed=0, n_img=8):
    rng = np.random.default_rng(seed)
    images, labels = load_subset("train")
    probs = input_probabilities(images[:n_img], net.config.model.p_max)
    step_image = (np.arange(T) // 5) % n_img
    return rng.random((T, net.n_units)), probs, step_image, labels[:n_img][step_image]


# ---------------------------------------------------------------------------- kernel vs twin
@pytest.mark.parametrize("backend", ["numba-serial", "numba-parallel"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_matches_numpy_twin(variant, dtype, backend):
    """300 steps with plasticity on: identical spikes; PSPs, feedback PSPs, weights, biases
    and feedback matrices equal within 64 eps of the dtype (float32: bit-identical in practice,
    since all sums are taken in float64 and rounded once)."""
    cfg = small_cfg(feedback=variant, dtype=dtype, eta=5e-3)
    a = init_network(cfg)
    b = a.copy()
    u, probs, si, lab = block_inputs(a, 300)
    rec = np.arange(784, 894)
    oa = a.run(u, probs, si, lab, rec_idx=rec, backend=backend)
    ob = b.run(u, probs, si, lab, rec_idx=rec, backend="numpy")
    assert oa["spikes"].sum() > 0
    np.testing.assert_array_equal(oa["spikes"], ob["spikes"])
    eps = np.finfo(dtype).eps
    for name in ("psp", "feedback_psp", "modulator"):
        np.testing.assert_allclose(oa[name], ob[name], rtol=0, atol=64 * eps)
    for l in range(a.m):
        np.testing.assert_allclose(a.W[l], b.W[l], rtol=0, atol=64 * eps * 0.1)
        np.testing.assert_allclose(a.b[l], b.b[l], rtol=0, atol=64 * eps * 0.1)
    for Fa, Fb in zip(a.wiring.F, b.wiring.F):
        np.testing.assert_allclose(Fa, Fb, rtol=0, atol=64 * eps)
    np.testing.assert_array_equal(a.scale, b.scale)
    # the weights did learn, so the comparison above is not between untouched arrays
    assert not np.array_equal(a.W[-1], init_network(cfg).W[-1])


@pytest.mark.parametrize("backend", ["numba-serial", "numba-parallel"])
@pytest.mark.parametrize("variant, storage", [("fa", "float"), ("fa", "int8"), ("dfa", "int8"), ("sparse-fa", "int8")])
def test_wide_layers_and_int8_feedback_match_twin(variant, storage, backend):
    """Layers wide enough (about 128 active units) that the forward sweep sums its active
    rows in several shares, and feedback stored as int8 levels: identical spikes and weights
    within 64 float32 eps over 100 learning steps (sums in float64, rounded once); the drive
    of every feedback population is the effective matrix ``feedback_matrix`` (int8 levels
    times their value) applied to the signal from above."""
    cfg = small_cfg(layers=[784, 256, 256, 20], feedback=variant, feedback_storage=storage, eta=5e-3)
    a = init_network(cfg)
    b = a.copy()
    u, probs, si, lab = block_inputs(a, 100)
    oa = a.run(u, probs, si, lab, backend=backend)
    ob = b.run(u, probs, si, lab, backend="numpy")
    assert a._work["n_active"][1] >= 2 * 32  # h1's active rows were summed in shares
    np.testing.assert_array_equal(oa["spikes"], ob["spikes"])
    eps = np.finfo(np.float32).eps
    for l in range(a.m):
        np.testing.assert_allclose(a.W[l], b.W[l], rtol=0, atol=64 * eps * 0.1)
    assert all(F.dtype == (np.int8 if storage == "int8" else np.float32) for F in a.wiring.F)
    st = a.state
    for l in range(1, a.m):
        src = a.layer_slice(int(a.wiring.src[l - 1]))
        expect = a.feedback_matrix(l).astype(np.float64) @ st.phi_fb[src]
        np.testing.assert_allclose(st.fb_drive[a.layer_slice(l)], expect, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"), reason="no threads without the JIT")
def test_thread_count_does_not_change_the_bits(monkeypatch):
    """The forward sweep's shares depend on the number of active rows only, so the serial
    kernel and the threaded one with 2 or 7 threads' worth of column chunks add in the same
    order: in float64, every PSP and weight is bit-identical after 100 learning steps."""
    import numba

    cfg = small_cfg(layers=[784, 600, 300, 20], dtype="float64", eta=5e-3)
    u, probs, si, lab = block_inputs(init_network(cfg), 100)
    results = []
    for backend, threads in (("numba-serial", 1), ("numba-parallel", 2), ("numba-parallel", 7)):
        monkeypatch.setattr(numba, "get_num_threads", lambda t=threads: t)
        net = init_network(cfg)
        out = net.run(u, probs, si, lab, backend=backend)
        results.append((out["spikes"].copy(), net.state.psp.copy(), [w.copy() for w in net.W]))
    assert net._work["n_active"][1] >= 8 * 32  # all eight shares were used in h1 -> h2
    for spikes, psp, W in results[1:]:
        np.testing.assert_array_equal(spikes, results[0][0])
        np.testing.assert_array_equal(psp, results[0][1])
        for w, w0 in zip(W, results[0][2]):
            np.testing.assert_array_equal(w, w0)


def test_int8_feedback_levels():
    """int8 feedback: B = a k / 127 with k uniform on -127..127 (a = model.feedback_init).
    Over 400,000 entries the mean of k lies within 4 s.e. of 0 (s.e. = sd / sqrt(n),
    sd = sqrt(127*128/3) = 73.3: |mean| < 0.47), its variance within 1% of 127*128/3, and
    all 255 levels occur; ``feedback_matrix`` gives the effective float matrix."""
    cfg = small_cfg(layers=[784, 400, 500, 1000, 20], feedback_storage="int8", feedback_init=0.1)
    net = init_network(cfg)
    k = np.concatenate([F.ravel().astype(np.int64) for F in net.wiring.F])
    assert k.size >= 400_000 and k.min() == -127 and k.max() == 127
    assert np.unique(k).size == 255
    assert abs(k.mean()) < 4 * math.sqrt(127 * 128 / 3) / math.sqrt(k.size)
    assert abs(k.var() / (127 * 128 / 3) - 1) < 0.01
    B = net.feedback_matrix(1)
    assert B.dtype == np.float32 and np.abs(B).max() <= 0.1 * (1 + 1e-6)
    np.testing.assert_allclose(B, 0.1 / 127 * net.wiring.F[0], rtol=1e-7)


def test_int8_feedback_is_for_fixed_feedback_only():
    for variant in ("transport", "learned"):
        with pytest.raises(ConfigError, match=f"model.feedback_storage = 'int8'.*{variant}"):
            small_cfg(feedback=variant, feedback_storage="int8")
    with pytest.raises(ConfigError, match="model.feedback_storage = 'half'.*'float', 'int8'"):
        small_cfg(feedback_storage="half")


def test_test_mode_matches_twin():
    cfg = small_cfg()
    a = init_network(cfg)
    b = a.copy()
    u, probs, si, lab = block_inputs(a, 200, seed=3)
    oa = a.run(u, probs, si, lab, plastic=False, backend="numba-serial")
    ob = b.run(u, probs, si, lab, plastic=False, backend="numpy")
    np.testing.assert_array_equal(oa["spikes"], ob["spikes"])


# ---------------------------------------------------------------------------- by hand
# one step by hand, on every back end and phi_d: tests/test_rules.py


def test_decay_scale_equals_literal_rule():
    """Many steps with a large decay: the float64 scale equals W - eta (m s^T + gamma W) step by step."""
    cfg = config_from_dict({"model": {"layers": [784, 30, 20], "n_classes": 10, "gamma": 2.0, "eta": 0.05,
                                      "dtype": "float64"}})
    net = init_network(cfg)
    W = [w.copy() for w in net.W]
    b = [x.copy() for x in net.b]
    u, probs, si, lab = block_inputs(net, 40, seed=5)
    for t in range(40):  # one step at a time, the literal rule applied beside it
        out = net.run(u[t:t + 1], probs, si[t:t + 1], lab[t:t + 1], backend="numpy")
        s = out["spikes"][0]
        for l in range(net.m):
            sl = net.layer_slice(l + 1)
            mod = net.state.modulator[sl]
            pre = s[net.layer_slice(l)].astype(float)
            W[l] = W[l] - 0.05 * (np.outer(pre, mod) + 2.0 * W[l])
            b[l] = b[l] - 0.05 * (mod + 2.0 * b[l])
    assert net.scale.min() < 0.99  # the decay was exercised (and folded when below 1/2)
    for l in range(net.m):
        np.testing.assert_allclose(net.weights(l + 1), W[l], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(net.biases(l + 1), b[l], rtol=1e-10, atol=1e-14)


def test_float32_decay_is_not_lost():
    """float32(1 - eta*gamma) == 1, yet the decay reaches the effective weights through the scale."""
    assert np.float32(1 - 1e-3 * 1e-8) == 1
    cfg = small_cfg()
    net = init_network(cfg)
    u, probs, si, lab = block_inputs(net, 10)
    net.run(u, probs, si, lab)
    assert net.scale[0] == pytest.approx((1 - 1e-11) ** 10, rel=1e-15)
    assert net.scale[0] < 1


# ---------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_input_spike_frequencies(seed):
    """Input unit i spikes with probability min(x_i, p_max). Over T = 4000 steps the count is
    Binomial(T, p); |rate - p| <= 5 sqrt(p (1-p) / T) fails with probability < 1e-6 per unit."""
    cfg = config_from_dict({"model": {"layers": [6, 4, 10], "n_classes": 10}})
    net = init_network(cfg)
    x = np.array([[0.0, 0.05, 0.3, 0.5, 0.96, 1.0]])
    p = np.minimum(x[0], 0.95)
    T = 4000
    u = np.random.default_rng(seed).random((T, net.n_units))
    out = net.run(u, input_probabilities(x, 0.95), np.zeros(T, int), np.zeros(T, int), plastic=False)
    rate = out["spikes"][:, :6].mean(axis=0)
    bound = 5 * np.sqrt(p * (1 - p) / T)
    assert np.all(np.abs(rate - p) <= bound), (rate, p)
    assert rate[0] == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hidden_spike_frequencies(seed):
    """With W = 0 and bias b, V -> b geometrically (factor 1 - tau per step) and units spike
    with probability sigma(b); after a 20-step transient the count over T = 4000 steps is
    Binomial(T, sigma(b)), checked with the same 5-sigma bound."""
    cfg = config_from_dict({"model": {"layers": [3, 5, 10], "n_classes": 10}})
    net = init_network(cfg)
    for w in net.W:
        w[...] = 0
    bias = np.array([-3.0, -1.0, 0.0, 0.5, 2.0])
    net.b[0][...] = bias
    T = 4020
    u = np.random.default_rng(seed).random((T, net.n_units))
    out = net.run(u, np.zeros((1, 3)), np.zeros(T, int), np.zeros(T, int), plastic=False)
    rate = out["spikes"][20:, 3:8].mean(axis=0)
    p = 1 / (1 + np.exp(-bias.astype(np.float32).astype(float)))
    assert np.all(np.abs(rate - p) <= 5 * np.sqrt(p * (1 - p) / 4000)), (rate, p)


# ---------------------------------------------------------------------------- invariants
def test_feedback_never_changes_forward_activity():
    """Plasticity off: forward spikes and PSPs are the same with feedback on, with feedback off,
    and with feedback weights 100x larger."""
    cfg = small_cfg()
    a = init_network(cfg)
    b, c = a.copy(), a.copy()
    for F in c.wiring.F:
        F *= 100
    u, probs, si, lab = block_inputs(a, 100)
    oa = a.run(u, probs, si, lab, plastic=False, feedback=True)
    ob = b.run(u, probs, si, lab, plastic=False, feedback=False)
    oc = c.run(u, probs, si, lab, plastic=False, feedback=True)
    np.testing.assert_array_equal(oa["spikes"], ob["spikes"])
    np.testing.assert_array_equal(oa["spikes"], oc["spikes"])
    np.testing.assert_array_equal(a.state.psp, c.state.psp)
    assert np.abs(a.state.feedback_psp).max() > 0  # the feedback sweep did run
    assert not np.array_equal(a.state.feedback_psp, c.state.feedback_psp)


def test_plasticity_off_leaves_weights_untouched():
    cfg = small_cfg(feedback="learned")
    net = init_network(cfg)
    before = [w.copy() for w in net.W] + [x.copy() for x in net.b] + [f.copy() for f in net.wiring.F]
    u, probs, si, lab = block_inputs(net, 100)
    net.run(u, probs, si, lab, plastic=False, feedback=True)
    after = list(net.W) + list(net.b) + list(net.wiring.F)
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)
    assert np.all(net.scale == 1)


def test_variants_wiring():
    for v in VARIANTS:
        net = init_network(small_cfg(feedback=v))
        w = net.wiring
        assert w.learn[-1]
        assert w.learn.all() == (v != "shallow")
        assert w.learns.any() == (v == "learned")
    net = init_network(small_cfg(feedback="transport"))
    assert net.wiring.F[0] is net.W[1]  # feedback reads the live forward weights
    net = init_network(small_cfg(feedback="dfa"))
    assert (net.wiring.src == net.m).all()
    with pytest.raises(ConfigError, match="'fa', 'transport', 'dfa', 'shallow', 'sparse-fa', 'learned'"):
        small_cfg(feedback="backprop")


def test_sparse_fa_removed_synapses_stay_zero():
    cfg = small_cfg(feedback="sparse-fa", eta=0.05)
    net = init_network(cfg)
    masks = [m.copy() for m in net.wiring.W_mask]
    for W, m in zip(net.W, masks):
        assert abs((1 - m.mean()) - 0.5) < 0.1
        assert np.all(W[m == 0] == 0)
    u, probs, si, lab = block_inputs(net, 300)
    net.run(u, probs, si, lab)
    for W, m in zip(net.W, masks):
        assert np.all(W[m == 0] == 0)
        assert np.any(W[m == 1] != init_network(cfg).W[0][0, 0])


# ---------------------------------------------------------------------------- protocol
def test_same_seed_same_run_different_seed_differs(tmp_path):
    r1 = train("tiny", epochs=0.25, out=tmp_path / "a.h5", progress=False)
    r2 = train("tiny", epochs=0.25, out=tmp_path / "b.h5", progress=False)
    r3 = train("tiny", epochs=0.25, seed=7, out=tmp_path / "c.h5", progress=False)
    for layer in ("h1", "h2", "out"):
        np.testing.assert_array_equal(Run(r1.path).final(layer, "W"), Run(r2.path).final(layer, "W"))
        assert not np.array_equal(Run(r1.path).final(layer, "W"), Run(r3.path).final(layer, "W"))
    assert r1.test_error == r2.test_error


def test_learning_beats_chance(tmp_path):
    """The tiny preset (784-100-100-100) after 2 epochs of the 2,000-image subset, tested on the
    500 subset test images. Chance is 0.9; a classifier at chance would score error >= 0.85 with
    probability > 0.99 (binomial sd at n = 500 is 0.013), so error < 0.6 is clearly learning.
    (Measured: about 0.2 to 0.3.)"""
    res = train("tiny", out=tmp_path / "t.h5", progress=False)
    assert res.test_error < 0.6
    curve = res.curve
    assert curve["n_test"][-1] == 500
    assert res.epochs == 2.0


class CutAfter:
    """A recorder that stops a training run (as Ctrl-C does) after ``n`` blocks."""

    def __init__(self, n):
        self.n, self.blocks = n, 0

    def on_block(self, net, step0, outputs):
        self.blocks += 1
        if self.blocks == self.n:
            raise KeyboardInterrupt


def test_resume_equals_uninterrupted(tmp_path):
    """Cut a run off mid-way (after 7 blocks), resume it: weights and test curve equal the run
    done in one go, bit for bit."""
    cfg = load_config("tiny").replace(train={"epochs": 1.0, "test_every": 700}, run={"block_steps": 300})
    full = train(cfg, out=tmp_path / "full.h5", progress=False)

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "cut.h5", progress=False, recorder=CutAfter(7))
    cut = Run(tmp_path / "cut.h5")
    assert not cut.complete
    assert checkpoint_path(tmp_path / "cut.h5").exists()
    interim = test_run(tmp_path / "cut.h5", n_test=50)  # a cut-off run is tested from its checkpoint
    assert interim["weights"] == "checkpoint" and not interim["complete"] and 0 < interim["steps"] < 10000
    assert test_run(checkpoint_path(tmp_path / "cut.h5"), n_test=50)["steps"] == interim["steps"]
    resumed = train(cfg, out=tmp_path / "cut.h5", resume=True, progress=False)
    assert test_run(resumed.path, n_test=50)["weights"] == "final"
    assert Run(resumed.path).complete
    # a resume that changes nothing is listed too, at the checkpoint's step
    (entry,) = Run(resumed.path).resumes
    assert entry["changed"] == [] and entry["step"] == interim["steps"]
    for layer in ("h1", "h2", "out"):
        for name in ("W", "b", "V", "U"):
            np.testing.assert_array_equal(Run(full.path).final(layer, name), Run(resumed.path).final(layer, name))
    a, b = Run(full.path).test_curve(), Run(resumed.path).test_curve()
    for k in ("step", "error", "error_sum"):
        np.testing.assert_array_equal(a[k], b[k])


def test_branch_continues_a_run_with_new_learning_rates(tmp_path, capsys):
    """A branch without changes is the run resumed: same test curve and weights, bit for
    bit. A branch may change model.eta (and is then a different run from there), never
    the network."""
    base = load_config("tiny").replace(train=dict(test_every=200), test=dict(n_test=100))
    a = train(base.replace(train=dict(epochs=0.2)), out=tmp_path / "a.h5", progress=False)
    copy = tmp_path / "a-at-0.2-epochs.ckpt"  # a checkpoint file by itself (the resume below moves a's on)
    copy.write_bytes(checkpoint_path(a.path).read_bytes())
    longer = base.replace(train=dict(epochs=0.4))
    same = train(longer, out=tmp_path / "same.h5", branch_from=a.path, progress=False)
    resumed = train(longer, out=a.path, resume=True, progress=False)
    run_b, run_r = Run(same.path), Run(resumed.path)
    assert run_b.attrs["branch_step"] == a.steps and run_b.attrs["branched_from"].endswith("a.h5.ckpt")
    info = run_b.summary()  # and spikefa info says where it came from
    assert info["branch_step"] == a.steps and info["branched_from"].endswith("a.h5.ckpt")
    assert Run(a.path).summary()["branched_from"] is None
    from spikefa.cli import main

    assert main(["info", str(same.path)]) == 0
    assert f"branched from {info['branched_from']} at step {a.steps:,}" in capsys.readouterr().out
    cb, cr = run_b.test_curve(), run_r.test_curve()
    after = cr["step"] > a.steps
    np.testing.assert_array_equal(cb["step"], cr["step"][after])
    np.testing.assert_array_equal(cb["error"], cr["error"][after])
    np.testing.assert_array_equal(run_b.final("h1", "W"), run_r.final("h1", "W"))
    seen = []  # what `spikefa info` reads while the branch runs, before its first checkpoint

    class Peek:
        def on_block(self, net, step0, outputs):
            if not seen:
                seen.append(Run(tmp_path / "slow.h5").summary()["steps_done"])

    slow = train(longer.replace(model=dict(eta=2e-3)), out=tmp_path / "slow.h5", branch_from=copy, progress=False,
                 recorder=Peek())
    assert seen == [a.steps]
    assert Run(slow.path).attrs["branch_step"] == a.steps and json.loads(Run(slow.path).attrs["config"])["model"]["eta"] == 2e-3
    assert not np.array_equal(Run(slow.path).final("h1", "W"), run_r.final("h1", "W"))
    with pytest.raises(ConfigError, match="model.tau"):
        train(longer.replace(model=dict(tau=0.5)), out=tmp_path / "bad.h5", branch_from=a.path, progress=False)
    with pytest.raises(ConfigError, match="past the"):
        train(base.replace(train=dict(epochs=0.1)), out=tmp_path / "short.h5", branch_from=copy, progress=False)
    assert not (tmp_path / "bad.h5").exists() and not (tmp_path / "short.h5").exists()


def test_each_epoch_shows_every_training_image_once_in_its_own_order(tmp_path):
    """Epochs are shuffled anew (SPEC: a shuffled order per epoch, seeded), the image at a
    step follows from the step alone (so a resume shows the same images), and training
    shows each image for train.steps_per_image consecutive steps in that order."""
    from spikefa.train import ImageOrder, train_set_size

    cfg = load_config("tiny")
    n = 50
    stream = ImageOrder(cfg, n)(np.arange(3 * n))
    epochs = stream.reshape(3, n)
    for order in epochs:
        assert sorted(order) == list(range(n))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(n))
    pieces = [ImageOrder(cfg, n)(np.arange(a, b)) for a, b in [(0, 7), (7, 49), (49, 120), (120, 150)]]
    np.testing.assert_array_equal(np.concatenate(pieces), stream)
    np.testing.assert_array_equal(ImageOrder(cfg, n)(np.arange(140, 150)), stream[140:])
    assert not np.array_equal(ImageOrder(cfg.replace(run={"seed": cfg.run.seed + 1}), n)(np.arange(n)), epochs[0])
    plain = ImageOrder(cfg.replace(train={"shuffle": False}), n)(np.arange(2 * n))
    np.testing.assert_array_equal(plain, np.tile(np.arange(n), 2))

    shown = []

    class Shown:
        def on_block(self, net, step0, outputs):
            shown.append(outputs["image"])

    small = cfg.replace(train={"epochs": 1.5, "steps_per_image": 3}, run={"block_steps": 40})
    n_train = train_set_size(small)
    train(small, out=tmp_path / "o.h5", progress=False, recorder=Shown())
    shown = np.concatenate(shown)
    expect = ImageOrder(small, n_train)(np.arange(shown.size) // 3)
    np.testing.assert_array_equal(shown, expect)
    assert shown.size == round(1.5 * n_train) * 3


def test_resume_can_extend_epochs_but_not_change_the_model(tmp_path):
    cfg = load_config("tiny").replace(train={"epochs": 0.2})
    train(cfg, out=tmp_path / "r.h5", progress=False)
    res = train(cfg, epochs=0.4, out=tmp_path / "r.h5", resume=True, progress=False)
    assert res.epochs == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="model.eta"):
        train(cfg.replace(model={"eta": 0.1}), out=tmp_path / "r.h5", resume=True, progress=False)
    with pytest.raises(RunFileError, match="nothing to resume"):
        train(cfg, out=tmp_path / "none.h5", resume=True, progress=False)


def test_test_pass_does_not_disturb_training(tmp_path):
    """Testing every 200 images or only at the end gives the same final weights."""
    cfg = load_config("tiny").replace(train={"epochs": 0.3})
    a = train(cfg, out=tmp_path / "a.h5", progress=False)
    b = train(cfg.replace(train={"test_every": 200}), out=tmp_path / "b.h5", progress=False)
    assert Run(b.path).test_curve()["step"].size == 3
    np.testing.assert_array_equal(Run(a.path).final("out", "W"), Run(b.path).final("out", "W"))


def test_readouts_and_ties():
    """All outputs silent: every count ties at 0 and the guess is class 0 (lowest index)."""
    cfg = config_from_dict({"model": {"layers": [784, 10, 20], "n_classes": 10, "bias_init": -50.0}})
    net = init_network(cfg)
    images, labels = load_subset("test")
    res = evaluate(net, images[:50], labels[:50])
    assert np.all(res.guesses == 0)
    assert res.error == pytest.approx(np.mean(labels[:50] != 0))
    assert res.error_last == res.error and res.error_sum == res.error


def test_spikefa_test_json(tmp_path, capsys):
    from spikefa.cli import main

    assert main(["train", "tiny", "--epochs", "0.1", "-o", str(tmp_path / "r.h5"), "-q"]) == 0
    said_train = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["test", str(tmp_path / "r.h5")]) == 0
    said = capsys.readouterr()
    said_test = said.out.strip().splitlines()[-1]
    assert "testing r.h5" in said.err  # a progress bar over the images, on stderr (not with --json)
    assert main(["test", str(tmp_path / "r.h5"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the text forms say percentages, as info and curve do; the JSON keeps the fraction
    last = spikefa.load(tmp_path / "r.h5").test_curve()
    assert said_train.startswith(f"test error {100 * last['error'][-1]:.2f}% after 0.1 epochs"), said_train
    assert said_test.startswith(f"test error {100 * out['test_error']:.2f}% (last read-out; "
                                f"last {100 * out['test_error_last']:.2f}%, sum {100 * out['test_error_sum']:.2f}%, "
                                f"prob {100 * out['test_error_prob']:.2f}%) on 500 images"), said_test
    assert {"test_error", "n_test", "epochs", "steps"} <= set(out)
    assert 0 <= out["test_error"] <= 1 and out["n_test"] == 500 and out["steps"] == 1000
    assert out["epochs"] == pytest.approx(0.1)
    assert out["split"] == "test"
    # the training error: the same protocol on the first N training images
    assert main(["test", str(tmp_path / "r.h5"), "--split", "train", "--n-test", "200", "--json"]) == 0
    on_train = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert on_train["split"] == "train" and on_train["n_test"] == 200
    from spikefa.train import evaluate, load_data, network_from_file

    net = network_from_file(tmp_path / "r.h5")[0]
    images, labels = load_data(net.config, "train", None, 200)
    assert on_train["test_error"] == evaluate(net, images, labels).error
    with pytest.raises(ValueError, match="split 'valid' unknown"):
        test_run(tmp_path / "r.h5", split="valid")


# ---------------------------------------------------------------------------- bad input
def test_every_bundled_model_loads():
    names = available_models()
    assert {"lillicrap2016-fig4", "small", "tiny"} <= set(names)
    for name in names:
        load_config(name)
    full = load_config("lillicrap2016-fig4")
    assert full.model.layers == (784, 1500, 1500, 1500, 1000)
    assert full.to_dict()["model"] == config_from_dict({}).to_dict()["model"]  # every default written out


@pytest.mark.parametrize("table, bad, message", [
    ({"model": {"phi_d": "relu"}}, None, "model.phi_d = 'relu'.*'tanh', '2sigma-1', 'sigma-0.5'"),
    ({"model": {"tau": 1.5}}, None, "model.tau = 1.5"),
    ({"model": {"colour": 1}}, None, "unknown key model.colour"),
    ({"test": {"readout": "max"}}, None, "test.readout = 'max'.*'last', 'sum', 'prob'"),
    ({"model": {"layers": [784, 100, 15]}}, None, "multiple of model.n_classes"),
    ({"train": {"steps_per_image": 0}}, None, "train.steps_per_image = 0"),
    ({"simulation": {}}, None, "unknown table or key 'simulation'"),
    ({"model": {"eta": float("nan")}}, None, "model.eta = nan"),
    # the edges: tau = 0 would freeze every PSP, a network needs a hidden layer
    ({"model": {"tau": 0}}, None, "model.tau = 0"),
    ({"model": {"layers": [784, 10]}}, None, "model.layers"),
    ({"train": {"steps_per_image": 2.5}}, None, "train.steps_per_image = 2.5.*integer"),
    ({"train": {"shuffle": "false"}}, None, "train.shuffle = 'false'.*true or false"),
    # a decay factor 1 - eta*gamma <= 0 flips or zeroes every weight each step: eta = 1e10 with
    # the default gamma trained to non-finite weights and reported a test error as if it learned
    ({"model": {"eta": 1e10}}, None, r"model.eta \* model.gamma = 100 .*model.eta = 1e\+10.*model.gamma = 1e-08"),
    ({"model": {"eta": 1, "gamma": 1.5}}, None, r"model.eta \* model.gamma = 1.5 .*must be < 1"),
])
def test_bad_config_is_a_clear_error(table, bad, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(table)


def test_numpy_numbers_are_numbers_in_a_config():
    """A sweep in a notebook passes NumPy scalars (``for seed in np.arange(3)``,
    ``np.logspace``'s float32 cast, ``np.array`` of layer sizes): they were refused as
    "expected a number". They are taken, as Python numbers in the resolved config."""
    cfg = load_config("tiny").replace(model={"eta": np.float32(0.01), "layers": np.array([784, 50, 10])},
                                      run={"seed": np.int64(3)}, record={"measure_every": np.int32(100)})
    assert cfg.model.eta == pytest.approx(0.01) and type(cfg.model.eta) is float
    assert cfg.model.layers == (784, 50, 10) and all(type(n) is int for n in cfg.model.layers)
    assert cfg.run.seed == 3 and type(cfg.run.seed) is int
    assert cfg.record.measure_every == 100
    json.loads(cfg.to_json())
    with pytest.raises(ConfigError, match=r"model.layers\[1\] = 50.5 .*integer"):
        load_config("tiny").replace(model={"layers": np.array([784, 50.5, 10])})
    with pytest.raises(ConfigError, match="model.eta = .*nan.*finite"):
        load_config("tiny").replace(model={"eta": np.float32("nan")})
    with pytest.raises(ConfigError, match="train.shuffle"):
        load_config("tiny").replace(train={"shuffle": np.bool_(True)})


def test_an_unknown_table_in_set_is_a_clear_error(capsys):
    from spikefa.cli import main

    with pytest.raises(ConfigError, match=r"unknown table \[foo\]"):
        load_config("tiny").replace(foo={"bar": 1})
    assert main(["train", "tiny", "--set", "foo.bar=1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "foo" in err and "Traceback" not in err


def test_bad_model_file(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text("[model]\nlayers = [784, 10, 10\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found.*small"):
        load_config("no-such-model")
    # a binary or UTF-16 file was a UnicodeDecodeError that named no file
    p.write_bytes("[model]\neta = 0.1\n".encode("utf-16"))
    with pytest.raises(ConfigError, match=f"{p.name}: not valid TOML: not UTF-8"):
        load_config(p)
    # None, a number or a dict was a TypeError from pathlib
    for bad in (None, 3, {"model": {}}):
        with pytest.raises(ConfigError, match=f"model = {bad!r}: give a bundled model's name.*tiny"):
            load_config(bad)


def test_replace_takes_a_dict_per_table():
    with pytest.raises(ConfigError, match=r"model=3: the keys of \[model\] to change, as a dict"):
        load_config("tiny").replace(model=3)
    with pytest.raises(ConfigError, match=r"train=\[\('epochs', 2\)\]"):
        load_config("tiny").replace(train=[("epochs", 2)])


def test_bad_images_are_clear_errors():
    cfg = load_config("tiny")
    images, labels = load_subset("test")
    x = images[:5].astype(np.float64) / 255
    x[2, 10] = np.nan
    with pytest.raises(DataError, match="NaN"):
        check_images(x, labels[:5], cfg)
    with pytest.raises(DataError, match="784 pixels"):
        check_images(images[:5, :700], labels[:5], cfg)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        check_images(np.full((5, 784), 3.0), labels[:5], cfg)
    with pytest.raises(DataError, match="labels must lie"):
        check_images(images[:5], labels[:5] + 10, cfg)


@pytest.mark.parametrize("backend", ["numba-serial", "numpy"])
def test_bad_block_inputs_are_clear_errors(backend):
    """Network.run's kernels index without bounds checks: a short step_label read past its
    end, a label outside 0..n_classes-1 trained towards no class, raw pixels or NaN as
    probabilities made every or no input unit spike, float labels were truncated, a 2-D
    rec_idx was a Numba TypingError; all but the last silently. Each is now a ValueError
    that names the argument, and the network is left as it was."""
    cfg = small_cfg()
    net = init_network(cfg)
    W0 = net.W[0].copy()
    u, probs, si, lab = block_inputs(net, 20)
    bad = {
        "step_label must be an integer array of shape \\(20,\\)": dict(step_label=lab[:5]),
        "step_image must be an integer array of shape \\(20,\\)": dict(step_image=si[:5]),
        "step_label must lie in 0..9 .*got [0-9]..10": dict(step_label=np.where(lab == lab[0], 10, lab)),
        "step_label must lie in 0..9 .*got -1": dict(step_label=np.full(20, -1)),
        "step_label must be an integer array.*float64": dict(step_label=lab + 0.5),
        "in_prob holds the input units' spike probabilities.*input_probabilities.*200.0":
            dict(in_prob=np.full_like(probs, 200.0)),
        "in_prob .*got nan": dict(in_prob=np.where(probs > 0.5, np.nan, probs)),
        "uniforms must be uniform draws in \\[0, 1\\).*got nan": dict(uniforms=np.full_like(u, np.nan)),
        "rec_idx must be a 1-D integer array": dict(rec_idx=np.array([[1, 2]])),
        "plastic = 'no': expected True or False": dict(plastic="no"),
    }
    for message, change in bad.items():
        args = dict(uniforms=u, in_prob=probs, step_image=si, step_label=lab) | change
        kw = {k: args.pop(k) for k in ("plastic", "rec_idx") if k in args}
        with pytest.raises(ValueError, match=message):
            net.run(args["uniforms"], args["in_prob"], args["step_image"], args["step_label"], backend=backend, **kw)
    assert np.array_equal(net.W[0], W0) and not net.state.spikes.any()


def test_evaluate_refuses_what_it_cannot_test():
    """evaluate() on images and labels of the caller's: labels of another length were an
    IndexError or a broadcast error inside the pass, n_test = -1 dropped the last image
    (an error over 19 of 20 images), no images gave an error of NaN."""
    net = init_network(load_config("tiny"))
    images, labels = load_subset("test")
    x, y = images[:20], labels[:20]
    with pytest.raises(DataError, match="20 images but labels of shape \\(5,\\)"):
        evaluate(net, x, y[:5])
    with pytest.raises(ValueError, match="n_test = -1: expected an integer >= 0"):
        evaluate(net, x, y, n_test=-1)
    with pytest.raises(DataError, match="no images to test"):
        evaluate(net, x[:0], y[:0])
    with pytest.raises(DataError, match="labels must be integers.*float64"):
        evaluate(net, x, y.astype(float))
    with pytest.raises(DataError, match="labels must lie in 0..9"):
        evaluate(net, x, np.full(20, 10))
    assert evaluate(net, x, list(y)).n_test == 20


def test_wrong_image_size_for_model(tmp_path):
    cfg = load_config("tiny").replace(model={"layers": [100, 20, 10]})
    with pytest.raises(DataError, match="100 pixels"):
        train(cfg, out=tmp_path / "x.h5", progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunFileError, match="cannot write the run file"):
        train("tiny", out=blocker / "run.h5", progress=False)
    (tmp_path / "exists.h5").write_text("")
    with pytest.raises(RunFileError, match="--resume.*--overwrite"):
        train("tiny", out=tmp_path / "exists.h5", progress=False)


def test_failed_run_does_not_look_complete(tmp_path):
    class Boom:
        def on_block(self, net, step0, outputs):
            if step0 > 0:
                raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        train("tiny", out=tmp_path / "f.h5", progress=False, recorder=Boom())
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f.attrs["complete"] == False  # noqa: E712
        assert "final" not in f


def test_run_file_records_choices(tmp_path):
    res = train("tiny", epochs=0.05, out=tmp_path / "r.h5", progress=False)
    run = Run(res.path)
    assert run.complete
    cfg = json.loads(run.attrs["config"])
    for key in ("phi_d", "tau", "p_max", "eta", "gamma", "w_init", "feedback_init", "feedback", "dtype"):
        assert key in cfg["model"]
    assert cfg["test"]["readout"] == "last" and cfg["train"]["steps_per_image"] == 5
    assert run.attrs["seed"] == 1 and run.attrs["schema_version"] >= 1
    assert run.attrs["spikefa_version"]
    assert run.final("h1", "W").shape == (784, 100)
    assert run.final("h1", "B").shape == (100, 100)


@pytest.mark.parametrize("K", [8, 32])
def test_deferred_updates_track_immediate_updates(K):
    """Deferring weight updates (run.deferred_steps = K, 8 by default and 32 in the paper's
    model file: folded into the forward pass in float64, written into W every K steps)
    changes only float rounding. Over 3,000 learning
    steps (eta 2e-2, weights change by ~90% of their range) spikes agree at >= 99.9% of
    unit-steps (measured: all of them) and weights stay within 1e-5 of their largest value
    (measured: 6e-7, a few float32 ulps). A 13-step run (13 mod K updates still pending) reports,
    through ``weights()``, the weights the immediate run has."""
    nets = {k: init_network(config_from_dict({"model": {"layers": [784, 100, 100, 100], "eta": 2e-2},
                                               "run": {"deferred_steps": k}})) for k in (1, K)}
    images, labels = load_subset("train")
    T = 3000
    si = (np.arange(T) // 5) % 500
    probs = input_probabilities(images[:500], 0.95)
    u = np.random.default_rng(11).random((T, nets[1].n_units))
    early = {K: n.copy() for K, n in nets.items()}
    for n in early.values():
        n.run(u[:13], probs, si[:13], labels[si[:13]])
    assert early[K].state.n_pend[0] == 13 % K
    for l in range(1, 4):
        np.testing.assert_allclose(early[K].weights(l), early[1].weights(l), rtol=0, atol=1e-6)
    out = {k: n.run(u, probs, si, labels[si])["spikes"].copy() for k, n in nets.items()}
    assert (out[1] == out[K]).mean() >= 0.999
    for l in range(1, 4):
        a, b = nets[1].weights(l), nets[K].weights(l)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


def test_prob_readout_follows_output_psp():
    """The ``prob`` read-out picks the class whose output units have the largest summed
    sigma(V) at the last step: with one class's output biases raised, it is always that class."""
    cfg = config_from_dict({"model": {"layers": [784, 30, 20], "n_classes": 10}, "test": {"readout": "prob"}})
    net = init_network(cfg)
    net.b[-1][6:8] = 3.0  # class 3 owns output units 6 and 7
    images, labels = load_subset("test")
    res = evaluate(net, images[:40], labels[:40])
    assert np.all(res.guesses == 3)
    assert res.error == res.error_prob == pytest.approx(np.mean(labels[:40] != 3))


def test_curve_command_prints_csv(tmp_path, capsys):
    from spikefa.cli import main

    train(load_config("tiny").replace(train={"epochs": 0.2, "test_every": 200}), out=tmp_path / "c.h5", progress=False)
    assert main(["curve", str(tmp_path / "c.h5")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split(",")[:4] == ["step", "images", "epoch", "error"]
    assert len(lines) == 3  # header + test passes at 200 and 400 images
    assert lines[1].split(",")[1] == "200"
    # the angles and saturation series as CSV too, one column per measure and layer
    run = Run(tmp_path / "c.h5")
    assert main(["curve", str(tmp_path / "c.h5"), "--of", "angles"]) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.strip().splitlines()]
    assert rows[0] == ["step", "weight_h1", "weight_h2", "modulator_h1", "modulator_h2"]
    a = run.angles()
    assert [int(r[0]) for r in rows[1:]] == a["step"].tolist()
    np.testing.assert_allclose([float(r[2]) for r in rows[1:]], a["weight"]["h2"], rtol=1e-5)
    assert main(["curve", str(tmp_path / "c.h5"), "--of", "saturation"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert header[0] == "step" and "slope_out" in header and "abs_psp_h1" in header


def test_info_says_where_a_run_stands(tmp_path, capsys):
    """``spikefa info`` / ``Run.summary``: a cut-off run is stopped at its checkpoint with
    its test passes so far, one whose writer is alive is running, a finished one complete;
    a file that is not a run file is a clear error."""
    import subprocess
    import sys

    from spikefa.cli import main

    cfg = load_config("tiny").replace(train={"epochs": 0.5, "test_every": 100}, run={"block_steps": 100})
    path = tmp_path / "cut.h5"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=path, progress=False, recorder=CutAfter(12))
    said = capsys.readouterr().err  # where the checkpoint is, and where to find the command that continues it
    assert f"checkpoint at step 1,200 written to {path}.ckpt" in said and f"spikefa info {path} prints it" in said
    info = Run(path).summary()
    curve = Run(path).test_curve()
    assert info["state"] == "stopped" and info["seed"] == cfg.run.seed and info["feedback"] == "fa"
    assert 0 < info["steps_done"] == info["checkpoint_step"] < info["total_steps"]
    per_epoch = cfg.train.steps_per_image * Run(path).attrs["n_train"]  # the training set the run used
    assert info["epochs_total"] == pytest.approx(info["total_steps"] / per_epoch) == pytest.approx(0.5)
    assert info["epochs_done"] == pytest.approx(info["steps_done"] / per_epoch, abs=1e-4)
    assert info["test_passes"] == curve["step"].size >= 1
    assert info["last"]["error_sum"] == pytest.approx(curve["error_sum"][-1])
    assert info["best"]["error"] == pytest.approx(curve["error"].min())
    # run time counts up to the checkpoint at the cut, past the last test pass, and is
    # there for a run cut off before its first test pass
    assert info["wall_s"] >= curve["wall_s"][-1] > 0
    early = tmp_path / "early.h5"
    with pytest.raises(KeyboardInterrupt):
        train(cfg.replace(train={"test_every": 0}), out=early, progress=False, recorder=CutAfter(3))
    assert Run(early).summary()["test_passes"] == 0 and Run(early).summary()["wall_s"] > 0
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    # started from Python (pytest), so it is continued from Python
    assert "state: stopped" in out and f"steps done: {info['steps_done']:,} of" in out
    assert "continue it with: the same train() call with resume=True" in out
    assert f"last test pass: {100 * curve['error'][-1]:.2f}% at {curve['epoch'][-1]:.4g} epochs (" in out
    one = train(cfg.replace(train={"epochs": 1, "test_every": 0}), out=tmp_path / "one.h5", progress=False).path
    assert main(["info", str(one)]) == 0
    said = capsys.readouterr().out
    assert "(1 of 1 epoch)" in said and "% at 1 epoch (" in said and "1 test pass," in said and "0 resumes" in said

    # a writer alive that holds the file open, as RunWriter does (SWMR), names itself in it
    sleeper = subprocess.Popen([sys.executable, "-c", f"""
import os, sys, h5py
f = h5py.File({str(path)!r}, "a", libver="latest")
f.attrs["writer_pid"] = os.getpid()
f.flush()
f.swmr_mode = True
print("writing", flush=True)
sys.stdin.readline()  # until told to stop
f.close()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout.readline().strip() == "writing"
        assert Run(path).summary()["state"] == "running"
        sleeper.communicate("stop\n", timeout=60)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
    assert Run(path).summary()["state"] == "stopped"  # its writer is gone
    from spikefa.runfile import checkpoint_path

    ckpt = checkpoint_path(path)
    saved = ckpt.rename(tmp_path / "saved.ckpt")  # a checkpoint lost (e.g. runs/ not kept)
    assert Run(path).summary()["checkpoint_step"] is None
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no checkpoint" in out and "cannot be resumed" in out and "continue it with:" not in out
    saved.rename(ckpt)
    with h5py.File(path, "a") as f:
        f.attrs["writer_host"] = "some-other-host"
    assert Run(path).summary()["state"] == "unknown"
    assert main(["info", str(path)]) == 0
    assert "another host" in capsys.readouterr().out

    train(cfg, out=path, resume=True, progress=False)
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["state"] == "complete" and info["steps_done"] == info["total_steps"] and info["resumes"] == 1
    (tmp_path / "not.h5").write_text("not hdf5")
    assert main(["info", str(tmp_path / "not.h5")]) == 2
    assert "not.h5" in capsys.readouterr().err


def test_train_feedback_option(tmp_path, capsys):
    from spikefa.cli import main

    assert main(["train", "tiny", "--epochs", "0.05", "--feedback", "dfa", "-o", str(tmp_path / "d.h5"), "-q"]) == 0
    run = Run(tmp_path / "d.h5")
    assert run.config.model.feedback == "dfa"
    # the model file describes its own variant ("feedback alignment"); the run says what it ran
    assert run.config.description.endswith("feedback alignment, bundled MNIST subset (--feedback dfa)")
    # spikefa info names every setting that differs from the model it names (not the length)
    assert run.summary()["settings_changed"] == {"model.feedback": ["fa", "dfa"]}
    capsys.readouterr()
    assert main(["info", str(tmp_path / "d.h5")]) == 0
    assert "differs from the bundled model tiny: model.feedback = 'dfa' (there: 'fa')" in capsys.readouterr().out
    own = tmp_path / "own.toml"   # a model of one's own: compared with the defaults of docs/model.md
    own.write_text('name = "own"\n[model]\nlayers = [784, 50, 10]\n[train]\ndataset = "mnist-subset"\n'
                   'steps_per_image = 3\nepochs = 0.01\ntest_every = 0\n')
    assert main(["train", str(own), "-o", str(tmp_path / "own.h5"), "-q"]) == 0
    info = Run(tmp_path / "own.h5").summary()
    assert info["settings_from"] == "defaults"
    assert info["settings_changed"] == {"model.layers": [[784, 1500, 1500, 1500, 1000], [784, 50, 10]],
                                        "train.dataset": ["mnist", "mnist-subset"], "train.steps_per_image": [5, 3],
                                        "train.test_every": [10000, 0]}


def test_train_set_option_equals_a_model_file(tmp_path):
    """``--set model.eta=X`` trains exactly the run of a model file that differs only in that key."""
    from spikefa.cli import main
    from spikefa.config import models_dir

    tiny = (models_dir() / "tiny.toml").read_text()
    assert "eta = 2e-2" in tiny
    (tmp_path / "eta.toml").write_text(tiny.replace("eta = 2e-2", "eta = 5e-2"))
    args = ["--epochs", "0.05", "-q"]
    assert main(["train", str(tmp_path / "eta.toml"), "-o", str(tmp_path / "file.h5"), *args]) == 0
    assert main(["train", "tiny", "--set", "model.eta=5e-2", "-o", str(tmp_path / "set.h5"), *args]) == 0
    by_file, by_set = Run(tmp_path / "file.h5"), Run(tmp_path / "set.h5")
    assert by_set.config.model.eta == 0.05 and "--set model.eta = 0.05" in by_set.config.description
    assert "--set model.eta = 0.05" in by_set.summary()["description"]
    assert by_file.config.to_dict() | {"description": ""} == by_set.config.to_dict() | {"description": ""}
    a, b = by_file.test_curve(), by_set.test_curve()
    assert len(a["step"]) > 0 and np.array_equal(a["step"], b["step"])
    for key in a:
        if key != "wall_s":
            assert np.array_equal(a[key], b[key]), key
    for layer in ("h1", "out"):
        assert np.array_equal(by_file.final(layer, "W"), by_set.final(layer, "W"))


def test_train_set_option_default_run_file(tmp_path, monkeypatch):
    """Without --out, runs with different --set values get their own files; --resume finds its own
    (also when it raises train.epochs with --set)."""
    from spikefa.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["tiny", "--epochs", "0.05", "-q"]
    assert main(["train", *args, "--set", "model.eta=5e-2"]) == 0
    assert main(["train", *args, "--set", "model.eta=3e-2", "--set", "model.layers=[784, 20, 10]"]) == 0
    assert main(["train", *args, "--seed", "3", "--set", "model.eta=5e-2"]) == 0
    files = sorted(p.name for p in (tmp_path / "runs").glob("*.h5"))
    assert files == ["tiny-fa-seed1-model.eta=0.03-model.layers=784,20,10.h5", "tiny-fa-seed1-model.eta=0.05.h5",
                     "tiny-fa-seed3-model.eta=0.05.h5"]
    assert Run(tmp_path / "runs" / files[0]).config.model.layers == (784, 20, 10)
    assert Run(tmp_path / "runs" / files[1]).config.model.eta == 0.05
    # train.epochs may change on a resume, so it is not part of the name
    assert main(["train", "tiny", "-q", "--resume", "--set", "model.eta=5e-2", "--set", "train.epochs=0.1"]) == 0
    assert Run(tmp_path / "runs" / files[1]).summary()["epochs_done"] > 0.09
    assert len(list((tmp_path / "runs").glob("*.h5"))) == 3


@pytest.mark.parametrize("bad, message", [
    ("model.eta", "SECTION.KEY=VALUE"),
    ("model.bogus=1", "unknown key model.bogus"),
    ("model.eta=-1", "model.eta = -1"),
    ("name.x=1", "not tables"),
])
def test_train_set_option_bad_values(tmp_path, capsys, bad, message):
    from spikefa.cli import main

    try:
        rc = main(["train", "tiny", "--epochs", "0.01", "-q", "--set", bad, "-o", str(tmp_path / "x.h5")])
    except SystemExit as exc:  # argparse rejects the form before anything runs
        rc = exc.code
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


# each departure model file of results/reproduction is lillicrap2016-fig4-long with these --set changes
REPRODUCTION_SETS = {
    "fig4-eta3e-3.toml": ["model.eta=3e-3"],
    "fig4-eta1e-2.toml": ["model.eta=1e-2"],
    "fig4-eta3e-2.toml": ["model.eta=3e-2"],
    "fig4-decay3e-4.toml": ["model.gamma=3e-4"],
    "fig4-N50.toml": ["train.steps_per_image=50", "train.epochs=0.6666666666666666"],
    "fig4-long-eta1e-4.toml": ["model.eta=1e-4", "train.epochs=20", "run.forward_pass=full"],
}


@pytest.mark.parametrize("name", sorted(REPRODUCTION_SETS))
def test_reproduction_model_files_are_set_changes(name):
    from spikefa.cli import _apply_sets, _set_arg

    root = os.path.join(os.path.dirname(__file__), "..", "results", "reproduction")
    by_file = load_config(os.path.join(root, name)).to_dict()
    by_set = _apply_sets(load_config("lillicrap2016-fig4-long"), [_set_arg(s) for s in REPRODUCTION_SETS[name]])
    assert by_file | {"description": ""} == by_set.to_dict() | {"description": ""}


def test_cli_version_and_wording(capsys, monkeypatch):
    """`spikefa --version` prints the package version; counts and run times read as
    English ('1 epoch', '12 s', '5.76 h')."""
    from spikefa import __version__
    from spikefa.cli import _count, _duration, main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"spikefa {__version__}"
    assert [_count(1, "epoch"), _count(2.5, "epoch"), _count(0, "resume"), _count(1, "test pass"),
            _count(3, "test pass")] == ["1 epoch", "2.5 epochs", "0 resumes", "1 test pass", "3 test passes"]
    assert [_duration(12.4), _duration(750), _duration(20736)] == ["12 s", "12.5 min", "5.76 h"]
    from spikefa.cli import _resume_command

    # info's hint continues a stopped run: --overwrite would start it again
    assert _resume_command("/venv/bin/spikefa train small --overwrite") == "spikefa train small --resume"
    assert (_resume_command("spikefa train m.toml --set 'model.phi_d=\"tanh\"' --out r.h5 --resume")
            == "spikefa train m.toml --set 'model.phi_d=\"tanh\"' --out r.h5 --resume")
    # `python -m spikefa` runs __main__.py, which is no script: the module form is recorded
    # and replayed; a run started from Python is continued from Python
    assert (_resume_command("/x/site-packages/spikefa/__main__.py train tiny --out r.h5")
            == "python -m spikefa train tiny --out r.h5 --resume")
    assert _resume_command("python -m spikefa train tiny") == "python -m spikefa train tiny --resume"
    assert _resume_command("my_study.py --fast").startswith("the same train() call with resume=True")
    from spikefa import runfile

    monkeypatch.setattr(sys, "argv", [str(Path(runfile.__file__).with_name("__main__.py")), "train", "a b"])
    assert runfile.invocation() == "python -m spikefa train 'a b'"


def test_stop_request_says_at_once_that_it_heard(capsys):
    """The first Ctrl-C (or SIGTERM) is acknowledged on stderr at once, since the loop only
    stops at the end of a block (seconds on the full network); a second Ctrl-C raises."""
    import signal

    from spikefa.interrupt import StopRequest

    stop = StopRequest()
    stop._handler(signal.SIGINT, None)
    assert stop.requested and "SIGINT received: stopping at the end of this block" in capsys.readouterr().err
    stop._handler(signal.SIGTERM, None)  # a later SIGTERM is the same request, said once
    assert capsys.readouterr().err == ""
    with pytest.raises(KeyboardInterrupt):
        stop._handler(signal.SIGINT, None)
    # after a SIGTERM (kill PID) there was no first Ctrl-C to repeat: it names SIGINT
    term = StopRequest()
    term._handler(signal.SIGTERM, None)
    said = capsys.readouterr().err
    assert "SIGTERM received" in said and f"a SIGINT (Ctrl-C, or kill -INT {os.getpid()}) stops without waiting" in said
    assert "again" not in said
    with pytest.raises(KeyboardInterrupt):
        term._handler(signal.SIGINT, None)


def test_train_feedback_given_twice_is_refused(capsys):
    from spikefa.cli import main

    assert main(["train", "tiny", "--feedback", "fa", "--set", "model.feedback=dfa"]) == 2
    assert "given twice" in capsys.readouterr().err


def test_train_resume_and_overwrite_exclude_each_other(capsys):
    """--resume keeps the run file and --overwrite replaces it: both at once is refused
    before anything runs (it used to resume silently)."""
    from spikefa.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "tiny", "--resume", "--overwrite"])
    assert exit_.value.code == 2 and "not allowed with argument --resume" in capsys.readouterr().err


def test_damaged_run_files_give_one_line_errors(tmp_path, capsys):
    """A run file cut short, or missing a part, is a one-line error from every reading
    command, never a traceback or a hang (HDF5's SWMR reads of a truncated file retried
    for many minutes, deaf to Ctrl-C)."""
    from spikefa.cli import main

    good = train(load_config("tiny").replace(train={"epochs": 0.02, "test_every": 100}),
                 out=tmp_path / "good.h5", progress=False).path
    data = good.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 5])
    cut = str(tmp_path / "cut.h5")
    for argv in (["info", cut], ["curve", cut], ["test", cut], ["align", cut],
                 ["plot", "error", cut, "-o", str(tmp_path / "e.png")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "is truncated" in err and "Traceback" not in err, argv
    for name, damage in (("notest.h5", lambda f: f.__delitem__("test")),
                         ("noconfig.h5", lambda f: f.attrs.__delitem__("config"))):
        (tmp_path / name).write_bytes(data)
        with h5py.File(tmp_path / name, "a") as f:
            damage(f)
        assert main(["info", str(tmp_path / name)]) == 2
        assert "damaged" in capsys.readouterr().err


def test_damaged_bytes_inside_a_run_file_name_the_file_and_dataset(tmp_path, capsys):
    """Damaged bytes in a compressed dataset (a bad disk or copy) made spikefa test say only
    h5py's 'Can't synchronously read data (filter returned failure during read)', naming
    neither the file nor what was damaged."""
    from spikefa.cli import main

    good = train(load_config("tiny").replace(train={"epochs": 0.02, "test_every": 0}),
                 out=tmp_path / "good.h5", progress=False).path
    with h5py.File(good, "r") as f:
        chunk = f["final/h1/W"].id.get_chunk_info(0)
    data = bytearray(good.read_bytes())
    data[chunk.byte_offset:chunk.byte_offset + chunk.size] = b"\xff" * chunk.size
    bad = tmp_path / "bad.h5"
    bad.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match=f"{bad} is damaged: a read failed in /final/h1/W"):
        Run(bad).final("h1", "W")
    assert main(["test", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad} is damaged" in err and "/final/h1/W" in err and "raised in" not in err


def test_integer_settings_refuse_nan_and_inf():
    for key, value in (("model.layers", [784, float("nan"), 10]), ("run.seed", float("inf")),
                       ("train.steps_per_image", float("nan"))):
        section, name = key.split(".")
        with pytest.raises(ConfigError, match="finite"):
            load_config("tiny").replace(**{section: {name: value}})
    with pytest.raises(ConfigError, match="<= 9223372036854775807"):
        load_config("tiny").replace(run={"seed": 10**23})


def test_resume_past_its_end_and_a_folder_as_run_file(tmp_path, capsys, caplog):
    """A resume may raise the epochs, not lower them below the checkpoint; resuming a run
    already at its epochs says there is nothing to train; a folder is not a run file."""
    from spikefa.cli import main

    out = tmp_path / "r.h5"
    cfg = load_config("tiny").replace(train={"epochs": 0.02, "test_every": 0})
    train(cfg, out=out, progress=False)
    with pytest.raises(ConfigError, match="raise the epochs, not lower them"):
        train(cfg.replace(train={"epochs": 0.01}), out=out, resume=True, progress=False)
    again = train(cfg, out=out, resume=True, progress=False)
    assert again.steps == 200 and "nothing to train" in caplog.text
    # cut off after its last step (killed while it wrote its final weights): it is finished
    caplog.clear()
    with h5py.File(out, "a") as f:
        f.attrs["complete"] = False
    again = train(cfg, out=out, resume=True, progress=False)
    assert again.steps == 200 and Run(out).complete
    assert "was cut off after its last step: finishing it" in caplog.text and "nothing to train" not in caplog.text
    (tmp_path / "folder").mkdir()
    assert main(["train", "tiny", "--out", str(tmp_path / "folder"), "--overwrite", "-q"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["align", str(tmp_path / "no.h5")]) == 2
    assert "no such run file" in capsys.readouterr().err
    # a data folder that a subset model does not read, and more images than there are, are said
    caplog.clear()
    res = test_run(out, data_dir=tmp_path / "nowhere", n_test=100000)
    assert res["n_test"] == 500 and "is not used" in caplog.text and "fewer than the 100000" in caplog.text
    # training says it once (it read the test set with the same folder), and names a key
    # that the run's feedback variant does not read
    caplog.clear()
    train(cfg.replace(model={"sparsity": 0.8}), out=tmp_path / "s.h5", data_dir=tmp_path / "nowhere", progress=False)
    assert caplog.text.count("is not used") == 1
    assert "model.sparsity = 0.8 has no effect with feedback 'fa' (it is read by sparse-fa only)" in caplog.text
    caplog.clear()
    train(cfg.replace(model={"sparsity": 0.8, "feedback": "sparse-fa"}), out=tmp_path / "t.h5", progress=False)
    assert "no effect" not in caplog.text


def test_info_counts_steps_past_the_checkpoint(tmp_path):
    """A running run checkpoints every run.checkpoint_minutes (10 by default); until then
    its test passes and flushed recordings show how far it got, and info reads them."""
    out = train(load_config("tiny").replace(train={"epochs": 0.05, "test_every": 100}),
                out=tmp_path / "r.h5", progress=False).path
    last_pass = int(Run(out).test_curve()["step"][-1])
    with h5py.File(out, "a") as f:  # a complete file: /progress says what the attribute says
        assert f["progress/steps_done"][()] == f.attrs["steps_done"] == 500
    with h5py.File(out, "a") as f:  # as the file reads before its first checkpoint
        f.attrs["steps_done"], f.attrs["complete"] = 0, False
        f["progress/steps_done"][()] = 0
        f["progress/steps_recorded"][()] = 0
    assert Run(out).summary()["steps_done"] == last_pass == 500


def test_resume_runs_the_test_a_stop_at_a_test_point_skipped(tmp_path):
    """A stop in the block that ends at a test point checkpoints before the test runs; the
    resume runs that test first, so the curve equals the uninterrupted run's (review
    finding: the pass was lost for good)."""
    cfg = load_config("tiny").replace(train={"epochs": 0.1, "test_every": 60}, test={"n_test": 50},  # 300 steps
                                      run={"block_steps": 100})
    full = train(cfg, out=tmp_path / "full.h5", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "cut.h5", progress=False, recorder=CutAfter(3))   # blocks end at 100, 200, 300
    assert Run(tmp_path / "cut.h5").test_curve()["step"].size == 0
    resumed = train(cfg, out=tmp_path / "cut.h5", resume=True, progress=False)
    a, b = Run(full.path).test_curve(), Run(resumed.path).test_curve()
    np.testing.assert_array_equal(a["step"], [300, 600, 900, 1000])
    for k in ("step", "error", "error_sum", "error_prob"):
        np.testing.assert_array_equal(a[k], b[k])


def test_a_stop_inside_the_kernel_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """A second Ctrl-C lands as the kernel returns, before the step count moves on: the
    network and generator are past `step` then, so the last checkpoint is kept rather than
    a mismatched one, and the resume still equals the uninterrupted run."""
    from spikefa.network import Network

    cfg = load_config("tiny").replace(train={"epochs": 0.1, "test_every": 60}, test={"n_test": 50},
                                      run={"block_steps": 100, "checkpoint_minutes": 1e-9})  # one every block
    full = train(cfg, out=tmp_path / "full.h5", progress=False)
    original, calls = Network.run, []

    def run_then_interrupt(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append(kwargs.get("plastic"))
        if calls.count(True) == 5:                 # the 5th training block (tests run too)
            raise KeyboardInterrupt  # after the kernel, before `step` moves on
        return out

    monkeypatch.setattr(Network, "run", run_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "cut.h5", progress=False)
    monkeypatch.setattr(Network, "run", original)
    from spikefa.runfile import checkpoint_config

    assert checkpoint_config(tmp_path / "cut.h5", with_step=True)[1] == 400   # blocks 1-4, not 5
    resumed = train(cfg, out=tmp_path / "cut.h5", resume=True, progress=False)
    for layer in ("h1", "out"):
        np.testing.assert_array_equal(Run(full.path).final(layer, "W"), Run(resumed.path).final(layer, "W"))
    np.testing.assert_array_equal(Run(full.path).test_curve()["error"], Run(resumed.path).test_curve()["error"])


def test_diverged_training_and_library_errors_are_named(tmp_path, capsys):
    """A learning rate that blows the weights up stops the run with an error naming it (it
    finished 'complete' with NaN weights); a missing run file, an output path through a
    file and a size too large for memory each get a plain sentence."""
    from spikefa.cli import main

    with pytest.raises(ConfigError, match="training diverged.*model.eta = 1e\\+300"):
        train(load_config("tiny").replace(model={"eta": 1e300, "gamma": 0}, train={"epochs": 0.02, "test_every": 0}),
              out=tmp_path / "d.h5", progress=False)
    assert main(["info", str(tmp_path / "nosuch.h5")]) == 2
    assert "no such run file" in capsys.readouterr().err
    good = train(load_config("tiny").replace(train={"epochs": 0.02, "test_every": 0}),
                 out=tmp_path / "g.h5", progress=False).path
    (tmp_path / "afile").write_text("")
    assert main(["plot", "error", str(good), "-o", str(tmp_path / "afile" / "e.png")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    # a run file under a file said "[Errno 17] File exists: '.../afile'"
    assert main(["train", "tiny", "-o", str(tmp_path / "afile" / "r.h5")]) == 2
    assert capsys.readouterr().err == (f"spikefa: error: cannot write the run file {tmp_path / 'afile' / 'r.h5'}: "
                                       f"{tmp_path / 'afile'} is a file, not a folder\n")
    assert main(["train", "tiny", "-o", str(tmp_path / "afile" / "sub" / "r.h5")]) == 2
    assert "a part of that path is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "dangling.h5").symlink_to(tmp_path / "nowhere")  # not "its folder is a file"
    assert main(["train", "tiny", "-o", str(tmp_path / "dangling.h5")]) == 2
    assert "dangling.h5: it exists, and is not a file (a broken link?)" in capsys.readouterr().err
    assert main(["train", "tiny", "--set", "model.layers=[784, 100000000000, 10]", "-o", str(tmp_path / "m.h5")]) == 2
    assert "not enough memory" in capsys.readouterr().err


def test_diverged_learned_feedback_names_its_own_rate(tmp_path):
    """With learned feedback, a B blown up by model.eta_feedback is named as such: the
    error said 'model.eta too large?' about the forward weights B had dragged along."""
    cfg = load_config("tiny").replace(model={"feedback": "learned", "eta_feedback": 1e30},
                                      train={"epochs": 0.01, "test_every": 0})
    with pytest.raises(ConfigError, match="feedback weights into h1 .*are not finite.*model.eta_feedback = 1e\\+30"):
        train(cfg, out=tmp_path / "d.h5", progress=False)
    # forward weights blown up by model.eta drag the learning B along: both are named, with
    # their values (the error blamed eta_feedback = 0.0001, the default, alone)
    cfg = load_config("tiny").replace(model={"feedback": "learned", "eta": 1e300, "gamma": 0},
                                      train={"epochs": 0.01, "test_every": 0})
    with pytest.raises(ConfigError, match="weights into h1 are not finite.*model.eta = 1e\\+300 or "
                                          "model.eta_feedback = 0.0001 too large"):
        train(cfg, out=tmp_path / "w.h5", progress=False)


def test_a_library_error_says_where_it_was_raised(capsys, monkeypatch, tmp_path):
    """spikefa's own refusals are one line; an error raised inside a library (or on a
    spikefa line that is not a `raise`) may be spikefa's fault, so its line also says where
    it came from and how to see the traceback."""
    import spikefa.cli as cli
    from spikefa.cli import main

    assert main(["curve", str(tmp_path / "none.h5")]) == 2      # spikefa's own refusal
    err = capsys.readouterr().err
    assert "no such run file" in err and "raised in" not in err

    monkeypatch.setattr(cli, "_info", lambda args: np.zeros(3).reshape(2))  # a fault, not bad input
    assert main(["info", "whatever.h5"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("spikefa: error: cannot reshape array of size 3")
    assert err[1] == f"(raised in {__name__.split('.')[-1]}; set SPIKEFA_TRACEBACK=1 to see the traceback)"

    def deep(args):  # a failing call on a spikefa line that is not a raise statement
        from spikefa import measures
        measures.angle_deg(np.zeros(2), np.zeros(2))
    monkeypatch.setattr(cli, "_info", deep)
    assert main(["info", "whatever.h5"]) == 2
    assert "raised in" not in capsys.readouterr().err  # angle_deg's own message about the zero vector
    monkeypatch.setenv("SPIKEFA_TRACEBACK", "1")
    with pytest.raises(ValueError, match="zero vector"):
        main(["info", "whatever.h5"])


def test_the_command_line_starts_without_its_heavy_imports():
    """`spikefa` installs its Ctrl-C handling in main(); what runs before that, importing
    spikefa.cli, must not pull in h5py and Numba (about 0.3 s), or a Ctrl-C then is
    Python's own traceback. spikefa.Run and spikefa.load still work, on first use."""
    import subprocess

    code = ("import sys, spikefa.cli; heavy = sorted({'h5py', 'numba', 'matplotlib', 'brian2'} & set(sys.modules)); "
            "print(heavy); from spikefa import Run, load; import spikefa; "
            "print(Run.__module__, load.__module__, 'Run' in dir(spikefa), 'plots' in dir(spikefa))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "spikefa.runfile spikefa.runfile True True"
    # `python -m spikefa` is the same command, for an environment whose scripts are not on PATH
    res = subprocess.run([sys.executable, "-m", "spikefa", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"spikefa {spikefa.__version__}"


def test_a_second_ctrl_c_inside_a_weakref_callback_is_delivered_after_it():
    """A second Ctrl-C stops at once; when it lands in a weakref callback (or __del__), an
    exception raised there would be printed as "Exception ignored in ..." and dropped, so it
    is delivered again a moment later instead."""
    import signal
    import time

    from spikefa.interrupt import StopRequest

    ns = {}
    exec(compile("def remove():\n    import sys\n    return sys._getframe()\n", "/lib/python3/weakref.py", "exec"), ns)
    in_callback = ns["remove"]()
    stop = StopRequest()
    stop.install()
    try:
        stop.requested = True
        stop._handler(signal.SIGINT, in_callback)     # returns: nothing raised inside the callback
        t0 = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            while time.perf_counter() - t0 < 10:
                pass
        assert time.perf_counter() - t0 < 5
        stop._handler(signal.SIGINT, sys._getframe())  # anywhere else: at once
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the second Ctrl-C outside a callback did not raise")
    finally:
        stop.uninstall()


def test_a_ctrl_c_while_starting_is_kept_for_the_training_loop(capsys):
    """`spikefa train` installs its stop request before its slow imports (an exception
    raised then could be swallowed and the run go on to its end); training takes that one
    over, so a Ctrl-C while starting stops it after its first block; the handlers that
    were there before come back at the end (main() may be called from Python)."""
    import signal

    from spikefa.interrupt import StopRequest

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    early = StopRequest()
    early.install()
    try:
        early._handler(signal.SIGINT, None)
        assert "the first, if training is still starting" in capsys.readouterr().err
        taken = StopRequest.installed()
        assert taken is early and taken.requested      # what train() uses
        taken.install()                                # train's own install and uninstall nest
        taken.uninstall()
        assert StopRequest.installed() is early
    finally:
        early.uninstall()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert StopRequest.installed() is None


def test_a_checkpoint_given_for_a_run_file_names_its_run_file(tmp_path, capsys):
    """spikefa test and align take a checkpoint; info, curve, plot and spikefa.load take
    the run file, and given its checkpoint say which file to pass."""
    from spikefa.cli import main

    out = train(load_config("tiny").replace(train={"epochs": 0.02, "test_every": 0}), out=tmp_path / "r.h5",
                progress=False).path
    with pytest.raises(RunFileError, match=r"r.h5.ckpt is a checkpoint, not a run file: pass its run file .*r.h5$"):
        spikefa.load(checkpoint_path(out))
    for argv in (["info"], ["curve"], ["plot", "error", "-o", str(tmp_path / "e.png")]):
        assert main(argv + [str(checkpoint_path(out))]) == 2
        assert "is a checkpoint, not a run file" in capsys.readouterr().err


def test_an_existing_run_file_is_not_overwritten_by_default(tmp_path):
    """The error names both the command-line flags and the train() arguments."""
    cfg = load_config("tiny").replace(train={"epochs": 0.01, "test_every": 0})
    out = train(cfg, out=tmp_path / "r.h5", progress=False).path
    with pytest.raises(RunFileError, match=r"pass --resume \(in Python, resume=True\).*--overwrite \(overwrite=True\)"):
        train(cfg, out=out, progress=False)


def test_info_of_several_runs_says_what_sets_them_apart(tmp_path, capsys):
    from spikefa.cli import main

    cfg = load_config("tiny").replace(train={"epochs": 0.01, "test_every": 0})
    a = train(cfg, out=tmp_path / "a.h5", progress=False).path
    b = train(cfg.replace(model={"eta": 0.03}, run={"seed": 2}), out=tmp_path / "b.h5", progress=False).path
    c = train(cfg, out=tmp_path / "c.h5", progress=False).path
    assert main(["info", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert out.count("state: complete") == 2
    tail = [line.strip() for line in out.split("settings that differ:")[1].strip().splitlines()]
    assert tail == [f"model.eta: {a} = 0.02, {b} = 0.03", f"run.seed: {a} = 1, {b} = 2"]
    assert main(["info", str(a), str(c)]) == 0
    assert "settings that differ: none" in capsys.readouterr().out
    assert main(["info", str(a), str(b), "--json"]) == 0
    assert [i["seed"] for i in json.loads(capsys.readouterr().out)] == [1, 2]


def test_a_stop_file_stops_training_in_a_thread_with_a_checkpoint(tmp_path, capsys):
    """A sweep stops the runs on its workers through a file (StopFile): training in a
    thread that is not the main one (a Dask worker's) stops at the end of its block with
    a checkpoint, as at a Ctrl-C, leaves the process's signal handlers alone, and says
    nothing about how to continue (the sweep does)."""
    import signal
    import threading

    from spikefa.interrupt import StopFile
    from spikefa.runfile import checkpoint_path
    from spikefa.train import train

    cfg = load_config("tiny").replace(train={"epochs": 0.5, "test_every": 0}, run={"block_steps": 500})
    stop = StopFile(tmp_path / "stop")
    assert not stop.requested
    (tmp_path / "stop").touch()
    assert stop.requested
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    caught = []

    def go():
        try:
            train(cfg, out=tmp_path / "r.h5", progress=False, stop=stop)
        except BaseException as exc:  # noqa: BLE001 - what the thread ended with is the test
            caught.append(exc)

    t = threading.Thread(target=go)
    t.start()
    t.join(120)
    assert len(caught) == 1 and isinstance(caught[0], KeyboardInterrupt), caught
    run = spikefa.load(tmp_path / "r.h5")
    assert not run.complete and run.attrs["steps_done"] == 500 and checkpoint_path(tmp_path / "r.h5").exists()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert "--resume" not in capsys.readouterr().err
@pytest.mark.parametrize("argv, message", [
    (["train", "tiny", "--record-windows", "-10:10"], "the window start must be >= 0, got -10"),
    (["train", "tiny", "--record-windows", "-5%:10%"], "record.windows[0] = '-5%:10%' is not allowed"),
    (["train", "tiny", "--epochs", "-1e3"], "train.epochs = -1000.0 is not allowed"),
    (["train", "tiny", "--epochs", "-1."], "train.epochs = -1.0 is not allowed"),
    (["train", "tiny", "--record-every", "-1"], "--record-every: must be 0 or more, got -1"),
    (["bench", "--steps", "-1e3"], "--steps: expected a whole number, got '-1e3'"),
    # a real option after a value-taking one is still an option, never swallowed as its value
    (["train", "tiny", "--data", "-o", "x.h5"], "argument --data: expected one argument"),
    (["train", "tiny", "--record-windows", "-q"], "argument --record-windows: expected one argument"),
])
def test_a_value_that_starts_with_minus_is_the_options_value(tmp_path, capsys, argv, message):
    """`--record-windows -10:10` says what is wrong with -10:10, as `--record-windows=-10:10`
    does, not argparse's "expected one argument" (it took -10:10 for an unknown option)."""
    from spikefa.cli import main

    try:
        rc = main([*argv, "-q", "--out", str(tmp_path / "r.h5")] if argv[0] == "train" else argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err.splitlines()[-1] and "Traceback" not in err  # (after argparse's usage)
    assert not (tmp_path / "r.h5").exists()


def test_values_that_start_with_minus_parse_as_with_equals():
    from spikefa.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["plot", "raster", "r.h5", "-o", "x.png", "--window", "-5:10"]).window == (-5, 10)
    assert parse(["train", "tiny", "--out", "-1.h5", "--epochs", "-.5"]).out == "-1.h5"
    got = parse(["train", "tiny", "--record-windows", "-10:10", "-o", "r.h5", "-q"])
    assert (got.record_windows, got.out, got.quiet) == (["-10:10"], "r.h5", True)


def test_spikefa_train_called_is_the_train_function(tmp_path, monkeypatch):
    """`spikefa.train(cfg, ...)` (the module, called) is `spikefa.train.train(cfg, ...)`;
    the module stays a module: imports, help, pickling (Dask) as before."""
    import pickle
    import pydoc
    import subprocess

    import spikefa.train as module

    cfg = load_config("tiny").replace(train={"epochs": 0.01, "test_every": 0})
    res = spikefa.train(cfg, out=tmp_path / "r.h5", progress=False)
    assert res.path.exists() and spikefa.load(res.path).attrs["complete"]
    monkeypatch.setattr(module, "train", lambda *args, **kwargs: (args, kwargs))  # the call is forwarded as is
    assert spikefa.train(cfg, seed=3) == ((cfg,), {"seed": 3})
    monkeypatch.undo()
    assert spikefa.train.train is train and module is spikefa.train and callable(module)
    assert pickle.loads(pickle.dumps(spikefa.train.train)) is train  # by reference
    assert pickle.loads(pickle.dumps(module)) is module
    cloudpickle = pytest.importorskip("cloudpickle")
    task = eval("lambda: tr.train", {"tr": module})  # a notebook's function whose globals hold the module
    assert cloudpickle.loads(cloudpickle.dumps(task))() is train
    assert "module spikefa.train" in pydoc.render_doc(module, renderer=pydoc.plaintext)
    fresh = subprocess.run([sys.executable, "-c", "import spikefa; print(callable(spikefa.train), "
                            "spikefa.train.train.__module__)"], capture_output=True, text=True)
    assert fresh.stdout.split() == ["True", "spikefa.train"], fresh.stderr


def test_a_stopped_experiment_says_that_nothing_of_it_was_written(tmp_path, monkeypatch, capsys):
    """Ctrl-C during `spikefa experiment` (fig3a runs for minutes) ended with a bare
    'spikefa: interrupted': it now says that the experiment wrote nothing and must be run
    again, and exits 130 as a stopped sweep or training does."""
    from spikefa import experiments
    from spikefa.cli import main

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "run_experiment", stopped)
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "fig2", "--quick", "--out", str(tmp_path / "x")])
    assert exc.value.code == 130
    assert "experiment fig2 stopped: nothing of it was written" in capsys.readouterr().err


def test_train_in_a_thread_under_a_stop_request_the_main_thread_installed(tmp_path):
    """`spikefa train` (or a notebook) installs a StopRequest in the main thread; a train()
    in another thread (a thread pool's) finds it installed and lets it go on its way out.
    Off the main thread install() does nothing, so uninstall() must do nothing either:
    signal.signal there raised ValueError over the finished run's result, and the main
    thread's handler was counted as let go."""
    import signal
    import threading

    from spikefa.interrupt import StopRequest

    cfg = load_config("tiny").replace(train={"epochs": 0.01, "test_every": 0})
    stop = StopRequest()
    before = signal.getsignal(signal.SIGINT)
    stop.install()
    try:
        got = []

        def go():
            try:
                got.append(train(cfg, out=tmp_path / "r.h5", progress=False))
            except BaseException as exc:  # noqa: BLE001 - what the thread ended with is the test
                got.append(exc)

        t = threading.Thread(target=go)
        t.start()
        t.join(120)
        assert len(got) == 1 and not isinstance(got[0], BaseException), got
        assert signal.getsignal(signal.SIGINT) == stop._handler and StopRequest.installed() is stop
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_sweep_run_stopped_inside_a_block_leaves_the_telling_to_the_sweep(tmp_path, monkeypatch, capsys):
    """A sweep's run (StopFile: tell = False) cut inside a block (an error, an interrupt in
    the kernel) prints no `--resume`/`--overwrite` advice: the sweep, which refuses
    --resume, continues its runs itself and says so in its own words."""
    from spikefa.interrupt import StopFile
    from spikefa.network import Network

    cfg = load_config("tiny").replace(train={"epochs": 0.05, "test_every": 0}, run={"block_steps": 100})
    original, calls = Network.run, []

    def run_then_interrupt(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # after the kernel, before `step` moves on
        return out

    monkeypatch.setattr(Network, "run", run_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "r.h5", progress=False, stop=StopFile(tmp_path / "stop"))
    err = capsys.readouterr().err
    assert "--resume" not in err and "--overwrite" not in err and "stopped inside a block" not in err
