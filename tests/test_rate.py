"""Tests of the rate-based networks, the paper's measures and the rate experiments.

Each learning test checks a qualitative claim of Lillicrap et al. (2016) on a seeded,
small run; the thresholds and why they can fail are in each docstring. The quick
experiments run once per module (fixture) and several tests read their results.
"""

import json
import re
import tomllib

import numpy as np
import pytest

from spikefa import rate
from spikefa.experiments import EXPERIMENTS, load_experiment_config, models_dir, run_experiment
from spikefa.measures import angle_deg, normalized_squared_error


# --------------------------------------------------------------------------- measures


def test_angle_deg_hand_values():
    assert angle_deg([1, 0], [0, 1]) == pytest.approx(90.0)
    assert angle_deg([1, 1], [1, 0]) == pytest.approx(45.0)
    assert angle_deg([1, 0], [-3, 0]) == pytest.approx(180.0)
    assert angle_deg([1, 0, 0], [1, np.sqrt(3), 0]) == pytest.approx(60.0)
    # matrices are flattened: [[1, 0], [0, 1]] vs [[1, 0], [0, 0]] is [1,0,0,1] vs [1,0,0,0]
    assert angle_deg(np.eye(2), [[1, 0], [0, 0]]) == pytest.approx(45.0)
    # scale-free
    assert angle_deg([2, 0], [0, 0.001]) == pytest.approx(90.0)


def test_angle_deg_float32_parallel_is_not_nan():
    """In float32 the cosine of a vector with itself can round above 1; the float64
    computation and the clip must give ~0, not NaN (arccos resolves ~1e-6 deg near 0)."""
    a = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    for scale in (1.0, 3.0, 1e-3):
        value = angle_deg(a, scale * a)
        assert np.isfinite(value) and value < 1e-4


def test_angle_deg_bad_input():
    with pytest.raises(ValueError, match="shape"):
        angle_deg([1, 0, 0], [1, 0])
    with pytest.raises(ValueError, match="shape"):
        angle_deg(np.ones((2, 3)), np.ones((3, 2)))  # same size, different shape
    with pytest.raises(ValueError, match="zero"):
        angle_deg([0, 0], [1, 0])


def test_nse_hand_values():
    # means (2, 2): baseline 1+1+4+4 = 10, errors 0+1+1+0 = 2
    target = [[1, 0], [3, 4]]
    assert normalized_squared_error(target, [[1, 1], [2, 4]]) == pytest.approx(0.2)
    assert normalized_squared_error(target, target) == 0.0
    # predicting the per-output sample mean gives exactly 1
    assert normalized_squared_error(target, [[2, 2], [2, 2]]) == pytest.approx(1.0)
    assert normalized_squared_error([0, 2], [1, 1]) == pytest.approx(1.0)  # 1-D batch


def test_nse_bad_input():
    with pytest.raises(ValueError, match="shape"):
        normalized_squared_error([[1, 2]], [[1, 2, 3]])
    with pytest.raises(ValueError, match="constant"):
        normalized_squared_error([[1, 2], [1, 2]], [[0, 0], [0, 0]])


# --------------------------------------------------------------------------- rules


def test_unknown_rule_and_activation_list_valid_names():
    with pytest.raises(ValueError, match="gradient, perturbation"):
        rate.get_rule("np", output="sideways")
    with pytest.raises(ValueError, match="bp, fa, shallow, np, sparse-fa"):
        rate.get_rule("dfa")
    with pytest.raises(ValueError, match="linear, logistic, tanh"):
        rate.init_network((3, 2), "relu", np.random.default_rng(0), 0.1, 0.1)
    # sparsity is the fraction removed: all of them (1.0) would leave no network
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.0"):
        rate.init_network((3, 2), "linear", np.random.default_rng(0), 0.1, 0.1, sparsity=1.0)


def test_angles_take_a_hidden_layer_only():
    """weight_angle(net, layer=0) read B[-1], the top hidden layer's feedback: with layers
    of equal size it returned the angle between W[0] and a matrix that is not its feedback,
    with no error. Layers out of 1..m-1 are now refused, and so is a delta_top of the wrong
    width (it was a matmul error)."""
    net = rate.init_network((20, 20, 20), "tanh", np.random.default_rng(0), 0.1, 0.5)
    for layer in (0, 2, -1, 1.0):
        with pytest.raises(ValueError, match=rf"layer = {layer!r}: a hidden layer, counted from 1 \(allowed: 1..1\)"):
            rate.weight_angle(net, layer=layer)
        with pytest.raises(ValueError, match=rf"layer = {layer!r}"):
            rate.modulator_angle(net, np.ones((1, 20)), layer=layer)
    with pytest.raises(ValueError, match=r"delta_top and sent must have 20 columns, one per unit of layer 2, "
                                         r"and the same shape; got \(1, 7\) and \(1, 7\)"):
        rate.modulator_angle(net, np.ones((1, 7)))
    with pytest.raises(ValueError, match="no hidden layer"):
        rate.weight_angle(rate.init_network((20, 20), "tanh", np.random.default_rng(0), 0.1, 0.5))
    assert 0 <= rate.weight_angle(net) <= 180


def test_bad_arguments_name_themselves():
    """Mistakes that were silent or errors from deep inside NumPy: sigma = 0 (NaN weights
    after one step), eta = NaN (NaN weights), sizes 20.7 (cut to 20) or 0 (an empty layer),
    an int seed for rng, a target of the wrong shape (a broadcast error, or broadcast over
    the batch), a too short learn list (IndexError), a rule's name for the rule."""
    rng = np.random.default_rng(0)
    net = rate.init_network((30, 20, 10), "tanh", rng, 0.1, 0.5)
    x, y = rng.random((4, 30)), rng.random((4, 10))
    fa = rate.get_rule("fa")
    calls = {
        "node perturbation sigma = 0": lambda: rate.get_rule("np", sigma=0),
        "rule 'fa' has no option sigma; it takes derivatives": lambda: rate.get_rule("fa", sigma=0.1),
        "rule 'bp' has no option derivatives; it takes none": lambda: rate.get_rule("bp", derivatives="local"),
        "derivatives = 'chain': valid: sent, local": lambda: rate.get_rule("fa", derivatives="chain"),
        r"sizes = \[30, 20.7, 10\]": lambda: rate.init_network([30, 20.7, 10], "tanh", rng, 0.1, 0.5),
        r"sizes = \[30, 0, 10\]": lambda: rate.init_network([30, 0, 10], "tanh", rng, 0.1, 0.5),
        "rng = 0: a numpy.random.Generator": lambda: rate.init_network([30, 10], "tanh", 0, 0.1, 0.5),
        "w_scale = nan": lambda: rate.init_network([30, 10], "tanh", rng, float("nan"), 0.5),
        "runs = 0": lambda: rate.init_network([30, 10], "tanh", rng, 0.1, 0.5, runs=0),
        "dtype = .*int32.*a float dtype": lambda: rate.init_network([30, 10], "tanh", rng, 0.1, 0.5, dtype=np.int32),
        "eta = nan: a finite number >= 0": lambda: rate.train_step(net, fa, x, y, float("nan")),
        r"target must be numbers of shape \(4, 10\).*\(4, 9\)": lambda: rate.train_step(net, fa, x, y[:, :9], 0.01),
        r"target must be numbers of shape \(4, 10\).*\(1, 10\)": lambda: rate.train_step(net, fa, x, y[:1], 0.01),
        r"inputs must be numbers of shape \(batch, 30\).*\(4, 31\)": lambda: rate.predict(net, rng.random((4, 31))),
        "inputs hold 120 NaN": lambda: rate.train_step(net, fa, np.full((4, 30), np.nan), y, 0.01),
        r"learn = \[True\]: one True/False per weight layer \(2 here": lambda: rate.train_step(net, fa, x, y, 0.01, learn=[True]),
        "rule = 'fa': a learning rule object, e.g. rate.get_rule": lambda: rate.train_step(net, "fa", x, y, 0.01),
    }
    W = [w.copy() for w in net.W]
    for message, call in calls.items():
        with pytest.raises(ValueError, match=message):
            call()
    assert all(np.array_equal(a, b) for a, b in zip(W, net.W))


def _tiny_net(seed=0, runs=None):
    return rate.init_network((4, 5, 3, 2), ("tanh", "logistic", "linear"),
                             np.random.default_rng(seed), 0.8, 0.5, bias_scale=0.3,
                             runs=runs)


def test_bp_modulators_are_the_gradient():
    """bp's update equals minus the finite-difference gradient of L = |y* - y|^2 / 2
    (relative error < 1e-6 with central differences of step 1e-6 in float64)."""
    net = _tiny_net()
    rng = np.random.default_rng(1)
    x, target = rng.normal(size=(3, 4)), rng.normal(size=(3, 2))
    acts, deltas = rate.get_rule("bp").modulators(net, x, target)

    def loss():
        return 0.5 * np.sum((target - rate.predict(net, x)) ** 2)

    for l in range(3):
        analytic = deltas[l].T @ acts[l]  # the rule's dW / eta
        numeric = np.zeros_like(net.W[l])
        for idx in np.ndindex(net.W[l].shape):
            old = net.W[l][idx]
            net.W[l][idx] = old + 1e-6
            up = loss()
            net.W[l][idx] = old - 1e-6
            down = loss()
            net.W[l][idx] = old
            numeric[idx] = -(up - down) / 2e-6
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_fa_with_transposed_feedback_is_bp():
    """FA whose B happens to equal W^T is backprop, to the last bit."""
    net = _tiny_net()
    net.B = [w.T.copy() for w in net.W[1:]]
    rng = np.random.default_rng(2)
    x, target = rng.normal(size=(3, 4)), rng.normal(size=(3, 2))
    _, bp = rate.get_rule("bp").modulators(net, x, target)
    _, fa = rate.get_rule("fa").modulators(net, x, target)
    for a, b in zip(bp, fa):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("output", rate.NP_OUTPUTS)
def test_node_perturbation_follows_the_gradient_on_average(output):
    """The mean of node perturbation's modulators over many noise draws approaches the
    backprop modulator (with respect to the net input) for small sigma. A single draw is
    noisy (each unit's estimate carries the noise of all perturbed units); averaged over
    4000 draws the cosine between all modulators (layers concatenated) and all bp
    modulators is > 0.95 (measured > 0.99), and a sign error would make it ~ -1. Per
    layer the check is meaningless here: a layer whose gradient is tiny drowns in the
    others' noise. With ``output="gradient"`` (the paper's Fig. 2) the output modulator
    of every draw is bp's, up to the hidden noise (sigma = 1e-4) that reaches the output.
    """
    net = _tiny_net()
    rng = np.random.default_rng(3)
    x, target = rng.normal(size=(1, 4)), rng.normal(size=(1, 2))
    _, bp = rate.get_rule("bp").modulators(net, x, target)
    # np perturbs the net input, so compare with the gradient there: the bp modulators
    # already are -dL/d(net input)
    rule = rate.get_rule("np", sigma=1e-4, output=output)
    noise = np.random.default_rng(4)
    total = [np.zeros_like(d) for d in bp]
    for _ in range(4000):
        _, deltas = rule.modulators(net, x, target, noise)
        if output == "gradient":
            np.testing.assert_allclose(deltas[-1], bp[-1], rtol=1e-2, atol=1e-4)
        total = [t + d for t, d in zip(total, deltas)]
    estimate = np.concatenate([t.ravel() for t in total])
    gradient = np.concatenate([d.ravel() for d in bp])
    assert angle_deg(estimate, gradient) < np.degrees(np.arccos(0.95))
    # and in size: E[-(dL / sigma^2) xi] = -dL/d(net input), so the mean estimate projected on
    # the gradient is the gradient (coefficient 1 up to the noise; measured 0.98-1.00), where
    # a reward divided by sigma instead of sigma^2 would give 1e-4
    coefficient = (estimate / 4000) @ gradient / (gradient @ gradient)
    assert 0.9 < coefficient < 1.1


def test_ensemble_equals_separate_networks():
    """A run axis trains independent networks: run k of an ensemble matches the same
    network trained alone (same weights, same examples) to rounding."""
    ensemble = _tiny_net(runs=3)
    singles = [rate.RateNetwork([w[k].copy() for w in ensemble.W],
                                [b[k].copy() for b in ensemble.b],
                                [m[k].copy() for m in ensemble.B], ensemble.activations)
               for k in range(3)]
    rng = np.random.default_rng(5)
    for _ in range(20):
        x, target = rng.normal(size=(2, 4)), rng.normal(size=(2, 2))
        rate.train_step(ensemble, rate.get_rule("fa"), x, target, 0.05, weight_decay=0.1)
        for net in singles:
            rate.train_step(net, rate.get_rule("fa"), x, target, 0.05, weight_decay=0.1)
    for k, net in enumerate(singles):
        for a, b in zip(ensemble.W + ensemble.b, net.W + net.b):
            np.testing.assert_allclose(a[k], b, rtol=1e-12, atol=1e-14)


def test_weight_decay_is_per_example_in_a_batch():
    """The paper's decay alpha is per example: with no error signal (target = output), a
    batch of 20 shrinks W and b as 20 single-example steps do, by (1 - eta alpha)^20."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(20, 4))
    batch = _tiny_net()
    batch.b = [b + 0.1 for b in batch.b]
    online = batch.copy()
    start = batch.copy()
    eta, alpha = 0.05, 0.2
    shallow = rate.get_rule("shallow")
    rate.train_step(batch, shallow, x, rate.predict(batch, x), eta, weight_decay=alpha)
    for row in x:
        rate.train_step(online, shallow, row, rate.predict(online, row), eta, weight_decay=alpha)
    shrink = (1 - eta * alpha) ** 20
    np.testing.assert_allclose(batch.W[-1], shrink * start.W[-1], rtol=1e-12)
    np.testing.assert_allclose(batch.b[-1], shrink * start.b[-1], rtol=1e-12)
    for a, b in zip(batch.W + batch.b, online.W + online.b):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_biases_can_stay_fixed():
    """learn_biases=False (Fig. 2's network has no biases): W learns, b never moves, not
    even by weight decay."""
    net = _tiny_net()
    before = net.copy()
    rng = np.random.default_rng(9)
    rate.train_step(net, rate.get_rule("fa"), rng.normal(size=(2, 4)), rng.normal(size=(2, 2)), 0.1,
                    weight_decay=0.5, learn_biases=False)
    for b_now, b_then in zip(net.b, before.b):
        np.testing.assert_array_equal(b_now, b_then)
    assert all(not np.array_equal(w, w0) for w, w0 in zip(net.W, before.W))


def test_freezing_leaves_a_layer_untouched():
    net = _tiny_net()
    before = net.copy()
    rng = np.random.default_rng(6)
    rate.train_step(net, rate.get_rule("fa"), rng.normal(size=(2, 4)),
                    rng.normal(size=(2, 2)), 0.1, learn=(True, False, True))
    np.testing.assert_array_equal(net.W[1], before.W[1])
    np.testing.assert_array_equal(net.b[1], before.b[1])
    assert not np.array_equal(net.W[0], before.W[0])
    assert not np.array_equal(net.W[2], before.W[2])


def test_sparse_fa_removed_entries_stay_zero():
    """Removed synapses of W and B are zero at the start and after 300 steps of learning
    with weight decay; about half of the entries are removed (binomial: for n entries
    the fraction removed is within 5 s.d. = 5 * 0.5 / sqrt(n) of 0.5), and the kept
    ones do learn."""
    rng = np.random.default_rng(7)
    net = rate.init_network((30, 40, 10), ("tanh", "linear"), rng, 0.3, 0.5, sparsity=0.5)
    start = net.copy()
    with pytest.raises(ValueError, match="sparsity"):
        rate.get_rule("sparse-fa").modulators(_tiny_net(), np.zeros((1, 4)), np.zeros((1, 2)))
    rule = rate.get_rule("sparse-fa")
    T = rng.uniform(-1, 1, (10, 30))
    for _ in range(300):
        x = rng.normal(size=(1, 30))
        rate.train_step(net, rule, x, x @ T.T, 0.005, weight_decay=1e-3)
    for arrays, masks in ((net.W, net.W_mask), (net.B, net.B_mask)):
        for w, mask in zip(arrays, masks):
            assert np.all(w[~mask] == 0.0)
            assert abs((~mask).mean() - 0.5) < 5 * 0.5 / np.sqrt(mask.size)
    for w, w0, mask in zip(net.W, start.W, net.W_mask):
        assert np.all(w[mask] != w0[mask])
    for b_now, b_start in zip(net.B, start.B):
        np.testing.assert_array_equal(b_now, b_start)  # feedback is fixed


# --------------------------------------------------------------------------- experiments


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """Every experiment once, quick mode, seed 0 (fig3a reads the bundled MNIST subset)."""
    out = tmp_path_factory.mktemp("rate")
    return {name: run_experiment(name, out, quick=True, seed=0, progress=False) for name in EXPERIMENTS}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_quick_experiment_writes_figure_and_json(quick_results, name):
    if name not in quick_results:
        pytest.skip("spikefa.data is not available")
    result = quick_results[name]
    for ext in ("png", "pdf", "json"):
        path = next(p for p in result["files"] if p.endswith(f"{name}.{ext}"))
        with open(path, "rb") as f:
            head = f.read(8)
        assert head.startswith({"png": b"\x89PNG", "pdf": b"%PDF", "json": b"{"}[ext])
    with open(next(p for p in result["files"] if p.endswith(".json"))) as f:
        saved = json.load(f)
    assert saved["experiment"] == name and saved["quick"] is True
    assert saved["summary"] == json.loads(json.dumps(result["summary"]))


def test_linear_task_fa_and_bp_learn_shallow_does_not(quick_results):
    """Fig. 2a, quick run (4 runs, 1500 examples, 30-20-10 linear network).

    - BP and FA: NSE < 0.01. T is exactly representable (rank 10 <= 20 hidden units)
      and noise-free, so both go to 0; measured ~1e-9 at 1500 steps.
    - shallow: NSE > 0.5. With W0 fixed the best it could ever do is to fit T on the
      20-dim row space of W0 (NSE 1/3), and with W0 ~ U[-0.01, 0.01] the hidden signal is
      ~1% of the input's, so it crawls (measured 0.99 here, 0.94 after 5000 steps).
    - node perturbation learns (NSE < 0.9, from 1.0), but is far slower than BP and FA
      at equal steps: its NSE is > 100 times theirs (measured 0.02 vs ~4e-10).
    """
    final = quick_results["fig2"]["summary"]["final_nse"]
    assert final["bp"] < 0.01 and final["fa"] < 0.01
    assert final["shallow"] > 0.5
    assert final["np"] < 0.9
    assert final["np"] > 100 * max(final["bp"], final["fa"])


def test_linear_task_fa_bp_angle_falls(quick_results):
    """Fig. 2b: the angle between B e and W^T e is ~90 deg at the start (B and W are
    independent random matrices: mean over 4 runs of the first step > 75) and falls well
    below it (mean over the last 5% of steps < 45; measured ~27, and ~30 at paper size)."""
    summary = quick_results["fig2"]["summary"]
    assert summary["fa_bp_angle_step1"] > 75
    assert summary["fa_bp_angle_last5pct"] < 45


def test_fig5_three_phases(quick_results):
    """Fig. 5c, quick run (10,000 examples per phase, eta 5e-4, seed 0).

    Phase 1 (W frozen, W0 learns through the unaligned B) changes NSE by less than 2%
    (measured within +-0.6% for seeds 0-4); phase 2 (W learns) aligns W with B^T (angle
    from 90 to < 80; measured 68-69); phase 3 (W frozen again, W0 learns through the same
    B) now lowers NSE by more than 7% (measured 10-19% for seeds 0-4; 38% at paper size)
    and by more than 3 times phase 1's change. Control: phase 3 run on the same examples
    with B replaced by a fresh random matrix does not lower NSE (drop < 2%; measured: NSE
    rises by 10-30%), so phase 3 works because W aligned with this B^T, not because W0
    learning helps whatever the feedback.
    """
    summary = quick_results["fig5"]["summary"]
    (p1_start, p1_end), _, (p3_start, p3_end) = summary["phase_nse_start_end"]
    drop1 = (p1_start - p1_end) / p1_start
    drop3 = (p3_start - p3_end) / p3_start
    assert abs(drop1) < 0.02
    assert summary["phase_angle_end"][1] < 80
    assert drop3 > 0.07 and drop3 > 3 * abs(drop1)
    control_start, control_end = summary["phase3_fresh_B_nse_start_end"]
    assert control_start == p3_start
    assert (control_start - control_end) / control_start < 0.02


def test_fig3d_quick_runs_learn(quick_results):
    """Fig. 3d quick run: every rule beats the NSE it started from (~1.7) and BP and FA
    beat shallow learning. (The depth advantage needs the paper-size run: see
    results/rate/README.md.)"""
    final = quick_results["fig3d"]["summary"]["final_nse"]
    assert final["3-layer shallow"] < 1.0
    for label in ("3-layer BP", "3-layer FA", "4-layer BP", "4-layer FA"):
        assert final[label] < 0.5 * final["3-layer shallow"]



def test_fa_local_derivatives_send_the_error_and_apply_f_prime_only_locally():
    """FA with derivatives="local" (the paper's Methods, Figs 3a and 3d): B carries e and
    the signals made from it, delta_FA = B e and delta_1 = B1 delta_2, and each layer's f'
    enters only its own update; "sent" (backprop's chain with B) carries each modulator,
    derivative included. Checked by hand on a 4-layer logistic network; the output
    modulator is e * f'(y) either way, and the two agree when the layers above are linear.
    modulator_angle measures the angle of what each rule sends (delta_FA = B e for
    "local") to backprop's W^T (e * f'(y))."""
    rng = np.random.default_rng(3)
    x, target = rng.uniform(0, 1, (6, 8)), rng.uniform(0, 1, (6, 3))
    net = rate.init_network((8, 5, 4, 3), "logistic", np.random.default_rng(1), 1.0, 0.5)
    h0, h1, h2, y = rate.forward(net, x)
    e = target - y
    B0, B1 = net.B
    local = rate.get_rule("fa", derivatives="local")
    _, deltas = local.modulators(net, x, target)
    d2 = e @ B1.T  # delta_2 = B2 e in the paper's numbering
    np.testing.assert_allclose(deltas[2], e * y * (1 - y))
    np.testing.assert_allclose(deltas[1], d2 * h2 * (1 - h2))
    np.testing.assert_allclose(deltas[0], (d2 @ B0.T) * h1 * (1 - h1))
    _, chain = rate.get_rule("fa").modulators(net, x, target)
    np.testing.assert_allclose(chain[1], ((e * y * (1 - y)) @ B1.T) * h2 * (1 - h2))
    np.testing.assert_allclose(chain[0], (chain[1] @ B0.T) * h1 * (1 - h1))
    assert not np.allclose(chain[0], deltas[0])
    delta_out = e * y * (1 - y)
    angle = rate.modulator_angle(net, delta_out, layer=2, sent=local.sent(net, y, target))
    assert angle == pytest.approx(rate.angle_deg(e @ B1.T, delta_out @ net.W[2]))
    assert rate.get_rule("fa").sent(net, y, target) == pytest.approx(delta_out)
    lin = rate.init_network((8, 5, 3), ("tanh", "linear"), np.random.default_rng(1), 1.0, 0.5)
    for a, b in zip(local.modulators(lin, x, target)[1], rate.get_rule("fa").modulators(lin, x, target)[1]):
        np.testing.assert_allclose(a, b)


def test_modulator_angle_per_example_and_with_the_weights_before_a_step():
    """per_example=True gives each example's angle of delta_FA to delta_BP (what Fig. 3b
    averages over the examples trained), NaN where an example's modulator is zero; W
    replaces W[1] (as it was before a step). Checked against angle_deg row by row."""
    from spikefa.measures import row_angles_deg

    rng = np.random.default_rng(4)
    net = rate.init_network((8, 5, 3), "logistic", np.random.default_rng(1), 1.0, 0.5)
    x, target = rng.uniform(0, 1, (6, 8)), rng.uniform(0, 1, (6, 3))
    y = rate.predict(net, x)
    e = target - y
    e[4] = 0.0  # an example with no error: no angle
    delta_out = e * y * (1 - y)
    W_other = rng.normal(size=net.W[1].shape)
    for W in (None, W_other):
        used = net.W[1] if W is None else W
        got = rate.modulator_angle(net, delta_out, sent=e, per_example=True, W=W)
        want = [angle_deg(e[i] @ net.B[0].T, delta_out[i] @ used) if i != 4 else np.nan for i in range(6)]
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert rate.modulator_angle(net, delta_out, sent=e, W=W_other) == pytest.approx(
        angle_deg(e @ net.B[0].T, delta_out @ W_other))
    with pytest.raises(ValueError, match=r"W must have the shape of W\[1\], \(3, 5\); got \(5, 3\)"):
        rate.modulator_angle(net, delta_out, W=W_other.T)
    np.testing.assert_allclose(row_angles_deg([[1, 0], [1, 1], [0, 0]], [[0, 2], [2, 2], [1, 0]]), [90, 0, np.nan],
                               atol=1e-5)  # (arccos resolves 0 deg to about 1e-6, as angle_deg says)
    with pytest.raises(ValueError, match=r"row_angles_deg: two arrays of one shape \(rows, n\); got \(2,\) and \(2,\)"):
        row_angles_deg([1, 0], [0, 1])


def test_fig3a_quick_learns_mnist(quick_results):
    """Fig. 3a quick run (bundled subset, 5 epochs, eta 1e-2, seed 0): every rule starts at
    chance (~90% error) and BP and FA end below 30% (measured 15.2% and 13.8%; shallow
    18.8%, sparse FA 16.2%; FA as the paper's Methods, delta_FA = B e). The last point is
    after all 5 x 2000 examples."""
    if "fig3a" not in quick_results:
        pytest.skip("spikefa.data is not available")
    result = quick_results["fig3a"]
    errors = result["curves"]["test_error"]
    for rule in ("bp", "fa"):
        assert errors[rule][0] > 0.8
        assert errors[rule][-1] < 0.3
        assert result["curves"]["examples"][rule][-1] == 5 * 2000
    assert result["summary"]["final_test_error"] == {r: e[-1] for r, e in errors.items()}
    # both FA/BP angles, one per test point, for the rules that have a B
    angles = result["curves"]["angle"]  # one per test point, for the rules that have a B
    assert set(angles) == {"fa", "sparse-fa"}
    assert all(len(a) == len(errors[r]) and 0 < a[-1] < 90 for r, a in angles.items())
    assert result["summary"]["final_fa_bp_angle"] == {r: a[-1] for r, a in angles.items()}


FIG2_SMALL = """
[network]
sizes = [3, 4, 2]
activation = "linear"
w_init = 0.3
feedback_init = 0.5
bias_init = 0.0
learn_biases = false
[task]
target_init = 1.0
n_test = 20
task_seed = 1
[train]
rules = ["bp", "fa"]
steps = 4
record_every = RECORD
np_sigma = 0.01
np_output = "gradient"
angle_band = "window"
angle_window = 3
[train.eta]
shallow = 0.01
np = 0.01
bp = 0.05
fa = 0.05
[run]
runs = 2
"""


def test_fig2_final_nse_is_after_the_last_step_whatever_record_every(tmp_path):
    """The NSE curve starts before training and has a point after every record_every
    steps, the last one after all of them: 4 steps recorded every 1, 2 or 4 steps give
    5, 3 or 2 points and the same final NSE."""
    finals = []
    for record in (1, 2, 4):
        path = tmp_path / f"fig2-{record}.toml"
        path.write_text(FIG2_SMALL.replace("RECORD", str(record)))
        result = run_experiment("fig2", tmp_path / str(record), config=path, progress=False)
        assert list(result["curves"]["steps"]) == list(range(0, 5, record))
        assert result["curves"]["nse"]["bp"].shape == (2, 4 // record + 1)
        finals.append(result["summary"]["final_nse"])
    assert finals[0]["bp"] < 1.0  # it did learn something in 4 steps
    assert finals[0] == finals[1] == finals[2]


def test_fig2_angle_band_is_the_papers_sliding_window_or_the_runs():
    """Fig. 2b's band is "two s.d.'s for a sliding window of 10 examples": with
    angle_band = "window" each point's line is the mean over runs and the window's examples
    and its s.d. is one run's s.d. in the window, averaged over runs (checked against a
    plain loop, fewer examples at the start); "runs" is the s.d. across runs at each
    example. A bad band or window is refused, naming the key, before any training."""
    from spikefa.experiments import _angle_band

    angle = np.random.default_rng(0).uniform(20, 100, (3, 25))
    line, sd = _angle_band(angle, "window", 10)
    for t in range(25):
        part = angle[:, max(0, t - 9):t + 1]
        assert line[t] == pytest.approx(part.mean())
        assert sd[t] == pytest.approx(part.std(axis=1).mean())
    assert sd[0] == 0 and line[0] == pytest.approx(angle[:, 0].mean())
    line, sd = _angle_band(angle, "runs", 10)
    np.testing.assert_allclose(line, angle.mean(axis=0))
    np.testing.assert_allclose(sd, angle.std(axis=0))


@pytest.mark.parametrize("key, value, message", [
    ("angle_band", '"sliding"', r"train.angle_band = 'sliding': valid: window, runs"),
    ("angle_window", "0", r"train.angle_window = 0: a number of examples, at least 1")])
def test_fig2_bad_angle_band_is_refused_before_training(tmp_path, monkeypatch, key, value, message):
    import re

    path = tmp_path / "fig2.toml"
    path.write_text(re.sub(rf"^{key} = .*$", f"{key} = {value}", FIG2_SMALL.replace("RECORD", "1"), flags=re.M))
    monkeypatch.setattr(rate, "train_step", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=message):
        run_experiment("fig2", tmp_path / "o", config=path, progress=False)


FIG3A_SMALL = """
[network]
sizes = [784, 30, 10]
activation = "logistic"
w_init = 0.2
feedback_init = 0.5
sparsity = 0.5
sparse_layers = "paired"
dtype = "float64"
[data]
dataset = "mnist-subset"
[train]
rules = ["fa"]
eta = 1e-2
weight_decay = 1e-6
batch_size = 20
epochs = 1
eval_every = 1500
probe_size = 100
fa_derivatives = "local"
"""


def test_fig3a_tests_after_the_last_example_too(tmp_path, monkeypatch):
    """One epoch of the 2000 subset images, tested every 1500 examples: at 0 and 1500,
    and once more at the end (2000), which is the final test error. Every image the
    network sees, training or test, has its pixels scaled to [0, 1]."""
    seen = []
    predict, train_step = rate.predict, rate.train_step

    def predict_seen(net, x):
        seen.append(float(np.max(x)))
        return predict(net, x)

    def train_step_seen(net, rule, x, *args, **kwargs):
        seen.append(float(np.max(x)))
        return train_step(net, rule, x, *args, **kwargs)

    monkeypatch.setattr(rate, "predict", predict_seen)
    monkeypatch.setattr(rate, "train_step", train_step_seen)
    path = tmp_path / "fig3a.toml"
    path.write_text(FIG3A_SMALL)
    result = run_experiment("fig3a", tmp_path, config=path, progress=False)
    assert len(seen) > 100 and max(seen) <= 1.0 and max(seen) > 0.9
    assert result["curves"]["examples"]["fa"] == [0, 1500, 2000]
    assert len(result["curves"]["angle"]["fa"]) == 3
    assert result["summary"]["examples_seen"] == 2000
    assert result["summary"]["final_test_error"]["fa"] == result["curves"]["test_error"]["fa"][-1]


def test_fig3a_averages_the_angle_of_each_example_trained(tmp_path, monkeypatch):
    """Fig. 3b draws "one s.d. around the time-averaged mean": fig3a records, for each
    stretch between two tests, the mean and s.d. (ddof 1) of the angle of delta_FA = B e
    to delta_BP = W^T (e y (1 - y)) of every example trained in it, with W as the step
    found it. Replayed here by hand from the network each step is given."""
    by_hand = []
    train_step = rate.train_step

    def watched(net, rule, x, target, *args, **kwargs):
        hidden = 1 / (1 + np.exp(-(x @ net.W[0].T + net.b[0])))
        y = 1 / (1 + np.exp(-(hidden @ net.W[1].T + net.b[1])))
        e = target - y
        by_hand.extend(angle_deg(net.B[0] @ e[i], (e[i] * y[i] * (1 - y[i])) @ net.W[1]) for i in range(len(x)))
        return train_step(net, rule, x, target, *args, **kwargs)

    monkeypatch.setattr(rate, "train_step", watched)
    path = tmp_path / "fig3a.toml"
    path.write_text(FIG3A_SMALL)
    result = run_experiment("fig3a", tmp_path, config=path, progress=False)
    curves, summary = result["curves"], result["summary"]
    assert curves["examples"]["fa"] == [0, 1500, 2000] and len(by_hand) == 2000
    stretches = [np.array(by_hand[:1500]), np.array(by_hand[1500:])]
    np.testing.assert_allclose(curves["angle_trained"]["fa"], [a.mean() for a in stretches], rtol=1e-9)
    np.testing.assert_allclose(curves["angle_trained_sd"]["fa"], [a.std(ddof=1) for a in stretches], rtol=1e-6)
    assert summary["final_fa_bp_angle_trained"]["fa"] == curves["angle_trained"]["fa"][-1]
    assert summary["final_fa_bp_angle_trained_sd"]["fa"] == curves["angle_trained_sd"]["fa"][-1]
    saved = json.loads((tmp_path / "fig3a.json").read_text())
    assert saved["curves"]["angle_trained"]["fa"] == pytest.approx(curves["angle_trained"]["fa"], abs=1e-4)


def test_welch_t_by_hand():
    """a = (1, 2, 3): mean 2, sample variance 1; b = (0, 2): mean 1, sample variance 2;
    t = (2 - 1) / sqrt(1/3 + 2/2) = sqrt(3) / 2."""
    from spikefa.experiments import _welch_t

    assert _welch_t(np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0])) == pytest.approx(np.sqrt(3) / 2, rel=1e-12)

def test_unknown_experiment_and_config_key(tmp_path):
    with pytest.raises(ValueError, match="fig2, fig3a, fig3d, fig5"):
        run_experiment("fig4", tmp_path)
    text = (models_dir() / "rate-fig2.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("[run]\n", "[run]\nrunz = 3\n"))
    with pytest.raises(ValueError, match="runz"):
        load_experiment_config("fig2", path=bad)
    bad.write_text(text.replace('rules = ["shallow", "np", "bp", "fa"]',
                                'rules = ["shallow", "xx"]'))
    with pytest.raises(ValueError, match="valid: bp, fa"):
        load_experiment_config("fig2", path=bad)
    bad.write_text(text.replace("steps = 5000", 'steps = "many"'))
    with pytest.raises(ValueError, match="train.steps"):
        load_experiment_config("fig2", path=bad)
    bad.write_text(text.replace("learn_biases = false", "learn_biases = 0"))   # a bool, not a number
    with pytest.raises(ValueError, match="learn_biases.*bool"):
        load_experiment_config("fig2", path=bad)
    bad.write_text(text.replace("steps = 5000", "steps = true"))             # a number, not a bool
    with pytest.raises(ValueError, match="train.steps"):
        load_experiment_config("fig2", path=bad)
    # a float key written as an integer is accepted (its value stays the int 1)
    bad.write_text(text.replace("target_init = 1.0", "target_init = 1"))
    assert load_experiment_config("fig2", path=bad)["task"]["target_init"] == 1
    # a Fig. 3d learner must have the target's input and output sizes
    text3d = (models_dir() / "rate-fig3d.toml").read_text()
    bad.write_text(text3d.replace('label = "3-layer shallow"\nsizes = [30, 20, 10]',
                                  'label = "3-layer shallow"\nsizes = [30, 20, 5]'))
    with pytest.raises(ValueError, match="'3-layer shallow': sizes \\[30, 20, 5\\] do not match"):
        run_experiment("fig3d", tmp_path / "x", quick=True, config=bad, progress=False)


def test_model_files_are_complete():
    for name in EXPERIMENTS:
        with open(models_dir() / f"rate-{name}.toml", "rb") as f:
            assert "quick" in tomllib.load(f)
        assert load_experiment_config(name, quick=True)


def test_cli_experiment_without_mnist_says_that_quick_needs_none(tmp_path, capsys):
    """fig3a without the full MNIST set: the data error's advice, and that --quick runs the
    experiment on the bundled subset (the advice named only the data.dataset key)."""
    from spikefa.cli import main

    assert main(["experiment", "fig3a", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"data_dir {tmp_path / 'nothing'} does not exist" in err
    assert f"Or run `spikefa experiment fig3a --out {tmp_path / 'o'} --quick`: its quick form, on the bundled " \
           f"2,000-image subset" in err
    assert not (tmp_path / "o" / "fig3a.json").exists()
    # a model file whose [quick] table keeps the full set: --quick would fail the same way
    own = tmp_path / "own.toml"
    text = (models_dir() / "rate-fig3a.toml").read_text()
    own.write_text(text[:text.index("[quick]")])
    assert main(["experiment", "fig3a", "--model", str(own), "--data", str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"data_dir {tmp_path / 'nothing'} does not exist" in err and "--quick" not in err


def test_cli_experiment_writes_under_runs_by_default(tmp_path, monkeypatch, capsys):
    """Without --out, `spikefa experiment NAME --quick` writes runs/rate-NAME-quick/ in the
    working folder, never the committed results/rate/, and prints the summary and the
    files, not the curves (they are in the JSON file)."""
    from spikefa.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "fig5", "--quick"]) in (0, None)
    printed = json.loads(capsys.readouterr().out)
    folder = tmp_path / "runs" / "rate-fig5-quick"
    assert sorted(p.name for p in folder.iterdir()) == ["fig5.json", "fig5.pdf", "fig5.png"]
    assert printed["files"] == [f"runs/rate-fig5-quick/fig5.{e}" for e in ("png", "pdf", "json")]
    assert "curves" not in printed and printed["summary"]["phase_angle_end"][1] < 80
    assert not (tmp_path / "results").exists()


def test_an_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    """--out names a folder: a file there, or a file in its path, is said in one line,
    before the experiment runs (it said 'a part of that path is a file' with a line
    blaming pathlib)."""
    from spikefa.cli import main

    (tmp_path / "notes.txt").write_text("mine")
    assert main(["experiment", "fig5", "--quick", "--out", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert err == (f"spikefa: error: {tmp_path / 'notes.txt'} is a file: an experiment writes a folder (its figure "
                   f"and numbers); give a folder, such as {tmp_path / 'notes'}-fig5\n")
    assert main(["experiment", "fig5", "--quick", "--out", str(tmp_path / "notes.txt" / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"spikefa: error: cannot make the folder {tmp_path / 'notes.txt' / 'sub'}: ")
    assert "(a part of that path is a file)" in err and "raised in" not in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_data_folder_an_experiment_does_not_read_is_noted(tmp_path, caplog):
    """`spikefa experiment fig3a --quick --data DIR` (the bundled subset) or fig2 (a
    synthetic task) ignored --data without a word, while `spikefa train` notes it."""
    import logging

    with caplog.at_level(logging.WARNING):
        run_experiment("fig2", tmp_path / "o", quick=True, data_dir=tmp_path / "mnist", progress=False)
    assert "the data folder" in caplog.text and "is not used" in caplog.text and "fig2" in caplog.text


FIG3A_RESUMABLE = FIG3A_SMALL.replace('dtype = "float64"', 'dtype = "float32"').replace(
    'rules = ["fa"]', 'rules = ["bp", "sparse-fa"]').replace("epochs = 1", "epochs = 3").replace(
    "eval_every = 1500", "eval_every = 700")


def _stop_at_call(monkeypatch, n):
    """Make the n-th rate.train_step call from now raise KeyboardInterrupt (Ctrl-C)."""
    calls, train_step = [0], rate.train_step

    def counted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return train_step(*args, **kwargs)

    monkeypatch.setattr(rate, "train_step", counted)


def _stopped_fig3a(tmp_path, monkeypatch, n=150, **kwargs):
    """FIG3A_RESUMABLE stopped at the n-th training step: its config file and folder."""
    config = tmp_path / "fig3a.toml"
    config.write_text(FIG3A_RESUMABLE)
    out = tmp_path / "run"
    _stop_at_call(monkeypatch, n)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("fig3a", out, config=config, progress=False, **kwargs)
    monkeypatch.undo()
    return config, out


def test_a_stopped_fig3a_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, caplog):
    """fig3a (tens of minutes at full size) keeps a checkpoint at every epoch's and rule's
    end. Stopped three times (inside the first rule, at the first step of the second, inside
    the second's last epoch) and resumed each time, it gives the uninterrupted run's curves
    and figure numbers exactly: the weights (float32, with sparse-fa's removed synapses),
    the example order and the next test point all carry over, and a finished rule is not
    trained again. The checkpoint is gone once the JSON is written."""
    from spikefa.experiments import checkpoint_path, checkpoint_progress, read_checkpoint

    config = tmp_path / "fig3a.toml"
    config.write_text(FIG3A_RESUMABLE)
    whole = run_experiment("fig3a", tmp_path / "whole", config=config, progress=False)
    out = tmp_path / "stopped"
    # 100 batches per epoch: call 150 is in bp's 2nd epoch; 201 calls after bp's 1st epoch is
    # sparse-fa's first step; 250 calls after sparse-fa's start is in its 3rd epoch
    kept = []
    for n, resume in ((150, False), (201, True), (250, True)):
        _stop_at_call(monkeypatch, n)
        with pytest.raises(KeyboardInterrupt):
            run_experiment("fig3a", out, config=config, progress=False, resume=resume)
        monkeypatch.undo()
        kept.append(checkpoint_progress(read_checkpoint(out, "fig3a")["meta"]))
        assert not (out / "fig3a.json").exists()
    assert kept == ["bp after 1 of 3 epochs", "bp done", "bp done; sparse-fa after 2 of 3 epochs"]
    trained = []
    monkeypatch.setattr(rate, "train_step", lambda *a, _ts=rate.train_step, **k: trained.append(1) or _ts(*a, **k))
    with caplog.at_level("WARNING"):
        result = run_experiment("fig3a", out, config=config, progress=False, resume=True)
    assert len(trained) == 100  # only sparse-fa's last epoch is left
    assert "continuing fig3a from its checkpoint (bp done; sparse-fa after 2 of 3 epochs)" in caplog.text
    assert result["curves"] == whole["curves"] and result["summary"] == whole["summary"]
    assert result["curves"]["examples"]["bp"] == [0, 700, 1400, 2100, 2800, 3500, 4200, 4900, 5600, 6000]
    assert result["resumes"] == 3 and "resumes" not in whole and result["seconds"] > 0
    assert not checkpoint_path(out, "fig3a").exists() and not list(out.glob("*.tmp"))

    def numbers(path):
        saved = json.loads(path.read_text())
        return {k: v for k, v in saved.items() if k not in ("seconds", "resumes")}

    assert numbers(out / "fig3a.json") == numbers(tmp_path / "whole" / "fig3a.json")


def test_a_fig3a_checkpoint_without_a_rules_curve_is_refused_by_name(tmp_path, monkeypatch):
    """A checkpoint whose finished rule lacks one of its curves was read without a word and
    stopped the resume with a bare KeyError after the data was loaded. It is refused on
    reading, naming what it lacks."""
    from spikefa.experiments import checkpoint_path

    config, out = _stopped_fig3a(tmp_path, monkeypatch, n=450)  # bp done, sparse-fa after 1 epoch
    ckpt = checkpoint_path(out, "fig3a")
    with np.load(ckpt) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop("meta")[()]))
    assert meta["done"]["bp"]["angle"] == [] and meta["current"]["rule"] == "sparse-fa"
    del meta["done"]["bp"]["angle"], meta["current"]["angle"]
    np.savez(ckpt, meta=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(ValueError, match=r"cannot read the experiment checkpoint .*\(KeyError: 'no "
                                         r"done.bp.angle, angle'\); start the experiment again with --overwrite"):
        run_experiment("fig3a", out, config=config, progress=False, resume=True)


def test_fig3a_trained_angles_of_a_one_example_stretch_and_of_examples_without_one(tmp_path, monkeypatch):
    """A stretch between two tests of one example has a mean but no s.d. (ddof 1); an
    example whose angle is undefined (a zero modulator: NaN) is left out of its stretch
    rather than making the whole stretch undefined."""
    path = tmp_path / "fig3a.toml"
    path.write_text(FIG3A_SMALL.replace("batch_size = 20", "batch_size = 1").replace("eval_every = 1500",
                                                                                   "eval_every = 1999"))
    result = run_experiment("fig3a", tmp_path / "one", config=path, progress=False)
    assert result["curves"]["examples"]["fa"] == [0, 1999, 2000]
    assert result["curves"]["angle_trained_sd"]["fa"][-1] is None and result["curves"]["angle_trained_sd"]["fa"][0] > 0
    assert 0 < result["curves"]["angle_trained"]["fa"][-1] < 180

    modulator_angle = rate.modulator_angle

    def first_undefined(*args, **kwargs):
        angles = modulator_angle(*args, **kwargs)
        if kwargs.get("per_example"):
            angles[0] = np.nan
        return angles

    monkeypatch.setattr(rate, "modulator_angle", first_undefined)
    path.write_text(FIG3A_SMALL)
    result = run_experiment("fig3a", tmp_path / "nan", config=path, progress=False)
    assert all(0 < a < 180 for a in result["curves"]["angle_trained"]["fa"])


@pytest.mark.parametrize("eval_every, gaps", [(700, 3), (1000, 2)])
def test_a_fig3a_checkpoint_from_before_the_trained_angles_resumes_with_gaps(tmp_path, monkeypatch, eval_every,
                                                                            gaps):
    """A checkpoint written before fig3a recorded the angles of the examples trained (Fig.
    3b) resumes: the test intervals it had trained, in part or whole, get None (a gap in
    the figure), the ones after it their means and s.d.'s, equal to the uninterrupted run's.
    Stopped at an epoch's end between two tests (700), the interval it was in is a gap too;
    stopped at an epoch's end that is a test (1000), the next interval is whole."""
    from spikefa.experiments import checkpoint_path

    config = tmp_path / "fig3a.toml"
    config.write_text(FIG3A_RESUMABLE.replace("eval_every = 700", f"eval_every = {eval_every}"))
    out = tmp_path / "run"
    _stop_at_call(monkeypatch, 450)  # bp done, sparse-fa after 1 epoch
    with pytest.raises(KeyboardInterrupt):
        run_experiment("fig3a", out, config=config, progress=False)
    monkeypatch.undo()
    ckpt = checkpoint_path(out, "fig3a")
    with np.load(ckpt) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays.pop("meta")[()]))
    assert meta["current"]["examples"] == list(range(0, 2001, eval_every)) and meta["current"]["count"] == 2000
    for kept in (meta["done"]["bp"], meta["current"]):
        for key in ("angle_trained", "angle_trained_sd", "angle_sums"):
            kept.pop(key, None)
    np.savez(ckpt, meta=np.array(json.dumps(meta)), **arrays)
    result = run_experiment("fig3a", out, config=config, progress=False, resume=True)
    whole = run_experiment("fig3a", tmp_path / "whole", config=config, progress=False)
    got, want = result["curves"]["angle_trained"]["sparse-fa"], whole["curves"]["angle_trained"]["sparse-fa"]
    assert got[:gaps] == [None] * gaps and None not in want and got[gaps:] == want[gaps:]
    assert len(got) == len(want) == -(-6000 // eval_every)
    assert result["curves"]["angle_trained_sd"]["sparse-fa"][:gaps] == [None] * gaps
    assert result["curves"]["test_error"] == whole["curves"]["test_error"]
    assert (out / "fig3a.png").exists() and "bp" not in result["curves"]["angle_trained"]


def test_fig3a_fa_derivatives_reaches_the_rule_and_the_json(tmp_path):
    """train.fa_derivatives is the FA rule's option in fig3a: "local" (the paper's
    delta_FA = B e) and "sent" (B (e * y')) train differently, and the JSON says which
    was run."""
    results = {}
    for derivatives in ("local", "sent"):
        path = tmp_path / f"{derivatives}.toml"
        path.write_text(FIG3A_SMALL.replace('fa_derivatives = "local"', f'fa_derivatives = "{derivatives}"'))
        results[derivatives] = run_experiment("fig3a", tmp_path / derivatives, config=path, progress=False)
        saved = json.loads((tmp_path / derivatives / "fig3a.json").read_text())
        assert saved["config"]["train"]["fa_derivatives"] == derivatives
    local, sent = (results[k]["curves"] for k in ("local", "sent"))
    assert local["angle"]["fa"][0] != sent["angle"]["fa"][0]  # B e vs B (e * y') before learning
    assert local["test_error"]["fa"][-1] != sent["test_error"]["fa"][-1] or \
        local["angle"]["fa"][-1] != sent["angle"]["fa"][-1]


def test_sparse_layers_removes_synapses_from_every_w_or_only_the_paired_ones():
    """sparse_layers = "all" removes half of every W and B; "paired" (Fig. 3a's reading of
    the paper's "W and B") keeps W0 whole and removes half of the W that has a B, and of B.
    Removed synapses stay at zero through learning; a network copy keeps the masks."""
    rng = np.random.default_rng(0)
    x, target = rng.uniform(0, 1, (20, 50)), rng.uniform(0, 1, (20, 6))
    fa = rate.get_rule("sparse-fa")
    for layers, w0_kept in (("all", 0.5), ("paired", 1.0)):
        net = rate.init_network((50, 40, 6), "logistic", np.random.default_rng(1), 0.2, 0.5,
                                sparsity=0.5, sparse_layers=layers)
        for _ in range(3):
            rate.train_step(net, fa, x, target, 0.1)
        net = net.copy()
        assert np.mean(net.W[0] != 0) == pytest.approx(w0_kept, abs=0.03)
        assert (net.W_mask[0] is None) == (layers == "paired")
        for w, m in ((net.W[1], net.W_mask[1]), (net.B[0], net.B_mask[0])):
            assert m.mean() == pytest.approx(0.5, abs=0.08) and not np.any(w[~m])
    with pytest.raises(ValueError, match="sparse_layers = 'output': valid: all, paired"):
        rate.init_network((5, 4, 3), "tanh", rng, 0.1, 0.5, sparsity=0.5, sparse_layers="output")
    with pytest.raises(ValueError, match=r"sparse_layers = 'paired' on sizes \(4, 2\): no W has a feedback partner"):
        rate.init_network((4, 2), "tanh", rng, 0.1, 0.5, sparsity=0.5, sparse_layers="paired")


def test_fig3a_angle_uses_the_networks_own_output_derivative(tmp_path):
    """fig3a's delta_BP = W^T (e * f'(y)) took f' as the logistic's y (1 - y) whatever
    network.activation said: with tanh units the angle was of a wrong delta_BP. The first
    angle (before learning) equals one computed by hand from the same initial network."""
    from spikefa.data import load_dataset
    from spikefa.experiments import _rngs

    path = tmp_path / "tanh.toml"
    path.write_text(FIG3A_SMALL.replace('activation = "logistic"', 'activation = "tanh"'))
    result = run_experiment("fig3a", tmp_path / "o", config=path, progress=False)
    net = rate.init_network((784, 30, 10), "tanh", _rngs(0)[0], 0.2, 0.5)
    images, labels = load_dataset("mnist-subset", "train", None)
    x, target = images[:100] / 255.0, np.eye(10)[labels[:100]]
    y = rate.predict(net, x)
    expected = rate.angle_deg((target - y) @ net.B[0].T, ((target - y) * (1 - y * y)) @ net.W[1])
    assert result["curves"]["angle"]["fa"][0] == pytest.approx(expected, rel=1e-9)


def test_plot_angle_cuts_off_no_angle_it_draws():
    """plot_angle fixed its axis at 0-100 deg: Fig. 5a's single-unit angles that peak at
    157 deg were cut off. The axis now reaches above every angle (and band) drawn on it,
    also when a later call draws a smaller one; 0-100 stays the least."""
    from spikefa.experiments import plot_angle

    x = np.arange(5)
    ax = plot_angle(x, np.array([90, 120, 157, 140, 130.0]))
    assert ax.get_ylim()[1] >= 157
    plot_angle(x, np.full(5, 60.0), ax=ax)
    assert ax.get_ylim()[1] >= 157
    assert plot_angle(x, np.full(5, 60.0)).get_ylim() == (0, 100)
    assert plot_angle(x, np.full(5, 95.0), sd=np.full(5, 10.0)).get_ylim()[1] >= 115

    assert plot_angle(x, np.full(5, 95.0), sd=np.full(5, 10.0), n_sd=1).get_ylim()[1] < 115


def test_fig3b_draws_the_trained_examples_mean_with_one_sd_and_an_older_result_its_pooled_angle():
    """Fig. 3b as the paper draws it: the mean angle of the examples trained between two
    tests, at the middle of that stretch, +- 1 s.d.; a result saved before these were
    recorded is drawn from its pooled probe angle (one point per test), and says so."""
    from spikefa.experiments import plot_experiment

    result = {"experiment": "fig3a", "config": {"train": {"fa_derivatives": "local"}},
              "summary": {"n_train": 100, "n_test": 50},
              "curves": {"examples": {"fa": [0, 100, 200, 250]}, "test_error": {"fa": [0.9, 0.5, 0.4, 0.3]},
                         "angle": {"fa": [89.0, 80.0, 75.0, 74.0]},
                         "angle_trained": {"fa": [None, 78.0, 76.0]}, "angle_trained_sd": {"fa": [None, 4.0, 3.0]}}}
    b = plot_experiment(result).axes[1]
    (line,) = [l for l in b.get_lines() if l.get_label() == "feedback alignment"]
    np.testing.assert_allclose(line.get_xdata(), [0.5, 1.5, 2.25])
    np.testing.assert_allclose(line.get_ydata(), [np.nan, 78.0, 76.0])
    band = b.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(73.0) and band.max() == pytest.approx(82.0)  # 1 s.d., not 2
    assert "examples trained" in b.get_title(loc="left")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plot_experiment(result)
    FigureCanvasAgg(fig).draw()  # panel a's percent axis (log) says 30, 60, not 3 x 10^1
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels(minor=True) + fig.axes[0].get_yticklabels()]
    assert "30" in labels and "60" in labels and not any("times" in t or "^" in t for t in labels)
    # a rule resumed from a checkpoint that kept no trained angles: its pooled angle
    for key, value in (("examples", [0, 100, 200, 250]), ("test_error", [0.9, 0.6, 0.5, 0.4]),
                       ("angle", [89.0, 82.0, 79.0, 78.0]), ("angle_trained", [None] * 3),
                       ("angle_trained_sd", [None] * 3)):
        result["curves"][key]["sparse-fa"] = value
    b = plot_experiment(result).axes[1]
    (line,) = [l for l in b.get_lines() if l.get_label() == "sparse FA (50% removed)"]
    np.testing.assert_allclose(line.get_xdata(), [0, 1, 2, 2.5])
    assert "examples trained" in b.get_title(loc="left") and "pooled" in b.get_title(loc="left")
    for key in ("examples", "test_error", "angle", "angle_trained", "angle_trained_sd"):
        del result["curves"][key]["sparse-fa"]
    del result["curves"]["angle_trained"], result["curves"]["angle_trained_sd"]
    b = plot_experiment(result).axes[1]
    (line,) = [l for l in b.get_lines() if l.get_label() == "feedback alignment"]
    np.testing.assert_allclose(line.get_xdata(), [0, 1, 2, 2.5])
    assert not b.collections and "pooled" in b.get_title(loc="left")


def test_a_bad_fa_derivatives_is_refused_when_the_model_file_is_read(tmp_path):
    path = tmp_path / "fig3a.toml"
    path.write_text(FIG3A_SMALL.replace('fa_derivatives = "local"', 'fa_derivatives = "chain"'))
    with pytest.raises(ValueError, match=r"fig3a.toml: train.fa_derivatives = 'chain': valid: sent, local"):
        run_experiment("fig3a", tmp_path / "o", config=path, progress=False)
    path.write_text(FIG3A_SMALL.replace('sparse_layers = "paired"', 'sparse_layers = "W"'))
    with pytest.raises(ValueError, match=r"fig3a.toml: network.sparse_layers = 'W': valid: all, paired"):
        run_experiment("fig3a", tmp_path / "o", config=path, progress=False)
    # a bad value under [quick] is named there, and refused without --quick too
    path.write_text(FIG3A_SMALL + '[quick]\ntrain = { fa_derivatives = "lokal" }\n')
    for quick in (False, True):
        with pytest.raises(ValueError, match=r"fig3a.toml: quick.train.fa_derivatives = 'lokal': valid: sent, local"):
            run_experiment("fig3a", tmp_path / "o", config=path, quick=quick, progress=False)


def test_experiment_model_option_runs_an_edited_model_file_and_resumes_with_it(tmp_path, monkeypatch, capsys):
    """`spikefa experiment NAME --model FILE` runs an edited copy of a model file (the
    command line had no way to; only the Python API took one), and a stopped fig3a's resume
    command names the file, which the resume needs to match the stopped run."""
    from spikefa.cli import main

    config = tmp_path / "mine.toml"
    config.write_text(FIG3A_RESUMABLE)
    out = tmp_path / "run"
    _stop_at_call(monkeypatch, 150)
    with pytest.raises(SystemExit):
        main(["experiment", "fig3a", "--model", str(config), "--out", str(out)])
    monkeypatch.undo()
    err = capsys.readouterr().err
    command = f"spikefa experiment fig3a --out {out} --model {config.resolve()} --resume"
    assert command in err, err
    assert main(command.split()[1:]) == 0
    saved = json.loads((out / "fig3a.json").read_text())
    assert saved["config"]["train"]["rules"] == ["bp", "sparse-fa"] and saved["resumes"] == 1
    assert main(["experiment", "fig3a", "--model", str(tmp_path / "nosuch.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "nosuch.toml: no such folder or file" in capsys.readouterr().err


def test_an_experiment_checkpoint_is_neither_thrown_away_nor_mixed_up(tmp_path, monkeypatch):
    """What `spikefa experiment` refuses, each with what to do instead: starting over a
    stopped run's checkpoint without --overwrite, resuming it with another seed, quick or
    model value, resuming where there is nothing to resume, resuming an experiment that
    keeps no checkpoint, both --resume and --overwrite, and a checkpoint it cannot read."""
    from spikefa.experiments import checkpoint_path

    config, out = _stopped_fig3a(tmp_path, monkeypatch, seed=2)
    ckpt = checkpoint_path(out, "fig3a")
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match=r"holds the checkpoint of a stopped fig3a \(bp after 1 of 3 epochs\): "
                                         r"continue it with --resume, or start it again with --overwrite"):
        run_experiment("fig3a", out, config=config, progress=False, seed=2)
    with pytest.raises(ValueError, match=r"another run.*seed = 0 \(the stopped run's: 2\)"):
        run_experiment("fig3a", out, config=config, progress=False, resume=True)
    changed = tmp_path / "changed.toml"
    changed.write_text(FIG3A_RESUMABLE.replace("eta = 1e-2", "eta = 2e-2"))
    with pytest.raises(ValueError, match=r"config.train.eta = 0.02 \(the stopped run's: 0.01\)"):
        run_experiment("fig3a", out, config=changed, progress=False, seed=2, resume=True)
    with pytest.raises(ValueError, match="give one of them"):
        run_experiment("fig3a", out, config=config, progress=False, seed=2, resume=True, overwrite=True)
    assert ckpt.read_bytes() == before  # nothing refused touched it
    with pytest.raises(ValueError, match=r"experiment fig2 keeps no checkpoint.*without --resume"):
        run_experiment("fig2", out, quick=True, progress=False, resume=True)
    ckpt.write_bytes(before[:100])
    with pytest.raises(ValueError, match=r"cannot read the experiment checkpoint .*fig3a.ckpt.npz.*--overwrite"):
        run_experiment("fig3a", out, config=config, progress=False, seed=2, resume=True)
    result = run_experiment("fig3a", out, config=config, progress=False, seed=2, overwrite=True)
    assert "resumes" not in result and not ckpt.exists()
    with pytest.raises(ValueError, match=r"nothing to resume: .*fig3a.ckpt.npz does not exist \(fig3a.json there "
                                         r"is a finished run\)"):
        run_experiment("fig3a", out, config=config, progress=False, seed=2, resume=True)


def test_cli_says_how_to_continue_a_stopped_fig3a(tmp_path, monkeypatch, capsys):
    """Ctrl-C in `spikefa experiment fig3a` prints what its checkpoint holds and the
    command that continues it; that command, run as printed, finishes the experiment."""
    import shlex

    from spikefa.cli import main

    out = tmp_path / "q"
    _stop_at_call(monkeypatch, 300)
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "fig3a", "--quick", "--seed", "3", "--out", str(out)])
    monkeypatch.undo()
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert f"stopped: its checkpoint (bp after 2 of 5 epochs) is kept in {out / 'fig3a.ckpt.npz'}" in err
    command = err.split("continue it with: ")[1].strip()
    assert command == shlex.join(["spikefa", "experiment", "fig3a", "--out", str(out), "--quick", "--seed", "3",
                                  "--resume"])
    main(shlex.split(command)[1:])
    assert json.loads(capsys.readouterr().out)["summary"]["epochs"] == 5
    assert json.loads((out / "fig3a.json").read_text())["resumes"] == 1


def test_info_on_an_experiments_folder_says_what_it_holds(tmp_path, monkeypatch, capsys):
    """`spikefa info` reads run files; given an experiment's folder or checkpoint, or a
    sweep's folder, it said only "is a folder" or "is not an HDF5 file". It now says what
    is there and the command that continues or reads it."""
    from spikefa.cli import main

    def info(path):
        assert main(["info", str(path)]) == 2
        return capsys.readouterr().err.strip()

    out = tmp_path / "q"
    _stop_at_call(monkeypatch, 300)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("fig3a", out, quick=True, seed=3, progress=False)
    monkeypatch.undo()
    resume = f"continue it with spikefa experiment fig3a --out {out} --quick --seed 3 --resume"
    assert info(out) == (f"spikefa: error: {out} is a folder, not a run file or checkpoint; it holds the "
                         f"checkpoint of a stopped experiment fig3a (bp after 2 of 5 epochs): {resume}")
    assert info(out / "fig3a.ckpt.npz").endswith(f"; it is the checkpoint of a stopped experiment fig3a (bp after "
                                                 f"2 of 5 epochs): {resume}")
    run_experiment("fig3a", out, quick=True, seed=3, progress=False, resume=True)
    run_experiment("fig2", out, quick=True, progress=False)
    assert info(out).endswith("; it holds the finished experiments fig2, fig3a, whose numbers are in fig2.json, "
                              "fig3a.json there")
    (tmp_path / "sweep.json").write_text("{}")
    assert info(tmp_path).endswith(f"; it is a sweep's folder: spikefa sweep-report {tmp_path} summarizes it")


def test_an_empty_or_npy_checkpoint_is_refused_with_what_to_do(tmp_path):
    """A checkpoint file that is empty (a full disk, a copy cut short) is told apart like any
    other unreadable one, not raised as numpy's EOFError."""
    for name, content in (("empty", b""), ("npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<i8', 'fortran_order': "
                                                     b"False, 'shape': (0,), }" + b" " * 58 + b"\n")):
        out = tmp_path / name
        out.mkdir()
        (out / "fig3a.ckpt.npz").write_bytes(content)
        for resume in (False, True):
            with pytest.raises(ValueError, match=r"cannot read the experiment checkpoint .*--overwrite"):
                run_experiment("fig3a", out, quick=True, progress=False, resume=resume)


def test_a_refused_resume_makes_no_folder(tmp_path):
    """--resume with an --out that does not exist (a typo) is refused without making it."""
    out = tmp_path / "typo"
    with pytest.raises(ValueError, match="nothing to resume"):
        run_experiment("fig3a", out, quick=True, progress=False, resume=True)
    assert not out.exists()


def test_a_checkpoint_of_other_settings_is_refused_naming_them(tmp_path, monkeypatch):
    """Started again over the checkpoint of a run with another seed, the refusal says which
    seed --resume needs, instead of sending the user to a --resume that is refused too."""
    config, out = _stopped_fig3a(tmp_path, monkeypatch, seed=2)
    with pytest.raises(ValueError, match=r"continue it with --resume and the stopped run's seed = 2, or start it "
                                         r"again"):
        run_experiment("fig3a", out, config=config, progress=False)


def test_a_second_fig3a_in_the_same_folder_is_refused_while_the_first_runs(tmp_path, monkeypatch):
    """While a fig3a runs (its checkpoint written, the run not stopped), neither --resume nor
    --overwrite of that folder may start a second writer of the same checkpoint and JSON."""
    from spikefa.runfile import RunFileError

    config = tmp_path / "fig3a.toml"
    config.write_text(FIG3A_RESUMABLE)
    out = tmp_path / "run"
    calls, refused, train_step = [0], [], rate.train_step

    def second_run_meanwhile(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 150:  # in bp's 2nd epoch: the checkpoint of its 1st is there
            for flags in ({"resume": True}, {"overwrite": True}, {}):
                with pytest.raises((RunFileError, ValueError)) as exc:
                    run_experiment("fig3a", out, config=config, progress=False, **flags)
                refused.append(str(exc.value))
        return train_step(*args, **kwargs)

    monkeypatch.setattr(rate, "train_step", second_run_meanwhile)
    result = run_experiment("fig3a", out, config=config, progress=False)
    assert len(refused) == 3 and all("is being written" in r for r in refused), refused
    assert "resumes" not in result and not (out / "fig3a.ckpt.npz").exists()
    assert not list(out.glob("*.writer")) and not list(out.glob("*.tmp"))


def test_a_stop_while_the_figure_is_written_leaves_no_truncated_figure(tmp_path, monkeypatch):
    """Ctrl-C while the PNG is written leaves the PNG of before (here: none), not a cut one."""
    from matplotlib.figure import Figure

    config = tmp_path / "fig3a.toml"
    config.write_text(FIG3A_SMALL)
    out = tmp_path / "run"

    def stopped_savefig(self, fname, *args, **kwargs):
        fname.write(b"\x89PNG\r\n")  # the first bytes, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", stopped_savefig)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("fig3a", out, config=config, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["fig3a.ckpt.npz"]


def test_cli_a_stop_after_the_json_is_written_says_the_experiment_finished(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the last moment, after fig3a.json is written: the message says the results are
    there, not "nothing of it was written ... run it again" (which would redo a 20-minute run)."""
    from spikefa import experiments
    from spikefa.cli import main

    real = experiments.run_experiment

    def stopped_as_it_ends(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "run_experiment", stopped_as_it_ends)
    out = tmp_path / "q"
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "fig3a", "--quick", "--out", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 130
    assert "nothing of it was written" not in err and f"its figure and numbers are in {out / 'fig3a.json'}" in err
    assert (out / "fig3a.json").exists() and not (out / "fig3a.ckpt.npz").exists()


def test_a_write_whose_rename_fails_leaves_no_temporary_file(tmp_path, monkeypatch):
    """runfile.write_whole writes beside its target and renames: a rename that fails (a target
    made immutable, a full directory) left the temporary file behind; the target stays as
    it was."""
    from spikefa import runfile

    target = tmp_path / "fig3a.json"
    target.write_text("old")

    def refused(src, dst):
        raise PermissionError(1, "Operation not permitted", str(dst))

    monkeypatch.setattr(runfile.os, "replace", refused)
    with pytest.raises(PermissionError):
        runfile.write_whole(target, lambda f: f.write(b"new"))
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["fig3a.json"]


# ----------------------------------------------------- checkpoint gaps found by mutation testing


def _edit_checkpoint(path, edit):
    """Rewrite the meta of the experiment checkpoint ``path`` with ``edit(meta)``."""
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    meta = json.loads(str(data["meta"][()]))
    edit(meta)
    data["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **data)


def test_a_resumed_fig3a_counts_the_seconds_of_every_session(tmp_path, monkeypatch):
    """``seconds`` sums the sessions: a checkpoint written after a resume adds its session's
    time to the stopped one's, and so does the result (a stopped session's 1000 s are not
    forgotten, however fast the rest is)."""
    from spikefa.experiments import checkpoint_path, checkpoint_progress, read_checkpoint

    config, out = _stopped_fig3a(tmp_path, monkeypatch)
    _edit_checkpoint(checkpoint_path(out, "fig3a"), lambda meta: meta.update(seconds=1000.0))
    _stop_at_call(monkeypatch, 250)  # bp's last 2 epochs (200 steps), then into sparse-fa's 1st
    with pytest.raises(KeyboardInterrupt):
        run_experiment("fig3a", out, config=config, progress=False, resume=True)
    monkeypatch.undo()
    meta = read_checkpoint(out, "fig3a")["meta"]
    assert checkpoint_progress(meta) == "bp done" and 1000.0 < meta["seconds"] < 1000.0 + 600
    result = run_experiment("fig3a", out, config=config, progress=False, resume=True)
    assert 1000.0 < result["seconds"] < 1000.0 + 600 and result["resumes"] == 2


@pytest.mark.parametrize("key", ["experiment", "config", "done", "seconds", "resumes"])
def test_a_checkpoint_without_a_field_is_refused_as_unreadable(tmp_path, monkeypatch, key):
    """A checkpoint whose meta lacks a field (another version's, or edited) is refused with
    what to do, not with a KeyError once the run has begun."""
    from spikefa.experiments import checkpoint_path

    config, out = _stopped_fig3a(tmp_path, monkeypatch)
    _edit_checkpoint(checkpoint_path(out, "fig3a"), lambda meta: meta.pop(key))
    for resume in (True, False):
        with pytest.raises(ValueError, match=rf"cannot read the experiment checkpoint .*no {key}.*--overwrite"):
            run_experiment("fig3a", out, config=config, progress=False, resume=resume)


def test_overwrite_deletes_the_checkpoint_before_the_new_run_writes_its_own(tmp_path, monkeypatch):
    """--overwrite deletes the stopped run's checkpoint at once: stopped again before its own
    first checkpoint, it leaves none, not the old run's for a later --resume to continue."""
    from spikefa.experiments import checkpoint_path

    config, out = _stopped_fig3a(tmp_path, monkeypatch, seed=2)
    _stop_at_call(monkeypatch, 50)  # in bp's first epoch: no checkpoint of this run yet
    with pytest.raises(KeyboardInterrupt):
        run_experiment("fig3a", out, config=config, progress=False, overwrite=True)
    monkeypatch.undo()
    assert not checkpoint_path(out, "fig3a").exists()
    with pytest.raises(ValueError, match="nothing to resume"):
        run_experiment("fig3a", out, config=config, progress=False, seed=2, resume=True)


def test_a_resume_must_ask_for_the_same_quick(tmp_path, monkeypatch):
    """A model file without a [quick] table gives the same config with and without quick:
    the checkpoint's quick is compared too (the result records it, and the command that
    continues a run repeats it)."""
    config, out = _stopped_fig3a(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=r"another run.*quick = True \(the stopped run's: False\)"):
        run_experiment("fig3a", out, config=config, quick=True, progress=False, resume=True)
    with pytest.raises(ValueError, match=r"continue it with --resume and the stopped run's quick = False, or"):
        run_experiment("fig3a", out, config=config, quick=True, progress=False)


def test_a_fig3a_stopped_after_its_last_rule_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """Stopped while its figure is written, every rule is done: the resume trains nothing
    and gives the uninterrupted run's numbers (examples_seen included)."""
    from matplotlib.figure import Figure

    from spikefa.experiments import checkpoint_progress, read_checkpoint

    config = tmp_path / "fig3a.toml"
    config.write_text(FIG3A_RESUMABLE)
    whole = run_experiment("fig3a", tmp_path / "whole", config=config, progress=False)
    out = tmp_path / "run"

    def stopped_savefig(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", stopped_savefig)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("fig3a", out, config=config, progress=False)
    monkeypatch.undo()
    assert checkpoint_progress(read_checkpoint(out, "fig3a")["meta"]) == "bp, sparse-fa done"
    trained = []
    monkeypatch.setattr(rate, "train_step", lambda *a, _ts=rate.train_step, **k: trained.append(1) or _ts(*a, **k))
    result = run_experiment("fig3a", out, config=config, progress=False, resume=True)
    assert not trained and result["resumes"] == 1
    assert result["summary"] == whole["summary"] and result["curves"] == whole["curves"]


def test_a_checkpoint_of_other_data_is_refused(tmp_path, monkeypatch):
    """A checkpoint is resumed only on data of its sizes (another --data folder would
    continue the weights on other images)."""
    from spikefa.experiments import checkpoint_path

    config, out = _stopped_fig3a(tmp_path, monkeypatch)
    _edit_checkpoint(checkpoint_path(out, "fig3a"), lambda meta: meta["current"].update(n_train=60000))
    with pytest.raises(ValueError, match=r"was run on 60,000 training and 500 test images, this data has 2,000 "
                                         r"and 500: give its data folder"):
        run_experiment("fig3a", out, config=config, progress=False, resume=True)


def test_a_resumed_fig3as_progress_bar_starts_where_it_stopped(tmp_path, monkeypatch, capsys):
    """The bar of the rule a resume continues starts at the epochs already done (200 of
    300 steps), not at 0."""
    config, out = _stopped_fig3a(tmp_path, monkeypatch, n=250)  # bp after 2 of 3 epochs
    capsys.readouterr()
    run_experiment("fig3a", out, config=config, progress=True, resume=True)
    err = capsys.readouterr().err
    assert "fig3a bp:  67%" in err and "200/300" in err


def test_cli_stop_messages_with_an_older_json_or_an_unreadable_checkpoint(tmp_path, monkeypatch, capsys):
    """A stop before the end says that nothing was written even where an older run's JSON
    lies (it was not written by this run), and where an unreadable checkpoint lies (not
    this run's: it writes whole files); neither ends in a traceback."""
    from spikefa import experiments
    from spikefa.cli import main

    out = tmp_path / "q"
    out.mkdir()
    (out / "fig3a.json").write_text("{}")  # an older, finished run

    def stopped(*args, **kwargs):
        (out / "fig3a.ckpt.npz").write_bytes(b"PK\x03\x04 cut short")
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "run_experiment", stopped)
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "fig3a", "--quick", "--out", str(out)])
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert "experiment fig3a stopped: nothing of it was written" in err and "stopped as it ended" not in err
    assert (out / "fig3a.json").read_text() == "{}"


def test_cli_a_stop_after_the_json_deletes_a_checkpoint_left_behind(tmp_path, monkeypatch, capsys):
    """Ctrl-C after fig3a.json is written but before the checkpoint is deleted: the CLI
    deletes it (its numbers are in the JSON), so the folder is not refused next time."""
    from spikefa import experiments
    from spikefa.cli import main

    config, out = _stopped_fig3a(tmp_path, monkeypatch)

    def json_then_stop(*args, **kwargs):
        (out / "fig3a.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(experiments, "run_experiment", json_then_stop)
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "fig3a", "--out", str(out), "--resume"])
    assert exc.value.code == 130 and "stopped as it ended" in capsys.readouterr().err
    assert not (out / "fig3a.ckpt.npz").exists()


def test_cli_the_command_that_continues_a_stopped_fig3a_keeps_its_data(tmp_path, monkeypatch, capsys):
    """--data, like --seed and --quick, is repeated in the printed command."""
    import shlex

    from spikefa.cli import main

    out, data = tmp_path / "q", tmp_path / "mnist"
    _stop_at_call(monkeypatch, 300)
    with pytest.raises(SystemExit):
        main(["experiment", "fig3a", "--quick", "--out", str(out), "--data", str(data)])
    command = capsys.readouterr().err.split("continue it with: ")[1].strip()
    assert command == shlex.join(["spikefa", "experiment", "fig3a", "--out", str(out), "--quick", "--data",
                                  str(data), "--resume"])


def test_info_on_an_experiments_folder_other_cases(tmp_path, monkeypatch, capsys):
    """`spikefa info` on a folder: an unreadable checkpoint is named with what to do, a
    full-MNIST checkpoint's command asks for --data, one finished experiment is said in the
    singular, and a folder of run files lists five of them and counts the rest."""
    from spikefa.cli import main
    from spikefa.experiments import checkpoint_path

    def info(path):
        assert main(["info", str(path)]) == 2
        return capsys.readouterr().err.strip()

    config, out = _stopped_fig3a(tmp_path, monkeypatch)
    _edit_checkpoint(checkpoint_path(out, "fig3a"), lambda meta: meta["config"]["data"].update(dataset="mnist"))
    assert info(out).endswith(f"continue it with spikefa experiment fig3a --out {out} --model {config.resolve()} "
                              f"--data DIR --resume")  # (the stopped run's own model file)
    checkpoint_path(out, "fig3a").write_bytes(b"")
    assert f"; cannot read the experiment checkpoint {checkpoint_path(out, 'fig3a')}" in info(out)
    done = tmp_path / "done"
    done.mkdir()
    (done / "fig2.json").write_text("{}")
    assert info(done).endswith("; it holds the finished experiment fig2, whose numbers are in fig2.json there")
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in "abcdefg":
        (runs / f"{name}.h5").write_bytes(b"")
    assert info(runs).endswith("; the run files in it: a.h5, b.h5, c.h5, d.h5, e.h5 and 2 more")


@pytest.mark.parametrize("damage", ["order_rng", "W0", "epochs"])
def test_a_checkpoint_missing_part_of_its_rules_state_is_refused_in_one_line(tmp_path, monkeypatch, capsys, damage):
    """A checkpoint whose top-level keys are all there but whose rule state lacks a field
    (or a weight array, or its config the epochs) raised a bare KeyError mid-run, or in
    `spikefa info` and the stop message; it is refused up front like any unreadable one."""
    from spikefa.cli import main
    from spikefa.experiments import checkpoint_path, read_checkpoint

    out = tmp_path / "q"
    _stop_at_call(monkeypatch, 300)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("fig3a", out, quick=True, progress=False)
    monkeypatch.undo()
    saved = read_checkpoint(out, "fig3a")
    meta, arrays = saved["meta"], dict(saved["arrays"])
    if damage == "order_rng":
        del meta["current"]["order_rng"]
    elif damage == "W0":
        del arrays["W0"]
    else:
        del meta["config"]["train"]["epochs"]
    np.savez(checkpoint_path(out, "fig3a"), meta=np.array(json.dumps(meta)), **arrays)
    refusal = r"cannot read the experiment checkpoint .*fig3a.ckpt.npz \(KeyError: .*" + damage + r".*--overwrite"
    with pytest.raises(ValueError, match=refusal):
        run_experiment("fig3a", out, quick=True, progress=False, resume=True)
    assert main(["info", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(refusal, err) and "Traceback" not in err


def test_a_weight_decay_that_rounds_to_nothing_in_float32_is_said(caplog):
    """Fig. 3a's decay (alpha 1e-6 at eta 1e-3, batch 20) shrinks W by a factor 1 - 2e-8,
    which is 1 in float32: it was silently not applied. It is now said, once; float64
    weights apply it."""
    import logging

    rng = np.random.default_rng(0)
    x, t = rng.random((20, 30)), rng.random((20, 10))
    for dtype, applied in (("float32", False), ("float64", True)):
        nets = [rate.init_network((30, 20, 10), "logistic", np.random.default_rng(1), 0.2, 0.5, dtype=dtype)
                for _ in range(2)]
        with caplog.at_level(logging.WARNING, logger="spikefa.rate"):
            caplog.clear()
            for _ in range(2):
                for net, decay in zip(nets, (1e-6, 0.0)):
                    rate.train_step(net, rate.get_rule("fa"), x, t, 1e-3, decay)
        assert (not all(np.array_equal(a, b) for a, b in zip(nets[0].W, nets[1].W))) == applied
        notes = [r.getMessage() for r in caplog.records if "no decay is applied" in r.getMessage()]
        assert len(notes) == (0 if applied else 1), notes
        if not applied:
            assert "1 in float32" in notes[0]
