"""Issue 9: do the forward weights align with B where it matters? Read from checkpoints.

    python results/reproduction/alignment.py CKPT [CKPT ...] > alignment-C.md

The angle the paper uses for matrices flattens them: for hidden layer l it compares all of
(W^{l+1})^T with all of B^l. In a 1500-unit network that angle cannot fall far below 90
degrees, whatever the learning does: the error that drives the learning comes from 10
classes, so it spans about 10 of the 1000 (or 1500) directions, and B^l has only a
fraction of about 10/1000 of its squared norm in them. This script measures, for each
hidden layer l and each checkpoint:

- ``flat``: the flattened angle between (W^{l+1})^T and B^l, as the run file records it;
- ``flat dW``: the same for the change of the weights since the start, W - W(0) (the
  initial weights are rebuilt from the run's seed);
- ``ceiling``: the smallest flattened angle possible for a W^{l+1} that has learned B^l
  perfectly in the error subspace and has nothing else, arccos(|B^l Q| / |B^l|);
- ``subspace``: the angle between (W^{l+1})^T Q and B^l Q, i.e. between the modulators
  W^T e and B e for errors e in the error subspace Q; this is the angle that decides
  whether the hidden layers receive a useful signal;
- ``subspace dW``: the same for the change W - W(0);
- ``error in Q``: the share of the squared norm of the top-down signal phi_d(U^{l+1}) that
  lies in the error subspace, at the checkpoint's step (one step's snapshot, so it jumps
  with the image shown). The rest is mostly the spike noise of the layers above, which
  averages out of the learning but dominates the modulator angle the run file records
  every step (``spikefa plot angles``).

A ``.toml`` model file in place of a checkpoint gives the fresh network of its seed.

The error subspace of the output layer is spanned by the 10 class-indicator vectors (the
target y* of an image is one of them, and the error s - y* averages to a combination of
them); that of hidden layer l by B^l applied to the subspace of the layer above (tanh
keeps a block-constant vector block-constant, and is treated as linear further down).
"""

import sys

import numpy as np

from spikefa.config import load_config
from spikefa.measures import angle_deg
from spikefa.kernels import PHI_CODES
from spikefa.network import init_network
from spikefa.reference import _phi
from spikefa.train import network_from_checkpoint


def orth(a):
    q, _ = np.linalg.qr(np.asarray(a, dtype=np.float64))
    return q


def error_subspaces(net):
    """Orthonormal bases Q[l] (n_l x 10) of the error subspace of every layer l = 1..m."""
    n_out, n_classes = int(net.sizes[net.m]), net.config.model.n_classes
    per = n_out // n_classes
    Y = np.zeros((n_out, n_classes))
    for c in range(n_classes):
        Y[c * per:(c + 1) * per, c] = 1.0
    Q = {net.m: orth(Y)}
    for l in range(net.m - 1, 0, -1):
        Q[l] = orth(net.feedback_matrix(l).astype(np.float64) @ Q[l + 1])
    return Q


def _angle(a, b):
    return angle_deg(a, b) if np.any(a) else float("nan")


def measure(net, start):
    """Per hidden layer l = 1..m-1, the measures in this module's docstring, as dicts.

    ``net`` is the network to measure and ``start`` the fresh network of the same seed
    (its B must be the same: fixed feedback)."""
    Q = error_subspaces(net)
    phi = PHI_CODES[net.config.model.phi_d]
    out = []
    for l in range(1, net.m):
        B = net.feedback_matrix(l).astype(np.float64)                  # (n_l, n_{l+1})
        if not np.array_equal(B, start.feedback_matrix(l).astype(np.float64)):
            raise ValueError(f"B^{l} differs from the seed's: not a fixed-feedback run")
        W = net.weights(l + 1).astype(np.float64)                      # (n_l, n_{l+1}) = (W^{l+1})^T
        dW = W - start.weights(l + 1).astype(np.float64)
        q = Q[l + 1]
        top = _phi(net.state.feedback_psp[net.layer_slice(l + 1)].astype(np.float64), phi)
        out.append(dict(
            layer=net.names[l],
            flat=angle_deg(W, B),
            flat_dw=_angle(dW, B),
            ceiling=float(np.degrees(np.arccos(np.linalg.norm(B @ q) / np.linalg.norm(B)))),
            subspace=angle_deg(W @ q, B @ q),
            subspace_dw=_angle(dW @ q, B @ q),
            growth=float(np.linalg.norm(dW) / np.linalg.norm(W - dW)),
            share=float(np.sum((q.T @ top) ** 2) / np.sum(top ** 2)) if np.any(top) else float("nan"),
        ))
    return out


def rows(path):
    if str(path).endswith(".toml"):
        net, info = init_network(load_config(path)), {"step": 0}
    else:
        net, info = network_from_checkpoint(path)
    cfg = net.config
    n_train = 60000 if cfg.train.dataset == "mnist" else 2000
    epochs = info["step"] / cfg.train.steps_per_image / n_train

    def f(x, fmt):
        return "-" if np.isnan(x) else format(x, fmt)

    try:
        layers = measure(net, init_network(cfg))
    except ValueError as exc:
        raise SystemExit(f"{path}: {exc}") from None
    return [f"| {info['step']:,} | {epochs:.2f} | {r['layer']} | {f(r['flat'], '.1f')} | {f(r['flat_dw'], '.1f')} | "
            f"{f(r['ceiling'], '.1f')} | {f(r['subspace'], '.1f')} | {f(r['subspace_dw'], '.1f')} | "
            f"{f(r['growth'], '.2f')} | {f(r['share'], '.2f')} |" for r in layers]


def main(paths):
    print("| step | epochs | layer l | flat | flat dW | ceiling | subspace | subspace dW | abs dW / abs W(0) | error in Q |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in paths:
        print("\n".join(rows(path)))


if __name__ == "__main__":
    main(sys.argv[1:])
