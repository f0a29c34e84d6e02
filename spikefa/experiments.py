"""The paper's rate-based experiments (Lillicrap et al. 2016, Figs 2, 3a,b, 3d and 5a,c).

Each experiment reads its parameters from ``models/rate-<name>.toml``, trains the networks
of :mod:`spikefa.rate`, writes its figure (PNG and PDF) and a JSON of every number it
plotted into ``out_dir``, and returns the same numbers as a dict::

    from spikefa.experiments import run_experiment
    result = run_experiment("fig2", "results/rate")
    result["summary"]["final_nse"]          # {'shallow': ..., 'np': ..., 'bp': ..., 'fa': ...}

``quick=True`` runs the small version of the same experiment (seconds; used by the
tests). Plots read only the saved numbers, so a figure can be redrawn from its JSON with
:func:`plot_experiment`.

Readings of the paper's Methods for these figures, where it leaves a choice:

- Inputs of Figs 2 and 3d are ``x ~ N(0, I)``; the error is ``e = y* - y``; NSE is
  measured on a fixed held-out batch of inputs (:func:`spikefa.measures.normalized_squared_error`).
- Fig. 5's target is ``y*_k = x^T Q_k x`` (k = 1..20) with ``x ~ U[-2, 2]^20`` and
  ``Q_k`` entries ``~ U[-0.5, 0.5]``; the "W frozen" phases freeze the output layer's
  weights and biases, "W0 frozen" the hidden layer's.
- Fig. 3a uses squared error on one-hot targets with logistic outputs (the output
  modulator is ``e * y(1-y)``, the paper's "y'"), pixels scaled to [0, 1].
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter
from tqdm.auto import tqdm

from spikefa import rate
from spikefa.runfile import write_whole
from spikefa.measures import angle_deg, normalized_squared_error

log = logging.getLogger(__name__)

EXPERIMENTS = ("fig2", "fig3a", "fig3d", "fig5")

# Colours of the paper's figures.
COLORS = {
    "shallow": "0.7", "np": "0.35", "bp": "black", "fa": "tab:green",
    "sparse-fa": "tab:olive", "4-layer BP": "tab:purple", "4-layer FA": "tab:blue",
}
RULE_LABELS = {
    "shallow": "shallow", "np": "node perturbation (RL)", "bp": "backprop",
    "fa": "feedback alignment", "sparse-fa": "sparse FA (50% removed)",
}

# --- model files -----------------------------------------------------------------------
# Each schema lists every key of a model file with its type; a list holding one dict is an
# array of tables. Every key is required; [quick] may override any subset.

_SCHEMAS = {
    "fig2": {
        "network": {"sizes": list, "activation": str, "w_init": float,
                    "feedback_init": float, "bias_init": float, "learn_biases": bool},
        "task": {"target_init": float, "n_test": int, "task_seed": int},
        "train": {"rules": list, "steps": int, "record_every": int, "np_sigma": float,
                  "np_output": str, "angle_band": str, "angle_window": int,
                  "eta": {"shallow": float, "np": float, "bp": float, "fa": float}},
        "run": {"runs": int},
    },
    "fig3a": {
        "network": {"sizes": list, "activation": str, "w_init": float,
                    "feedback_init": float, "sparsity": float, "sparse_layers": str, "dtype": str},
        "data": {"dataset": str},
        "train": {"rules": list, "eta": float, "weight_decay": float, "batch_size": int,
                  "epochs": int, "eval_every": int, "probe_size": int, "fa_derivatives": str},
    },
    "fig3d": {
        "target": {"sizes": list, "w_init": float, "task_seed": int},
        "network": {"w_init": float, "feedback_init": float},
        "learner": [{"label": str, "sizes": list, "rule": str}],
        "train": {"eta": float, "steps": int, "record_every": int, "n_test": int, "fa_derivatives": str},
        "run": {"runs": int},
    },
    "fig5": {
        "network": {"sizes": list, "w_init": float, "bias_init": float,
                    "feedback_init": float},
        "task": {"input_range": float, "q_init": float, "n_test": int, "task_seed": int},
        "train": {"eta": float, "steps": int, "record_every": int, "tracked_units": int},
        "phases": {"eta": float, "steps": int, "record_every": int},
    },
}


def models_dir() -> Path:
    """Folder of the bundled model files (the repository's ``models/``)."""
    here = Path(__file__).resolve().parents[1] / "models"
    return here if here.is_dir() else Path(sys.prefix) / "share" / "spikefa" / "models"


def _check_name(name: str) -> None:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")


def _validate(table: dict, schema: dict, where: str, source, partial: bool = False) -> dict:
    """Check ``table`` against ``schema``; unknown or missing keys and wrong types raise
    ValueError naming the key (``train.eta.bp``)."""
    for key in table:
        if key not in schema:
            raise ValueError(f"{source}: unknown key {where}{key!r}; valid keys here: "
                             f"{', '.join(schema)}")
    for key, kind in schema.items():
        name = f"{where}{key}"
        if key not in table:
            if partial:
                continue
            raise ValueError(f"{source}: missing key {name!r}")
        value = table[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise ValueError(f"{source}: {name!r} must be a table")
            _validate(value, kind, name + ".", source, partial)
        elif isinstance(kind, list):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ValueError(f"{source}: {name!r} must be an array of tables [[{name}]]")
            for i, item in enumerate(value):
                _validate(item, kind[0], f"{name}[{i}].", source, partial=False)
        else:
            accepted = (int, float) if kind is float else kind  # TOML writes 1.0 as 1 too
            if (isinstance(value, bool) and kind is not bool) or not isinstance(value, accepted):
                raise ValueError(f"{source}: {name!r} must be of type {kind.__name__}, "
                                 f"got {value!r}")
    return table


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) else value
    return out


def load_experiment_config(name: str, quick: bool = False, path=None) -> dict:
    """Read and validate ``models/rate-<name>.toml`` (or ``path``); with ``quick`` apply
    its ``[quick]`` overrides. Returns a plain dict (the config recorded in the JSON)."""
    _check_name(name)
    path = Path(path) if path is not None else models_dir() / f"rate-{name}.toml"
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    quick_table = raw.pop("quick", {})
    schema = _SCHEMAS[name]
    _validate(raw, schema, "", path)
    _validate(quick_table, schema, "quick.", path, partial=True)
    cfg = _merge(raw, quick_table) if quick else raw
    for rule in cfg.get("train", {}).get("rules", []):
        rate.get_rule(rule)  # an unknown rule name fails here, listing the valid ones
    for learner in cfg.get("learner", []):
        rate.get_rule(learner["rule"])
    # named choices, in the file and in its [quick] table alike (a bad one failed after
    # minutes of training, or, under [quick], only with --quick)
    for where, table in (("", raw), ("quick.", quick_table)):
        for section, key, valid in (("network", "sparse_layers", rate.SPARSE_LAYERS),
                                    ("train", "fa_derivatives", rate.FA_DERIVATIVES)):
            value = table.get(section, {}).get(key, valid[0])
            if value not in valid:
                raise ValueError(f"{path}: {where}{section}.{key} = {value!r}: valid: {', '.join(valid)}")
    return cfg


def _rule(cfg, name: str):
    """Learning rule ``name`` with the options the experiment's config gives it."""
    derivatives = cfg["train"].get("fa_derivatives")
    options = {"derivatives": derivatives} if name in ("fa", "sparse-fa") and derivatives else {}
    return rate.get_rule(name, **options)


# --- running ---------------------------------------------------------------------------


def run_experiment(name: str, out_dir, quick: bool = False, seed: int = 0, data_dir=None,
                   progress: bool = True, config=None, resume: bool = False,
                   overwrite: bool = False) -> dict:
    """Run one of :data:`EXPERIMENTS`, write ``<name>.png``, ``<name>.pdf`` and
    ``<name>.json`` into ``out_dir``, and return the results.

    Parameters
    ----------
    name : str
        ``"fig2"``, ``"fig3a"``, ``"fig3d"`` or ``"fig5"``.
    out_dir : path
        Created if missing.
    quick : bool
        The small version (seconds) from the model file's ``[quick]`` table.
    seed : int
        Seeds the networks' initial weights, the order of examples and the noise. The
        target functions are drawn from the model file's ``task_seed`` and stay fixed.
    data_dir : path, optional
        MNIST folder for ``fig3a`` (see :func:`spikefa.data.load_dataset`).
    progress : bool
        Show tqdm progress bars.
    config : path, optional
        A model file to use instead of ``models/rate-<name>.toml``.
    resume : bool
        Continue the checkpoint a stopped run of this experiment left in ``out_dir``
        (``<name>.ckpt.npz``; only ``fig3a``, which runs for tens of minutes, keeps one:
        at the end of every epoch and of every rule). The seed, ``quick`` and the model
        file's values must be those of the stopped run; the result is the one an
        uninterrupted run gives.
    overwrite : bool
        Start again, deleting such a checkpoint. Without ``resume`` or ``overwrite`` a
        checkpoint in ``out_dir`` is refused rather than silently thrown away.

    Returns
    -------
    dict
        ``experiment``, ``quick``, ``seed``, ``config``, ``summary`` (the headline numbers),
        ``curves`` (everything plotted), ``seconds`` (of the work the result holds, summed
        over a resumed run's sessions up to each one's last checkpoint), ``resumes`` (only
        when resumed: how many times its work was carried over from a checkpoint; a
        session stopped before its first checkpoint added nothing and is not counted) and
        ``files`` (paths written).

    Raises
    ------
    spikefa.runfile.RunFileError
        Another run of ``name`` is writing into ``out_dir`` (its checkpoint and JSON).
    """
    _check_name(name)
    cfg = load_experiment_config(name, quick, config)
    if data_dir is not None and not (name == "fig3a" and cfg["data"]["dataset"] == "mnist"):
        log.warning("spikefa: note: the data folder %s is not used: experiment %s%s reads %s", data_dir, name,
                    " --quick" if quick else "",
                    "the bundled MNIST subset" if name == "fig3a" else "no data (its task is synthetic)")
    out_dir = Path(out_dir)
    if out_dir.is_file():
        raise ValueError(f"{out_dir} is a file: an experiment writes a folder (its figure and numbers); "
                         f"give a folder, such as {out_dir.with_suffix('')}-{name}")
    if resume and not out_dir.is_dir():  # refused below (nothing to resume), before a folder is made
        _checkpoint_to_continue(name, out_dir, quick, seed, cfg, resume, overwrite)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot make the folder {out_dir}: {exc.strerror or exc}"
                         + (" (a part of that path is a file)" if isinstance(exc, (FileExistsError, NotADirectoryError))
                            else "")) from None
    from spikefa.runfile import WriterLock

    # a second run of the same experiment in this folder (still running, or --resume/--overwrite of
    # a checkpoint that is still being written) is refused: the two would write the same files
    with WriterLock(out_dir / f"{name}.json"):
        return _run_in(name, out_dir, quick, seed, data_dir, progress, cfg, resume, overwrite, config)


def _run_in(name, out_dir, quick, seed, data_dir, progress, cfg, resume, overwrite, model_file=None):
    saved = _checkpoint_to_continue(name, out_dir, quick, seed, cfg, resume, overwrite)
    start, ckpt = time.perf_counter(), None
    if name == "fig3a":
        key = {"experiment": name, "quick": quick, "seed": seed, "config": _plain(cfg),
               # (for the resume command only; a resume is checked against the file's values)
               "model_file": None if model_file is None else str(Path(model_file).resolve())}
        ckpt = _Checkpoint(checkpoint_path(out_dir, name), key, saved, start)
        summary, curves = _run_fig3a(cfg, seed, data_dir, progress, ckpt)
    else:
        summary, curves = _RUNNERS[name](cfg, seed, progress)
    from spikefa import __version__

    seconds = time.perf_counter() - start + (ckpt.seconds0 if ckpt is not None else 0.0)
    result = {"experiment": name, "quick": quick, "seed": seed, "spikefa_version": __version__,
              "config": cfg, "summary": summary, "curves": curves, "seconds": round(seconds, 1)}
    if ckpt is not None and ckpt.resumes:
        result["resumes"] = ckpt.resumes
    fig = plot_experiment(result)
    files = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        # whole or not at all: a stop here leaves no truncated figure (nor one of an older run cut short)
        write_whole(path, lambda f, ext=ext: fig.savefig(f, format=ext, dpi=150))
        files.append(str(path))
    path = out_dir / f"{name}.json"
    write_whole(path, lambda f: f.write(_to_json(result).encode()))
    files.append(str(path))
    checkpoint_path(out_dir, name).unlink(missing_ok=True)  # its numbers are in the JSON now
    result["files"] = files
    return result


# --- checkpoints (fig3a, which runs for tens of minutes) -------------------------------
# A stopped fig3a keeps ``<name>.ckpt.npz`` in its folder: the curves of its finished rules,
# and of the rule it was in, that rule's weights and example-order generator after its last
# whole epoch. The other experiments run in a minute or two and keep none.

CHECKPOINTED = ("fig3a",)


def checkpoint_path(out_dir, name: str) -> Path:
    """Where a stopped run of experiment ``name`` keeps its checkpoint in ``out_dir``."""
    return Path(out_dir) / f"{name}.ckpt.npz"


def read_checkpoint(out_dir, name: str) -> dict | None:
    """The checkpoint a stopped run of ``name`` left in ``out_dir`` (``meta``: what it
    holds, ``arrays``: the weights of the rule it was in), or None when it left none."""
    path = checkpoint_path(out_dir, name)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"][()]))
            arrays = {k: f[k] for k in f.files if k != "meta"}
        missing = [k for k in ("experiment", "config", "done", "seconds", "resumes") if k not in meta]
        current = meta.get("current") if not missing else None
        if not missing:  # each finished rule's curves
            missing = sorted({f"done.{rule}.{k}" for rule, kept in meta["done"].items()
                              for k in ("examples", "test_error", "angle") if k not in kept})
        if current:  # the state of the rule it stopped in, and that rule's weights
            missing += [k for k in _CURRENT_KEYS if k not in current]
            n_layers = len(meta["config"]["network"]["sizes"]) - 1
            missing += [k for k in (f"{a}{i}" for a in "Wb" for i in range(n_layers)) if k not in arrays]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
        checkpoint_progress(meta)  # (what `spikefa info` and a stop message say of it)
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read the experiment checkpoint {path} ({type(exc).__name__}: {exc}); start "
                         f"the experiment again with --overwrite, which deletes it") from None
    return {"meta": meta, "arrays": arrays, "path": path}


_CURRENT_KEYS = ("rule", "epoch", "count", "next_eval", "order_rng", "examples", "test_error", "angle",
                 "n_train", "n_test")


def checkpoint_progress(meta: dict) -> str:
    """What a checkpoint holds, in words: ``bp done; fa after 7 of 20 epochs``."""
    parts = [f"{', '.join(meta['done'])} done"] if meta["done"] else []
    current = meta.get("current")
    if current:
        parts.append(f"{current['rule']} after {current['epoch']} of {meta['config']['train']['epochs']} epochs")
    return "; ".join(parts) or "no rule begun"


def resume_command(out_dir, name: str, meta: dict, data_dir=None) -> str:
    """The command that continues the checkpoint ``meta`` in ``out_dir``."""
    model = meta.get("model_file")  # a model file given instead of models/rate-NAME.toml
    words = ["spikefa", "experiment", name, "--out", str(out_dir)] + ["--model", model] * bool(model) \
        + ["--quick"] * bool(meta["quick"]) + ["--seed", str(meta["seed"])] * (meta["seed"] != 0) \
        + ["--data", str(data_dir)] * (data_dir is not None)
    return shlex.join(words + ["--resume"])


def _plain(value):
    """``value`` as JSON gives it back (what a checkpoint's key is compared with)."""
    return json.loads(json.dumps(value, default=_jsonable))


def _differences(old, new, where=""):
    """``(dotted key, old value, new value)`` of every value that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in dict.fromkeys([*old, *new])
                for d in _differences(old.get(k), new.get(k), f"{where}.{k}" if where else k)]
    return [] if old == new else [(where, old, new)]


def _checkpoint_to_continue(name, out_dir, quick, seed, cfg, resume, overwrite):
    """The checkpoint to resume (None to start afresh), after checking that the request
    and the folder agree."""
    path = checkpoint_path(out_dir, name)
    if resume and overwrite:
        raise ValueError("resume continues an experiment's checkpoint; overwrite deletes it: give one of them")
    if resume and name not in CHECKPOINTED:
        raise ValueError(f"experiment {name} keeps no checkpoint (it runs in a minute or two): run it again "
                         f"without --resume")
    if overwrite:
        path.unlink(missing_ok=True)
        return None
    saved = read_checkpoint(out_dir, name) if name in CHECKPOINTED else None
    asked = {"experiment": name, "quick": quick, "seed": seed, "config": _plain(cfg)}
    diffs = _differences({k: saved["meta"].get(k) for k in asked}, asked) if saved is not None else []
    if not resume:
        if saved is not None:
            own = (" and the stopped run's " + ", ".join(f"{k} = {old!r}" for k, old, _ in diffs)) if diffs else ""
            raise ValueError(f"{out_dir} holds the checkpoint of a stopped {name} ({checkpoint_progress(saved['meta'])}"
                             f"): continue it with --resume{own}, or start it again with --overwrite")
        return None
    if saved is None:
        finished = (Path(out_dir) / f"{name}.json").exists()
        raise ValueError(f"nothing to resume: {path} does not exist"
                         + (f" ({name}.json there is a finished run)" if finished else ""))
    meta = saved["meta"]
    if diffs:
        raise ValueError(f"{path} is the checkpoint of another run; a resume must ask for the same one: "
                         + "; ".join(f"{k} = {new!r} (the stopped run's: {old!r})" for k, old, new in diffs))
    log.warning("spikefa: note: continuing %s from its checkpoint (%s)", name, checkpoint_progress(meta))
    return saved


class _Checkpoint:
    """Writes the checkpoint of one run of an experiment (see :func:`read_checkpoint`)."""

    def __init__(self, path: Path, key: dict, saved: dict | None, start: float):
        self.path, self.key, self.start = path, key, start
        self.saved = saved["meta"] if saved else None  # (None: a run from the start)
        self.arrays = saved["arrays"] if saved else {}
        # the work kept before this session (its seconds) and how many times it was carried over
        self.seconds0 = self.saved["seconds"] if saved else 0.0
        self.resumes = self.saved["resumes"] + 1 if saved else 0
        self.done = dict(self.saved["done"]) if saved else {}

    def current(self, rule: str) -> dict | None:
        """What the stopped run kept of ``rule``, if it stopped inside it."""
        current = self.saved.get("current") if self.saved else None
        return current if current and current["rule"] == rule else None

    def save(self, current: dict | None = None, arrays: dict | None = None) -> None:
        meta = {**self.key, "seconds": self.seconds0 + time.perf_counter() - self.start,
                "resumes": self.resumes, "done": self.done, "current": current}
        payload = {"meta": np.array(json.dumps(meta, default=_jsonable)), **(arrays or {})}
        write_whole(self.path, lambda f: np.savez(f, **payload))


def _to_json(result: dict) -> str:
    """One line per top-level key: the summary stays readable, long curves stay compact
    (curves are written to 6 significant digits, the summary in full)."""
    lines = [f"{json.dumps(key)}: "
             f"{json.dumps(_rounded(value) if key == 'curves' else value, default=_jsonable)}"
             for key, value in result.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_rounded(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(f"{value:.6g}")
    return value


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _rngs(seed: int):
    """Independent streams for initial weights, examples and noise (fixed per seed)."""
    return [np.random.default_rng([seed, k]) for k in range(3)]


def _nse_per_run(target, prediction) -> np.ndarray:
    """NSE of each run of an ensemble prediction ``(runs, batch, n_out)``."""
    return np.array([normalized_squared_error(target, p) for p in prediction])


def _steps(n, progress, desc):
    return tqdm(range(n), desc=desc, disable=not progress, mininterval=0.5, leave=False)


def _run_fig2(cfg, seed, progress):
    net_cfg, task, train = cfg["network"], cfg["task"], cfg["train"]
    runs = cfg["run"]["runs"]
    _check_angle_band(train["angle_band"], train["angle_window"])  # (before minutes of training)
    task_rng = np.random.default_rng(task["task_seed"])
    n_in, n_out = net_cfg["sizes"][0], net_cfg["sizes"][-1]
    T = task_rng.uniform(-task["target_init"], task["target_init"], (n_out, n_in))
    x_test = task_rng.normal(size=(task["n_test"], n_in))
    y_test = x_test @ T.T
    record = train["record_every"]
    steps = np.arange(0, train["steps"] + 1, record)
    nse, angle = {}, None
    for rule_name in train["rules"]:
        init_rng, data_rng, noise_rng = _rngs(seed)  # the same weights and examples per rule
        net = rate.init_network(net_cfg["sizes"], net_cfg["activation"], init_rng,
                                net_cfg["w_init"], net_cfg["feedback_init"],
                                net_cfg["bias_init"], runs=runs)
        options = ({"sigma": train["np_sigma"], "output": train["np_output"]}
                   if rule_name == "np" else {})
        rule, eta = rate.get_rule(rule_name, **options), train["eta"][rule_name]
        curve = [_nse_per_run(y_test, rate.predict(net, x_test))]
        angles = []
        for step in _steps(train["steps"], progress, f"fig2 {rule_name}"):
            x = data_rng.normal(size=(1, n_in))
            y_star = x @ T.T
            if rule_name == "fa":
                # the e this step learns from, sent down through B (FA) and W^T (BP)
                angles.append(rate.modulator_angle(net, y_star - rate.predict(net, x)))
            rate.train_step(net, rule, x, y_star, eta, rng=noise_rng,
                            learn_biases=net_cfg["learn_biases"])
            if (step + 1) % record == 0:
                curve.append(_nse_per_run(y_test, rate.predict(net, x_test)))
        nse[rule_name] = np.array(curve).T  # (runs, records)
        if rule_name == "fa":
            angle = np.array(angles).T  # (runs, steps)
    summary = {"final_nse": {r: float(np.mean(c[:, -1])) for r, c in nse.items()},
               "final_nse_sd": {r: float(np.std(c[:, -1], ddof=1)) if runs > 1 else 0.0
                                for r, c in nse.items()},
               "runs": runs, "steps": train["steps"]}
    curves = {"steps": steps, "nse": {r: c for r, c in nse.items()}}
    if angle is not None:
        window = max(1, angle.shape[1] // 20)
        summary["fa_bp_angle_step1"] = float(np.mean(angle[:, 0]))
        summary["fa_bp_angle_first10"] = float(np.mean(angle[:, :10]))
        summary["fa_bp_angle_last5pct"] = float(np.mean(angle[:, -window:]))
        curves["angle"], curves["angle_sd"] = _angle_band(angle, train["angle_band"], train["angle_window"])
    return summary, curves


ANGLE_BANDS = ("window", "runs")


def _check_angle_band(band: str, window: int) -> None:
    if band not in ANGLE_BANDS:
        raise ValueError(f"train.angle_band = {band!r}: valid: {', '.join(ANGLE_BANDS)}")
    if window < 1:
        raise ValueError(f"train.angle_window = {window!r}: a number of examples, at least 1")


def _angle_band(angle, band: str, window: int):
    """Fig. 2b's line and s.d. (the band is +- 2 s.d.) from the angles ``(runs, steps)``.

    ``"window"`` (the paper's "two s.d.'s for a sliding window of 10 examples"): at each
    example, over the ``window`` examples up to it (fewer at the start), the line is the
    mean over runs and examples, and the s.d. is that of one run's angles in the window,
    averaged over runs (what one run's curve shows, as the paper draws). ``"runs"``: the
    mean and s.d. across runs at each example, no window.
    """
    _check_angle_band(band, window)
    if band == "runs":
        return angle.mean(axis=0), angle.std(axis=0)
    # trailing window sums from cumulative sums (the differences of sums over thousands of
    # steps leave a rounding error of about 1e-6 deg in the s.d., far below what is drawn)
    zero = np.zeros((angle.shape[0], 1))
    c1, c2 = (np.concatenate([zero, np.cumsum(v, axis=1)], axis=1) for v in (angle, angle * angle))
    end = np.arange(1, angle.shape[1] + 1)
    start = np.maximum(end - window, 0)
    n = end - start
    mean = (c1[:, end] - c1[:, start]) / n
    var = np.maximum((c2[:, end] - c2[:, start]) / n - mean * mean, 0.0)
    return mean.mean(axis=0), np.sqrt(var).mean(axis=0)


def _run_fig3d(cfg, seed, progress):
    target_cfg, net_cfg, train = cfg["target"], cfg["network"], cfg["train"]
    runs = cfg["run"]["runs"]
    task_rng = np.random.default_rng(target_cfg["task_seed"])
    depth = len(target_cfg["sizes"]) - 1
    target = rate.init_network(target_cfg["sizes"], ("tanh",) * (depth - 1) + ("linear",),
                               task_rng, target_cfg["w_init"], 0.0,
                               bias_scale=target_cfg["w_init"])
    n_in = target_cfg["sizes"][0]
    x_test = task_rng.normal(size=(train["n_test"], n_in))
    y_test = rate.predict(target, x_test)
    record = train["record_every"]
    steps = np.arange(0, train["steps"] + 1, record)
    nse = {}
    for learner in cfg["learner"]:
        init_rng, data_rng, _ = _rngs(seed)
        sizes = learner["sizes"]
        if sizes[0] != n_in or sizes[-1] != target_cfg["sizes"][-1]:
            raise ValueError(f"learner {learner['label']!r}: sizes {sizes} do not match "
                             f"the target's input/output {target_cfg['sizes']}")
        activations = ("tanh",) * (len(sizes) - 2) + ("linear",)
        net = rate.init_network(sizes, activations, init_rng, net_cfg["w_init"],
                                net_cfg["feedback_init"], net_cfg["w_init"], runs=runs)
        rule = _rule(cfg, learner["rule"])
        curve = [_nse_per_run(y_test, rate.predict(net, x_test))]
        for step in _steps(train["steps"], progress, f"fig3d {learner['label']}"):
            x = data_rng.normal(size=(1, n_in))
            rate.train_step(net, rule, x, rate.predict(target, x), train["eta"])
            if (step + 1) % record == 0:
                curve.append(_nse_per_run(y_test, rate.predict(net, x_test)))
        nse[learner["label"]] = np.array(curve).T
    final = {label: c[:, -1] for label, c in nse.items()}
    summary = {"final_nse": {k: float(v.mean()) for k, v in final.items()},
               "final_nse_sd": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0
                                for k, v in final.items()},
               "runs": runs, "steps": train["steps"]}
    for rule in ("BP", "FA"):
        three, four = final.get(f"3-layer {rule}"), final.get(f"4-layer {rule}")
        if three is not None and four is not None and len(three) > 1:
            summary[f"welch_t_3_vs_4_layer_{rule}"] = _welch_t(three, four)
    return summary, {"steps": steps, "nse": nse}


def _welch_t(a, b) -> float:
    """Welch's t statistic for mean(a) > mean(b) (no p-value: SciPy is not a dependency)."""
    return float((a.mean() - b.mean()) /
                 np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))


def _quadratic_task(task, sizes):
    rng = np.random.default_rng(task["task_seed"])
    n_in, n_out = sizes[0], sizes[-1]
    Q = rng.uniform(-task["q_init"], task["q_init"], (n_out, n_in, n_in))

    def target(x):
        return np.einsum("bi,kij,bj->bk", x, Q, x)  # y*_k = x^T Q_k x

    x_test = rng.uniform(-task["input_range"], task["input_range"], (task["n_test"], n_in))
    return target, x_test, target(x_test)


def _fig5_network(cfg, init_rng):
    net_cfg = cfg["network"]
    return rate.init_network(net_cfg["sizes"], ("tanh", "linear"), init_rng, net_cfg["w_init"],
                             net_cfg["feedback_init"], net_cfg["bias_init"])


def _unit_angles(net, units):
    """Angle between hidden unit j's outgoing forward weights (column j of W) and its
    incoming feedback weights (row j of B), for each tracked j (Fig. 5a, black lines)."""
    return [angle_deg(net.W[1][:, j], net.B[0][j, :]) for j in units]


def _run_fig5(cfg, seed, progress):
    task, train, phases = cfg["task"], cfg["train"], cfg["phases"]
    sizes = cfg["network"]["sizes"]
    target, x_test, y_test = _quadratic_task(task, sizes)
    fa = rate.get_rule("fa")
    lim, n_in = task["input_range"], sizes[0]

    # (a) continuous FA learning: W aligns with B^T
    init_rng, data_rng, _ = _rngs(seed)
    net = _fig5_network(cfg, init_rng)
    units = np.sort(init_rng.choice(sizes[1], size=train["tracked_units"], replace=False))
    record = train["record_every"]
    nse, angle, unit_angles = [], [], []

    def snapshot():
        nse.append(normalized_squared_error(y_test, rate.predict(net, x_test)))
        angle.append(rate.weight_angle(net))
        unit_angles.append(_unit_angles(net, units))

    snapshot()
    for step in _steps(train["steps"], progress, "fig5a fa"):
        x = data_rng.uniform(-lim, lim, (1, n_in))
        rate.train_step(net, fa, x, target(x), train["eta"])
        if (step + 1) % record == 0:
            snapshot()

    # (c) three phases from a fresh network: which weight layers learn. Control: phase 3
    # repeated, on the same examples, with B replaced by a fresh random matrix of the same
    # scale. If phase 3 works because W has aligned with *this* B^T (the paper's account),
    # the control must not learn.
    init_rng, data_rng, control_rng = _rngs(seed)
    net = _fig5_network(cfg, init_rng)
    plan = (("W frozen", (True, False)), ("W0 frozen", (False, True)),
            ("W frozen", (True, False)))
    precord = phases["record_every"]

    def evaluate(n):
        return normalized_squared_error(y_test, rate.predict(n, x_test)), rate.weight_angle(n)

    value, ang = evaluate(net)
    phase_nse, phase_angle = [value], [ang]
    control_nse, control = [], None
    for i, (label, learn) in enumerate(plan):
        if i == 2:
            control = net.copy()
            scale = cfg["network"]["feedback_init"]
            control.B = [control_rng.uniform(-scale, scale, m.shape) for m in net.B]
            control_nse.append(evaluate(control)[0])
        for step in _steps(phases["steps"], progress, f"fig5c phase {i + 1}"):
            x = data_rng.uniform(-lim, lim, (1, n_in))
            for n in (net, control) if control is not None else (net,):
                rate.train_step(n, fa, x, target(x), phases["eta"], learn=learn)
            if (step + 1) % precord == 0:
                value, ang = evaluate(net)
                phase_nse.append(value)
                phase_angle.append(ang)
                if control is not None:
                    control_nse.append(evaluate(control)[0])
    per_phase = phases["steps"] // precord
    ends = [phase_nse[i * per_phase] for i in range(4)]
    summary = {
        "final_nse": nse[-1], "angle_W_Bt_start": angle[0], "angle_W_Bt_end": angle[-1],
        "unit_angle_end_mean": float(np.mean(unit_angles[-1])),
        "phase_labels": [label for label, _ in plan],
        "phase_nse_start_end": [[ends[i], ends[i + 1]] for i in range(3)],
        "phase_angle_end": [phase_angle[(i + 1) * per_phase] for i in range(3)],
        "phase3_fresh_B_nse_start_end": [control_nse[0], control_nse[-1]],
    }
    curves = {"steps": np.arange(len(nse)) * record, "nse": nse, "angle": angle,
              "unit_angles": np.array(unit_angles).T, "units": units,
              "phase_steps": np.arange(len(phase_nse)) * precord, "phase_nse": phase_nse,
              "phase_angle": phase_angle, "phase_length": phases["steps"],
              "phase3_fresh_B_nse": control_nse}
    return summary, curves


def _net_arrays(net) -> dict:
    """A rate network's arrays by their checkpoint names (``W0``, ``b0``, ``B0``, ...)."""
    return {f"{name}{i}": a for name, arrays in (("W", net.W), ("b", net.b), ("B", net.B)) for i, a in enumerate(arrays)}


def _run_fig3a(cfg, seed, data_dir, progress, ckpt=None):
    from spikefa.data import load_dataset

    net_cfg, train = cfg["network"], cfg["train"]
    dataset = cfg["data"]["dataset"]
    dtype = np.dtype(net_cfg["dtype"])
    folder = data_dir if dataset == "mnist" else None  # the bundled subset takes no folder
    x_train, labels_train = load_dataset(dataset, "train", folder)
    x_test, labels_test = load_dataset(dataset, "test", folder)
    x_train = (x_train / 255.0).astype(dtype)
    x_test = (x_test / 255.0).astype(dtype)
    n_classes = net_cfg["sizes"][-1]
    y_train = np.eye(n_classes, dtype=dtype)[labels_train]
    n_train, batch = len(x_train), train["batch_size"]
    probe = slice(0, min(train["probe_size"], n_train))
    sizes = {"n_train": n_train, "n_test": len(x_test)}

    def test_error(net):
        guess = np.argmax(rate.predict(net, x_test), axis=1)
        return float(np.mean(guess != labels_test))

    fa_rule = _rule(cfg, "fa")

    def fa_bp_angle(net, y, target, **how):
        """delta_FA (what B carries: e for "local") vs delta_BP = W^T (e * f'(y)) for outputs y."""
        return rate.modulator_angle(net, rate.output_modulator(net, y, target), sent=fa_rule.sent(net, y, target),
                                    **how)

    def record_angle(net, rule_name):
        """The angle on the probe images, pooled; and the mean and s.d. of the angles of the
        examples trained since the last test."""
        angles[rule_name].append(fa_bp_angle(net, rate.predict(net, x_train[probe]), y_train[probe]))
        if len(angles[rule_name]) > 1:  # (the first is before any training)
            total, squares, n = sums
            whole = n > 0 and np.isfinite(total)  # (NaN: part of it was trained before it was recorded)
            mean = total / n if whole else None
            trained[rule_name].append(mean)
            trained_sd[rule_name].append(float(np.sqrt(max(squares - n * mean * mean, 0.0) / (n - 1)))
                                         if whole and n > 1 else None)
            sums[:] = [0.0, 0.0, 0]

    def add_trained_angles(net, W_before, y, target):
        """Each example's delta_FA vs delta_BP as the step just taken computed them
        (with W before the step), summed until the next test (Fig. 3b's time average)."""
        a = fa_bp_angle(net, y, target, per_example=True, W=W_before)
        a = a[np.isfinite(a)]  # (an example whose delta_FA or delta_BP is zero has no angle)
        sums[0] += float(a.sum())
        sums[1] += float(a @ a)
        sums[2] += int(a.size)

    errors, angles, seen, trained, trained_sd = {}, {}, {}, {}, {}
    for rule_name in train["rules"]:
        has_b = rule_name in ("fa", "sparse-fa")
        if ckpt is not None and rule_name in ckpt.done:  # finished before the stop
            kept = ckpt.done[rule_name]
            errors[rule_name], seen[rule_name], angles[rule_name] = kept["test_error"], kept["examples"], kept["angle"]
            trained[rule_name], trained_sd[rule_name], _ = _kept_trained_angles(kept, has_b)
            count = seen[rule_name][-1]
            continue
        init_rng, order_rng, _ = _rngs(seed)  # same initial W, B and example order per rule
        sparsity = net_cfg["sparsity"] if rule_name == "sparse-fa" else 0.0
        net = rate.init_network(net_cfg["sizes"], net_cfg["activation"], init_rng,
                                net_cfg["w_init"], net_cfg["feedback_init"],
                                sparsity=sparsity, sparse_layers=net_cfg["sparse_layers"], dtype=dtype)
        rule = _rule(cfg, rule_name)
        n_batches = -(-n_train // batch)
        kept = ckpt.current(rule_name) if ckpt is not None else None
        if kept is None:
            errors[rule_name], seen[rule_name], angles[rule_name] = [test_error(net)], [0], []
            trained[rule_name], trained_sd[rule_name], sums = [], [], [0.0, 0.0, 0]
            if has_b:
                record_angle(net, rule_name)
            first_epoch, count, next_eval = 0, 0, train["eval_every"]
        else:
            if {k: kept[k] for k in sizes} != sizes:
                raise ValueError(f"{ckpt.path} was run on {kept['n_train']:,} training and {kept['n_test']:,} test "
                                 f"images, this data has {n_train:,} and {len(x_test):,}: give its data folder")
            for key, a in _net_arrays(net).items():
                a[...] = ckpt.arrays[key]
            order_rng.bit_generator.state = kept["order_rng"]
            errors[rule_name], seen[rule_name], angles[rule_name] = kept["test_error"], kept["examples"], kept["angle"]
            trained[rule_name], trained_sd[rule_name], sums = _kept_trained_angles(kept, has_b)
            first_epoch, count, next_eval = kept["epoch"], kept["count"], kept["next_eval"]
        # (closed on an error too: its line is cleared, not left under the error message)
        with tqdm(total=train["epochs"] * n_batches, initial=first_epoch * n_batches, desc=f"fig3a {rule_name}",
                  disable=not progress, mininterval=0.5, leave=False) as bar:
            for epoch in range(first_epoch, train["epochs"]):
                order = order_rng.permutation(n_train)
                for start in range(0, n_train, batch):
                    idx = order[start:start + batch]
                    W_before = net.W[1].copy() if has_b else None
                    y = rate.train_step(net, rule, x_train[idx], y_train[idx], train["eta"],
                                        weight_decay=train["weight_decay"])
                    if has_b:
                        add_trained_angles(net, W_before, y, y_train[idx])
                    count += len(idx)
                    bar.update()
                    if count >= next_eval:
                        next_eval += train["eval_every"]
                        errors[rule_name].append(test_error(net))
                        seen[rule_name].append(count)
                        if has_b:
                            record_angle(net, rule_name)
                        bar.set_postfix(test_error=f"{errors[rule_name][-1]:.2%}")
                if ckpt is not None and epoch + 1 < train["epochs"]:
                    ckpt.save({"rule": rule_name, "epoch": epoch + 1, "count": count, "next_eval": next_eval,
                               "order_rng": order_rng.bit_generator.state, "examples": seen[rule_name],
                               "test_error": errors[rule_name], "angle": angles[rule_name],
                               "angle_trained": trained[rule_name], "angle_trained_sd": trained_sd[rule_name],
                               "angle_sums": sums, **sizes},
                              _net_arrays(net))
            if seen[rule_name][-1] != count:
                errors[rule_name].append(test_error(net))
                seen[rule_name].append(count)
                if has_b:
                    record_angle(net, rule_name)
        if net.W_mask is not None:  # removed synapses must still be exactly zero
            assert all(m is None or not np.any(w[~m]) for w, m in zip(net.W, net.W_mask))
        if ckpt is not None:
            ckpt.done[rule_name] = {"examples": seen[rule_name], "test_error": errors[rule_name],
                                    "angle": angles[rule_name], "angle_trained": trained[rule_name],
                                    "angle_trained_sd": trained_sd[rule_name]}
            ckpt.save()
    summary = {"final_test_error": {r: e[-1] for r, e in errors.items()},
               "epochs": train["epochs"], "examples_seen": count, "dataset": dataset,
               "n_train": n_train, "n_test": len(x_test),
               "final_fa_bp_angle": {r: a[-1] for r, a in angles.items() if a},
               # the last test interval's mean and s.d. over the examples trained in it
               "final_fa_bp_angle_trained": {r: a[-1] for r, a in trained.items() if a},
               "final_fa_bp_angle_trained_sd": {r: a[-1] for r, a in trained_sd.items() if a}}
    return summary, {"examples": seen, "test_error": errors,
                     "angle": {r: a for r, a in angles.items() if a},
                     "angle_trained": {r: a for r, a in trained.items() if a},
                     "angle_trained_sd": {r: a for r, a in trained_sd.items() if a}}


def _kept_trained_angles(kept: dict, has_b: bool):
    """A checkpointed rule's trained-example angles (their means and s.d.'s per test
    interval, and the sums of the interval it stopped in). A checkpoint written before
    these were recorded kept none: the intervals it had finished get None (a gap), and so
    does the one it stopped in unless it stopped at a test."""
    gap = [None] * (len(kept["examples"]) - 1) if has_b else []
    at_a_test = kept.get("count", 0) == kept["examples"][-1]
    return (list(kept.get("angle_trained", gap)), list(kept.get("angle_trained_sd", gap)),
            list(kept.get("angle_sums", [0.0, 0.0, 0] if at_a_test else [np.nan, np.nan, 0])))


_RUNNERS = {"fig2": _run_fig2, "fig3d": _run_fig3d, "fig5": _run_fig5}


# --- plotting (reads only the saved numbers) -------------------------------------------


def _axes(ax):
    # a Figure of its own, outside pyplot: no display needed, the user's backend untouched
    return Figure().add_subplot() if ax is None else ax


def plot_learning_curves(x, curves: dict, ax=None, ylabel="NSE", colors=None, labels=None,
                         band="sd"):
    """Mean over runs (line) and a band of each curve.

    ``curves`` maps a name to an array ``(runs, len(x))`` or ``(len(x),)``. ``band`` is
    ``"sd"`` (mean +- 1 s.d.) or ``"quantiles"`` (10th to 90th percentile across runs,
    which stays positive on a log axis).
    """
    ax = _axes(ax)
    colors = colors or COLORS
    for name, values in curves.items():
        values = np.atleast_2d(np.asarray(values, dtype=float))
        mean = values.mean(axis=0)
        color = colors.get(name)
        label = (labels or {}).get(name, RULE_LABELS.get(name, name))
        ax.plot(x, mean, color=color, label=label)
        if values.shape[0] > 1:
            if band == "sd":
                low, high = mean - values.std(axis=0), mean + values.std(axis=0)
            else:
                low, high = np.percentile(values, [10, 90], axis=0)
            ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("examples")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize="small")
    return ax


def plot_angle(x, angle, sd=None, ax=None, color="tab:green", label=None,
               ylabel="angle (deg)", n_sd=2):
    """An angle over training with an optional +- ``n_sd`` s.d. band; 90 deg marked.
    None (or NaN) in ``angle`` or ``sd`` leaves a gap."""
    ax = _axes(ax)
    x, angle = np.asarray(x), np.asarray(angle, dtype=float)
    ax.plot(x, angle, color=color, label=label)
    if sd is not None:
        sd = np.asarray(sd, dtype=float)
        ax.fill_between(x, angle - n_sd * sd, angle + n_sd * sd, color=color, alpha=0.2,
                        linewidth=0)
    ax.axhline(90.0, color="0.6", linestyle=":", linewidth=1)
    shown = angle + n_sd * sd if sd is not None else angle
    # at least 0-100 deg, and no angle drawn on these axes cut off (one is at most 180 deg)
    top = max([100.0, ax.get_ylim()[1], *(shown[np.isfinite(shown)] + 5)])
    ax.set_ylim(0, min(top, 185.0))
    ax.set_xlabel("examples")
    ax.set_ylabel(ylabel)
    return ax


def plot_phases(result: dict, ax=None):
    """Fig. 5c: NSE through the three learning phases, phase boundaries marked."""
    ax = _axes(ax)
    curves = result["curves"]
    x, length = np.asarray(curves["phase_steps"]), curves["phase_length"]
    ax.plot(x, curves["phase_nse"], color="tab:green", label="FA")
    if curves.get("phase3_fresh_B_nse"):
        control = curves["phase3_fresh_B_nse"]
        ax.plot(x[-len(control):], control, color="tab:red", linestyle="--",
                label="phase 3 with a fresh random B")
        ax.legend(frameon=False, fontsize="x-small", loc="center left")
    for i, label in enumerate(result["summary"]["phase_labels"]):
        ax.axvspan(i * length, (i + 1) * length, color=("0.93", "white")[i % 2], zorder=0)
        ax.text((i + 0.5) * length, 0.98, f"{i + 1}: {label}", transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize="x-small")
    ax.set_xlabel("examples")
    ax.set_ylabel("NSE")
    return ax


def plot_experiment(result: dict):
    """The figure of one experiment from its results dict (or loaded JSON)."""
    name, curves, summary = result["experiment"], result["curves"], result["summary"]
    if name == "fig2":
        fig = Figure(figsize=(9, 3.6))
        a, b = fig.subplots(1, 2)
        plot_learning_curves(curves["steps"], curves["nse"], ax=a)
        a.set_title("a  linear 30-20-10 network", loc="left")
        if "angle" in curves:
            x = np.arange(1, len(curves["angle"]) + 1)
            plot_angle(x, curves["angle"], curves.get("angle_sd"), ax=b,
                       ylabel=r"$\delta_{FA}\ \angle\ \delta_{BP}$ (deg)")
        b.set_title("b  angle of B e to W$^T$ e", loc="left")
    elif name == "fig3d":
        fig = Figure(figsize=(5.5, 3.8))
        ax = fig.subplots()
        colors = {"3-layer shallow": COLORS["shallow"], "3-layer BP": COLORS["bp"],
                  "3-layer FA": COLORS["fa"], "4-layer BP": COLORS["4-layer BP"],
                  "4-layer FA": COLORS["4-layer FA"]}
        plot_learning_curves(curves["steps"], curves["nse"], ax=ax, colors=colors,
                             band="quantiles")
        ax.set_yscale("log")
        ax.set_title(f"d  tanh target network (mean, 10-90% of {summary['runs']} runs)",
                     loc="left")
    elif name == "fig3a":
        fig = Figure(figsize=(9, 3.6))
        a, b = fig.subplots(1, 2)
        n_train = summary["n_train"]
        for rule, err in curves["test_error"].items():
            a.plot(np.asarray(curves["examples"][rule]) / n_train, 100 * np.asarray(err),
                   color=COLORS.get(rule), label=RULE_LABELS.get(rule, rule))
        a.set_xlabel(f"epochs ({n_train} examples)")
        a.set_ylabel(f"test error (%, {summary['n_test']} images)")
        a.set_yscale("log")
        # percent as plain numbers (2, 5, 10, 20, ...), not 2 x 10^0 or 6 x 10^1
        a.yaxis.set_major_formatter(LogFormatter())
        a.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        a.legend(frameon=False, fontsize="small")
        a.set_title("a  784-1000-10 logistic network", loc="left")
        # the paper's Fig. 3b: each trained example's angle, averaged over the examples
        # between two tests (drawn at the middle of that stretch), +- 1 s.d. of them; a rule
        # run before these were recorded: the probe images' pooled angle at each test
        drawn = set()
        for rule, pooled in curves["angle"].items():
            x = np.asarray(curves["examples"][rule], dtype=float) / n_train
            by_example = curves.get("angle_trained", {}).get(rule)
            if by_example and any(a is not None for a in by_example):
                x, ang, sd = (x[1:] + x[:-1]) / 2, by_example, curves["angle_trained_sd"][rule]
                drawn.add("examples trained, mean $\\pm$ 1 s.d.")
            else:
                ang, sd = pooled, None
                drawn.add("probe images, pooled")
            plot_angle(x, ang, sd, n_sd=1, ax=b, color=COLORS.get(rule), label=RULE_LABELS.get(rule, rule),
                       ylabel=r"$\delta_{FA}\ \angle\ \delta_{BP}$ (deg)")
        b.set_xlabel("epochs")
        b.legend(frameon=False, fontsize="small")
        sent = "B e" if result["config"]["train"].get("fa_derivatives") == "local" else "B $\\delta$"
        b.set_title(f"b  angle of {sent} to W$^T\\delta$ (hidden layer;\n    {'; '.join(sorted(drawn))})", loc="left",
                    fontsize="medium")
    elif name == "fig5":
        fig = Figure(figsize=(13, 3.6))
        a, b, c = fig.subplots(1, 3)
        for ua in np.atleast_2d(curves["unit_angles"]):
            a.plot(curves["steps"], ua, color="black", linewidth=0.6, alpha=0.6)
        plot_angle(curves["steps"], curves["angle"], ax=a, color="tab:blue",
                   label="W vs B$^T$", ylabel="angle (deg)")
        a.plot([], [], color="black", linewidth=0.6, label="single hidden units")
        a.legend(frameon=False, fontsize="small")
        a.set_title("a  W aligns with B$^T$", loc="left")
        b.plot(curves["steps"], curves["nse"], color="tab:green")
        b.set_xlabel("examples")
        b.set_ylabel("NSE")
        b.set_title("   FA on the quadratic task", loc="left")
        plot_phases(result, ax=c)
        c.set_title("c  learning in three phases", loc="left")
    else:
        _check_name(name)
    fig.tight_layout()
    return fig
