"""Rate-based layered networks and their learning rules (Lillicrap et al. 2016, Figs 2, 3, 5).

This is the paper's non-spiking setting, kept small enough to read in one sitting: it is
the teaching text for the learning rules and the check that they behave as the paper says
before the same rules run in the spiking simulator.

Network
-------
Layers ``l = 0..m``; layer 0 is the input ``x``, layer ``m`` the output ``y``. For
``l = 1..m``::

    h_l = f_l(W[l-1] h_{l-1} + b[l-1]),        f_l in {linear, logistic, tanh}

The paper's names for a three-layer network are ``W0 = W[0]`` (input -> hidden) and
``W = W[1]`` (hidden -> output). Arrays hold a batch of samples in rows: ``h_l`` has shape
``(batch, n_l)`` and ``W[l]`` has shape ``(n_{l+1}, n_l)``.

An *ensemble* of independent networks (the paper's n = 20 runs of Fig. 3d) can be trained
in lockstep on the same samples: then every weight array has one leading run axis,
``W[l]`` is ``(runs, n_{l+1}, n_l)``, and activities are ``(runs, batch, n_l)``. All
products are written with ``matmul`` and :func:`_mT` (the transpose of the last two axes:
NumPy 2's ``.mT``, which NumPy 1.x, allowed by setup.cfg, lacks) so the same lines serve
both cases.

Learning (one SGD step on a batch)
----------------------------------
Error ``e = y* - y`` (target minus output, the paper's sign), loss ``L = |e|^2 / 2``. Every
rule below produces one *modulator* ``delta_l`` per layer (shape ``(batch, n_l)``), and all
rules share the same three-factor update::

    W[l-1] <- W[l-1] + eta * (delta_l^T h_{l-1} - alpha * W[l-1])
    b[l-1] <- b[l-1] + eta * (sum_batch delta_l - alpha * b[l-1])

with weight decay ``alpha`` (``weight_decay``; 1e-6 in the paper's Fig. 3a). Gradients
are *summed* over a minibatch, and the decay is applied once per sample of the batch
(``(1 - eta alpha)^batch``), so ``eta`` and ``alpha`` keep their per-example meaning and
a small minibatch follows online learning (batch size 1) closely. The output modulator is
``delta_m = e * f_m'(y)`` for all gradient-like rules; derivatives are written in terms
of a unit's own output (``h(1-h)`` for logistic, ``1-h^2`` for tanh), as the paper stresses
they are local (Methods, "Nonlinear networks"). The rules differ only in how the hidden
modulators are made:

``bp``        backprop: ``delta_l = (W[l]^T delta_{l+1}) * f_l'(h_l)`` (Fig. 1b, Fig. 2 "(a)").
``fa``        feedback alignment: ``delta_l = (B[l-1] delta_{l+1}) * f_l'(h_l)`` with ``B`` fixed
              random, shape ``W[l].T.shape`` (Fig. 1c; Fig. 2 "(b)"); this is
              ``derivatives="sent"``. With ``derivatives="local"`` (the paper's Methods for Figs
              3a and 3d, the model files' choice) ``B`` carries the error and no derivative:
              ``delta_FA = B e``, ``delta_1 = B1 delta_2``, each layer's ``f'`` applied only to
              its own update ("no need to transmit the derivatives between cells or layers").
              The two agree when only linear layers lie above (Figs 2 and 5).
``shallow``   only the output layer learns; hidden modulators are zero (Figs 2a, 3a,d, grey).
``sparse-fa`` ``fa`` on a network built with ``sparsity > 0``: that fraction of the entries of
              the ``W`` and ``B`` matrices is removed for good (set to 0 and masked out of every
              update; Fig. 3a text, "randomly remove 50% of the elements of the W and B
              matrices"): of every ``W`` (``sparse_layers="all"``) or, as the paper's names
              read, of the ``W`` paired with a ``B`` only (``"paired"``: not ``W0``).
``np``        node perturbation, a "fast form of reinforcement learning" (Fig. 2a, dark grey;
              refs 12 and 61: Williams 1992, Fiete & Seung 2006). Each sample is run twice:
              clean, and with Gaussian noise ``xi_l ~ N(0, sigma^2)`` added to the net input of
              every hidden unit. The same scalar reward change ``dL = L_noisy - L_clean`` is
              broadcast to every hidden unit, and ``delta_l = -(dL / sigma^2) xi_l``, with
              presynaptic activity taken from the noisy pass. For small ``sigma`` its
              expectation is ``-dL/d(net input)``, the backprop modulator, but its variance is
              large. The output layer learns from ``e`` as in the other rules (the paper's
              Methods for Fig. 2), or, with ``output="perturbation"``, by perturbation too.

Notes
-----
Weights are updated in place: the MNIST network (784-1000-10) takes 3,000 small steps per
epoch, and a fresh copy of its 784k-entry matrix per step would dominate the cost.
The logistic function is computed as ``(1 + tanh(a/2)) / 2``, which equals
``1 / (1 + exp(-a))`` but cannot overflow for large negative ``a`` in float32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from spikefa.config import is_integer, is_number
from spikefa.measures import angle_deg, row_angles_deg

log = logging.getLogger(__name__)
_NOTED_NO_DECAY: set = set()  # (dtype, eta, weight_decay, batch) already noted

ACTIVATIONS = ("linear", "logistic", "tanh")
SPARSE_LAYERS = ("all", "paired")
RULES = ("bp", "fa", "shallow", "np", "sparse-fa")


def _at_least_0(name: str, value, allowed: str) -> None:
    if not is_number(value) or not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} = {value!r}: {allowed}")


def _mT(a: np.ndarray) -> np.ndarray:
    """``a.mT`` (the last two axes swapped, a view), also on NumPy 1.x."""
    return np.swapaxes(a, -1, -2)


def _activate(name: str, a: np.ndarray) -> np.ndarray:
    if name == "linear":
        return a
    if name == "logistic":
        return 0.5 * (1.0 + np.tanh(0.5 * a))
    if name == "tanh":
        return np.tanh(a)
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


def _derivative(name: str, h: np.ndarray) -> np.ndarray | float:
    """f'(a) written with the unit's own output h = f(a) (a purely local quantity)."""
    if name == "linear":
        return 1.0
    if name == "logistic":
        return h * (1.0 - h)
    if name == "tanh":
        return 1.0 - h * h
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


@dataclass
class RateNetwork:
    """Weights of a layered rate network (see the module docstring for shapes).

    ``B[l-1]`` is the feedback matrix that carries the modulator of layer ``l+1`` down to
    hidden layer ``l``; it has the shape of ``W[l].T``. ``W_mask``/``B_mask`` are ``None``
    for a dense network, else lists of boolean arrays (``False`` marks a removed synapse),
    with ``None`` for a ``W`` that lost no synapse.
    """

    W: list
    b: list
    B: list
    activations: tuple
    W_mask: list | None = None
    B_mask: list | None = None

    @property
    def sizes(self) -> tuple:
        return (self.W[0].shape[-1],) + tuple(w.shape[-2] for w in self.W)

    def copy(self) -> "RateNetwork":
        def cp(arrays):
            return None if arrays is None else [None if a is None else a.copy() for a in arrays]

        return RateNetwork(cp(self.W), cp(self.b), cp(self.B), self.activations,
                           cp(self.W_mask), cp(self.B_mask))


def init_network(sizes, activations, rng: np.random.Generator, w_scale: float,
                 feedback_scale: float, bias_scale: float = 0.0, sparsity: float = 0.0,
                 dtype=np.float64, runs: int | None = None, sparse_layers: str = "all") -> RateNetwork:
    """Random network: ``W ~ U[-w_scale, w_scale]``, ``B ~ U[-feedback_scale, feedback_scale]``,
    ``b ~ U[-bias_scale, bias_scale]``.

    Parameters
    ----------
    sizes : sequence of int
        Units per layer, input first (e.g. ``(30, 20, 10)``).
    activations : str or sequence of str
        One per non-input layer, or one name for all.
    sparsity : float
        Fraction of the entries of the ``W`` and ``B`` matrices removed for good
        (``sparse-fa``). The kept entries are drawn from the same distributions as in the
        dense network, as in the paper.
    sparse_layers : {"all", "paired"}
        Which ``W`` lose entries: every one, or only those with a feedback partner
        (``W[l]``, ``l >= 1``, beside ``B[l-1]``): in Fig. 3a's network the paper's ``W``
        (hidden to output) and not ``W0``, so that "neurons in h and y have a 25% chance
        of reciprocal connection". Every ``B`` loses entries either way.
    runs : int, optional
        Build an ensemble of this many independent networks (a leading run axis on
        every array); default a single network.
    """
    if isinstance(sizes, str) or not hasattr(sizes, "__len__") or not all(is_integer(n) and n >= 1 for n in sizes):
        # 20.7 was cut to 20, a 0 made an empty layer, -2 or '30,20' a NumPy error
        raise ValueError(f"sizes = {sizes!r}: a sequence of layer sizes, integers >= 1, input first, e.g. (30, 20, 10)")
    sizes = tuple(int(n) for n in sizes)
    if len(sizes) < 2:
        raise ValueError(f"need at least an input and an output layer, got sizes={sizes}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng = {rng!r}: a numpy.random.Generator, e.g. np.random.default_rng(seed)")
    for name, value in (("w_scale", w_scale), ("feedback_scale", feedback_scale), ("bias_scale", bias_scale)):
        _at_least_0(name, value, "the half-width of a uniform distribution, a finite number >= 0")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise ValueError(f"dtype = {dtype!r}: a float dtype (float32 or float64); an integer dtype rounds the "
                         "weights to 0")
    if runs is not None and (not is_integer(runs) or runs < 1):
        raise ValueError(f"runs = {runs!r}: the number of networks in the ensemble, an integer >= 1 (None: one network)")
    n_layers = len(sizes) - 1
    if isinstance(activations, str):
        activations = (activations,) * n_layers
    if not isinstance(activations, (list, tuple)):
        raise ValueError(f"activations = {activations!r}: one of {', '.join(ACTIVATIONS)}, or a list of them, "
                         "one per non-input layer")
    activations = tuple(activations)
    if len(activations) != n_layers:
        raise ValueError(f"{len(activations)} activations for {n_layers} layers")
    for name in activations:
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if sparse_layers not in SPARSE_LAYERS:
        raise ValueError(f"sparse_layers = {sparse_layers!r}: valid: {', '.join(SPARSE_LAYERS)}")
    if sparsity > 0 and sparse_layers == "paired" and len(sizes) < 3:
        # (it removed nothing, and sparse-fa then trained a dense network)
        raise ValueError(f"sparse_layers = 'paired' on sizes {sizes}: no W has a feedback partner (no hidden layer)")

    lead = () if runs is None else (int(runs),)
    W = [rng.uniform(-w_scale, w_scale, lead + (n_out, n_in)).astype(dtype)
         for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    b = [rng.uniform(-bias_scale, bias_scale, lead + (n_out,)).astype(dtype)
         for n_out in sizes[1:]]
    B = [rng.uniform(-feedback_scale, feedback_scale, _mT(W[l]).shape).astype(dtype)
         for l in range(1, n_layers)]
    net = RateNetwork(W, b, B, activations)
    if sparsity > 0.0:
        first = 0 if sparse_layers == "all" else 1
        net.W_mask = [None] * first + [rng.random(w.shape) >= sparsity for w in W[first:]]
        net.B_mask = [rng.random(m.shape) >= sparsity for m in B]
        for w, mask in zip(net.W + net.B, net.W_mask + net.B_mask):
            if mask is not None:
                w *= mask
    return net


def forward(net: RateNetwork, x: np.ndarray) -> list:
    """Activities of every layer, input first: ``[x, h_1, ..., y]``, each ``(batch, n_l)``
    (``(runs, batch, n_l)`` for an ensemble; ``x`` may be shared by all runs)."""
    acts = [_inputs(net, x)]
    for W, b, name in zip(net.W, net.b, net.activations):
        acts.append(_activate(name, acts[-1] @ _mT(W) + b[..., np.newaxis, :]))
    return acts


def _inputs(net: RateNetwork, x) -> np.ndarray:
    """``x`` as a batch of inputs of ``net``: a wrong width was a matmul error, NaN a NaN
    output and, in training, NaN weights."""
    x = np.atleast_2d(np.asarray(x))
    if x.shape[-1] != net.sizes[0] or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"inputs must be numbers of shape (batch, {net.sizes[0]}) (the input layer's size); "
                         f"got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"inputs hold {int(np.sum(~np.isfinite(x)))} NaN or infinite values")
    return x


def predict(net: RateNetwork, x: np.ndarray) -> np.ndarray:
    """Output layer activity for a batch of inputs."""
    return forward(net, x)[-1]


# --- learning rules --------------------------------------------------------------------
# A rule maps (network, input batch, target batch) to the layer activities it used and one
# modulator per non-input layer; `train_step` turns those into weight changes.


def output_modulator(net: RateNetwork, y, target):
    """The output layer's modulator ``e * f_m'(y)``, ``e = target - y``, for outputs ``y``."""
    return (target - y) * _derivative(net.activations[-1], y)


def _backward(net, acts, delta_out, feedback, sent=None):
    """Hidden modulators from the output one, top-down; `feedback(l)` is the matrix that
    carries a signal to hidden layer l (shape (n_l, n_{l+1})). By default that signal is
    delta_{l+1}, derivative included (backprop's chain); given ``sent``, what is carried
    down from the output, the signals s_l = feedback(l) s_{l+1} carry no derivative, and
    each layer applies its own to its modulator only, delta_l = s_l * f_l'(h_l) (FA
    "local")."""
    deltas = [delta_out]
    for l in range(len(net.W) - 1, 0, -1):
        carried = (deltas[0] if sent is None else sent) @ _mT(feedback(l))
        if sent is not None:
            sent = carried
        deltas.insert(0, carried * _derivative(net.activations[l - 1], acts[l]))
    return deltas


@dataclass(frozen=True)
class Backprop:
    """``delta_l = (W[l]^T delta_{l+1}) * f'(h_l)``: the exact gradient of ``L``."""

    name: str = "bp"

    def modulators(self, net, x, target, rng=None):
        acts = forward(net, x)
        delta_out = output_modulator(net, acts[-1], target)
        return acts, _backward(net, acts, delta_out, lambda l: _mT(net.W[l]))


FA_DERIVATIVES = ("sent", "local")


@dataclass(frozen=True)
class FeedbackAlignment:
    """Feedback alignment: ``B`` fixed and random carries the signal down.

    ``derivatives`` says what ``B`` carries (the two differ only below a nonlinear layer):

    ``"sent"``   the modulator of the layer above, derivative included, as backprop's
                 chain would: ``delta_l = (B[l-1] delta_{l+1}) * f'(h_l)``.
    ``"local"``  the paper's Methods (Figs 3a, 3d): ``B`` carries the error and the signals
                 made from it, ``s_m = e``, ``s_l = B[l-1] s_{l+1}`` (``delta_FA = B e``,
                 ``delta_1 = B1 delta_2``), and each layer applies its own derivative only to
                 its own update, ``delta_l = s_l * f'(h_l)`` ("there is no need to transmit
                 the derivatives between cells or layers"). The output layer learns from
                 ``e * f'(y)`` either way.

    With ``name="sparse-fa"`` the network must have been built with ``sparsity > 0``;
    the arithmetic is the same (removed entries of ``B`` are zeros).
    """

    name: str = "fa"
    derivatives: str = "sent"

    def __post_init__(self):
        if self.derivatives not in FA_DERIVATIVES:
            raise ValueError(f"derivatives = {self.derivatives!r}: valid: {', '.join(FA_DERIVATIVES)}")

    def modulators(self, net, x, target, rng=None):
        if self.name == "sparse-fa" and net.W_mask is None:
            raise ValueError("rule 'sparse-fa' needs a network built with sparsity > 0")
        acts = forward(net, x)
        delta_out = output_modulator(net, acts[-1], target)
        return acts, _backward(net, acts, delta_out, lambda l: net.B[l - 1],
                               sent=None if self.derivatives == "sent" else target - acts[-1])

    def sent(self, net, y, target):
        """What ``B[-1]`` carries to the top hidden layer for outputs ``y``: the output
        modulator (``"sent"``) or the error (``"local"``)."""
        return output_modulator(net, y, target) if self.derivatives == "sent" else target - y


@dataclass(frozen=True)
class Shallow:
    """Only the output layer learns (hidden modulators are ``None``)."""

    name: str = "shallow"

    def modulators(self, net, x, target, rng=None):
        acts = forward(net, x)
        return acts, [None] * (len(net.W) - 1) + [output_modulator(net, acts[-1], target)]


NP_OUTPUTS = ("gradient", "perturbation")


@dataclass(frozen=True)
class NodePerturbation:
    """Node perturbation: ``delta_l = -((L_noisy - L_clean) / sigma^2) xi_l``.

    ``xi_l ~ N(0, sigma^2)`` is added to the net input of every hidden unit in a second,
    noisy forward pass. One scalar reward signal per sample reaches every unit (Fig. 2a,
    "delivers the same reward to each neuron").

    ``output`` says how the output layer learns. ``"gradient"`` (default), the paper's
    Methods for Fig. 2: "Output weights were adjusted via Delta W ~ e h^T for all three
    algorithms"; only the hidden weights learn by perturbation, and the output modulator
    is ``e * f'(y)`` of the noisy pass. ``"perturbation"``: the output units are perturbed
    too and learn from the same reward, a network trained by node perturbation alone.
    """

    sigma: float = 1e-3
    output: str = "gradient"
    name: str = "np"

    def __post_init__(self):
        # sigma = 0 divided the reward by 0 (NaN weights after one step); < 0 a NumPy error
        if not is_number(self.sigma) or not np.isfinite(self.sigma) or self.sigma <= 0:
            raise ValueError(f"node perturbation sigma = {self.sigma!r}: the noise's standard deviation, a finite "
                             "number > 0")
        if self.output not in NP_OUTPUTS:
            raise ValueError(f"node perturbation output = {self.output!r}; valid: "
                             f"{', '.join(NP_OUTPUTS)}")

    def modulators(self, net, x, target, rng=None):
        if rng is None:
            raise ValueError("node perturbation needs a random generator (rng=...)")
        clean = forward(net, x)  # (checks x)
        loss_clean = 0.5 * np.sum((target - clean[-1]) ** 2, axis=-1, keepdims=True)
        perturbed = len(net.W) - (self.output == "gradient")  # layers 1..perturbed
        acts, noise = [clean[0]], []
        for l, (W, b, name) in enumerate(zip(net.W, net.b, net.activations)):
            drive = acts[-1] @ _mT(W) + b[..., np.newaxis, :]
            if l < perturbed:
                xi = rng.normal(0.0, self.sigma, drive.shape).astype(W.dtype)
                noise.append(xi)
                drive = drive + xi
            acts.append(_activate(name, drive))
        loss_noisy = 0.5 * np.sum((target - acts[-1]) ** 2, axis=-1, keepdims=True)
        reward = -(loss_noisy - loss_clean) / self.sigma**2
        deltas = [reward * xi for xi in noise]
        if self.output == "gradient":
            deltas.append(output_modulator(net, acts[-1], target))
        return acts, deltas


_RULE_OPTIONS = {"np": ("sigma", "output"), "fa": ("derivatives",), "sparse-fa": ("derivatives",)}


def get_rule(name: str, **options):
    """The learning rule called ``name`` (one of :data:`RULES`); ``options`` go to it
    (``np`` takes ``sigma`` and ``output``, ``fa`` and ``sparse-fa`` take ``derivatives``)."""
    allowed = _RULE_OPTIONS.get(name, ())
    unknown = [k for k in options if k not in allowed]
    if unknown and name in RULES:  # (fa with sigma=... was "__init__() got an unexpected keyword argument")
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
        raise ValueError(f"rule {name!r} has no option {', '.join(unknown)}; {takes}")
    if name == "bp":
        return Backprop(**options)
    if name in ("fa", "sparse-fa"):
        return FeedbackAlignment(name=name, **options)
    if name == "shallow":
        return Shallow(**options)
    if name == "np":
        return NodePerturbation(**options)
    raise ValueError(f"unknown learning rule {name!r}; valid: {', '.join(RULES)}")


def train_step(net: RateNetwork, rule, x, target, eta: float, weight_decay: float = 0.0,
               rng: np.random.Generator | None = None, learn=None,
               learn_biases: bool = True) -> np.ndarray:
    """One SGD step of ``rule`` on a batch ``(x, target)``; updates ``net`` in place.

    Parameters
    ----------
    learn : sequence of bool, optional
        Which weight layers (``W[0]``, ``W[1]``, ...) and their biases may change; the
        others are frozen (Fig. 5c's phases). Default: all.
    learn_biases : bool
        False: the biases never change (a network without biases when they start at 0,
        as the paper's linear network of Fig. 2).

    Returns
    -------
    numpy.ndarray
        The output the rule computed for this batch before the update (for ``np``, the
        noisy one).
    """
    if not hasattr(rule, "modulators"):  # train_step(net, "fa", ...) was "'str' object has no attribute 'modulators'"
        raise ValueError(f"rule = {rule!r}: a learning rule object, e.g. rate.get_rule('fa'); valid names: "
                         f"{', '.join(RULES)}")
    for name, value in (("eta", eta), ("weight_decay", weight_decay)):
        _at_least_0(name, value, "a finite number >= 0")  # NaN made every weight NaN after one step
    x = _inputs(net, x)
    target = np.atleast_2d(np.asarray(target))
    n_out = net.sizes[-1]
    if target.shape[-1] != n_out or target.shape[-2] != x.shape[-2] or not np.issubdtype(target.dtype, np.number):
        raise ValueError(f"target must be numbers of shape ({x.shape[-2]}, {n_out}): one row per input of the batch, "
                         f"one column per output unit; got {target.dtype} {target.shape}")
    if not np.isfinite(target).all():
        raise ValueError(f"target holds {int(np.sum(~np.isfinite(target)))} NaN or infinite values")
    if learn is not None and (isinstance(learn, str) or not hasattr(learn, "__len__") or len(learn) != len(net.W)):
        raise ValueError(f"learn = {learn!r}: one True/False per weight layer ({len(net.W)} here: W[0]..W[{len(net.W) - 1}])")
    acts, deltas = rule.modulators(net, x, target, rng)
    for l, delta in enumerate(deltas):
        if delta is None or (learn is not None and not learn[l]):
            continue
        W, b = net.W[l], net.b[l]
        if weight_decay:
            # once per example of the batch, as online learning would decay it
            shrink = (1.0 - eta * weight_decay) ** x.shape[-2]
            key = (W.dtype.name, float(eta), float(weight_decay), x.shape[-2])
            if W.dtype.type(shrink) == 1 and key not in _NOTED_NO_DECAY:
                # W *= shrink then changes no weight: the decay is asked for but not applied
                _NOTED_NO_DECAY.add(key)
                log.warning("spikefa: note: weight decay %g at eta %g over a batch of %d shrinks the weights "
                            "by 1 - %.1e, which is 1 in %s: no decay is applied (float64 weights apply it)",
                            weight_decay, eta, x.shape[-2], 1.0 - shrink, W.dtype.name)
            W *= shrink
            if learn_biases:
                b *= shrink
        dW = _mT(delta) @ acts[l]
        if net.W_mask is not None and net.W_mask[l] is not None:
            dW *= net.W_mask[l]  # a removed synapse never comes back
        W += eta * dW
        if learn_biases:
            b += eta * delta.sum(axis=-2)
    return acts[-1]


def _hidden_layer(net: RateNetwork, layer) -> int:
    """``layer`` as a hidden layer of ``net`` (1..m-1). Layer 0 indexed ``B[-1]``, the
    feedback of the top hidden layer: with layers of equal size an angle of the wrong pair
    of matrices, with no error."""
    m = len(net.W)
    if not is_integer(layer) or not 1 <= layer <= m - 1:
        allowed = f"1..{m - 1}" if m > 1 else "none: this network has no hidden layer"
        raise ValueError(f"layer = {layer!r}: a hidden layer, counted from 1 (allowed: {allowed})")
    return int(layer)


def modulator_angle(net: RateNetwork, delta_top: np.ndarray, layer: int = 1, sent=None,
                    per_example: bool = False, W=None):
    """Angle in degrees between the modulators FA and BP send to hidden layer ``layer``
    (Figs 2b, 3b: ``delta_FA`` and ``delta_BP``; a batch is flattened into one vector):
    ``B[layer-1] sent`` vs ``W[layer]^T delta_top``, where ``delta_top`` is the modulator
    of layer ``layer + 1`` and ``sent`` what FA's ``B`` carries from there, by default the
    same (``FeedbackAlignment.sent`` gives it: the error ``e`` for ``derivatives="local"``,
    the paper's ``delta_FA = B e``). As in the paper's Methods, neither includes this
    layer's derivative ``f'(h)``, which each unit applies to its own update only.

    ``per_example=True`` gives one angle per row of the batch instead (NaN for a row where
    either modulator is zero); ``W`` replaces ``W[layer]``, e.g. as it was before a training step.

    Returns a float, or one angle per run (an array) for an ensemble.
    """
    layer = _hidden_layer(net, layer)
    W = net.W[layer] if W is None else np.asarray(W)
    if W.shape != net.W[layer].shape:
        raise ValueError(f"W must have the shape of W[{layer}], {net.W[layer].shape}; got {W.shape}")
    delta_top = np.atleast_2d(delta_top)
    sent = delta_top if sent is None else np.atleast_2d(sent)
    if delta_top.shape[-1] != W.shape[-2] or sent.shape != delta_top.shape:
        raise ValueError(f"delta_top and sent must have {W.shape[-2]} columns, one per unit of layer "
                         f"{layer + 1}, and the same shape; got {delta_top.shape} and {sent.shape}")
    fa = sent @ _mT(net.B[layer - 1])
    bp = delta_top @ W
    if per_example:
        if W.ndim != 2:
            raise ValueError("per_example angles are for one network, not an ensemble")
        return row_angles_deg(fa, bp)
    if W.ndim == 2:
        return angle_deg(fa, bp)
    return np.array([angle_deg(f, g) for f, g in zip(fa, bp)])


def weight_angle(net: RateNetwork, layer: int = 1):
    """Angle in degrees between ``W[layer]`` and ``B[layer-1]^T``, both flattened
    (Fig. 5a, blue line); one per run for an ensemble."""
    layer = _hidden_layer(net, layer)
    W, Bt = net.W[layer], _mT(net.B[layer - 1])
    if W.ndim == 2:
        return angle_deg(W, Bt)
    return np.array([angle_deg(w, bt) for w, bt in zip(W, Bt)])
