"""How far the forward weights have aligned with the feedback where it matters.

The paper measures alignment by the angle between flattened matrices, ``(W^{l+1})^T``
against ``B^l`` (:func:`spikefa.measures.angle_deg`; the run file records it every
``record.measure_every`` steps). In wide layers that angle cannot fall far below 90
degrees, whatever the learning does: the error that drives learning comes from
``n_classes`` classes and the read-out sums each class's output units, so the error that
matters for the guess spans about ``n_classes`` of the ``n_{l+1}`` directions, and ``B^l``
has only a share of about ``n_classes / n_{l+1}`` of its squared norm in them. In the
paper's 784-1500-1500-1500-1000 network a W that had learned B perfectly there, and had
nothing else, would still be 84-85 degrees from B when flattened.

:func:`class_alignment` measures, per hidden layer ``l``:

``flat``
    the flattened angle between ``(W^{l+1})^T`` and ``B^l`` (as the run file records it);
``flat_dw``
    the same for the change of the weights since the start, ``W - W(0)``;
``ceiling``
    the smallest flattened angle possible for a ``W^{l+1}`` that equals ``B^l`` in the
    class-error subspace ``Q`` and is zero elsewhere, ``arccos(|B^l Q| / |B^l|)``;
``subspace``
    the angle between ``(W^{l+1})^T Q`` and ``B^l Q``: between the modulators ``W^T e``
    (backprop's) and ``B e`` (feedback alignment's) over the class errors ``e``;
``subspace_dw``
    the same for ``W - W(0)``;
``growth``
    ``|W - W(0)| / |W(0)|``;
``share``
    the share of the squared norm of the top-down signal ``phi_d(U^{l+1})`` of the
    network's current step that lies in ``Q`` (one step's snapshot). The rest is spike
    noise and the errors of single output units that cancel within a class.

The class-error subspace of the output layer is spanned by the class-indicator vectors
(each image's target is one of them); that of hidden layer ``l`` by ``B^l`` applied to the
subspace of the layer above (``phi_d`` keeps a vector that is constant on each class's
units constant there, and is treated as linear further down).
"""

from __future__ import annotations

import numpy as np

from .measures import angle_deg
from .network import Network, init_network
from .reference import _phi
from .kernels import PHI_CODES

FIELDS = ("flat", "flat_dw", "ceiling", "subspace", "subspace_dw", "growth", "share")


def _orth(a):
    q, _ = np.linalg.qr(np.asarray(a, dtype=np.float64))
    return q


def _bases(feedback: list[np.ndarray], n_out: int, n_classes: int) -> dict[int, np.ndarray]:
    """Class-error bases from the feedback matrices ``feedback[l-1] = B^l``, ``(n_l, n_{l+1})``."""
    per = n_out // n_classes
    Y = np.zeros((n_out, n_classes))
    for c in range(n_classes):
        Y[c * per:(c + 1) * per, c] = 1.0
    m = len(feedback) + 1
    Q = {m: _orth(Y)}
    for l in range(m - 1, 0, -1):
        Q[l] = _orth(np.asarray(feedback[l - 1], dtype=np.float64) @ Q[l + 1])
    return Q


def class_error_bases(net: Network) -> dict[int, np.ndarray]:
    """Orthonormal bases ``Q[l]``, shape ``(n_l, n_classes)``, of the class-error subspace
    of every layer ``l = 1..m`` (see the module docstring)."""
    feedback = [net.feedback_matrix(l) for l in range(1, net.m)]
    for l, F in enumerate(feedback, start=1):
        if F is None:
            raise ValueError(f"layer {net.names[l]} receives no feedback ({net.config.model.feedback!r}): "
                             "its alignment is undefined")
    return _bases(feedback, int(net.sizes[net.m]), net.config.model.n_classes)


def flat_ceilings(feedback: list[np.ndarray], n_classes: int = 10) -> list[float]:
    """The smallest flattened angle (degrees) between ``(W^{l+1})^T`` and ``B^l`` that a W
    aligned with B only in the class-error subspace can reach, per hidden layer, from the
    feedback matrices ``feedback[l-1] = B^l`` of shape ``(n_l, n_{l+1})`` alone."""
    n_out = np.asarray(feedback[-1]).shape[1]
    Q = _bases(feedback, n_out, n_classes)
    return [_ceiling(np.asarray(F, dtype=np.float64), Q[l + 1]) for l, F in enumerate(feedback, start=1)]


def _ceiling(B, q):
    """``arccos(|B q| / |B|)`` in degrees: the flattened angle to B of B's part in span(q)."""
    return float(np.degrees(np.arccos(np.linalg.norm(B @ q) / np.linalg.norm(B))))


def _angle(a, b):
    return angle_deg(a, b) if np.any(a) else float("nan")


def class_alignment(net: Network, start: Network | None = None) -> list[dict]:
    """Alignment of every hidden layer ``l = 1..m-1`` in the class-error subspace.

    Parameters
    ----------
    net : Network
        The network to measure: feedback ``fa``, ``sparse-fa`` (fixed B) or ``learned`` (W
        against B as it has learned, at the moment measured). ``dfa`` is refused since its
        B does not come from the layer above, ``transport`` since its B is W.
    start : Network, optional
        The same network before training, for the ``*_dw`` and ``growth`` fields; by default
        the fresh network of ``net.config`` (same seed), whose B must equal ``net``'s
        when B is fixed.

    Returns
    -------
    list of dict
        One per hidden layer: ``layer`` (its name) and the :data:`FIELDS` (degrees for the
        angles; NaN where undefined, e.g. ``flat_dw`` of an untrained network).
    """
    feedback = net.config.model.feedback
    if feedback not in ("fa", "sparse-fa", "learned"):
        raise ValueError(f"class_alignment compares W with a B of its own from the layer above; feedback "
                         f"{feedback!r} has none (use fa, sparse-fa or learned)")
    start = init_network(net.config) if start is None else start
    Q = class_error_bases(net)
    phi = PHI_CODES[net.config.model.phi_d]
    out = []
    for l in range(1, net.m):
        B = net.feedback_matrix(l).astype(np.float64)                  # (n_l, n_{l+1})
        if feedback != "learned" and not np.array_equal(B, start.feedback_matrix(l).astype(np.float64)):
            raise ValueError(f"B of {net.names[l]} differs from the start network's: not the same run")
        W = net.weights(l + 1).astype(np.float64)                      # (n_l, n_{l+1}) = (W^{l+1})^T
        dW = W - start.weights(l + 1).astype(np.float64)
        q = Q[l + 1]
        top = _phi(net.state.feedback_psp[net.layer_slice(l + 1)].astype(np.float64), phi)
        out.append(dict(
            layer=net.names[l],
            flat=angle_deg(W, B),
            flat_dw=_angle(dW, B),
            ceiling=_ceiling(B, q),
            subspace=angle_deg(W @ q, B @ q),
            subspace_dw=_angle(dW @ q, B @ q),
            growth=float(np.linalg.norm(dW) / np.linalg.norm(W - dW)),
            share=float(_shares(top[None], q)[0]),
        ))
    return out


def error_share(net: Network, images, labels, *, steps: int = 1000, seed: int = 0) -> list[float]:
    """The ``share`` field averaged over ``steps`` steps instead of one snapshot.

    A copy of ``net`` is run on training images shown as in training (``N`` steps each,
    a seeded random choice of them, no reset), plasticity off and the feedback sweep on;
    per hidden layer ``l`` the share of the squared norm of ``phi_d(U^{l+1})`` in the
    class-error subspace is taken at every step and averaged. One step's share jumps with
    the image shown (large on a step whose image is misclassified); the mean says how much
    of the top-down signal is class error as training goes.
    """
    from .network import input_probabilities

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    cfg = net.config
    Q = class_error_bases(net)
    phi = PHI_CODES[cfg.model.phi_d]
    N = cfg.train.steps_per_image
    n_img = -(-steps // N)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(labels), size=min(n_img, len(labels)), replace=False)
    idx = np.resize(idx, n_img)
    step_image = np.repeat(np.arange(n_img), N)[:steps]
    rec = np.arange(int(net.offsets[2]), net.n_units)  # units of layers 2..m
    work = net.copy()
    res = work.run(rng.random((steps, net.n_units)), input_probabilities(images[idx], cfg.model.p_max),
                   step_image, np.asarray(labels)[idx][step_image], plastic=False, feedback=True, rec_idx=rec)
    U = res["feedback_psp"].astype(np.float64)
    out = []
    for l in range(1, net.m):
        sl = net.layer_slice(l + 1)
        top = _phi(U[:, sl.start - rec[0]:sl.stop - rec[0]], phi)        # (steps, n_{l+1})
        shares = _shares(top, Q[l + 1])
        out.append(float(np.nanmean(shares)) if not np.isnan(shares).all() else float("nan"))
    return out


def _shares(top, q):
    """Per row of ``top`` (steps, n): the share of its squared norm in span(q); NaN for a
    zero row (no top-down signal yet)."""
    norm = np.sum(top ** 2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, np.sum((top @ q) ** 2, axis=1) / norm, np.nan)


def markdown_rows(rows: list[dict], step: int, epochs: float) -> list[str]:
    """Rows of the ``spikefa align`` table (its header is :func:`header`)."""
    def f(x, fmt):
        return "-" if np.isnan(x) else format(x, fmt)

    return [f"| {step:,} | {epochs:.2f} | {r['layer']} | {f(r['flat'], '.1f')} | {f(r['flat_dw'], '.1f')} | "
            f"{f(r['ceiling'], '.1f')} | {f(r['subspace'], '.1f')} | {f(r['subspace_dw'], '.1f')} | "
            f"{f(r['growth'], '.2f')} | {f(r['share'], '.2f')} |" for r in rows]


LEGEND = """Columns (angles in degrees, per hidden layer l; spikefa.alignment explains them):
  flat         angle between (W^{l+1})^T and B^l, flattened (as the run file records it)
  flat dW      the same for the change W - W(0) since the start
  ceiling      the smallest flat angle possible for a W aligned with B in the class-error
               subspace Q and zero elsewhere (84-85 in the paper's 1500-unit layers)
  subspace     angle between W^T e and B e over the class errors e (inside Q)
  subspace dW  the same for W - W(0)
  abs dW / abs W(0)  |W - W(0)| / |W(0)|: how far the weights have moved
  error in Q   share of the squared norm of the top-down signal phi_d(U^{l+1}) that lies in Q"""


def header(share_steps: int = 0) -> str:
    """The ``spikefa align`` table's header; ``share_steps``: the ``error in Q`` column is a
    mean over that many steps (:func:`error_share`), 0: one snapshot."""
    share = f"error in Q (mean of {share_steps:,} steps)" if share_steps else "error in Q (one step)"
    return (f"| step | epochs | layer l | flat | flat dW | ceiling | subspace | subspace dW | abs dW / abs W(0) | {share} |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
