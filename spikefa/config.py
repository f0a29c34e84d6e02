"""Model files (TOML) -> frozen, validated configuration.

A model file has four tables, ``[model]``, ``[train]``, ``[test]`` and ``[run]``; every
choice that docs/model.md leaves open is a named key here, and the resolved configuration
(every key, defaults filled in) is written into each run's output file.

Unknown tables or keys and bad values raise :class:`ConfigError`, whose message names
the key (``model.phi_d``) and the allowed values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PHI_D_CHOICES = ("tanh", "2sigma-1", "sigma-0.5")
READOUT_CHOICES = ("last", "sum", "prob")
DTYPE_CHOICES = ("float32", "float64")
FEEDBACK_STORAGE_CHOICES = ("float", "int8")
# run.forward_pass: sum every active row of W each step, or only the rows of units whose
# spike changed onto the last step's sums (float rounding only; kernels.py)
FORWARD_PASS_CHOICES = ("full", "incremental")
# variants whose feedback matrices change during a run and so need the working dtype
MOVING_FEEDBACK = ("transport", "learned")
DATASET_CHOICES = ("mnist", "mnist-subset")
FEEDBACK_CHOICES = ("fa", "transport", "dfa", "shallow", "sparse-fa", "learned")


class ConfigError(ValueError):
    """A model file or option has an unknown key or a bad value."""


@dataclass(frozen=True)
class ModelParams:
    """Network and neuron parameters (docs/model.md, "Populations" and "One time step")."""

    layers: tuple = (784, 1500, 1500, 1500, 1000)
    n_classes: int = 10
    tau: float = 0.9
    p_max: float = 0.95
    phi_d: str = "tanh"
    feedback: str = "fa"
    sparsity: float = 0.5
    eta: float = 1e-3
    gamma: float = 1e-8
    eta_feedback: float = 1e-4
    np_baseline_rate: float = 0.05
    np_variance_floor: float = 0.05
    w_init: float = 0.05
    feedback_init: float = 0.1
    bias_init: float = 0.0
    dtype: str = "float32"
    feedback_storage: str = "float"


@dataclass(frozen=True)
class TrainParams:
    """Training protocol: continuous presentation, no resets (docs/model.md, "Protocol")."""

    dataset: str = "mnist"
    epochs: float = 1.0
    steps_per_image: int = 5
    n_train: int = 0
    test_every: int = 10000
    shuffle: bool = True


@dataclass(frozen=True)
class TestParams:
    """Test protocol: plasticity off, ``steps_per_image`` steps per image, no reset."""

    __test__ = False  # not a pytest class

    steps_per_image: int = 5
    readout: str = "last"
    n_test: int = 0


@dataclass(frozen=True)
class RunParams:
    """How the run is executed. ``seed`` decides the run; ``deferred_steps`` and
    ``forward_pass`` change only float rounding (weight updates are folded into the
    forward pass exactly and written into W every that many steps; ``"incremental"`` sums
    the forward drive from the last step's by the rows of the units whose spike changed);
    the others do not change the result at all."""

    seed: int = 1
    backend: str = "numba"
    block_steps: int = 500
    checkpoint_minutes: float = 10.0
    deferred_steps: int = 8
    forward_pass: str = "full"


@dataclass(frozen=True)
class RecordParams:
    """What a run records besides its test curve (:mod:`spikefa.record`, docs/file-format.md).

    The defaults record nothing heavy: firing rates and alignment angles of every layer
    every 1000 steps. ``probes`` name populations, layers and neurons to record, e.g.
    ``"spikes layers=h1,h2,h3 random=50"`` or ``"psp,modulator layers=h1 neurons=0,7"``
    (``"fig4"`` expands to the probes of the paper's Fig. 4); ``windows`` limit them to
    parts of training, e.g. ``["0:200", "50%:200", "end:200"]`` (empty: the whole run).
    """

    measure_every: int = 1000
    probes: tuple = ()
    windows: tuple = ()
    test: bool = False
    test_steps: int = 0
    spike_format: str = "packed"
    chunk_rows: int = 0
    flush_seconds: float = 30.0


@dataclass(frozen=True)
class Config:
    """The complete, validated configuration of one run."""

    name: str = "custom"
    description: str = ""
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    test: TestParams = field(default_factory=TestParams)
    run: RunParams = field(default_factory=RunParams)
    record: RecordParams = field(default_factory=RecordParams)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"]["layers"] = list(self.model.layers)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def flat(self) -> dict:
        """``{"name": .., "model.feedback": .., ...}``: every key, dotted."""
        return flat_keys(self.to_dict())

    def replace(self, **sections) -> "Config":
        """Return a copy with keys changed, e.g. ``cfg.replace(train={"epochs": 2})``."""
        d = self.to_dict()
        for section, values in sections.items():
            if section in ("name", "description"):
                d[section] = values
                continue
            if section not in _SECTIONS:
                raise ConfigError(f"unknown table [{section}]; valid tables: {', '.join(_SECTIONS)}")
            if not isinstance(values, dict):  # model=3 was "'int' object is not iterable"; a list of pairs passed
                raise ConfigError(f"{section}={values!r}: the keys of [{section}] to change, as a dict, "
                                  f"e.g. replace({section}={{{next(iter(d[section]))!r}: ...}})")
            d[section].update(values)
        return config_from_dict(d)

    @property
    def n_layers(self) -> int:
        """Number of non-input layers ``m``."""
        return len(self.model.layers) - 1


_SECTIONS = {"model": ModelParams, "train": TrainParams, "test": TestParams, "run": RunParams,
             "record": RecordParams}


# keys that only some feedback variants read
_VARIANT_KEYS = {"sparsity": ("sparse-fa",), "eta_feedback": ("learned",), "np_baseline_rate": ("learned",),
                 "np_variance_floor": ("learned",)}


def unused_settings(cfg: "Config") -> list[str]:
    """The ``model`` keys set away from their defaults that ``cfg``'s feedback variant does
    not read (``model.sparsity = 0.8`` with ``fa``), each as a sentence for a note."""
    default = ModelParams()
    return [f"model.{key} = {getattr(cfg.model, key)!r} has no effect with feedback {cfg.model.feedback!r} "
            f"(it is read by {' and '.join(users)} only)"
            for key, users in _VARIANT_KEYS.items()
            if cfg.model.feedback not in users and getattr(cfg.model, key) != getattr(default, key)]


def layer_names(m: int) -> list[str]:
    """``['in', 'h1', ..., 'h{m-1}', 'out']`` for a network of ``m`` non-input layers: the
    names of the run file's groups, the plots' labels and every API's ``layer`` argument."""
    return ["in"] + [f"h{l}" for l in range(1, m)] + ["out"]


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key} = {value!r} is not allowed: {allowed}")


def flat_keys(d: dict) -> dict:
    """A config's dict of tables (``Config.to_dict``, or part of it) with dotted keys."""
    out = {}
    for section, value in d.items():
        if isinstance(value, dict):
            out.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            out[section] = value
    return out


def is_number(value) -> bool:
    """A real number, bool excluded: Python's int and float and NumPy's scalars
    (``np.int64(3)`` from ``np.arange``, ``np.float32(0.01)``), which a sweep written
    in a notebook passes as often as Python's own."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # (NumPy's bool_ is not Real)


def is_integer(value) -> bool:
    """An integer, bool excluded: Python's int and NumPy's integer scalars."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(key, value, *, lo=None, hi=None, lo_open=False, integer=False):
    if not is_number(value):
        _fail(key, value, "expected a number")
    if not math.isfinite(value):
        _fail(key, value, "expected a finite number")
    if integer and not isinstance(value, int) and not float(value).is_integer():
        _fail(key, value, "expected an integer")
    if lo is not None and (value <= lo if lo_open else value < lo):
        _fail(key, value, f"must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and value > hi:
        _fail(key, value, f"must be <= {hi}")
    return int(value) if integer else float(value)


def _choice(key, value, choices):
    if value not in choices:
        _fail(key, value, "one of " + ", ".join(repr(c) for c in choices))
    return value


def _validate(cfg: Config) -> Config:
    m, tr, te, ru = cfg.model, cfg.train, cfg.test, cfg.run
    layers = m.layers
    if type(layers).__name__ == "ndarray" and layers.ndim == 1:  # np.array([784, 300, 10]); NumPy not imported here
        layers = layers.tolist()
    if not isinstance(layers, (list, tuple)) or len(layers) < 3:
        _fail("model.layers", layers, "a list of at least three layer sizes (input, one or more hidden, output)")
    layers = tuple(_number(f"model.layers[{i}]", n, lo=1, integer=True) for i, n in enumerate(layers))
    n_classes = _number("model.n_classes", m.n_classes, lo=2, integer=True)
    if layers[-1] % n_classes:
        _fail("model.layers[-1]", layers[-1], f"the output layer must be a multiple of model.n_classes = {n_classes}")
    model = ModelParams(
        layers=layers,
        n_classes=n_classes,
        tau=_number("model.tau", m.tau, lo=0, hi=1, lo_open=True),
        p_max=_number("model.p_max", m.p_max, lo=0, hi=1),
        phi_d=_choice("model.phi_d", m.phi_d, PHI_D_CHOICES),
        feedback=_choice("model.feedback", m.feedback, FEEDBACK_CHOICES),
        sparsity=_number("model.sparsity", m.sparsity, lo=0, hi=1),
        eta=_number("model.eta", m.eta, lo=0),
        gamma=_number("model.gamma", m.gamma, lo=0),
        eta_feedback=_number("model.eta_feedback", m.eta_feedback, lo=0),
        np_baseline_rate=_number("model.np_baseline_rate", m.np_baseline_rate, lo=0, hi=1, lo_open=True),
        np_variance_floor=_number("model.np_variance_floor", m.np_variance_floor, lo=0, hi=0.25, lo_open=True),
        w_init=_number("model.w_init", m.w_init, lo=0),
        feedback_init=_number("model.feedback_init", m.feedback_init, lo=0),
        bias_init=_number("model.bias_init", m.bias_init),
        dtype=_choice("model.dtype", m.dtype, DTYPE_CHOICES),
        feedback_storage=_choice("model.feedback_storage", m.feedback_storage, FEEDBACK_STORAGE_CHOICES),
    )
    if model.feedback_storage == "int8" and model.feedback in MOVING_FEEDBACK:
        _fail("model.feedback_storage", model.feedback_storage,
              f"'float' for model.feedback = {model.feedback!r}, whose feedback weights change (int8 is for fixed feedback)")
    if model.eta * model.gamma >= 1:
        raise ConfigError(f"model.eta * model.gamma = {model.eta * model.gamma:g} is not allowed (model.eta = "
                          f"{model.eta:g}, model.gamma = {model.gamma:g}): must be < 1, since every step "
                          "multiplies the weights by the decay factor 1 - eta * gamma")
    if model.sparsity >= 1 and model.feedback == "sparse-fa":
        _fail("model.sparsity", model.sparsity, "must be < 1 for sparse-fa (1 removes every synapse)")
    train = TrainParams(
        dataset=_choice("train.dataset", tr.dataset, DATASET_CHOICES),
        epochs=_number("train.epochs", tr.epochs, lo=0),
        steps_per_image=_number("train.steps_per_image", tr.steps_per_image, lo=1, integer=True),
        n_train=_number("train.n_train", tr.n_train, lo=0, integer=True),
        test_every=_number("train.test_every", tr.test_every, lo=0, integer=True),
        shuffle=bool(tr.shuffle) if isinstance(tr.shuffle, bool) else _fail("train.shuffle", tr.shuffle, "true or false"),
    )
    test = TestParams(
        steps_per_image=_number("test.steps_per_image", te.steps_per_image, lo=1, integer=True),
        readout=_choice("test.readout", te.readout, READOUT_CHOICES),
        n_test=_number("test.n_test", te.n_test, lo=0, integer=True),
    )
    run = RunParams(
        seed=_number("run.seed", ru.seed, lo=0, hi=2**63 - 1, integer=True),
        backend=_choice("run.backend", ru.backend, ("numba", "numpy")),
        block_steps=_number("run.block_steps", ru.block_steps, lo=1, integer=True),
        checkpoint_minutes=_number("run.checkpoint_minutes", ru.checkpoint_minutes, lo=0, lo_open=True),
        deferred_steps=_number("run.deferred_steps", ru.deferred_steps, lo=1, hi=64, integer=True),
        forward_pass=_choice("run.forward_pass", ru.forward_pass, FORWARD_PASS_CHOICES),
    )
    if not isinstance(cfg.name, str):
        _fail("name", cfg.name, "a string")
    from .record import validate_record  # here, not at the top: record imports this module

    record = validate_record(cfg.record, layers)
    return Config(name=cfg.name, description=str(cfg.description), model=model, train=train, test=test, run=run,
                  record=record)


def config_from_dict(d: dict, *, check: bool = True) -> Config:
    """Validate a nested dict (as read from TOML or a run file) into a :class:`Config`.

    With ``check=False`` only its layout is checked (its tables and keys), not its values:
    how a run file written under an earlier, looser check is read."""
    if not isinstance(d, dict):
        raise ConfigError(f"a model must be a table of tables, got {type(d).__name__}")
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in ("name", "description"):
            kwargs[key] = value
            continue
        if key not in _SECTIONS:
            raise ConfigError(
                f"unknown table or key {key!r}; valid: name, description, " + ", ".join(f"[{s}]" for s in _SECTIONS)
            )
        cls = _SECTIONS[key]
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table, got {value!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for k in value:
            if k not in names:
                raise ConfigError(f"unknown key {key}.{k}; valid keys of [{key}]: {', '.join(names)}")
        kwargs[key] = cls(**value)
    return _validate(Config(**kwargs)) if check else Config(**kwargs)


def models_dir() -> Path:
    """Folder of the bundled model files (the repository's ``models/``)."""
    here = Path(__file__).resolve().parents[1] / "models"
    if here.is_dir():
        return here
    return Path(sys.prefix) / "share" / "spikefa" / "models"


def available_models() -> list[str]:
    return sorted(p.stem for p in models_dir().glob("*.toml") if not p.stem.startswith("rate-"))


def load_config(model: str | os.PathLike | Config) -> Config:
    """Read a model file by path or by bundled name (``small``, ``lillicrap2016-fig4``)."""
    if isinstance(model, Config):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(f"model = {model!r}: give a bundled model's name ({', '.join(available_models())}), "
                          "a path to a .toml file, or a Config (a dict of tables: config_from_dict)")
    path = Path(model)
    if not path.suffix and not path.exists():
        path = models_dir() / f"{model}.toml"
    if not path.is_file():
        raise ConfigError(
            f"model file {str(model)!r} not found; give a path to a .toml file or one of: "
            + ", ".join(available_models())
        )
    try:
        with open(path, "rb") as fh:
            d = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes UTF-8 itself and lets this through
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    d.setdefault("name", path.stem)
    try:
        return config_from_dict(d)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
