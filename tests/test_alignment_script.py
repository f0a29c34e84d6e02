"""results/reproduction/alignment.py (issue 9): the subspace alignment measure.

Checks the measure against networks whose answer is known: a forward matrix that equals
B^T in the error subspace and nothing else sits at the flattened 'ceiling' and at 0 degrees
in the subspace; a random one sits near 90 in both.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from spikefa.config import load_config
from spikefa.network import init_network

SCRIPT = Path(__file__).resolve().parents[1] / "results" / "reproduction" / "alignment.py"


@pytest.fixture(scope="module")
def alignment():
    spec = importlib.util.spec_from_file_location("alignment", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def tiny():
    cfg = load_config("tiny")
    return init_network(cfg), init_network(cfg)


def test_error_subspaces_are_orthonormal_and_start_from_the_classes(alignment, tiny):
    net, _ = tiny
    Q = alignment.error_subspaces(net)
    for l in range(1, net.m + 1):
        assert Q[l].shape == (int(net.sizes[l]), 10)
        np.testing.assert_allclose(Q[l].T @ Q[l], np.eye(10), atol=1e-10)
    # the output's subspace holds the class indicators (10 units per class in tiny)
    y3 = np.zeros(int(net.sizes[net.m]))
    y3[30:40] = 1.0
    np.testing.assert_allclose(Q[net.m] @ (Q[net.m].T @ y3), y3, atol=1e-10)


def test_fresh_network_is_unaligned(alignment, tiny):
    net, start = tiny
    for r in alignment.measure(net, start):
        assert abs(r["flat"] - 90) < 3 and abs(r["subspace"] - 90) < 15
        assert np.isnan(r["flat_dw"]) and r["growth"] == 0
        assert r["ceiling"] < 90


def test_weights_equal_to_b_in_the_subspace_reach_the_ceiling(alignment, tiny):
    net, start = tiny
    Q = alignment.error_subspaces(net)
    for l in range(1, net.m):
        B = net.feedback_matrix(l).astype(np.float64)
        q = Q[l + 1]
        net.W[l][...] = (B @ q @ q.T).astype(net.W[l].dtype)      # W^{l+1} as (n_l, n_{l+1})
    net.scale[:] = 1.0
    for r in alignment.measure(net, start):
        assert r["subspace"] == pytest.approx(0.0, abs=0.05)
        assert r["flat"] == pytest.approx(r["ceiling"], abs=0.05)
        assert r["ceiling"] > 60      # 10 of 100 directions: arccos(sqrt(0.1)) is about 72 degrees


def test_changed_feedback_is_refused(alignment, tiny):
    net, start = tiny
    net.wiring.F[0][...] *= -1
    with pytest.raises(ValueError, match="B\\^1 differs"):
        alignment.measure(net, start)
