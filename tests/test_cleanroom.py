"""spikefa against a clean-room NumPy implementation written from the model specification alone
(SPEC.md, restated in docs/model.md).

``CleanNet`` below was written from the specification's text (populations, the five phases of
a step, the variants table) before reading spikefa's kernels, and shares no code with them:
plain float64 NumPy, one line per equation, weight decay applied literally to every weight
every step (``W <- W - eta (m s^T + gamma W)``), forward weights in the paper's layout
``W^l`` of shape ``(n_l, n_{l-1})``. The node-perturbation rule of ``learned``, which SPEC
leaves to the implementation, follows the reading that spikefa/feedback.py documents.

Unlike the kernel-vs-twin tests (both spikefa) and the one-step hand computations of
test_rules.py, this replays hundreds of steps with image changes, for every variant and
phi_d, on the twin and the serial kernel, with deferred updates and the incremental forward
pass, and replays a whole ``spikefa.train`` run (shuffled epochs, odd block boundaries, the
run's noise stream) and its test pass (last and sum read-outs) from the run's own uniforms.
Float64 throughout, so values agree to rounding (atol 1e-10) and spikes exactly. The
mutants at the end show that the comparison fails when one SPEC rule is changed.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

from spikefa.config import config_from_dict, load_config
from spikefa.data import load_subset
from spikefa.network import SEED_NOISE, SEED_ORDER, SEED_TEST, init_network, input_probabilities, rng_for
from spikefa.runfile import Run
from spikefa.train import evaluate, network_from_file, train

JIT_OFF = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
BACKENDS = ["numpy"] if JIT_OFF else ["numpy", "numba-serial"]
VARIANTS = ["fa", "transport", "dfa", "shallow", "sparse-fa", "learned"]
ATOL = 1e-10  # float64; the largest difference seen is ~1e-12 (V after 300 steps)


def sigma(v):
    return 1.0 / (1.0 + np.exp(-v))


PHI = {"tanh": np.tanh, "2sigma-1": lambda u: 2.0 * sigma(u) - 1.0, "sigma-0.5": lambda u: sigma(u) - 0.5}


class CleanNet:
    """One SPEC step. ``W[l-1]``: ``W^l`` (n_l, n_{l-1}); ``F[l-1]``: ``B^l`` (n_l, n_{l+1}) or
    ``D^l`` (n_l, n_m); ``mask[l-1]``: existing synapses of ``W^l`` (sparse-fa)."""

    def __init__(self, sizes, W, b, F, *, variant, tau, eta, gamma, p_max, phi_d, n_classes, mask=None,
                 eta_fb=0.0, baseline_rate=0.0, var_floor=0.0, mutant=None):
        self.sizes, self.m, self.variant = list(sizes), len(sizes) - 1, variant
        self.W, self.b, self.F = [w.copy() for w in W], [x.copy() for x in b], [f.copy() for f in F]
        self.tau, self.eta, self.gamma, self.p_max, self.phi = tau, eta, gamma, p_max, PHI[phi_d]
        self.n_classes, self.mask = n_classes, mask
        self.eta_fb, self.baseline_rate, self.var_floor = eta_fb, baseline_rate, var_floor
        self.V = [np.zeros(n) for n in sizes[1:]]
        self.U = [np.zeros(n) for n in sizes[1:]]
        self.Vbar = [np.zeros(n) for n in sizes[1:]]
        self.mutant = mutant
        self.s_prev = None

    def step(self, pixels, label, u, train=True):
        """``pixels`` uint8, ``u`` one uniform per unit (input first, layer after layer)."""
        tau, m, phi = self.tau, self.m, self.phi
        cut = np.cumsum([0] + self.sizes)
        uu = [u[cut[l]:cut[l + 1]] for l in range(m + 1)]
        # 1. input spikes with probability min(x, p_max), x = pixels / 255
        s = [(uu[0] < np.minimum(pixels / 255.0, self.p_max)).astype(float)]
        # 2. forward sweep, bottom-up, same step
        for l in range(1, m + 1):
            self.V[l - 1] = (1 - tau) * self.V[l - 1] + tau * (self.W[l - 1] @ s[l - 1] + self.b[l - 1])
            s.append((uu[l] < sigma(self.V[l - 1])).astype(float))
        # 3. error neurons: output minus target
        per = self.sizes[-1] // self.n_classes
        target = (np.arange(self.sizes[-1]) // per == label).astype(float)
        self.U[m - 1] = (1 - tau) * self.U[m - 1] + tau * (s[m] - target)
        # 4. feedback sweep, top-down, same step
        drive = {}
        for l in range(m - 1, 0, -1):
            if self.variant == "shallow":
                d = np.zeros(self.sizes[l])
            elif self.variant == "transport":
                d = self.W[l].T @ phi(self.U[l])
            elif self.variant == "dfa":
                d = self.F[l - 1] @ phi(self.U[m - 1])
            else:
                d = self.F[l - 1] @ phi(self.U[l])
            drive[l] = d
            self.U[l - 1] = (1 - tau) * self.U[l - 1] + tau * d
        if train:
            # 5. three-factor plasticity with the values of this step
            pre = s if self.mutant != "pre_from_last_step" or self.s_prev is None else self.s_prev
            for l in ([m] if self.variant == "shallow" else range(1, m + 1)):
                p = sigma(self.V[l - 1])
                mod = phi(self.U[l - 1]) * p * (1 - p)
                dW = np.outer(mod, pre[l - 1])
                if self.mask is not None:
                    dW = dW * self.mask[l - 1]
                self.W[l - 1] = self.W[l - 1] - self.eta * (dW + self.gamma * self.W[l - 1])
                self.b[l - 1] = self.b[l - 1] - self.eta * (mod + self.gamma * self.b[l - 1])
            if self.variant == "learned":
                if self.mutant == "baseline_before_reward":
                    self._move_baseline()
                for l in range(1, m):
                    # B^l regresses the node-perturbation estimate lam of the credit of layer l
                    e = phi(self.U[l])
                    p = sigma(self.V[l - 1])
                    reward = e @ (self.V[l] - self.Vbar[l]) / tau
                    lam = reward * (s[l] - p) / np.maximum(p * (1 - p), self.var_floor)
                    self.F[l - 1] = self.F[l - 1] - self.eta_fb * np.outer(drive[l] - lam, e)
                if self.mutant != "baseline_before_reward":
                    self._move_baseline()
        self.s_prev = s
        return np.concatenate(s)

    def _move_baseline(self):
        for l in range(self.m):
            self.Vbar[l] = self.Vbar[l] + self.baseline_rate * (self.V[l] - self.Vbar[l])


def clean_from(net, mutant=None) -> CleanNet:
    """A CleanNet with ``net``'s effective weights, biases and feedback matrices."""
    mp, m = net.config.model, net.m
    return CleanNet(
        [int(n) for n in net.sizes],
        [net.weights(l).T.astype(float) for l in range(1, m + 1)],
        [net.biases(l).astype(float) for l in range(1, m + 1)],
        [np.zeros((1, 1)) if net.feedback_matrix(l) is None else net.feedback_matrix(l).astype(float)
         for l in range(1, m)],
        variant=mp.feedback, tau=mp.tau, eta=mp.eta, gamma=mp.gamma, p_max=mp.p_max, phi_d=mp.phi_d,
        n_classes=mp.n_classes,
        mask=None if net.wiring.W_mask[0] is None else [mk.T.astype(float) for mk in net.wiring.W_mask],
        eta_fb=mp.eta_feedback, baseline_rate=mp.np_baseline_rate, var_floor=mp.np_variance_floor, mutant=mutant)


PHI_OF = {"fa": "tanh", "transport": "2sigma-1", "dfa": "sigma-0.5", "shallow": "tanh", "sparse-fa": "2sigma-1",
          "learned": "tanh"}


def make_net(variant, run=None, **model):
    model = {"layers": [784, 20, 15, 12, 10], "n_classes": 10, "feedback": variant, "dtype": "float64",
             "eta": 0.05, "gamma": 1e-2, "phi_d": PHI_OF[variant], "eta_feedback": 0.01, **model}
    return init_network(config_from_dict({"model": model, "run": run or {}}))


def stimulus(net, T, seed=0):
    """Eight training images (one blank, one white, so p_max clips) shown 5 steps each."""
    images, labels = load_subset("train")
    images, labels = images[:8].copy(), labels[:8]
    images[1], images[3] = 0, 255
    step_image = (np.arange(T) // 5) % 8
    return np.random.default_rng(seed).random((T, net.n_units)), images, step_image, labels[step_image]


def assert_same_state(net, cn, where):
    st = net.state
    for l in range(1, net.m + 1):
        sl = net.layer_slice(l)
        np.testing.assert_allclose(st.psp[sl], cn.V[l - 1], rtol=0, atol=ATOL, err_msg=f"V^{l} {where}")
        np.testing.assert_allclose(st.feedback_psp[sl], cn.U[l - 1], rtol=0, atol=ATOL, err_msg=f"U^{l} {where}")
        np.testing.assert_allclose(net.weights(l).T, cn.W[l - 1], rtol=0, atol=ATOL, err_msg=f"W^{l} {where}")
        np.testing.assert_allclose(net.biases(l), cn.b[l - 1], rtol=0, atol=ATOL, err_msg=f"b^{l} {where}")
    for l in range(1, net.m):
        F = net.feedback_matrix(l)
        if F is not None:
            want = cn.W[l].T if cn.variant == "transport" else cn.F[l - 1]
            np.testing.assert_allclose(F, want, rtol=0, atol=ATOL, err_msg=f"feedback into h{l} {where}")
    if cn.variant == "learned":
        np.testing.assert_allclose(st.psp_baseline[int(net.sizes[0]):], np.concatenate(cn.Vbar), rtol=0, atol=ATOL,
                                   err_msg=f"Vbar {where}")


def replay(net, cn, T, *, backend, plastic=True):
    """T steps in one run call and in the clean room: (spikefa's spikes, the clean room's)."""
    u, images, step_image, labels = stimulus(net, T)
    probs = input_probabilities(images, net.config.model.p_max)
    want = np.array([cn.step(images[step_image[t]], labels[t], u[t], train=plastic) for t in range(T)])
    got = net.run(u, probs, step_image, labels, plastic=plastic, backend=backend)["spikes"].copy()
    return got, want


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_steps_match_the_clean_room(variant, backend):
    """150 plastic steps, one run call per step: after every step the spikes of every layer
    are equal and V, U, W, b (and B, Vbar for learned; the live W^T for transport) agree to
    float64 rounding. gamma = 1e-2 makes the decay (through spikefa's scale) visible."""
    net = make_net(variant)
    W0 = [net.weights(l).copy() for l in range(1, net.m + 1)]
    cn = clean_from(net)
    u, images, step_image, labels = stimulus(net, 150)
    probs = input_probabilities(images, net.config.model.p_max)
    for t in range(150):
        want = cn.step(images[step_image[t]], labels[t], u[t])
        got = net.run(u[t:t + 1], probs, step_image[t:t + 1], labels[t:t + 1], backend=backend)["spikes"][0]
        np.testing.assert_array_equal(got, want, err_msg=f"spikes at step {t}")
        assert_same_state(net, cn, f"after step {t}")
    assert 0.05 < got[784:].mean() < 0.95  # active, not silent or saturated
    learning = [net.m] if variant == "shallow" else range(1, net.m + 1)
    assert all(np.abs(net.weights(l) - W0[l - 1]).max() > 1e-3 for l in learning)  # W did learn


@pytest.mark.parametrize("variant", ["fa", "dfa", "learned", "transport", "sparse-fa"])
def test_blocks_with_deferred_updates_and_incremental_sums_match_the_clean_room(variant):
    """The paper preset's run options (32 deferred updates, incremental forward sums; K = 1
    where deferring is not exact): one block of 300 steps, then 60 steps of testing
    (plasticity off), equal to the clean room step by step."""
    net = make_net(variant, run={"deferred_steps": 32, "forward_pass": "incremental"})
    cn = clean_from(net)
    for plastic, T in ((True, 300), (False, 60)):
        got, want = replay(net, cn, T, backend=BACKENDS[-1], plastic=plastic)
        np.testing.assert_array_equal(got, want)
        for l in range(1, net.m + 1):
            np.testing.assert_allclose(net.state.psp[net.layer_slice(l)], cn.V[l - 1], rtol=0, atol=ATOL)
            np.testing.assert_allclose(net.weights(l).T, cn.W[l - 1], rtol=0, atol=ATOL)


def clean_test_errors(cn, images, labels, *, seed, key, M, block_steps, n_units):
    """SPEC's test pass on a copy: M steps per image, plasticity off, no reset; the guess is the
    class with most output spikes (last step, or summed), ties to the lowest class. The
    uniforms are the run's test stream, drawn in spikefa's blocks of block_steps // M images."""
    cn = copy.deepcopy(cn)
    rng = rng_for(seed, SEED_TEST, key)
    per_block = max(1, block_steps // M)
    guesses = {"last": [], "sum": []}
    for i0 in range(0, len(images), per_block):
        k = min(i0 + per_block, len(images)) - i0
        u = rng.random((k * M, n_units))
        for i in range(k):
            counts = np.array([cn.step(images[i0 + i], labels[i0 + i], u[i * M + t], train=False)[-cn.sizes[-1]:]
                               .reshape(cn.n_classes, -1).sum(axis=1) for t in range(M)])
            for r, c in (("last", counts[-1]), ("sum", counts.sum(axis=0))):
                guesses[r].append(int(np.flatnonzero(c == c.max())[0]))
    return {r: np.array(g) for r, g in guesses.items()}


@pytest.mark.parametrize("variant", ["fa", "learned"])
def test_a_training_run_and_its_test_pass_match_the_clean_room(variant, tmp_path):
    """``spikefa.train`` on the tiny model (float64, 40 images, 1.5 epochs so that the second
    epoch's shuffled order starts mid-run, N = 3, blocks of 37 steps that split images), then
    its final test pass (M = 4, 60 images): the clean room fed the run's own uniforms and
    image order ends with the same weights, biases and PSPs, and guesses every test image as
    spikefa's evaluate does, for both spike-count read-outs."""
    N, M, n_train, n_test, block = 3, 4, 40, 60, 37
    cfg = load_config("tiny").replace(
        model={"dtype": "float64", "feedback": variant, "gamma": 1e-3},
        train={"n_train": n_train, "epochs": 1.5, "steps_per_image": N, "test_every": 0},
        test={"steps_per_image": M, "n_test": n_test}, run={"block_steps": block, "seed": 3})
    out = tmp_path / "run.h5"
    train(cfg, out=out, progress=False)
    net, *_ = network_from_file(out)
    cfg = net.config
    cn = clean_from(init_network(cfg))
    tx, ty = load_subset("train")
    rng = rng_for(cfg.run.seed, SEED_NOISE)
    total = int(round(1.5 * n_train)) * N
    orders = {}
    for step in range(0, total, block):
        u = rng.random((min(step + block, total) - step, net.n_units))
        for t in range(step, step + len(u)):
            epoch, pos = divmod(t // N, n_train)
            if epoch not in orders:
                orders[epoch] = rng_for(cfg.run.seed, SEED_ORDER, epoch).permutation(n_train)
            i = orders[epoch][pos]
            cn.step(tx[i], ty[i], u[t - step])
    for l in range(1, net.m + 1):
        np.testing.assert_allclose(net.weights(l).T, cn.W[l - 1], rtol=0, atol=ATOL)
        np.testing.assert_allclose(net.biases(l), cn.b[l - 1], rtol=0, atol=ATOL)
        np.testing.assert_allclose(net.state.psp[net.layer_slice(l)], cn.V[l - 1], rtol=0, atol=ATOL)
    ex, ey = load_subset("test")
    ex, ey = ex[:n_test], ey[:n_test]
    want = clean_test_errors(cn, ex, ey, seed=cfg.run.seed, key=total, M=M, block_steps=block, n_units=net.n_units)
    curve = Run(out).test_curve()
    assert curve["error_last"][-1] == pytest.approx(np.mean(want["last"] != ey), abs=1e-12)
    assert curve["error_sum"][-1] == pytest.approx(np.mean(want["sum"] != ey), abs=1e-12)
    for readout in ("last", "sum"):
        net_r = copy.deepcopy(net)
        net_r.config = cfg.replace(test={"readout": readout})
        np.testing.assert_array_equal(evaluate(net_r, ex, ey, seed_key=total).guesses, want[readout])


@pytest.mark.parametrize("variant, mutant", [("fa", "pre_from_last_step"), ("learned", "baseline_before_reward")])
def test_the_comparison_can_fail(variant, mutant):
    """The clean room with one rule changed (the presynaptic factor from the previous step's
    spikes; the running mean of V moved before it is used in the reward) no longer matches:
    these comparisons are sensitive to the step order SPEC fixes."""
    net = make_net(variant)
    cn = clean_from(net, mutant=mutant)
    got, want = replay(net, cn, 60, backend="numpy")
    state_differs = any(np.abs(net.weights(l).T - cn.W[l - 1]).max() > 1e3 * ATOL for l in range(1, net.m + 1))
    state_differs |= any(np.abs(net.feedback_matrix(l) - cn.F[l - 1]).max() > 1e3 * ATOL for l in range(1, net.m))
    assert state_differs or not np.array_equal(got, want)
