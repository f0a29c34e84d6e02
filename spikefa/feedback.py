"""Feedback variants: what each feedback population listens to, through which matrix.

All variants share one step kernel (:func:`spikefa.kernels.run_block`); a variant only
decides, for every hidden layer ``l = 1..m-1``:

- the matrix ``F^l`` of shape ``(n_l, n_src)`` and its source layer ``src``;
- whether ``F^l`` learns, and which forward layers learn;
- which forward synapses exist (sparse FA).

The top layer's feedback neurons are always the error neurons
``U^m = (1-tau) U^m + tau (s^m - y*)``.

| name        | ``U^l`` receives                              | learns    | reference                    |
|-------------|-----------------------------------------------|-----------|------------------------------|
| ``fa``      | ``B^l phi_d(U^{l+1})``, ``B^l`` fixed random  | W, b      | Lillicrap et al. 2016        |
| ``transport`` | ``(W^{l+1})^T phi_d(U^{l+1})``, current W   | W, b      | backprop's weight transport  |
| ``dfa``     | ``D^l phi_d(U^m)``, fixed random              | W, b      | Nokland 2016                 |
| ``shallow`` | nothing                                       | top W, b  | Lillicrap et al. 2016        |
| ``sparse-fa`` | as ``fa``; a fraction of W and B removed    | W, b      | Lillicrap et al. 2016, Fig 3a|
| ``learned`` | as ``fa``; B learns by node perturbation      | W, b, B   | Lansdell et al. 2020         |

``learned`` (after Lansdell, Prakash & Kording 2020, ICLR): the spike sampling noise
``xi^l = s^l - sigma(V^l)`` is the perturbation, and ``B^l`` is trained by regression to
predict the node-perturbation estimate of the credit each unit should receive (their
Eq. 5), ``B^l <- B^l - eta_fb (B^l e - lambda) e^T`` with ``e = phi_d(U^{l+1})``, the
signal ``B^l`` already carries (``eta_fb = model.eta_feedback``).

The reward whose correlation with the noise gives ``lambda`` is read where the
perturbation first lands, at the next layer's PSP, weighted by that layer's error
signal: ``R = e . (V^{l+1} - Vbar^{l+1}) / tau`` with ``Vbar`` a running mean of every
PSP (rate ``model.np_baseline_rate``), and
``lambda_i = R xi_i / max(p_i (1 - p_i), v_min)`` (``v_min = model.np_variance_floor``).
Since ``V^{l+1}`` moves by ``tau W^{l+1} xi^l``, ``E[lambda | e] = (W^{l+1})^T e``, the
signal backprop would send, to the extent that ``e`` does not itself depend on ``xi^l``;
it does a little, since ``e`` comes from spikes of the same step that ``xi^l`` helped
drive (most for the top hidden layer, through the output spikes), so the estimate is
biased by that much (not measured). ``B^l`` drifts toward ``(W^{l+1})^T`` without ever
reading it. (A global loss as the
reward, as in the paper's rate networks, proved too noisy here: one unit's spike noise
hardly moves the loss of 1,000 stochastic outputs without a noise-free second pass.)
Measured on the ``tiny`` preset (10,000 steps, ``eta_fb = 1e-4``): the angle between
``B^1`` and ``(W^2)^T`` falls to about 72 degrees against 75 for fixed B; rates of
``1e-3`` and above align faster at first and then destabilise learning. On the ``small``
preset (its eta is 5e-3, 300 units per layer) the same ``eta_fb`` does worse than fixed B
(test error 50 +- 7% against 16%, h1 angle 85 against 82 degrees, 5 seeds): the rate of B
needs tuning with the size and the learning rate of the network. On the paper's network
(784-1500-1500-1500-1000, full MNIST) no rate tried helps: at 1e-4 the test error stays at
chance for 2 epochs while B's rms grows up to 9 times at 88-93 degrees from ``(W^{l+1})^T``,
at 1e-6 it learns and then unlearns (20% after a third of an epoch, 30% after one), at 1e-7
it trails fixed B by 2.5 points after one epoch, and at 1e-8 B does not move
(``results/reproduction/README.md``, section 0). The likely cause, not measured directly:
the estimate's noise, one reward summed over 1,500 PSP changes, swamps its mean there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import FEEDBACK_CHOICES, ConfigError


@dataclass
class FeedbackWiring:
    """Per hidden layer feedback matrices and flags, as the kernel takes them."""

    F: list  # (n_l, n_src) arrays; may alias forward weights (transport)
    src: np.ndarray  # int64 (m-1,) source layer of each feedback population
    scale_idx: np.ndarray  # int64 (m-1,) forward scale that multiplies F (-1: none)
    on: np.ndarray  # bool (m-1,) feedback population driven at all
    learns: np.ndarray  # bool (m-1,) F learns (node perturbation)
    learn: np.ndarray  # bool (m,) forward layers that are plastic
    W_mask: list  # (m,) uint8 masks of existing synapses, or None where all exist
    quantum: np.ndarray = None  # float64 (m-1,) value of one stored unit of F (1.0 unless int8)

    def __post_init__(self):
        if self.quantum is None:
            self.quantum = np.ones(len(self.F), dtype=np.float64)


INT8_LEVELS = 127  # int8 feedback: B = feedback_init * k / 127 with k uniform on -127..127


def _uniform(rng, shape, half_width, dtype):
    return rng.uniform(-half_width, half_width, size=shape).astype(dtype)


def _fixed_feedback(params, rng, shapes, dtype):
    """Fixed random feedback matrices ``U[-a, a]`` (``a = model.feedback_init``) and the
    value of one stored unit of each.

    ``model.feedback_storage = "int8"`` draws each entry uniformly from the 255 levels
    ``a k / 127``, ``k = -127..127``, and stores ``k``: a fixed random matrix with the same
    range and (to 0.8%) the same variance as the continuous draw, in a quarter of the
    bytes that every step must read (the kernel multiplies by ``a / 127`` once per row).
    """
    if params.feedback_storage == "int8":
        F = [rng.integers(-INT8_LEVELS, INT8_LEVELS + 1, size=shape, dtype=np.int8) for shape in shapes]
        return F, np.full(len(F), params.feedback_init / INT8_LEVELS)
    return [_uniform(rng, shape, params.feedback_init, dtype) for shape in shapes], np.ones(len(shapes))


def _base(sizes, learn_all=True):
    m = len(sizes) - 1
    return dict(
        src=np.arange(2, m + 1, dtype=np.int64),
        scale_idx=np.full(m - 1, -1, dtype=np.int64),
        on=np.ones(m - 1, dtype=bool),
        learns=np.zeros(m - 1, dtype=bool),
        learn=np.ones(m, dtype=bool) if learn_all else np.eye(1, m, m - 1, dtype=bool)[0],
        W_mask=[None] * m,
    )


def fa(params, sizes, W, rng):
    """Feedback alignment: ``U^l`` driven by ``B^l phi_d(U^{l+1})``, ``B^l ~ U[-a, a]`` fixed."""
    m = len(sizes) - 1
    F, quantum = _fixed_feedback(params, rng, [(sizes[l], sizes[l + 1]) for l in range(1, m)], W[0].dtype)
    return FeedbackWiring(F=F, quantum=quantum, **_base(sizes))


def transport(params, sizes, W, rng):
    """Weight transport (symmetric control): ``U^l`` driven by ``(W^{l+1})^T phi_d(U^{l+1})``.

    ``W[l]`` is stored as ``(n_l, n_{l+1})``, which is exactly the layout of a feedback
    matrix into layer ``l``: the kernel reads the live forward weights, times their scale.
    """
    m = len(sizes) - 1
    base = _base(sizes)
    base["scale_idx"] = np.arange(1, m, dtype=np.int64)
    return FeedbackWiring(F=[W[l] for l in range(1, m)], **base)


def dfa(params, sizes, W, rng):
    """Direct feedback alignment (Nokland 2016): ``U^l`` driven by ``D^l phi_d(U^m)``."""
    m = len(sizes) - 1
    base = _base(sizes)
    base["src"] = np.full(m - 1, m, dtype=np.int64)
    F, quantum = _fixed_feedback(params, rng, [(sizes[l], sizes[m]) for l in range(1, m)], W[0].dtype)
    return FeedbackWiring(F=F, quantum=quantum, **base)


def shallow(params, sizes, W, rng):
    """Shallow learning: no feedback reaches the hidden layers; only the top layer learns."""
    m = len(sizes) - 1
    base = _base(sizes, learn_all=False)
    base["on"][:] = False
    F = [np.zeros((1, 1), dtype=np.int8 if params.feedback_storage == "int8" else W[0].dtype) for _ in range(1, m)]
    return FeedbackWiring(F=F, **base)


def sparse_fa(params, sizes, W, rng):
    """Sparse FA: as ``fa`` with a fraction ``model.sparsity`` of W and B removed for good.

    Removed forward synapses are zeroed here and masked out of every later update.
    """
    wiring = fa(params, sizes, W, rng)
    for l, Wl in enumerate(W):
        keep = rng.random(Wl.shape) >= params.sparsity
        Wl *= keep
        wiring.W_mask[l] = keep.astype(np.uint8)
    for Fl in wiring.F:
        Fl *= (rng.random(Fl.shape) >= params.sparsity).astype(Fl.dtype)
    return wiring


def learned(params, sizes, W, rng):
    """As ``fa``, and ``B^l`` learns by node perturbation (see the module docstring)."""
    wiring = fa(params, sizes, W, rng)
    wiring.learns[:] = True
    return wiring


RULES = {"fa": fa, "transport": transport, "dfa": dfa, "shallow": shallow, "sparse-fa": sparse_fa, "learned": learned}
assert tuple(RULES) == FEEDBACK_CHOICES


def build_feedback(params, sizes, W, rng) -> FeedbackWiring:
    """Wire the feedback variant ``params.feedback`` (an unknown name lists the valid ones)."""
    try:
        rule = RULES[params.feedback]
    except KeyError:
        raise ConfigError(
            f"model.feedback = {params.feedback!r} is not a feedback variant; valid: {', '.join(RULES)}"
        ) from None
    return rule(params, sizes, W, rng)
