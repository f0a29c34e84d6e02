"""Measures the paper uses (Lillicrap et al. 2016, Methods, "Angle measures" and
"Normalized squared error"; docs/model.md, "Measures the paper uses").

Both are shared by the rate-based experiments (:mod:`spikefa.rate`) and the spiking
simulator, so that an angle or an NSE means the same thing everywhere.
"""

from __future__ import annotations

import numpy as np


def angle_deg(a, b) -> float:
    """Angle between two vectors in degrees, ``arccos(a.b / (|a| |b|))``.

    Matrices (any shape) are flattened first, as in the paper ("When speaking of the
    angle between two matrices, we simply 'flatten' the matrices into vectors"). To
    compare ``W`` with ``B^T`` pass ``W`` and ``B.T``: the shapes must agree.

    Parameters
    ----------
    a, b : array_like
        Same shape.

    Returns
    -------
    float
        Angle in [0, 180] degrees.

    Raises
    ------
    ValueError
        If the shapes differ or either vector has zero length (the angle is undefined).

    Notes
    -----
    Computed in float64 whatever the input dtype: in float32 the cosine of two nearly
    parallel vectors can round above 1, so the cosine is also clipped to [-1, 1] before
    ``arccos`` (otherwise NaN instead of 0 degrees). Near 0 and 180 degrees ``arccos``
    resolves angles only to about 1e-6 degrees (``sqrt(2 eps)`` radians): the angle of a
    vector with itself comes out as ~1e-6, not exactly 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"angle_deg: shapes differ, {a.shape} vs {b.shape}")
    a = a.ravel()
    b = b.ravel()
    norm_a = np.linalg.norm(a)
    norm_b = np.linalg.norm(b)
    if norm_a == 0.0 or norm_b == 0.0:
        raise ValueError("angle_deg: the angle with a zero vector is undefined")
    cosine = np.dot(a, b) / (norm_a * norm_b)
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def row_angles_deg(a, b) -> np.ndarray:
    """The angle in degrees between each row of ``a`` and the same row of ``b`` (two
    arrays of one shape, ``(rows, n)``), computed as :func:`angle_deg` computes one; NaN
    for a row where either vector has zero length (its angle is undefined)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"row_angles_deg: two arrays of one shape (rows, n); got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.einsum("ij,ij->i", a, b) / norms
    angles = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    angles[norms == 0.0] = np.nan
    return angles


def normalized_squared_error(target, prediction) -> float:
    """Normalized squared error (NSE) of a batch of predictions.

    ``NSE = sum_{t,i} (target_ti - prediction_ti)^2 / sum_{t,i} (target_ti - mean_t target_ti)^2``

    where ``t`` indexes the ``T`` samples of the batch and ``i`` the output dimensions:
    the sum of squared errors divided by that of the model that predicts, for every
    output, its sample mean over the batch. 0 is perfect, 1 is "no better than the mean"
    (Lillicrap et al. 2016, Methods, "Normalized squared error").

    Parameters
    ----------
    target, prediction : array_like, shape (T, n_out) or (T,)
        Samples along the first axis.

    Raises
    ------
    ValueError
        If the shapes differ, or the target does not vary over the batch (the
        normaliser is zero).
    """
    target = np.asarray(target, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64)
    if target.shape != prediction.shape:
        raise ValueError(
            f"normalized_squared_error: shapes differ, {target.shape} vs {prediction.shape}"
        )
    if target.ndim == 0:
        raise ValueError("normalized_squared_error: need a batch of samples, got a scalar")
    baseline = np.sum((target - target.mean(axis=0)) ** 2)
    if baseline == 0.0:
        raise ValueError(
            "normalized_squared_error: target is constant over the batch, NSE undefined"
        )
    return float(np.sum((target - prediction) ** 2) / baseline)
