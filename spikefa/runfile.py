"""The run file (HDF5) and the checkpoint beside it.

Layout of ``RUN.h5`` (schema 1):

``/`` attributes
    ``schema_version``, ``spikefa_version``, ``numpy_version``, ``numba_version``,
    ``config`` (the full resolved config as JSON), ``seed``, ``model_name``,
    ``created``, ``command``, ``total_steps``, ``steps_done``, ``complete``
    (False until the very last write of a finished run).
``/test/``
    one row per test pass, 1-D resizable datasets: ``step`` (training steps done,
    int64), ``images`` (training images seen), ``epoch``, ``error`` (with the config's
    read-out), ``error_last``, ``error_sum`` (both read-outs from the same spikes),
    ``n_test``, ``wall_s`` (training wall time so far).
``/final/{h1,h2,...,out}/``
    ``W`` (effective forward weights into the layer, shape ``(n_pre, n_post)``), ``b``,
    ``B`` (effective feedback matrix into the layer, ``(n_l, n_src)``; hidden layers
    with feedback only), and the state ``V``, ``U`` at the end of training.

The file is opened for each write and closed straight after, so between writes it is
always a consistent, readable file; ``complete`` says whether the run finished.

``RUN.h5.ckpt`` holds everything needed to continue exactly (raw weights and decay
scales, learned feedback, state, the noise generator's state, the step); it is written
to a temporary file and renamed, so a run killed while checkpointing keeps the
previous checkpoint.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import h5py
import numba
import numpy as np

from . import __version__
from .config import Config, config_from_dict

SCHEMA_VERSION = 1
TEST_FIELDS = {
    "step": np.int64, "images": np.int64, "epoch": np.float64, "error": np.float64,
    "error_last": np.float64, "error_sum": np.float64, "n_test": np.int64, "wall_s": np.float64,
}


class RunFileError(OSError):
    """A run file cannot be written, or is not a spikefa run file."""


def checkpoint_path(path) -> Path:
    return Path(str(path) + ".ckpt")


def create_run_file(path, cfg: Config, *, total_steps: int, overwrite: bool = False) -> Path:
    """Create ``path`` with the run's metadata and empty test curve; ``complete`` = False."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise RunFileError(f"{path} exists; pass --resume to continue it or --overwrite to start again")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f.attrs.update(
                schema_version=SCHEMA_VERSION, spikefa_version=__version__,
                numpy_version=np.__version__, numba_version=numba.__version__,
                config=cfg.to_json(), seed=cfg.run.seed, model_name=cfg.name,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command=" ".join(sys.argv),
                total_steps=int(total_steps), steps_done=0, complete=False,
            )
            g = f.create_group("test")
            for name, dt in TEST_FIELDS.items():
                g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(256,))
    except OSError as exc:
        raise RunFileError(f"cannot write the run file {path}: {exc}") from None
    checkpoint_path(path).unlink(missing_ok=True)
    return path


def append_test(path, row: dict) -> None:
    with h5py.File(path, "a") as f:
        g = f["test"]
        n = g["step"].shape[0]
        for name in TEST_FIELDS:
            g[name].resize((n + 1,))
            g[name][n] = row[name]


def truncate_tests(path, n: int) -> None:
    """Drop test rows past ``n`` (written after the checkpoint a resumed run starts from)."""
    with h5py.File(path, "a") as f:
        for name in TEST_FIELDS:
            f["test"][name].resize((n,))


def set_attrs(path, **attrs) -> None:
    with h5py.File(path, "a") as f:
        f.attrs.update(attrs)


def write_final(path, net) -> None:
    """Effective weights, feedback matrices and end state, one group per layer."""
    with h5py.File(path, "a") as f:
        if "final" in f:
            del f["final"]
        g = f.create_group("final")
        for l in range(1, net.m + 1):
            gl = g.create_group(net.names[l])
            gl.create_dataset("W", data=net.weights(l), compression="gzip", compression_opts=1)
            gl.create_dataset("b", data=net.biases(l))
            sl = net.layer_slice(l)
            gl.create_dataset("V", data=net.state.psp[sl])
            gl.create_dataset("U", data=net.state.feedback_psp[sl])
            if l < net.m:
                B = net.feedback_matrix(l)
                if B is not None:
                    gl.create_dataset("B", data=B, compression="gzip", compression_opts=1)
                    gl.attrs["B_source"] = net.names[int(net.wiring.src[l - 1])]


def mark_complete(path, steps_done: int) -> None:
    """The last write of a finished run."""
    set_attrs(path, steps_done=int(steps_done), complete=True)


# ------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, net, *, rng, step: int, n_tests: int, wall_s: float) -> None:
    """Write ``path.ckpt`` atomically (temporary file, then rename)."""
    ck = checkpoint_path(path)
    tmp = Path(str(ck) + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs.update(config=net.config.to_json(), step=int(step), n_tests=int(n_tests), wall_s=float(wall_s),
                       rng_state=json.dumps(rng.bit_generator.state), spikefa_version=__version__)
        for l in range(net.m):
            f.create_dataset(f"W/{l}", data=net.W[l])
            f.create_dataset(f"b/{l}", data=net.b[l])
        f.create_dataset("scale", data=net.scale)
        for k, F in enumerate(net.wiring.F):
            if net.wiring.learns[k]:
                f.create_dataset(f"F/{k}", data=F)
        for name, arr in net.state.arrays().items():
            f.create_dataset(f"state/{name}", data=arr)
    os.replace(tmp, ck)


def checkpoint_config(path) -> Config:
    """The config a checkpoint was written with (to check a resume before loading it)."""
    ck = checkpoint_path(path)
    try:
        with h5py.File(ck, "r") as f:
            return config_from_dict(json.loads(f.attrs["config"]))
    except OSError as exc:
        raise RunFileError(f"cannot read the checkpoint {ck}: {exc}") from None


def load_checkpoint(path, net, rng) -> dict:
    """Restore ``net`` and ``rng`` in place from ``path.ckpt``; returns step, n_tests, wall_s."""
    ck = checkpoint_path(path)
    try:
        f = h5py.File(ck, "r")
    except OSError as exc:
        raise RunFileError(f"cannot read the checkpoint {ck}: {exc}") from None
    with f:
        for l in range(net.m):
            net.W[l][...] = f[f"W/{l}"][...]
            net.b[l][...] = f[f"b/{l}"][...]
        net.scale[...] = f["scale"][...]
        for k, F in enumerate(net.wiring.F):
            if net.wiring.learns[k]:
                F[...] = f[f"F/{k}"][...]
        for name, arr in net.state.arrays().items():
            arr[...] = f[f"state/{name}"][...]
        rng.bit_generator.state = json.loads(f.attrs["rng_state"])
        return dict(step=int(f.attrs["step"]), n_tests=int(f.attrs["n_tests"]), wall_s=float(f.attrs["wall_s"]),
                    config=config_from_dict(json.loads(f.attrs["config"])))


# ------------------------------------------------------------------------- reading
class Run:
    """Read-only view of a run file: metadata at once, arrays only when asked for."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            with h5py.File(self.path, "r") as f:
                if "schema_version" not in f.attrs:
                    raise RunFileError(f"{self.path} is not a spikefa run file (no schema_version)")
                self.attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        except OSError as exc:
            raise RunFileError(f"cannot read the run file {self.path}: {exc}") from None
        self.config = config_from_dict(json.loads(self.attrs["config"]))
        self.complete = bool(self.attrs.get("complete", False))

    def test_curve(self) -> dict:
        """The test passes as a dict of 1-D arrays (see TEST_FIELDS)."""
        with h5py.File(self.path, "r") as f:
            return {k: f["test"][k][...] for k in TEST_FIELDS}

    @property
    def test_error(self) -> float | None:
        curve = self.test_curve()
        return float(curve["error"][-1]) if curve["error"].size else None

    def final(self, layer: str, name: str) -> np.ndarray:
        """One final array, e.g. ``run.final('h1', 'W')``."""
        with h5py.File(self.path, "r") as f:
            if "final" not in f:
                raise RunFileError(f"{self.path} has no final weights (complete={self.complete})")
            return f["final"][layer][name][...]

    def __repr__(self):
        return f"Run({str(self.path)!r}, model={self.config.name!r}, complete={self.complete})"


def load(path) -> Run:
    """Open a saved run read-only: ``spikefa.load('run.h5')``."""
    return Run(path)
