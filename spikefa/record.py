"""Recording: what a run records (probes, windows, measures) and where it goes (a sink).

Data flow, one arrow per class::

    Network.run -> block buffers (T, N) -> Recorder.on_block (selects) -> H5Sink (fixed-size
    buffers) -> chunked, compressed, resizable HDF5 datasets -> runfile.Run (reads back)

What to record is the ``[record]`` table of the model file (:class:`spikefa.config.RecordParams`)
or ``spikefa train --record ...``:

``probes``
    One string per probe, ``KINDS [layers=L,...] [neurons=all|i,j,a:b] [random=N] [every=K]``.
    ``KINDS`` is a comma-separated subset of ``spikes``, ``psp`` (``V``), ``feedback_psp``
    (``U``) and ``modulator`` (``m``, ``delta``: ``phi_d(U) sigma'(V)``). Layers are names
    (``in``, ``h1`` ... ``out``) or ``hidden`` / ``all`` (every non-input layer, the default);
    ``in`` has spikes only. ``neurons`` are indices within the layer; ``random=N`` draws N
    of them (all if the layer is smaller) with the run's seed, as the first N of one seeded
    permutation per layer, so the unit traced with ``random=1`` is among the 50 of a
    ``random=50`` raster. ``every=K`` keeps the steps ``s`` with ``s % K == 0``. The probe
    ``fig4`` expands to the probes of the paper's Fig. 4 (:data:`PRESETS`).
``windows``
    ``START:LENGTH`` with START a step, a percentage of the training steps (``50%``) or
    ``end`` (the last LENGTH steps); empty: the whole run. Probes record only inside them.
``measure_every``
    Every K training steps, the firing rate of every unit over the last K steps and the
    alignment angles of every hidden layer (see :meth:`Recorder.measure`).
``test``, ``test_steps``
    Also record the probes during test passes (the first ``test_steps`` of each; 0: all):
    spikes and PSPs ``V``; not the modulator or ``U``, which a test pass does not compute.

Time stamps. A recorded spike or trace value carries the index ``s`` (0-based) of the time
step in which the kernel computed it; ``s`` lies in ``[0, total_steps)``, and window
``START:LENGTH`` covers ``START <= s < START + LENGTH``. Rates and angles carry the number
of training steps done when they were sampled, as the test curve does (``/test/step``);
after step ``s`` that number is ``s + 1``.

Memory does not grow with the run: every stream owns one buffer of ``chunk_rows`` rows,
written out as one HDF5 chunk when full, at checkpoints, and at least every
``flush_seconds`` (also during a test pass). The file layout is documented in ``docs/file-format.md``.
"""

from __future__ import annotations

import json
import math
import re
import time
from contextlib import suppress
from dataclasses import dataclass

import numpy as np

from .config import layer_names

KINDS = ("spikes", "psp", "feedback_psp", "modulator")
TRACE_KINDS = KINDS[1:]
ALIASES = {"V": "psp", "U": "feedback_psp", "m": "modulator", "delta": "modulator"}
# Not recorded in test passes: with plasticity off the feedback sweep is skipped too (it
# never changes forward activity), so U would only repeat its value at the pass's start.
TRAIN_ONLY = ("modulator", "feedback_psp")
SPIKE_FORMATS = ("packed", "events")
PRESETS = {
    # Lillicrap et al. 2016, Fig. 4: rasters of 50 random units of each hidden layer and of
    # every output unit, and one forward neuron's PSP and modulatory signal
    "fig4": ("spikes layers=hidden random=50", "spikes layers=out", "psp,modulator layers=hidden random=1"),
}
# after which phase of the step (kernels.py docstring) each value is sampled
SAMPLED_AFTER = {
    "spikes": "phase 2 (forward sweep; phase 1 for the input layer)",
    "psp": "phase 2 (forward sweep)",
    "feedback_psp": "phase 4 (feedback sweep; phase 3 for the error neurons)",
    "modulator": "phase 5 (plasticity): the m = phi_d(U) sigma'(V) of the weight update; "
                 "0 in layers that do not learn",
}
TARGET_CHUNK_BYTES = 1 << 20
MAX_CHUNK_ROWS = 1 << 16
MAX_CHUNK_BYTES = (1 << 32) - 1  # HDF5's limit on the size of one chunk


# ------------------------------------------------------------------------------ parsing
@dataclass(frozen=True)
class Probe:
    """One parsed probe: populations, layers, neurons, sampling interval."""

    kinds: tuple
    layers: tuple
    neurons: tuple | None = None  # explicit indices within the layer; None: all or random
    random: int = 0
    every: int = 1

    def text(self) -> str:
        """The canonical string (what the run file stores)."""
        parts = [",".join(self.kinds), "layers=" + ",".join(self.layers)]
        if self.neurons is not None:
            parts.append("neurons=" + ",".join(map(str, self.neurons)))
        elif self.random:
            parts.append(f"random={self.random}")
        else:
            parts.append("neurons=all")
        if self.every != 1:
            parts.append(f"every={self.every}")
        return " ".join(parts)


def _int(text, what):
    if not re.fullmatch(r"[+-]?\d+", text.strip()):
        raise ValueError(f"{what} must be an integer, got {text!r}")
    return int(text)


def parse_probe(text: str, layers) -> Probe:
    """Parse one probe string for a network of layer sizes ``layers`` (input first).

    Raises
    ------
    ValueError
        With a message that says what is wrong and what is allowed.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a probe must be a non-empty string such as 'spikes layers=h1 random=50'")
    names = layer_names(len(layers) - 1)
    tokens = text.split()
    kinds = []
    for k in tokens[0].split(","):
        k = ALIASES.get(k, k)
        if k not in KINDS:
            raise ValueError(f"unknown population {k!r}; valid: {', '.join(KINDS)} "
                             f"(aliases {', '.join(f'{a}={b}' for a, b in ALIASES.items())})")
        if k not in kinds:
            kinds.append(k)
    opts = {}
    for tok in tokens[1:]:
        key, eq, value = tok.partition("=")
        if not eq or key not in ("layers", "neurons", "random", "every"):
            raise ValueError(f"cannot read {tok!r}; options are layers=, neurons=, random=, every=")
        if key in opts:
            raise ValueError(f"{key}= given twice")
        opts[key] = value
    layer_list = []
    for name in opts.get("layers", "all").split(","):
        group = {"all": names[1:], "hidden": names[1:-1]}.get(name, [name])
        for g in group:
            if g not in names:
                raise ValueError(f"unknown layer {g!r}; valid: {', '.join(names)}, hidden, all")
            if g not in layer_list:
                layer_list.append(g)
    layer_list.sort(key=names.index)
    if "in" in layer_list and set(kinds) - {"spikes"}:
        raise ValueError("the input layer 'in' has spikes only (no PSP, feedback or modulator)")
    if "neurons" in opts and "random" in opts:
        raise ValueError("give neurons= or random=, not both")
    neurons, n_random = None, 0
    if opts.get("neurons", "all") != "all":
        idx = []
        for part in opts["neurons"].split(","):
            if ":" in part:
                a, _, b = part.partition(":")
                idx.extend(range(_int(a, "neurons= range start"), _int(b, "neurons= range stop")))
            else:
                idx.append(_int(part, "neurons="))
        if not idx:
            raise ValueError("neurons= selects no neuron")
        neurons = tuple(sorted(set(idx)))
        for layer in layer_list:
            n = layers[names.index(layer)]
            if neurons[0] < 0 or neurons[-1] >= n:
                raise ValueError(f"neurons= must lie in 0..{n - 1} for layer {layer} ({n} units)")
    if "random" in opts:
        n_random = _int(opts["random"], "random=")
        if n_random < 1:
            raise ValueError("random= must be >= 1")
    every = _int(opts.get("every", "1"), "every=")
    if every < 1:
        raise ValueError("every= must be >= 1")
    return Probe(kinds=tuple(k for k in KINDS if k in kinds), layers=tuple(layer_list), neurons=neurons,
                 random=n_random, every=every)


@dataclass(frozen=True)
class Window:
    """``START:LENGTH`` with START a step, a percentage of the run, or ``end``."""

    start: str
    length: int

    @classmethod
    def parse(cls, text: str) -> "Window":
        if not isinstance(text, str) or text.count(":") != 1:
            raise ValueError(f"a window is 'START:LENGTH' (START a step, 'P%' or 'end'), got {text!r}")
        start, _, length = (p.strip() for p in text.partition(":"))
        n = _int(length, "the window length")
        if n < 1:
            raise ValueError(f"the window length must be >= 1, got {n}")
        if start != "end":
            if start.endswith("%"):
                try:
                    p = float(start[:-1])
                except ValueError:
                    raise ValueError(f"cannot read the percentage {start!r}") from None
                if not 0 <= p <= 100:
                    raise ValueError(f"a window start in percent must lie in 0..100, got {start}")
            elif _int(start, "the window start") < 0:
                raise ValueError(f"the window start must be >= 0, got {start}")
        return cls(start, n)

    def text(self) -> str:
        return f"{self.start}:{self.length}"

    def resolve(self, total_steps: int | None) -> tuple[int, int]:
        """``(start, stop)`` in steps, clipped to the run."""
        if self.start == "end" or self.start.endswith("%"):
            if total_steps is None:
                raise ValueError(f"window {self.text()!r} needs the run's length (total_steps)")
            a = total_steps - self.length if self.start == "end" else int(round(float(self.start[:-1]) / 100 * total_steps))
        else:
            a = int(self.start)
        a = max(a, 0)
        b = a + self.length
        if total_steps is not None:
            a, b = min(a, total_steps), min(b, total_steps)
        return a, b


def resolve_windows(texts, total_steps: int | None) -> np.ndarray:
    """The windows ``texts`` of a run of ``total_steps`` steps as ``(start, stop)`` rows in
    time order (window 0 the earliest, however they were listed). A window that starts at
    or after the run's end would record nothing: an error naming it."""
    from .config import ConfigError

    rows = np.array([Window.parse(w).resolve(total_steps) for w in texts], dtype=np.int64).reshape(-1, 2)
    for w, (a, b) in zip(texts, rows):
        if a >= b:
            raise ConfigError(f"record.windows: the window {w!r} starts at or after the run's end "
                              f"({total_steps:,} steps), so it would record nothing")
    return rows[np.argsort(rows[:, 0], kind="stable")]


def keep_begun_windows(old, new, step: int) -> np.ndarray:
    """The windows of a run resumed at ``step``: those of its file (``old``) that began
    before ``step`` stay where they were recorded, and of ``new`` (resolved for the resumed
    run's length) only those that begin at or after ``step``. The same length gives the
    same windows; a longer one (``--epochs``) moves a window given in ``%`` or ``end``, and
    its data recorded before the resume stays a window of the run instead of dropping out
    of :attr:`~spikefa.runfile.Run.windows`."""
    old = np.asarray(old, dtype=np.int64).reshape(-1, 2)
    new = np.asarray(new, dtype=np.int64).reshape(-1, 2)
    rows = np.concatenate([old[old[:, 0] < step], new[new[:, 0] >= step]])
    return rows[np.argsort(rows[:, 0], kind="stable")]


def validate_record(rp, layers):
    """Check a :class:`~spikefa.config.RecordParams` and put probes and windows in canonical form.

    ``fig4`` expands to its probes. Errors name the key (``record.probes[1]``).
    """
    from .config import ConfigError, RecordParams, is_number

    def fail(key, value, why):
        raise ConfigError(f"record.{key} = {value!r} is not allowed: {why}")

    def integer(key, value, lo):
        if (not is_number(value) or not math.isfinite(value)
                or float(value) != int(value)):
            fail(key, value, "expected an integer")
        if value < lo:
            fail(key, value, f"must be >= {lo}")
        return int(value)

    probes_in = rp.probes
    if isinstance(probes_in, str) or not isinstance(probes_in, (list, tuple)):
        fail("probes", probes_in, "a list of probe strings such as ['spikes layers=h1 random=50']")
    expanded = []
    for i, p in enumerate(probes_in):
        for q in PRESETS.get(p, (p,)) if isinstance(p, str) else (p,):
            expanded.append((i, q))
    probes, seen = [], {}
    for i, text in expanded:
        try:
            probe = parse_probe(text, layers)
        except ValueError as exc:
            fail(f"probes[{i}]", text, str(exc))
        for layer in probe.layers:
            for kind in probe.kinds:
                if (layer, kind) in seen:
                    fail(f"probes[{i}]", text, f"{kind} of {layer} is already recorded by probes[{seen[layer, kind]}]")
                seen[layer, kind] = i
        probes.append(probe.text())
    windows_in = rp.windows
    if isinstance(windows_in, str) or not isinstance(windows_in, (list, tuple)):
        fail("windows", windows_in, "a list of windows such as ['0:200', '50%:200', 'end:200']")
    windows = []
    for i, w in enumerate(windows_in):
        try:
            windows.append(Window.parse(w).text())
        except ValueError as exc:
            fail(f"windows[{i}]", w, str(exc))
    if not isinstance(rp.test, bool):
        fail("test", rp.test, "true or false")
    if rp.spike_format not in SPIKE_FORMATS:
        fail("spike_format", rp.spike_format, "one of " + ", ".join(map(repr, SPIKE_FORMATS)))
    fs = rp.flush_seconds
    if not is_number(fs) or not math.isfinite(fs) or fs <= 0:
        fail("flush_seconds", fs, "a number > 0")
    return RecordParams(
        measure_every=integer("measure_every", rp.measure_every, 0), probes=tuple(probes),
        windows=tuple(windows), test=rp.test, test_steps=integer("test_steps", rp.test_steps, 0),
        spike_format=rp.spike_format, chunk_rows=integer("chunk_rows", rp.chunk_rows, 0), flush_seconds=float(fs),
    )


# ------------------------------------------------------------------------------ the sink
class _Series:
    """Datasets that share their first axis (rows), fed through one fixed-size buffer."""

    def __init__(self, group, fields: dict, rows: int, compression: dict):
        self.group = group
        self.dsets = {}
        for name, (dtype, shape) in fields.items():
            if name in group:
                ds = group[name]
                if ds.dtype != np.dtype(dtype) or ds.shape[1:] != tuple(shape):
                    raise ValueError(f"{ds.name} holds {ds.dtype} rows of shape {ds.shape[1:]}, "
                                     f"expected {np.dtype(dtype)} of shape {tuple(shape)}")
            else:
                ds = group.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                          chunks=(rows, *shape), **compression)
            self.dsets[name] = ds
        self.rows = rows
        self.buf = {name: np.zeros((rows, *shape), dtype) for name, (dtype, shape) in fields.items()}
        self.fill = 0

    def append(self, cols: dict) -> None:
        n = len(next(iter(cols.values())))
        i = 0
        while i < n:
            k = min(n - i, self.rows - self.fill)
            for name, b in self.buf.items():
                b[self.fill:self.fill + k] = cols[name][i:i + k]
            self.fill += k
            i += k
            if self.fill == self.rows:
                self.flush()

    def rows_held(self) -> int:
        """Rows that every column holds (a write cut off between columns leaves one longer)."""
        return min(ds.shape[0] for ds in self.dsets.values())

    def flush(self) -> None:
        if not self.fill:
            return
        n0 = self.rows_held()
        try:
            for name, ds in self.dsets.items():
                ds.resize(n0 + self.fill, axis=0)
                ds[n0:] = self.buf[name][:self.fill]
        except BaseException:
            # a write that failed (a full disk) after some columns grew: every column back to
            # the rows they all hold, the buffer kept, so that a retry (the checkpoint of a
            # stopped run flushes again) writes the same rows once, and no column is left
            # longer than the others with unwritten rows (a step column of zeros)
            for ds in self.dsets.values():
                with suppress(Exception):
                    if ds.shape[0] != n0:
                        ds.resize(n0, axis=0)
            raise
        self.fill = 0

    def truncate(self, n: int) -> None:
        self.flush()
        for ds in self.dsets.values():
            ds.resize(min(n, ds.shape[0]), axis=0)


class H5Sink:
    """Where recordings go: an open HDF5 file (or group), one :class:`_Series` per path.

    Parameters
    ----------
    h5 : h5py.File or h5py.Group
    chunk_rows : int
        Rows per buffer and per HDF5 chunk; 0 picks about 1 MiB per chunk of the widest
        dataset (at most 65,536 rows).
    compression : str
        ``gzip`` (readable everywhere; level 4 with the byte shuffle filter for numbers).

    Notes
    -----
    Memory is ``sum over streams of chunk_rows * row bytes`` and does not depend on how
    long the run is. Open the file with ``rdcc_nbytes=0`` (as :class:`~spikefa.runfile.RunWriter`
    does): whole chunks are written once and never read back, and HDF5's chunk cache would
    otherwise keep up to 8 MiB per dataset (HDF5 2.0's default).
    """

    def __init__(self, h5, *, chunk_rows: int = 0, compression: str = "gzip"):
        self.h5 = h5
        self.chunk_rows = int(chunk_rows)
        self.compression = dict(compression=compression, compression_opts=4) if compression == "gzip" else {}
        self.series: dict[str, _Series] = {}

    def declare(self, path: str, fields: dict, attrs: dict | None = None) -> None:
        """Create the datasets of ``path`` (or check the existing ones) and set its attributes."""
        group = self.h5.require_group(path)
        rows = _chunk_rows(path, fields, self.chunk_rows)
        shuffled = dict(self.compression)
        if shuffled:
            shuffled["shuffle"] = True
        _check_attrs(group, attrs)
        self.series[path] = _Series(group, fields, rows, shuffled)
        group.attrs.update(attrs or {})

    def append(self, path: str, **cols) -> None:
        self.series[path].append(cols)

    def flush(self) -> None:
        for s in self.series.values():
            s.flush()


def bisect_dataset(ds, value: int, side: str = "left", lo: int = 0, hi: int | None = None) -> int:
    """``np.searchsorted`` on a sorted 1-D dataset, reading about log2(n) elements
    (and the chunks that hold them), never the whole column."""
    hi = ds.shape[0] if hi is None else hi
    while lo < hi:
        mid = (lo + hi) // 2
        v = ds[mid]
        if v < value or (side == "right" and v == value):
            lo = mid + 1
        else:
            hi = mid
    return lo


def _chunk_rows(path: str, fields: dict, rows: int) -> int:
    """Rows per chunk of ``path``: ``rows`` (``record.chunk_rows``), refused past HDF5's
    limit per chunk, or with 0 about 1 MiB per chunk of the widest field."""
    widest = max(np.dtype(dt).itemsize * max(1, int(np.prod(shape))) for dt, shape in fields.values())
    if not rows:
        rows = 1 << int(math.log2(max(1, TARGET_CHUNK_BYTES // widest)))
        return max(16, min(MAX_CHUNK_ROWS, rows))
    if rows * widest > MAX_CHUNK_BYTES:
        from .config import ConfigError

        raise ConfigError(f"record.chunk_rows = {rows} is not allowed: a chunk (and buffer) of {path} would "
                          f"hold {rows * widest:,} bytes, over HDF5's limit of {MAX_CHUNK_BYTES:,} per chunk "
                          f"(at most {MAX_CHUNK_BYTES // widest:,} rows here; 0 picks about 1 MiB per chunk)")
    return rows


def _check_attrs(group, attrs) -> None:
    """A recorded group's attributes must match what the probes would record now."""
    for key, value in (attrs or {}).items():
        if key in group.attrs and not _same(group.attrs[key], value):
            raise ValueError(f"{group.name} was recorded with {key} = {_show(group.attrs[key])}, "
                             f"now {_show(value)}; a resumed run must record the same [record] probes")


class _CheckSink:
    """A sink that only compares the groups already in a file (opened read-only) with what
    the probes would declare: a resume checks its probes before it changes the file."""

    def __init__(self, h5, chunk_rows: int = 0):
        self.h5 = h5
        self.chunk_rows = int(chunk_rows)

    def declare(self, path: str, fields: dict, attrs: dict | None = None) -> None:
        _chunk_rows(path, fields, self.chunk_rows)  # a resume may change record.chunk_rows
        group = self.h5.get(path)
        if group is not None:
            _check_attrs(group, attrs)


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all(a == b))


def _show(v):
    v = np.asarray(v)
    return v.tolist() if v.size <= 8 else f"array of {v.size}"


# ------------------------------------------------------------------------------ recorder
@dataclass
class Channel:
    """One recorded stream: a population (kind) of one layer, some of its neurons."""

    layer: str
    index: int  # layer number (0: input)
    kind: str
    neurons: np.ndarray  # int64, sorted indices within the layer
    flat: np.ndarray  # int64, indices into the flat state
    every: int
    cols: np.ndarray | None = None  # columns of the block's trace buffers (traces only)


def select_neurons(probe: Probe, l: int, n: int, seed: int) -> np.ndarray:
    """The neurons of layer ``l`` (``n`` units) that ``probe`` records, sorted."""
    if probe.neurons is not None:
        return np.asarray(probe.neurons, dtype=np.int64)
    if probe.random:
        from .network import SEED_RECORD, rng_for

        order = rng_for(seed, SEED_RECORD, l).permutation(n)
        return np.sort(order[:min(probe.random, n)]).astype(np.int64)
    return np.arange(n, dtype=np.int64)


class Recorder:
    """Records a run into its HDF5 file, block by block, with memory that does not grow.

    Parameters
    ----------
    cfg : Config
        Its ``record`` table says what to record; its layers, seed and dtype say how.
    total_steps : int, optional
        Length of the training run (needed by windows given in percent or ``end``).

    Notes
    -----
    The life of a recorder: :meth:`attach` to an open, writable file (creates or checks
    the datasets; on resume drops what was recorded after the checkpoint), then
    :meth:`on_block` after every block of training with ``rec_idx=recorder.rec_idx`` passed
    to :meth:`Network.run`; :meth:`test_hook` gives a callback for :func:`~spikefa.train.evaluate`;
    :meth:`flush` before a checkpoint, whose ``extra`` is :meth:`state`; :meth:`close`.
    """

    def __init__(self, cfg, *, total_steps: int | None = None):
        self.cfg = cfg
        rp = cfg.record
        self.params = rp
        self.sizes = np.asarray(cfg.model.layers, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.names = layer_names(len(self.sizes) - 1)
        self.total_steps = total_steps
        self.dtype = np.dtype(cfg.model.dtype)
        self.windows = resolve_windows(rp.windows, total_steps) if len(rp.windows) else np.array(
            [[0, total_steps if total_steps is not None else np.iinfo(np.int64).max]], dtype=np.int64)
        self.channels: list[Channel] = []
        rec: dict[int, int] = {}
        for text in rp.probes:
            probe = parse_probe(text, cfg.model.layers)
            for layer in probe.layers:
                l = self.names.index(layer)
                neurons = select_neurons(probe, l, int(self.sizes[l]), cfg.run.seed)
                for kind in probe.kinds:
                    ch = Channel(layer, l, kind, neurons, self.offsets[l] + neurons, probe.every)
                    if kind != "spikes":
                        ch.cols = np.array([rec.setdefault(int(q), len(rec)) for q in ch.flat], dtype=np.int64)
                    self.channels.append(ch)
        self.rec_idx = np.array(list(rec), dtype=np.int64)
        self.measure_every = rp.measure_every
        self.sink: H5Sink | None = None
        self.step = 0
        self._rate_counts = np.zeros(int(self.sizes.sum()), np.int64)
        self._rate_span = 0
        self._test_clock = 0
        self._pass_start = None  # where the test pass going now began (None between passes)
        self._last_flush = time.monotonic()

    # -------------------------------------------------------------------- layout
    def _phases(self):
        return ("train", "test") if self.params.test else ("train",)

    def _declare(self, sink: H5Sink) -> None:
        """Declare every series to ``sink`` (an :class:`H5Sink`, or a :class:`_CheckSink`
        that only compares them with the file's)."""
        rp = self.params
        if self.channels:
            for phase in self._phases():
                for ch in self.channels:
                    if phase == "test" and ch.kind in TRAIN_ONLY:
                        continue  # a test pass runs neither plasticity nor the feedback sweep
                    attrs = dict(layer=ch.layer, kind=ch.kind, neurons=ch.neurons.astype(np.int32), every=ch.every,
                                 layer_size=int(self.sizes[ch.index]), sampled_after=SAMPLED_AFTER[ch.kind])
                    if ch.kind == "spikes":
                        attrs["format"] = rp.spike_format
                        if rp.spike_format == "packed":
                            fields = {"step": (np.int64, ()), "bits": (np.uint8, ((ch.neurons.size + 7) // 8,))}
                        else:
                            fields = {"step": (np.int64, ()), "index": (np.int32, ())}
                    else:
                        fields = {"step": (np.int64, ()), "values": (self.dtype, (ch.neurons.size,))}
                    sink.declare(f"record/{phase}/{ch.layer}/{ch.kind}", fields, attrs)
                sink.declare(f"record/{phase}/stimulus", {"step": (np.int64, ()), "label": (np.int16, ()),
                                                          "image": (np.int32, ())})
            if self.params.test:
                sink.declare("record/test/passes", {"train_step": (np.int64, ()), "start": (np.int64, ())})
        if self.measure_every:
            fields = {"step": (np.int64, ()), "span": (np.int64, ())}
            fields.update({name: (np.float32, (int(n),)) for name, n in zip(self.names, self.sizes)})
            sink.declare("rates", fields, dict(every=self.measure_every))
            fields = {"step": (np.int64, ())}
            for name in self.names[1:-1]:
                fields[f"weight/{name}"] = (np.float64, ())
                fields[f"modulator/{name}"] = (np.float64, ())
            sink.declare("angles", fields, dict(every=self.measure_every))
            fields = {"step": (np.int64, ())}
            for name in self.names[1:]:
                for what in SATURATION_FIELDS:
                    fields[f"{what}/{name}"] = (np.float64, ())
            sink.declare("saturation", fields, dict(every=self.measure_every))

    def check(self, h5) -> None:
        """Refuse (RunFileError, as :meth:`attach` does) probes that differ from those
        already recorded in ``h5`` (a run file open for reading), without changing it: what
        a resume checks first."""
        from .runfile import RunFileError

        try:
            self._declare(_CheckSink(h5, self.params.chunk_rows))
        except ValueError as exc:
            raise RunFileError(str(exc)) from None

    def attach(self, h5, net, step: int = 0, *, sink: H5Sink | None = None) -> None:
        """Create (or, on resume, check and cut back) the datasets in the writable file ``h5``.

        On resume (``step > 0``) everything recorded at or after the checkpoint's step is
        dropped, so nothing is recorded twice; call :meth:`load_state` first.
        """
        self.sink = sink or H5Sink(h5, chunk_rows=self.params.chunk_rows)
        if step > 0 and len(self.params.windows) and "record" in h5 and "windows" in h5["record"].attrs:
            self.windows = keep_begun_windows(h5["record"].attrs["windows"][...], self.windows, step)
        root = h5.require_group("record")
        rp = self.params
        root.attrs["probes"] = json.dumps(list(rp.probes))
        root.attrs["windows"] = self.windows if len(self.windows) else np.zeros((0, 2), np.int64)
        root.attrs["spike_format"] = rp.spike_format
        root.attrs["test_steps"] = rp.test_steps
        try:
            self._declare(self.sink)
        except ValueError as exc:
            from .runfile import RunFileError

            raise RunFileError(str(exc)) from None
        self.step = int(step)
        for path, s in self.sink.series.items():
            s.flush()
            # only the rows that every column holds: a write cut off between columns (a full
            # disk, a killed run) can leave one longer, its unwritten rows zeros, which are
            # not sorted and would take the search past the rows recorded
            n = s.rows_held()
            if path == "record/test/passes":
                keep = bisect_dataset(s.dsets["start"], self._test_clock, hi=n)
            elif path.startswith("record/test"):
                keep = bisect_dataset(s.dsets["step"], self._test_clock, hi=n)
            elif path.startswith("record/"):
                keep = bisect_dataset(s.dsets["step"], self.step, hi=n)  # step indices < step
            else:
                keep = bisect_dataset(s.dsets["step"], self.step, side="right", hi=n)  # steps done <= step
            s.truncate(keep)
        if self.measure_every and net is not None:
            if not self.sink.series["angles"].dsets["step"].shape[0]:
                self._angles(net, self.step)
            # (a run file from before the saturation measures, resumed: its series starts at
            # the next sample, on the angles' grid)
            if not self.sink.series["saturation"].dsets["step"].shape[0] and self.step % self.measure_every == 0:
                self._saturation(net, self.step)
        self.flush()

    # -------------------------------------------------------------------- blocks
    def next_stop(self, step: int) -> int:
        """The next step count at which a block should end, so angles are sampled exactly."""
        if not self.measure_every:
            return np.iinfo(np.int64).max
        return (step // self.measure_every + 1) * self.measure_every

    def _in_windows(self, steps: np.ndarray) -> np.ndarray:
        ok = np.zeros(steps.shape, bool)
        for a, b in self.windows:
            ok |= (steps >= a) & (steps < b)
        return ok

    def _record(self, phase: str, steps: np.ndarray, rows: np.ndarray, outputs: dict) -> None:
        """Write the probes for block rows ``rows`` (bool), labelled ``steps``."""
        if not rows.any():
            return
        sink = self.sink
        r = np.flatnonzero(rows)
        label = outputs.get("label")
        image = outputs.get("image")
        sink.append(f"record/{phase}/stimulus", step=steps[r],
                    label=np.full(r.size, -1) if label is None else np.asarray(label)[r],
                    image=np.full(r.size, -1) if image is None else np.asarray(image)[r])
        for ch in self.channels:
            if phase == "test" and ch.kind in TRAIN_ONLY:
                continue
            rr = r[steps[r] % ch.every == 0] if ch.every > 1 else r
            if not rr.size:
                continue
            path = f"record/{phase}/{ch.layer}/{ch.kind}"
            if ch.kind == "spikes":
                block = outputs["spikes"][rr][:, ch.flat]
                if self.params.spike_format == "packed":
                    sink.append(path, step=steps[rr], bits=np.packbits(block, axis=1))
                else:
                    i, j = np.nonzero(block)
                    sink.append(path, step=steps[rr][i], index=ch.neurons[j].astype(np.int32))
            else:
                sink.append(path, step=steps[rr], values=outputs[ch.kind][rr][:, ch.cols])

    def on_block(self, net, step0: int, outputs: dict) -> None:
        """Record one block of training: ``outputs`` of :meth:`Network.run` for steps
        ``step0 .. step0 + T - 1`` (optionally with ``label`` and ``image`` per step)."""
        spikes = outputs["spikes"]
        T = spikes.shape[0]
        steps = step0 + np.arange(T, dtype=np.int64)
        if self.channels:
            self._record("train", steps, self._in_windows(steps), outputs)
        if self.measure_every:
            k = self.measure_every
            pos = 0
            sampled = False
            for p in range((step0 // k + 1) * k, step0 + T + 1, k):
                self._rate_counts += np.add.reduce(spikes[pos:p - step0], axis=0, dtype=np.int64)
                self._rate_span += p - step0 - pos
                self._rates(p)
                pos = p - step0
                sampled = True
            if pos < T:
                self._rate_counts += np.add.reduce(spikes[pos:], axis=0, dtype=np.int64)
                self._rate_span += T - pos
            if sampled and net is not None:
                self._angles(net, step0 + T)
                self._saturation(net, step0 + T)
        self.step = step0 + T
        if time.monotonic() - self._last_flush > self.params.flush_seconds:
            self.flush()

    def test_hook(self, train_step: int):
        """A callback ``hook(net, step0, outputs)`` for one test pass, or None if test passes
        are not recorded. Test steps are counted across passes (``record/test/passes``)."""
        if not (self.params.test and self.channels and self.sink is not None):
            return None
        start = self._pass_start = self._test_clock
        limit = self.params.test_steps or np.iinfo(np.int64).max
        self.sink.append("record/test/passes", train_step=[train_step], start=[start])

        def hook(net, step0, outputs):
            T = outputs["spikes"].shape[0]
            local = step0 + np.arange(T, dtype=np.int64)
            self._record("test", start + local, local < limit, outputs)
            self._test_clock = max(self._test_clock, start + min(step0 + T, limit))
            # a test pass of the full network takes minutes: readers see it grow, as in training
            if time.monotonic() - self._last_flush > self.params.flush_seconds:
                self.flush()

        def done():
            self._pass_start = None

        hook.rec_idx = self.rec_idx
        hook.done = done  # called by training when the pass has run to its end
        return hook

    # -------------------------------------------------------------------- measures
    def _rates(self, step: int) -> None:
        span = max(self._rate_span, 1)
        cols = {name: (self._rate_counts[self.offsets[l]:self.offsets[l] + self.sizes[l]] / span)[None].astype(np.float32)
                for l, name in enumerate(self.names)}
        self.sink.append("rates", step=[step], span=[self._rate_span], **cols)
        self._rate_counts[:] = 0
        self._rate_span = 0

    def _angles(self, net, step: int) -> None:
        cols = {"step": [step]}
        for name, (w, mod) in zip(self.names[1:-1], alignment_angles(net)):
            cols[f"weight/{name}"] = [w]
            cols[f"modulator/{name}"] = [mod]
        self.sink.append("angles", **cols)

    def _saturation(self, net, step: int) -> None:
        cols = {"step": [step]}
        for name, values in zip(self.names[1:], saturation(net)):
            for what, v in zip(SATURATION_FIELDS, values):
                cols[f"{what}/{name}"] = [v]
        self.sink.append("saturation", **cols)

    # -------------------------------------------------------------------- state
    def state(self) -> dict:
        """What a checkpoint must keep to continue exactly (arrays)."""
        # a run stopped inside a test pass (a second Ctrl-C, an error) runs that pass again when
        # resumed: from its start, which the resume cuts the recordings back to, so that the
        # half pass is not kept beside the whole one
        clock = self._test_clock if self._pass_start is None else self._pass_start
        return dict(rate_counts=self._rate_counts.copy(), rate_span=np.array([self._rate_span]),
                    test_clock=np.array([clock]))

    def load_state(self, state: dict | None) -> None:
        if not state:
            return
        if "rate_counts" in state and state["rate_counts"].shape == self._rate_counts.shape:
            self._rate_counts[:] = state["rate_counts"]
            self._rate_span = int(state["rate_span"][0])
        self._test_clock = int(state.get("test_clock", [0])[0])

    def flush(self) -> None:
        """Write every buffer to the file and flush it (readers see everything so far)."""
        if self.sink is None:
            return
        self.sink.flush()
        h5 = self.sink.h5.file
        h5.flush()
        # only once the data are on disk, so that a killed run never claims more
        marks = [(name, value) for name, value in (("steps_recorded", self.step),
                                                   ("test_steps_recorded", self._test_clock))
                 if f"progress/{name}" in h5]
        for name, value in marks:
            h5[f"progress/{name}"][()] = value
        if marks:
            h5.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self.sink = None


SATURATION_FIELDS = ("abs_psp", "slope", "abs_weight")


def saturation(net) -> list[tuple[float, float, float]]:
    """Per non-input layer: the mean ``|V|`` of the forward PSPs, the mean post-synaptic
    factor ``sigma'(V) = sigma(V)(1 - sigma(V))`` (0.25 at ``V = 0``; it scales every weight
    change of the three-factor rule, so it shows whether learning slows because the units
    saturate) and the mean ``|W|`` of the synapses into the layer that exist (``sparse-fa``
    removes some; updates still pending in a deferred window left out: a few steps' worth)."""
    out = []
    for l in range(1, net.m + 1):
        v = net.state.psp[net.layer_slice(l)].astype(np.float64)
        p = 1.0 / (1.0 + np.exp(-v))
        mask = net.wiring.W_mask[l - 1]
        n_syn = net.W[l - 1].size if mask is None else max(int(mask.sum(dtype=np.int64)), 1)
        out.append((float(np.abs(v).mean()), float((p * (1.0 - p)).mean()),
                    float(net.scale[l - 1] * np.abs(net.W[l - 1]).sum(dtype=np.float64) / n_syn)))
    return out


def alignment_angles(net) -> list[tuple[float, float]]:
    """Per hidden layer ``l``: the angle (degrees) between ``(W^{l+1})^T`` and ``B^l``, and
    between the modulators ``B^l e`` and ``(W^{l+1})^T e`` for the current top-down signal
    ``e = phi_d(U^{l+1})`` (docs/model.md, "Measures"). NaN where undefined: no feedback into
    ``l`` (``shallow``), feedback from a layer other than ``l+1`` (``dfa`` below the top
    hidden layer), or a zero vector (``e = 0`` before the first step)."""
    from .measures import angle_deg

    out = []
    for l in range(1, net.m):
        B = net.feedback_matrix(l)
        if B is None or int(net.wiring.src[l - 1]) != l + 1:
            out.append((math.nan, math.nan))
            continue
        Wt = net.weights(l + 1)  # stored (n_l, n_{l+1}) = (W^{l+1})^T
        e = net.state.phi_fb[net.layer_slice(l + 1)]
        angles = []
        for a, b in ((Wt, B), (Wt @ e, B @ e)):
            try:
                angles.append(angle_deg(a, b))
            except ValueError:
                angles.append(math.nan)
        out.append(tuple(angles))
    return out
