"""Rules of docs/model.md (and /work/shared/SPEC.md) checked against numbers computed by hand.

A mutation audit found these rules pinned by no test: each test below states one rule, is
run on every back end that has it (the NumPy twin and both Numba kernels), and takes its
expected values from the equations, not from the code under test. Networks are tiny
(2-2-2 or 2-2-2-2 units) and in float64 unless a test says otherwise, so that the expected
values hold to a few float64 ulps; the tolerances (rtol 1e-12) are far tighter than any
change of a rule would need to show.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spikefa import kernels, reference
from spikefa.config import config_from_dict, load_config
from spikefa.data import load_subset
from spikefa.measures import angle_deg
from spikefa.network import init_network, input_probabilities
from spikefa.train import spike_counts, train

BACKENDS = ["numpy", "numba-serial", "numba-parallel"]
PHI_D = ["tanh", "2sigma-1", "sigma-0.5"]


def sig(v):
    return 1 / (1 + np.exp(-v))


# phi_d written independently of the code: 2 sigma(u) - 1 = tanh(u/2), sigma(u) - 1/2 = tanh(u/2)/2
PHI = {"tanh": np.tanh, "2sigma-1": lambda u: np.tanh(np.asarray(u) / 2),
       "sigma-0.5": lambda u: 0.5 * np.tanh(np.asarray(u) / 2)}


def cfg_of(layers, **model):
    model.setdefault("dtype", "float64")
    return config_from_dict({"model": {"layers": layers, "n_classes": 2, **model}})


# ---------------------------------------------------------------------------- phi_d
@pytest.mark.parametrize("kind", PHI_D)
def test_phi_d_variants(kind):
    """phi_d(0.5) = tanh(0.5) = 0.4621171573, 2 sigma(0.5) - 1 = 0.2449186624, sigma(0.5) - 0.5
    = 0.1224593312 (the closed forms tanh(0.5), tanh(0.25) and tanh(0.25)/2 to 17 digits);
    phi_d is odd and 0 at 0, in the twin and in the kernel's own function."""
    at_half = {"tanh": 0.46211715726000974, "2sigma-1": 0.24491866240370913, "sigma-0.5": 0.12245933120185456}[kind]
    code = kernels.PHI_CODES[kind]
    u = np.array([0.5, -0.5, 0.0, 3.0])
    expect = np.array([at_half, -at_half, 0.0, PHI[kind](3.0)])
    np.testing.assert_allclose(reference._phi(u, code), expect, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose([kernels._phi(x, code) for x in u], expect, rtol=1e-12, atol=1e-16)


# ---------------------------------------------------------------------------- one step by hand
# A 2-2-2-2 network (formerly test_core.test_one_step_by_hand), its hand computation shared by
# every back end and phi_d, and by the node-perturbation test (feedback "learned").
W_HAND = [np.array([[0.5, -1.0], [2.0, 0.25]]),  # stored (pre, post): W[i, j] from unit i to unit j
          np.array([[1.0, 0.0], [-0.5, 3.0]]),
          np.array([[0.2, -0.3], [0.1, 0.4]])]
B_HAND = [np.array([[1.0, -2.0], [0.5, 0.5]]),  # (n_h1, n_h2)
          np.array([[0.3, 0.7], [-1.0, 2.0]])]  # (n_h2, n_out)
b_HAND = [np.array([0.1, -0.2]), np.array([0.0, 0.3]), np.array([-0.1, 0.2])]
V0_HAND = np.array([0.2, -0.4, 1.0, 0.5, -0.3, 0.6])  # V of h1, h2, out before the step
U0_HAND = np.array([0.1, 0.2, -0.3, 0.4, 0.5, -0.6])
VBAR_HAND = np.array([0.0, 0.0, 0.3, -0.2, 0.4, 0.1, -0.2, 0.5])  # running mean of V (node perturbation)
U_HAND = np.array([[0.4, 0.96, 0.0, 0.999, 0.999, 0.0, 0.0, 0.999]])


def net_2222(phi_d="tanh", **model):
    cfg = cfg_of([2, 2, 2, 2], tau=0.9, eta=0.1, gamma=0.5, phi_d=phi_d, **model)
    net = init_network(cfg)
    for l in range(3):
        net.W[l][...] = W_HAND[l]
        net.b[l][...] = b_HAND[l]
    net.wiring.F[0][...] = B_HAND[0]
    net.wiring.F[1][...] = B_HAND[1]
    net.state.psp[2:] = V0_HAND
    net.state.feedback_psp[2:] = U0_HAND
    net.state.psp_baseline[...] = VBAR_HAND
    return net


def step_by_hand(phi, eta_fb=None, rate=None, floor=None):
    """Every quantity of one plastic step of ``net_2222`` from the equations of docs/model.md
    (tau = 0.9, eta = 0.1, gamma = 0.5; input probabilities 0.5 and 0.95; label 1). With
    ``eta_fb``: also node perturbation (feedback.py's docstring, Lansdell et al. 2020):
    R = e . (V^{l+1} - Vbar^{l+1}) / tau with e = phi_d(U^{l+1}), xi = s^l - sigma(V^l),
    lambda = R xi / max(sigma'(V^l), floor), B^l <- B^l - eta_fb (B^l e - lambda) e^T, then
    Vbar <- Vbar + rate (V - Vbar)."""
    u = U_HAND[0]
    s0 = np.array([1.0, 0.0])  # 0.4 < 0.5; 0.96 >= 0.95
    V, s, pre = [], [], [s0]
    for l in range(3):
        Vl = 0.1 * V0_HAND[2 * l:2 * l + 2] + 0.9 * (pre[-1] @ W_HAND[l] + b_HAND[l])
        V.append(Vl)
        s.append((u[2 + 2 * l:4 + 2 * l] < sig(Vl)).astype(float))
        pre.append(s[-1])
    assert [x.tolist() for x in s] == [[1, 0], [0, 1], [1, 0]]
    y = np.array([0.0, 1.0])  # label 1 owns output unit 1
    U3 = 0.1 * U0_HAND[4:6] + 0.9 * (s[2] - y)  # output minus target
    U2 = 0.1 * U0_HAND[2:4] + 0.9 * (B_HAND[1] @ phi(U3))
    U1 = 0.1 * U0_HAND[0:2] + 0.9 * (B_HAND[0] @ phi(U2))
    U = [U1, U2, U3]
    W_new, b_new = [], []
    for l in range(3):
        mod = phi(U[l]) * sig(V[l]) * (1 - sig(V[l]))
        W_new.append(W_HAND[l] - 0.1 * (np.outer(pre[l], mod) + 0.5 * W_HAND[l]))
        b_new.append(b_HAND[l] - 0.1 * (mod + 0.5 * b_HAND[l]))
    out = dict(V=np.concatenate(V), U=np.concatenate(U), s=np.concatenate([s0, *s]), W=W_new, b=b_new)
    if eta_fb is not None:
        Vfull = np.concatenate([[0.0, 0.0], *V])  # the input's PSP slots stay 0
        F_new = []
        for l in (1, 2):  # hidden layer l, fed from layer l+1
            e = phi(U[l])
            R = e @ (V[l] - VBAR_HAND[2 + 2 * l:4 + 2 * l]) / 0.9
            p = sig(V[l - 1])
            lam = R * (s[l - 1] - p) / np.maximum(p * (1 - p), floor)
            F_new.append(B_HAND[l - 1] - eta_fb * np.outer(B_HAND[l - 1] @ e - lam, e))
        out.update(F=F_new, Vbar=VBAR_HAND + rate * (Vfull - VBAR_HAND))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("phi_d", PHI_D)
def test_one_step_by_hand_every_backend_and_phi_d(phi_d, backend):
    """A 2-2-2-2 network, one plastic step on every back end and every phi_d: spikes, PSPs,
    feedback PSPs, weights and biases equal the hand computation of ``step_by_hand`` (the
    equations of docs/model.md)."""
    net = net_2222(phi_d)
    probs = input_probabilities(np.array([[0.5, 0.99]]), 0.95)
    assert probs.tolist() == [[0.5, 0.95]]  # p_max
    out = net.run(U_HAND.copy(), probs, np.array([0]), np.array([1]), backend=backend)
    want = step_by_hand(PHI[phi_d])
    np.testing.assert_array_equal(out["spikes"][0], want["s"])
    np.testing.assert_allclose(net.state.psp[2:], want["V"], rtol=1e-14)
    np.testing.assert_allclose(net.state.feedback_psp[2:], want["U"], rtol=1e-14, atol=1e-15)
    for l in range(3):
        np.testing.assert_allclose(net.weights(l + 1), want["W"][l], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(net.biases(l + 1), want["b"][l], rtol=1e-13, atol=1e-15)
    # the sign: output unit 0 spiked but is not the target, so its weights from active h2 units fall
    assert net.weights(3)[1, 0] < W_HAND[2][1, 0] * (1 - 0.05)


@pytest.mark.parametrize("backend", BACKENDS)
def test_node_perturbation_update_by_hand(backend):
    """feedback = "learned": one plastic step moves B^1 and B^2 by the node-perturbation rule
    of docs/model.md / feedback.py (Lansdell et al. 2020), computed by hand in
    ``step_by_hand``: reward from V minus its running mean, divided by tau; the noise
    s - sigma(V); the variance floor (0.2 here, so that h1 unit 0 (sigma' = 0.231) uses its
    own variance and h2 unit 0 (sigma' = 0.197) the floor). The running mean then moves
    toward V at rate 0.05."""
    net = net_2222("tanh", feedback="learned", eta_feedback=0.5, np_baseline_rate=0.05, np_variance_floor=0.2)
    probs = input_probabilities(np.array([[0.5, 0.99]]), 0.95)
    net.run(U_HAND.copy(), probs, np.array([0]), np.array([1]), backend=backend)
    want = step_by_hand(np.tanh, eta_fb=0.5, rate=0.05, floor=0.2)
    p = sig(want["V"][:4])
    assert (p * (1 - p) > 0.2).tolist() == [True, False, False, True]  # the floor is used, and not always
    for l in range(2):
        assert not np.allclose(want["F"][l], B_HAND[l], atol=1e-3)  # B did move
        np.testing.assert_allclose(net.wiring.F[l], want["F"][l], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(net.state.psp_baseline, want["Vbar"], rtol=1e-13, atol=1e-16)
    # W and b learn as in fa
    for l in range(3):
        np.testing.assert_allclose(net.weights(l + 1), want["W"][l], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------- input spikes
def test_input_probabilities_divide_uint8_by_255():
    """x = pixel / 255 (0 -> 0, 51 -> 0.2, 255 -> 1), then min(x, p_max); float inputs
    are taken as they are and must lie in [0, 1] (a negative rate never spiked, silently)."""
    got = input_probabilities(np.array([[0, 51, 128, 255]], np.uint8), 0.95)
    np.testing.assert_array_equal(got, [[0.0, 0.2, 128 / 255, 0.95]])
    np.testing.assert_array_equal(input_probabilities(np.array([[0.0, 0.5, 1.0]]), 0.95), [[0.0, 0.5, 0.95]])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=f"scaled to \\[0, 1\\]; got {bad}"):
            input_probabilities(np.array([[0.5, bad]]), 0.95)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_spike_is_u_strictly_below_p(backend):
    """A spike is u < p: a uniform exactly equal to p gives no spike (input p = 0.5 with
    u = 0.5, input p = 0 with u = 0; hidden and output units with W = 0, b = 0, V = 0 have
    p = sigma(0) = 0.5 exactly and draw u = 0.5), while u one ulp below p does spike."""
    net = init_network(cfg_of([2, 2, 2]))
    for w in net.W:
        w[...] = 0
    probs = np.array([[0.5, 0.0]])
    below = np.nextafter(0.5, 0)
    u = np.array([[0.5, 0.0, 0.5, 0.5, 0.5, 0.5],
                  [below, 0.0, below, 0.5, below, 0.5]])
    out = net.run(u, probs, np.zeros(2, int), np.zeros(2, int), plastic=False, backend=backend)
    np.testing.assert_array_equal(out["spikes"], [[0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 1, 0]])


# ---------------------------------------------------------------------------- read-out
def test_last_and_sum_readouts_by_hand():
    """One image, M = 3 steps, 2 classes of 2 output units. Spikes: step 0 units 0 and 1
    (class 0), step 1 unit 0 (class 0), step 2 unit 3 (class 1). Last step: class counts
    [0, 1], guess 1; summed over the steps: [3, 1], guess 0."""
    s = np.zeros((3, 4), np.uint8)
    s[0, 0] = s[0, 1] = s[1, 0] = s[2, 3] = 1
    c = spike_counts(s, 3, 2)
    np.testing.assert_array_equal(c["last"], [[0, 1]])
    np.testing.assert_array_equal(c["sum"], [[3, 1]])
    assert np.argmax(c["last"], axis=1).tolist() == [1] and np.argmax(c["sum"], axis=1).tolist() == [0]


# ---------------------------------------------------------------------------- variants
@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_fa_removes_half_of_B_too_and_B_stays_fixed(backend):
    """sparse-fa removes a fraction 0.5 of W *and* of B for good: in every feedback matrix
    (1600 and 800 entries: the binomial sd of the fraction is <= 0.018) and every forward
    matrix the fraction of zeros is 0.5 +- 0.1, and 100 learning steps leave B unchanged."""
    cfg = cfg_of([30, 40, 40, 20], feedback="sparse-fa", eta=0.05)
    net = init_network(cfg)
    for F in net.wiring.F:
        assert abs(np.mean(F == 0) - 0.5) < 0.1, np.mean(F == 0)
    for W in net.W:
        assert abs(np.mean(W == 0) - 0.5) < 0.1
    F0 = [F.copy() for F in net.wiring.F]
    W0 = [W.copy() for W in net.W]
    rng = np.random.default_rng(0)
    out = net.run(rng.random((100, net.n_units)), rng.random((1, 30)), np.zeros(100, int),
                  rng.integers(0, 2, 100), backend=backend)
    assert out["spikes"].sum() > 0 and not np.array_equal(net.W[0], W0[0])  # it did learn
    for F, F_before in zip(net.wiring.F, F0):
        np.testing.assert_array_equal(F, F_before)


def transport_net(**model):
    net = init_network(cfg_of([2, 2, 2], feedback="transport", tau=0.9, **model))
    net.W[0][...] = [[0.5, -1.0], [2.0, 0.25]]
    net.W[1][...] = [[1.0, -2.0], [0.5, 3.0]]  # (n_h1, n_out): also the feedback matrix into h1
    net.b[1][...] = [0.2, -0.4]
    return net


def test_transport_feedback_matrix_is_the_effective_W():
    """transport: the feedback matrix into h1 is (W^2)^T with W^2 the *effective* forward
    weights, scale times raw: with scale 0.5, feedback_matrix(1) == weights(2) == 0.5 W_raw."""
    net = transport_net()
    net.scale[1] = 0.5
    np.testing.assert_array_equal(net.weights(2), 0.5 * net.W[1])
    np.testing.assert_array_equal(net.feedback_matrix(1), net.weights(2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_transport_drive_uses_the_scaled_W(backend):
    """One step, plasticity off and feedback on, scale 0.6 in both layers: the feedback drive
    of h1 is (0.6 W^2)^T phi_d(U^out), computed here by hand from the step's output spikes."""
    net = transport_net()
    net.scale[:] = 0.6
    net.state.feedback_psp[4:] = [0.3, -0.5]
    net.state.feedback_psp[2:4] = [0.1, -0.2]
    u = np.array([[0.4, 0.96, 0.0, 0.999999, 0.0, 0.999999]])
    out = net.run(u, np.array([[0.5, 0.95]]), np.array([0]), np.array([1]), plastic=False, feedback=True,
                  backend=backend)
    # s0 = [1, 0]; h1: V = 0.9*0.6*[0.5, -1.0]: p = [0.57, 0.37], u = [0, 0.999999] -> [1, 0]
    # out: V = 0.9*0.6*([1.0, -2.0] + [0.2, -0.4]) = [0.648, -1.296] -> [1, 0]
    np.testing.assert_array_equal(out["spikes"][0], [1, 0, 1, 0, 1, 0])
    np.testing.assert_allclose(net.state.psp[4:], [0.648, -1.296], rtol=1e-13)
    U_out = 0.1 * np.array([0.3, -0.5]) + 0.9 * (np.array([1.0, 0.0]) - [0.0, 1.0])  # label 1
    e = np.tanh(U_out)
    drive = np.array([0.6 * (1.0 * e[0] - 2.0 * e[1]), 0.6 * (0.5 * e[0] + 3.0 * e[1])])
    np.testing.assert_allclose(net.state.feedback_psp[4:], U_out, rtol=1e-13)
    np.testing.assert_allclose(net.state.fb_drive[2:4], drive, rtol=1e-12)
    np.testing.assert_allclose(net.state.feedback_psp[2:4], 0.1 * np.array([0.1, -0.2]) + 0.9 * drive, rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba-serial"])
def test_transport_is_the_same_with_deferred_steps_8_and_1(backend):
    """transport reads the live forward weights, so deferring their updates would not be
    exact: run.deferred_steps = 8 must give the run of deferred_steps = 1 bit for bit
    (200 learning steps, float32)."""
    results = []
    for K in (8, 1):
        cfg = config_from_dict({"model": {"layers": [30, 20, 20, 10], "n_classes": 2, "feedback": "transport",
                                          "eta": 0.05}, "run": {"deferred_steps": K}})
        net = init_network(cfg)
        rng = np.random.default_rng(1)
        out = net.run(rng.random((200, net.n_units)), rng.random((2, 30)), np.arange(200) // 5 % 2,
                      np.arange(200) // 5 % 2, backend=backend)
        results.append((out["spikes"].copy(), [w.copy() for w in net.W], net.state.feedback_psp.copy()))
    (s8, W8, U8), (s1, W1, U1) = results
    np.testing.assert_array_equal(s8, s1)
    np.testing.assert_array_equal(U8, U1)
    for a, b in zip(W8, W1):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- decay scale
@pytest.mark.parametrize("backend", BACKENDS)
def test_bias_is_scaled_by_the_decay_scale(backend):
    """The effective bias is scale * raw b, like W: V = 0.9 * scale * (W_raw s + b_raw).
    h1: W = 0, b = 1, scale 0.5: V = 0.9 * 0.5 * 1 = 0.45. out: h1 unit 0 spikes (u = 0),
    unit 1 does not (u = 0.9999), W row 0 = [1, -1], b = [0.2, -0.4], scale 0.8:
    V = 0.9 * 0.8 * [1.2, -1.4] = [0.864, -1.008]. Plasticity off."""
    net = init_network(cfg_of([2, 2, 2]))
    net.W[0][...] = 0
    net.b[0][...] = 1.0
    net.W[1][...] = [[1.0, -1.0], [0.5, 2.0]]
    net.b[1][...] = [0.2, -0.4]
    net.scale[:] = [0.5, 0.8]
    u = np.array([[0.5, 0.5, 0.0, 0.9999, 0.5, 0.5]])
    out = net.run(u, np.array([[0.5, 0.5]]), np.array([0]), np.array([0]), plastic=False, backend=backend)
    assert out["spikes"][0, 2:4].tolist() == [1, 0]
    np.testing.assert_allclose(net.state.psp[2:], [0.45, 0.45, 0.864, -1.008], rtol=1e-14)


# ---------------------------------------------------------------------------- initialisation, measures
def test_angle_flattens_row_major():
    """Matrices are flattened row by row: [[1, 2], [0, 0]] -> (1, 2, 0, 0) and [[1, 0], [2, 0]]
    -> (1, 0, 2, 0), dot 1, norms sqrt(5): arccos(1/5) = 78.463 degrees; a matrix and its
    transpose are not parallel unless symmetric (A = [[1, 2], [3, 4]]: arccos(29/30))."""
    assert angle_deg([[1, 2], [0, 0]], [[1, 0], [2, 0]]) == pytest.approx(math.degrees(math.acos(0.2)), abs=1e-9)
    A = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert angle_deg(A, A.T) == pytest.approx(math.degrees(math.acos(29 / 30)), abs=1e-9)
    assert angle_deg(A, A) < 1e-5


def test_initial_weight_ranges():
    """W ~ U[-w_init, w_init] (0.05), B ~ U[-feedback_init, feedback_init] (0.1), float storage:
    over 12,000 entries of B the mean of |B| is 0.05 within 5 s.e. (|B| ~ U[0, 0.1], sd
    0.1/sqrt(12): s.e. 0.00026), over 22,000 of W the mean of |W| is 0.025 within 5 s.e.; both reach
    within 1% of their bound and never past it."""
    net = init_network(cfg_of([100, 100, 100, 20], dtype="float32"))
    B = np.concatenate([F.ravel() for F in net.wiring.F]).astype(float)
    W = np.concatenate([w.ravel() for w in net.W]).astype(float)
    assert B.size == 12_000 and W.size == 22_000
    for x, a in ((B, 0.1), (W, 0.05)):
        assert np.abs(x).max() <= a * (1 + 1e-6) and np.abs(x).max() > 0.99 * a
        assert abs(np.abs(x).mean() - a / 2) < 5 * a / math.sqrt(12) / math.sqrt(x.size)


# ---------------------------------------------------------------------------- training
class InputSpikes:
    """A recorder for train(): keeps every block's input spikes and training images."""

    def __init__(self, n_in):
        self.n_in, self.spikes, self.images = n_in, [], []

    def on_block(self, net, step0, outputs):
        self.spikes.append(outputs["spikes"][:, :self.n_in].copy())
        self.images.append(np.array(outputs["image"]))


def test_training_inputs_use_p_max(tmp_path):
    """Training shows input i with probability min(x_i, p_max): with model.p_max = 0.5 every
    pixel of value >= 128 (x >= 0.502) spikes at rate 0.5 over 500 steps (over 10,000 draws:
    5 s.e. = 5 sqrt(0.25 / n) < 0.025), the pixels of value 255 among them (about 2,900 draws), and pixels of value 0
    never spike."""
    cfg = load_config("tiny").replace(model={"p_max": 0.5}, train={"epochs": 0.05, "test_every": 0},
                                      test={"n_test": 10})
    rec = InputSpikes(784)
    train(cfg, out=tmp_path / "r.h5", progress=False, recorder=rec)
    spikes, images = np.concatenate(rec.spikes).astype(bool), np.concatenate(rec.images)
    assert spikes.shape == (500, 784)
    pixels = load_subset("train")[0][images]
    for sel, n_min in ((pixels >= 128, 10_000), (pixels == 255, 2_000)):
        on = spikes[sel]
        assert on.size > n_min
        assert abs(on.mean() - 0.5) < 5 * math.sqrt(0.25 / on.size), on.mean()
    assert not spikes[pixels == 0].any()
