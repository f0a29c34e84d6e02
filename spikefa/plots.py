"""Figures from saved runs (matplotlib).

Every function reads a run file (a path or a :class:`spikefa.runfile.Run`), takes
``ax=None`` (a new figure with one axes is made when none is given) and returns the axes;
:func:`fig4` takes and returns a whole figure. Nothing here calls ``pyplot``: figures are
plain :class:`matplotlib.figure.Figure` objects, so plotting never opens a window and
works without a display. Save with :func:`save` (PNG, PDF or SVG by suffix).

=================  ==========================================================
:func:`fig4`       the layout of Lillicrap et al. (2016), Fig. 4
:func:`raster`     spikes of the recorded units of one layer
:func:`traces`     one neuron's PSP ``V`` and its modulatory signal (delta)
:func:`test_error` test error over training
:func:`angles`     alignment angles over training
:func:`rates`      histogram of the units' firing rates
:func:`saturation` mean ``sigma'(V)`` and ``|V|`` of every layer over training
=================  ==========================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .config import is_integer, is_number
from .data import DataError
from .runfile import Run, RunFileError, write_whole

FORMATS = (".png", ".pdf", ".svg")
SPIKE_COLOR = "k"
PSP_COLOR = "k"
DELTA_COLOR = "tab:red"
CLASS_COLOR = "tab:blue"


def _run(run) -> Run:
    return run if isinstance(run, Run) else Run(run)


def _windows_recorded(run, steps=None) -> list[int]:
    """The numbers of the run's training recording windows that hold recorded steps
    (``steps``: the recorded stimulus steps, read here if None): not those before the step
    a run branched from (--branch-from), nor those a running or stopped run has not reached."""
    if steps is None:
        try:
            steps = run.stimulus().step
        except RunFileError:  # nothing recorded: the caller's read says so
            return []
    return [i for i, (a, b) in enumerate(run.windows) if np.any((steps >= a) & (steps < b))]


def _one_window(run, window, phase, ax):
    """``window``, or the first window that holds recorded steps when it is None and the
    training recording has several windows: steps of several windows on one axis would be
    slivers. The title says so."""
    if window is None and phase == "train" and len(run.windows) > 1:
        i = (_windows_recorded(run) or [0])[0]
        ax.set_title(f"recording window {i} of {len(run.windows)} (steps "
                     f"{int(run.windows[i][0]):,}-{int(run.windows[i][1]) - 1:,}); "
                     f"window=N (--window N) shows another", fontsize="small")
        return i
    return window


def _recorded_spans(run, phase) -> str:
    if phase == "test":
        tp = run.test_passes()
        return ", ".join(f"{a}:{b}" for a, b in zip(tp["start"], tp["stop"])) or "no test pass"
    spans = ", ".join(f"{int(a)}:{int(b)}" for a, b in run.windows) or "the whole run"
    if "branch_step" in run.attrs:  # the windows before the branch are recorded in the run it came from
        spans += (f" (from step {int(run.attrs['branch_step']):,} on: the run was branched there from "
                  f"{run.attrs.get('branched_from', 'another run')})")
    if not run.complete:  # running, stopped or killed: later windows may not be reached yet
        upto = run.progress()["steps_recorded"]
        spans += "; the run is not complete" + (
            "" if upto is None else f": its recordings reach step {upto:,} so far" if upto
            else ": none of its recordings has reached the file yet")
    return spans


def _no_steps(run, layer, window, phase) -> ValueError:
    return ValueError(f"no recorded steps of {layer} in window {window!r}; "
                      f"the run recorded {phase} steps in {_recorded_spans(run, phase)}")


def _step_axis(run, ax, steps, phase) -> None:
    """x label of a raster or trace: training steps, or, in a test pass, the recorded test
    steps (their own counter, from 0) and the training steps done at the passes shown:
    labelled "step" alone, test step 0 read as the first step of training."""
    if phase != "test":
        ax.set_xlabel("step")
        return
    ax.set_xlabel("recorded test step")
    tp = run.test_passes()
    shown = [int(t) for t, a, b in zip(tp["train_step"], tp["start"], tp["stop"])
             if steps.size and a <= steps[-1] and b > steps[0]]
    if shown:
        ax.set_title(f"test pass{'es' if len(shown) > 1 else ''} after "
                     + ", ".join(f"{t:,}" for t in shown) + " training steps", fontsize="small")


def _axes(ax, figsize=(6.0, 3.5)):
    if ax is not None:
        if not isinstance(ax, Axes):  # the array of plt.subplots(1, 2), or its figure
            raise ValueError(f"ax = {type(ax).__name__}: one matplotlib Axes (e.g. axs[0] of plt.subplots(1, 2)), "
                             "or None for a new figure")
        return ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig.add_subplot()


def save(fig, path, *, dpi: int = 150) -> Path:
    """Save a figure (or the figure of an axes) as PNG, PDF or SVG, chosen by the suffix.
    The file is written whole or not at all (an error or a Ctrl-C while it is drawn leaves
    a figure already at ``path`` as it was, not a truncated one)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give a file name such as {path / 'figure.png'}")
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"cannot write {path}: the suffix must be one of {', '.join(FORMATS)}")
    fig = getattr(fig, "figure", fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, lambda f: fig.savefig(f, format=path.suffix.lower()[1:], dpi=dpi))
    return path


def _steps_label(window) -> str:
    return f"steps {int(window[0]):,}-{int(window[1]) - 1:,}"


# ----------------------------------------------------------------------------- raster
def raster(run, layer: str, window=None, *, phase: str = "train", ax=None, classes: bool | None = None,
           markersize: float | None = None):
    """Spike raster of the recorded units of ``layer``: one row per unit, one dot per spike.

    Parameters
    ----------
    run : path or Run
    layer : str
        ``in``, ``h1`` ... ``out``.
    window : (start, stop), int or None
        Steps to show (an int picks the run's recording window of that number; None: all
        of a recording made in one window, the first of several).
    phase : {"train", "test"}
        Training or test-pass recordings (in "test" an int window is a test pass).
    ax : matplotlib Axes, optional
        Draw into it (default: a new figure).
    classes : bool, optional
        Group the rows by class and shade the class of the image shown (default: for the
        output layer when all of its units were recorded).
    markersize : float, optional
        Size of a spike's tick (default: from the number of rows).
    """
    run = _run(run)
    ax = _axes(ax)
    window = _one_window(run, window, phase, ax)
    r = run.raster(layer, window, phase=phase)
    if not r.step.size:
        raise _no_steps(run, layer, window, phase)
    rows, cols = np.nonzero(r.spikes)
    n = r.neurons.size
    if markersize is None:
        markersize = float(np.clip(120.0 / max(n, 1), 0.8, 4.0))
    ax.plot(r.step[rows], cols, linestyle="none", marker="|", markersize=markersize, color=SPIKE_COLOR,
            markeredgewidth=0.6, rasterized=rows.size > 20000)
    cfg = run.config
    npc = cfg.model.layers[-1] // cfg.model.n_classes
    all_out = layer == run.layers[-1] and n == cfg.model.layers[-1]
    if classes is None:
        classes = all_out
    if classes and all_out:
        try:
            st = run.stimulus(window, phase=phase)
        except RunFileError:
            st = None
        if st is not None and st.step.size:
            # shade the target class for each stretch of steps that shows one image
            change = np.flatnonzero(np.diff(st.label) != 0) + 1
            for a, b in zip(np.r_[0, change], np.r_[change, st.step.size]):
                c = int(st.label[a])
                if c >= 0:
                    ax.fill_between([st.step[a] - 0.5, st.step[b - 1] + 0.5], c * npc - 0.5, (c + 1) * npc - 0.5,
                                    color=CLASS_COLOR, alpha=0.25, linewidth=0)
        for c in range(1, cfg.model.n_classes):
            ax.axhline(c * npc - 0.5, color="0.7", linewidth=0.4)
        ax.set_yticks([(c + 0.5) * npc - 0.5 for c in range(cfg.model.n_classes)])
        ax.set_yticklabels([str(c) for c in range(cfg.model.n_classes)], fontsize="x-small")
        ax.set_ylabel(f"{layer} (class)")
    else:
        ax.set_ylabel(f"{layer} ({n} units)")
        ax.set_yticks([])
    ax.set_ylim(-0.5, n - 0.5)
    if r.step.size:
        ax.set_xlim(r.step[0] - 0.5, r.step[-1] + 0.5)
    _step_axis(run, ax, r.step, phase)
    return ax


# ----------------------------------------------------------------------------- traces
def _gaps(step, values):
    """Insert a NaN row where recording skipped steps, so lines do not bridge windows."""
    if step.size < 3:
        return step.astype(float), values
    d = np.diff(step)
    cut = np.flatnonzero(d > np.min(d)) + 1
    return (np.insert(step.astype(float), cut, np.nan),
            np.insert(values.astype(float), cut, np.nan, axis=0))


def _default_traced(run, phase="train"):
    rec = run.recorded(phase)
    for layer, kinds in rec.items():
        if "psp" in kinds and "modulator" in kinds:
            return layer
    for layer, kinds in rec.items():
        if "psp" in kinds:
            return layer
    raise RunFileError(f"{run.path}: no PSP was recorded" + (" in test passes" if phase == "test" else "") + (
        run._why_not_recorded(phase, " (add a probe such as 'psp,modulator layers=h1 random=1')")))


def traces(run, layer: str | None = None, neuron: int | None = None, window=None, *, phase: str = "train", ax=None):
    """One forward neuron's PSP ``V`` (left axis) and its modulatory signal, the delta
    ``m = phi_d(U) sigma'(V)`` (right axis, a.u.), over the same steps.

    Returns the left axes; the right one is ``ax.right_ax``. ``window`` as in :func:`raster`.
    """
    run = _run(run)
    ax = _axes(ax)
    window = _one_window(run, window, phase, ax)
    layer = layer or _default_traced(run, phase)
    v = run.trace(layer, "psp", window, phase=phase)
    if not v.step.size:
        raise _no_steps(run, layer, window, phase)
    has_delta = "modulator" in run.recorded(phase).get(layer, ())
    d = run.trace(layer, "modulator", window, phase=phase) if has_delta else None
    if neuron is None:
        # the first unit whose delta was traced too (a probe may trace V and delta of
        # different units: 'psp layers=h1 neurons=0,7' with 'modulator layers=h1 neurons=3')
        both = np.flatnonzero(np.isin(v.neurons, d.neurons)) if d is not None else np.zeros(0, np.int64)
        j = int(both[0]) if both.size else 0
    elif np.any(v.neurons == neuron):
        j = int(np.flatnonzero(v.neurons == neuron)[0])
    else:
        raise RunFileError(f"neuron {neuron} of {layer} was not traced; traced: {v.neurons.tolist()}")
    unit = int(v.neurons[j])
    ax.plot(*_gaps(v.step, v.values[:, j]), color=PSP_COLOR, linewidth=0.9, label="PSP V")
    ax.set_ylabel(f"V ({layer}:{unit})")
    _step_axis(run, ax, v.step, phase)
    right = ax.twinx()
    ax.right_ax = right
    if d is not None and np.any(d.neurons == unit):
        k = int(np.flatnonzero(d.neurons == unit)[0])
        right.plot(*_gaps(d.step, d.values[:, k]), color=DELTA_COLOR, linewidth=0.9, label="delta")
        lim = float(np.nanmax(np.abs(d.values[:, k]))) if d.step.size else 0.0
        if lim > 0:
            right.set_ylim(-1.1 * lim, 1.1 * lim)
        right.set_ylabel("delta (a.u.)", color=DELTA_COLOR)
    else:  # a labelled delta axis with no line read as a delta that was not drawn or was zero
        right.set_ylabel(f"delta of {layer}:{unit} not recorded" + (
            f" (traced for {d.neurons.tolist()})" if d is not None else
            " (test passes record no delta)" if phase == "test" else ""), color=DELTA_COLOR, fontsize="x-small")
        right.set_yticks([])
    right.tick_params(axis="y", colors=DELTA_COLOR, labelsize="x-small")
    if v.step.size:
        ax.set_xlim(v.step[0] - 0.5, v.step[-1] + 0.5)
    return ax


# ----------------------------------------------------------------------------- curves
def _run_labels(paths) -> list[str]:
    """Legend names of runs: the file names without suffix, or, where two share one
    (runs/a/run.h5, runs/b/run.h5), enough of their folders to tell them apart."""
    paths = [Path(p).resolve() for p in paths]
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        names = [str(Path(*p.with_suffix("").parts[-depth:])) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]  # the same file twice


def test_error(run, *, ax=None, x: str = "epoch"):
    """Test error over training (with the run's read-out; the other read-out dotted).

    ``run`` may be a list of runs, drawn over each other in their own colours and labelled
    by file name (to compare variants, seeds or settings)."""
    if x not in ("epoch", "step", "images"):
        raise ValueError(f"x = {x!r}; valid: 'epoch', 'step', 'images'")
    runs = [_run(r) for r in run] if isinstance(run, (list, tuple)) else [_run(run)]
    if not runs:  # was "max() arg is an empty sequence"
        raise ValueError("run = []: give a run (or a list of runs) to draw")
    curves = [r.test_curve() for r in runs]
    for r, c in zip(runs, curves):
        if not c["step"].size:  # drawn, it was an empty axes (or a legend entry with no line)
            every = r.config.train.test_every
            raise RunFileError(f"{r.path}: no test pass yet" + (
                "" if r.complete else f" (train.test_every = {every}: " + (
                    "it tests only at the end, and the run is not complete)" if not every else
                    f"the first pass is after {every:,} training images)")))
    ax = _axes(ax)
    labels = _run_labels([r.path for r in runs])
    for i, (r, c) in enumerate(zip(runs, curves)):
        readout = r.config.test.readout
        other = "sum" if readout == "last" else "last"
        if len(runs) == 1:
            style, names = dict(color="k"), (f"read-out: {readout}", f"read-out: {other}")
        else:
            style, names = dict(color=f"C{i}"), (f"{labels[i]} ({readout})", None)
        ax.plot(c[x], 100 * c["error"], marker="o", markersize=3, label=names[0], **style)
        ax.plot(c[x], 100 * c[f"error_{other}"], linestyle=":", label=names[1],
                **(style if len(runs) > 1 else dict(color="0.4")))
    if len(runs) > 1:
        ax.set_title("dotted: the other read-out of each run", fontsize="small")
    ax.set_xlabel({"epoch": "epochs", "step": "training steps", "images": "training images"}.get(x, x))
    ax.set_ylabel("test error (%)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small", frameon=False)
    return ax


test_error.__test__ = False  # not a pytest test


def angles(run, *, ax=None, modulator: bool = True, ceiling: bool = True):
    """Alignment angles over training: ``W^{l+1}`` vs ``B^l`` per hidden layer (solid) and
    the modulators ``(W^{l+1})^T e`` vs ``B^l e`` (thin, dashed).

    With fixed feedback (``fa``, ``sparse-fa``) and ``ceiling``, a dotted line per layer
    marks the smallest flattened angle that a W aligned with B in the class-error subspace
    can reach (:func:`spikefa.alignment.flat_ceilings`; 84-85 degrees in 1500-unit layers):
    the solid lines cannot go far below it, however well the layer has aligned where it
    matters (``spikefa align RUN.h5`` measures that)."""
    run = _run(run)
    a = run.angles()
    if not any(np.isfinite(v).any() for v in a["weight"].values()):  # shallow's are all NaN
        raise RunFileError(f"{run.path}: " + ("feedback 'shallow' sends no feedback, so there is no alignment to plot"
                                              if run.config.model.feedback == "shallow" else
                                              "no alignment angle measured yet (every record.measure_every steps)"))
    ax = _axes(ax)
    lows = None
    if ceiling and run.config.model.feedback in ("fa", "sparse-fa"):
        from .alignment import flat_ceilings
        from .network import init_network

        fresh = init_network(run.config)        # fixed B: rebuilt from the run's seed
        lows = flat_ceilings([fresh.feedback_matrix(l) for l in range(1, fresh.m)], run.config.model.n_classes)
    layers = list(a["weight"])
    # a layer whose angles are all NaN (dfa's lower layers: no B from the layer above) is
    # left out of the legend too, which named a line that was not drawn
    undefined = [layer for layer in layers if not np.isfinite(a["weight"][layer]).any()]
    for i, layer in enumerate(layers):
        color = f"C{i}"
        if layer in undefined:
            continue
        ax.plot(a["step"], a["weight"][layer], color=color, label=f"{layer}: W vs B")
        if modulator and np.isfinite(a["modulator"][layer]).any():
            ax.plot(a["step"], a["modulator"][layer], color=color, linestyle="--", linewidth=0.7,
                    label=f"{layer}: modulators")
        if lows is not None:
            # layers of one size often share a ceiling: draw it once, naming them all
            same = [j for j in range(len(layers)) if abs(lows[j] - lows[i]) < 0.05]
            if same[0] == i:
                ax.axhline(lows[i], color=color, linestyle=":", linewidth=0.8,
                           label=f"{', '.join(layers[j] for j in same)}: ceiling (W = B in Q only)")
    ax.axhline(90, color="0.6", linewidth=0.6)
    # 0-135 degrees leaves room for the legend above the usual angles; a larger one (up to
    # 180: W against B) raises the top rather than being cut off without a sign
    drawn = [v for k in (("weight", "modulator") if modulator else ("weight",)) for v in a[k].values()]
    top = max([135.0] + [float(np.nanmax(v)) + 10.0 for v in drawn if np.isfinite(v).any()])
    ax.set_ylim(0, min(top, 190.0))
    ax.set_xlabel("training steps")
    ax.set_ylabel("angle (degrees)")
    title = []
    if lows is not None:
        title.append("dotted: the W vs B angle of a W equal to B in the class-error subspace Q and zero elsewhere")
    if undefined:
        title.append(f"no angle for {', '.join(undefined)}: feedback {run.config.model.feedback!r} sends "
                     f"{'it' if len(undefined) == 1 else 'them'} no B from the layer above")
    if title:
        ax.set_title("\n".join(title), fontsize="small")
    ax.legend(fontsize="x-small", frameon=False, ncol=3, loc="upper center")
    return ax


def saturation(run, *, ax=None):
    """Mean post-synaptic factor ``sigma'(V)`` of every layer over training (solid, left
    axis; 0.25 means unsaturated) and mean ``|V|`` (thin, dashed, right axis)."""
    run = _run(run)
    ax = _axes(ax)
    sat = run.saturation()
    right = ax.twinx()
    for i, (layer, slope) in enumerate(sat["slope"].items()):
        ax.plot(sat["step"], slope, color=f"C{i}", label=f"{layer}: mean sigma'(V)")
        right.plot(sat["step"], sat["abs_psp"][layer], color=f"C{i}", linestyle="--", linewidth=0.7)
    ax.set_ylim(0, 0.26)
    ax.set_xlabel("training steps")
    ax.set_ylabel("mean sigma'(V) (solid)")
    right.set_ylabel("mean |V| (dashed)")
    ax.legend(fontsize="x-small", frameon=False, ncol=2)
    return ax


def rates(run, *, step: int | None = None, layers=None, ax=None, bins: int = 30):
    """Histogram over units of the firing rate (spikes per step), one outline per layer, at
    the rate sample nearest ``step`` (default: the last)."""
    run = _run(run)
    # step = NaN showed the first sample under its title, bins = 0 an empty axes, layers="h1"
    # was read as layers 'h' and '1'
    if step is not None and (not is_number(step) or not np.isfinite(step)):
        raise ValueError(f"step = {step!r}: a training step (the sample nearest it is drawn), or None for the last")
    if not is_integer(bins) or bins < 1:
        raise ValueError(f"bins = {bins!r}: the number of histogram bins, an integer >= 1")
    if isinstance(layers, str):
        layers = [layers]
    ax = _axes(ax)
    layers = layers or run.layers
    edges = np.linspace(0, 1, bins + 1)
    span = None
    for i, layer in enumerate(layers):
        r = run.rates(layer)
        if not r["step"].size:
            raise RunFileError(f"{run.path}: no rate samples yet")
        k = r["step"].size - 1 if step is None else int(np.argmin(np.abs(r["step"] - step)))
        values = r["rates"][k]
        ax.hist(values, bins=edges, histtype="step", color=f"C{i}", weights=np.full(values.size, 1 / values.size),
                label=f"{layer} (mean {values.mean():.2f})")
        span = (int(r["step"][k] - r["span"][k]), int(r["step"][k]))
    ax.set_xlabel("firing rate (spikes per step)")
    ax.set_ylabel("fraction of units")
    if span is not None:
        ax.set_title(f"after {span[1]:,} training steps (rates over the last {span[1] - span[0]:,})", fontsize="small")
    ax.legend(fontsize="x-small", frameon=False)
    return ax


# ----------------------------------------------------------------------------- Fig. 4
def _fig4_windows(run, steps):
    """The first, middle and last recording windows that hold recorded steps (a running or
    stopped run may not have reached the last ones); with fewer such windows, those; with a
    recording of the whole run, its early, middle and late parts; with a single window, its
    start, middle and end (parts that do not overlap). Returns the windows and their column
    names (None: the usual ones)."""
    st = run.stimulus()
    if not st.step.size:
        # a running run flushes its recordings every record.flush_seconds: until the first
        # flush its stimulus is empty, which is not "nothing was recorded"
        raise RunFileError(f"{run.path}: nothing was recorded" if run.complete else
                           f"{run.path}: no recorded steps to draw yet; the run records train steps in "
                           f"{_recorded_spans(run, 'train')}")
    held = _windows_recorded(run, st.step)
    w = [(int(run.windows[i][0]), int(run.windows[i][1])) for i in held]
    names = None
    if len(w) >= 3:
        chosen = [w[0], w[len(w) // 2], w[-1]]
    elif len(run.windows) > 1:
        # two windows, or the others are not reached yet (or, in a branched run, were
        # recorded before its branch): named by their numbers in run.windows (--window N)
        chosen, names = w, [f"window {i}" for i in held]
    else:
        lo, hi = int(st.step[0]), int(st.step[-1]) + 1
        # three parts that do not overlap: a window shorter than three columns drew the
        # same steps in two or three of them (0:100 as 'early', 'middle' and 'late' 0-99)
        n = max(1, min(steps or 200, (hi - lo) // 3))
        chosen = [(lo, lo + n), ((lo + hi - n) // 2, (lo + hi - n) // 2 + n), (hi - n, hi)]
        whole = len(run.windows) == 0 or (int(run.windows[0][0]) <= 0
                                          and int(run.windows[0][1]) >= int(run.attrs.get("total_steps", 0)))
        # parts of one window, not the early, middle and late of training, are named so
        names = None if whole else ["start of window 0", "middle of window 0", "end of window 0"]
        return list(dict.fromkeys(chosen)), names
    out = []
    for a, b in chosen:
        a, b = int(a), int(b)
        out.append((a, min(b, a + steps) if steps else b))
    return out, names


def _image_strip(run, ax, window):
    """The images shown, each over the steps it was shown (as in the paper's top row)."""
    from .data import load_dataset

    st = run.stimulus(window)
    if not st.step.size:
        raise RunFileError(f"{run.path}: no stimulus recorded in steps {window[0]}-{window[1] - 1}")
    cfg = run.config
    # full MNIST: the folder the run was trained from (the run file's data_dir, as spikefa
    # test reads it), else the usual search; without it a run trained with --data DIR got
    # an empty images row whenever that folder was not also on the search path
    saved = run.attrs.get("data_dir") if cfg.train.dataset == "mnist" else None
    data_dir = str(saved) if saved and Path(str(saved)).is_dir() else None
    images, _ = load_dataset(cfg.train.dataset, "train", data_dir)
    side = int(round(np.sqrt(images.shape[1])))
    change = np.flatnonzero(np.diff(st.image) != 0) + 1
    for a, b in zip(np.r_[0, change], np.r_[change, st.step.size]):
        i = int(st.image[a])
        if i < 0:
            continue
        ax.imshow(images[i].reshape(side, side), cmap="gray_r", aspect="auto", interpolation="nearest",
                  extent=(st.step[a] - 0.5, st.step[b - 1] + 0.5, 0, 1))
    ax.set_xlim(window[0] - 0.5, window[1] - 0.5)
    ax.set_ylim(0, 1)
    ax.set_xticks([])
    ax.set_yticks([])


def fig4(run, *, windows=None, steps: int | None = None, trace_layer: str | None = None, neuron: int | None = None,
         images: bool = True, fig=None, figsize=(12.0, 11.0)):
    """The layout of Lillicrap et al. (2016), Fig. 4, from a saved run.

    Three columns (early, middle and late in training); rows: the images shown (if the
    dataset can be loaded), rasters of the recorded units of each hidden layer, the raster
    of all output units grouped by class with the class of the image shown shaded, and one
    forward neuron's PSP ``V`` and its delta. Record such a run with the probe ``fig4``,
    e.g. ``spikefa train small --record fig4 --record-windows 0:200,50%:200,end:200``.

    Parameters
    ----------
    windows : list of three (start, stop), optional
        Default: the first, middle and last of the run's recording windows.
    steps : int, optional
        Show at most this many steps of each window.
    trace_layer, neuron : optional
        The traced neuron (default: the first traced one of the first layer with a PSP
        and a modulator trace).
    fig : Figure, optional
        Drawn into; default a new one of ``figsize``.

    Returns
    -------
    matplotlib.figure.Figure
        Its axes are labelled ``fig4:ROW:COLUMN`` (ROW ``images``, ``h1`` ... ``out``,
        ``traces``; COLUMN 0, 1, 2).
    """
    run = _run(run)
    names = None
    # steps = 0 or NaN drew whole windows as if no limit were given; windows=[7] was a TypeError
    if steps is not None and (not is_integer(steps) or steps < 1):
        raise ValueError(f"steps = {steps!r}: the most steps of each window to show, an integer >= 1, or None for all")
    if windows is not None:
        if isinstance(windows, str) or not all(
                isinstance(w, (tuple, list, np.ndarray)) and len(w) == 2
                and all(is_integer(x) for x in w) for w in windows):
            raise ValueError(f"windows = {windows!r}: a list of (start, stop) steps, e.g. [(0, 200), (5000, 5200), "
                             f"(9800, 10000)]; the run's recording windows: {[tuple(map(int, w)) for w in run.windows]}")
        windows = [tuple(map(int, w)) for w in windows]
    else:
        windows, names = _fig4_windows(run, steps)
    rec = run.recorded()
    hidden = [layer for layer in run.layers[1:-1] if "spikes" in rec.get(layer, ())]
    out_layer = run.layers[-1]
    rows = (["images"] if images else []) + hidden + ([out_layer] if "spikes" in rec.get(out_layer, ()) else [])
    trace_layer = trace_layer or next((layer for layer, ks in rec.items() if "psp" in ks and "modulator" in ks), None)
    if trace_layer is not None:
        rows.append("traces")
    if len(rows) <= (1 if images else 0):
        advice = " (record with the probe 'fig4')"
        hint = run._why_not_recorded("train", advice) if not rec else advice
        raise RunFileError(f"{run.path}: no spikes or traces were recorded for Fig. 4{hint}")
    heights = {"images": 0.45, out_layer: 1.6, "traces": 1.1}
    fig = fig if fig is not None else Figure(figsize=figsize, layout="constrained")
    grid = fig.add_gridspec(len(rows), len(windows), height_ratios=[heights.get(r, 1.0) for r in rows])
    if names is None or len(names) != len(windows):
        names = ["early", "middle", "late"] if len(windows) == 3 else [f"window {i}" for i in range(len(windows))]
    image_ok, why = images, ""
    for c, (w, title) in enumerate(zip(windows, names)):
        for r, row in enumerate(rows):
            ax = fig.add_subplot(grid[r, c])
            ax.set_label(f"fig4:{row}:{c}")
            if row == "images":
                try:
                    if image_ok:
                        _image_strip(run, ax, w)
                except (DataError, RunFileError) as exc:  # dataset or stimulus not here: say so in the strip
                    image_ok = False
                    why = f"images not shown: {' '.join(str(exc).split())}"
                if not image_ok:
                    ax.set_axis_off()
                    if images and c == 0:
                        ax.text(0, 0.5, why if len(why) < 160 else why[:157] + "...", transform=ax.transAxes,
                                fontsize="x-small", va="center", color="0.4")
            elif row == "traces":
                traces(run, trace_layer, neuron, w, ax=ax)
                if c:
                    ax.set_ylabel("")
                if c < len(windows) - 1:
                    ax.right_ax.set_ylabel("")
            else:
                raster(run, row, w, ax=ax)
                ax.set_xlim(w[0] - 0.5, w[1] - 0.5)
                if c:
                    ax.set_ylabel("")
                    if row == out_layer:
                        ax.set_yticklabels([])
            if row != rows[-1]:
                ax.set_xlabel("")
                ax.tick_params(labelbottom=False)
            if r == 0:
                ax.set_title(f"{title} ({_steps_label(w)})", fontsize="medium")
    cfg = run.config
    fig.suptitle(f"{cfg.name}: {'-'.join(map(str, cfg.model.layers))}, {cfg.model.feedback}, "
                 f"{cfg.train.steps_per_image} steps per image", fontsize="medium")
    return fig


# ----------------------------------------------------------------------------- one call
PLOTS = {"fig4": fig4, "raster": raster, "traces": traces, "error": test_error, "angles": angles, "rates": rates,
         "saturation": saturation}


def render(kind: str, run, out, *, layer: str | None = None, window=None, phase: str = "train",
           steps: int | None = None, at_step: int | None = None, dpi: int = 150, figsize=None) -> Path:
    """Draw one of :data:`PLOTS` from a saved run and save it (``spikefa plot``).

    ``run`` may be a list of runs for ``error``, drawn over each other. ``layer``,
    ``window`` and ``phase`` apply to ``raster`` and ``traces`` (``layer`` also to
    ``rates``); ``steps`` limits each column of ``fig4``; ``at_step`` picks the ``rates``
    sample nearest that training step (default: the last). A training recording of several
    windows is drawn one window at a time: the first unless ``window`` says otherwise.
    """
    if kind not in PLOTS:
        raise ValueError(f"unknown plot {kind!r}; valid: {', '.join(PLOTS)}")
    if at_step is not None and kind != "rates":
        raise ValueError(f"a step to show (--at {at_step}) applies to the rates plot only, not to {kind}")
    # an option the plot does not take is an error, not dropped: 'plot fig4 --window 1' drew
    # the usual three columns under the name the user asked for, as if it were window 1
    also = "; fig4 draws the first, middle and last recording windows (--steps limits each)" if kind == "fig4" else ""
    if window is not None and kind not in ("raster", "traces"):
        raise ValueError(f"a window (--window) applies to the raster and traces plots only, not to {kind}{also}")
    if phase != "train" and kind not in ("raster", "traces"):
        raise ValueError(f"--phase {phase} applies to the raster and traces plots only, not to {kind}{also}")
    if steps is not None and kind != "fig4":
        raise ValueError(f"--steps applies to the fig4 plot only, not to {kind}")
    if layer is not None and kind not in ("raster", "traces", "rates"):
        raise ValueError(f"a layer (--layer {layer}) applies to the raster, traces and rates plots only, not to {kind}{also}")
    if isinstance(run, (list, tuple)):
        if len(run) > 1 and kind != "error":
            raise ValueError(f"plot {kind} draws one run; only 'error' draws several over each other")
        if kind != "error":
            run = run[0]
    run = [_run(r) for r in run] if isinstance(run, (list, tuple)) else _run(run)
    if kind == "fig4":
        fig = fig4(run, steps=steps, **({"figsize": figsize} if figsize else {}))
    else:
        ax = _axes(None, figsize or (6.0, 3.5))
        if kind == "raster":
            raster(run, layer or run.layers[-1], window, phase=phase, ax=ax)
        elif kind == "traces":
            traces(run, layer, None, window, phase=phase, ax=ax)
        elif kind == "rates":
            rates(run, step=at_step, layers=[layer] if layer else None, ax=ax)
        else:
            PLOTS[kind](run, ax=ax)
        fig = ax.figure
    return save(fig, out, dpi=dpi)
