"""Recording to HDF5 and reading it back (issue 4).

What is recorded must equal what the kernels computed, across chunk boundaries, through a
resume and after a SIGKILL; memory must not grow with the length of the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from spikefa import load, runfile
from spikefa.config import ConfigError, RecordParams, config_from_dict, load_config
from spikefa.data import load_subset
from spikefa.network import init_network, input_probabilities
from spikefa.record import PRESETS, Recorder, Window, alignment_angles, parse_probe, select_neurons
from spikefa.runfile import Run, RunWriter, create_run_file
from spikefa.train import train

ROOT = Path(__file__).resolve().parents[1]
PROBES = ["spikes layers=in random=30", "spikes layers=all",
          "psp,feedback_psp,modulator layers=h1 neurons=0,5,17", "modulator layers=out random=4"]


def tiny_cfg(**record):
    record.setdefault("probes", PROBES)
    return config_from_dict({"model": {"layers": [784, 40, 30, 20], "n_classes": 10, "eta": 5e-3},
                             "train": {"dataset": "mnist-subset"}, "record": record})


def drive(cfg, path, n_steps, block=37, seed=0):
    """Run ``n_steps`` of training in blocks of ``block`` steps into a recorded run file;
    return the network outputs kept in memory (the oracle)."""
    net = init_network(cfg)
    rec = Recorder(cfg, total_steps=n_steps)
    create_run_file(path, cfg, total_steps=n_steps, overwrite=True)
    images, labels = load_subset("train")
    rng = np.random.default_rng(seed)
    memory = {k: [] for k in ("spikes", "psp", "feedback_psp", "modulator", "label", "image")}
    with RunWriter(path, setup=lambda f: rec.attach(f, net, 0)):
        for s0 in range(0, n_steps, block):
            T = min(block, n_steps - s0)
            image = (s0 + np.arange(T)) // 5 % 50
            out = net.run(rng.random((T, net.n_units)), input_probabilities(images[:50], cfg.model.p_max), image,
                          labels[image], rec_idx=rec.rec_idx)
            out.update(label=labels[image], image=image)
            for k in memory:
                memory[k].append(np.array(out[k]))
            rec.on_block(net, s0, out)
        rec.close()
    return net, rec, {k: np.concatenate(v) for k, v in memory.items()}


# ---------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("fmt", ["packed", "events"])
@pytest.mark.parametrize("n_steps", [63, 64, 65])
def test_round_trip_across_chunk_boundaries(tmp_path, fmt, n_steps):
    """Chunks of 64 rows; 63, 64 and 65 steps: every recorded spike and trace value equals the
    kernel's output for the same seed, bit for bit, and no step is lost or repeated."""
    cfg = tiny_cfg(chunk_rows=64, spike_format=fmt, measure_every=0)
    net, rec, mem = drive(cfg, tmp_path / "r.h5", n_steps)
    run = load(tmp_path / "r.h5")
    steps = np.arange(n_steps)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["record/train/h1/psp/values"].chunks[0] == 64
    # the recorder's own index maps, checked against the layout written out here: units
    # are numbered in layer order in..out, and trace buffers hold the rec_idx units
    start = dict(zip(["in", "h1", "h2", "out"], np.cumsum([0, 784, 40, 30])))
    for ch in rec.channels:
        np.testing.assert_array_equal(ch.flat, start[ch.layer] + ch.neurons)
        if ch.kind != "spikes":
            np.testing.assert_array_equal(rec.rec_idx[ch.cols], ch.flat)
    for ch in rec.channels:
        if ch.kind == "spikes":
            r = run.raster(ch.layer)
            np.testing.assert_array_equal(r.step, steps)
            np.testing.assert_array_equal(r.neurons, ch.neurons)
            np.testing.assert_array_equal(r.spikes, mem["spikes"][:, ch.flat].astype(bool))
            ev = run.spikes(ch.layer)
            i, j = np.nonzero(mem["spikes"][:, ch.flat])
            np.testing.assert_array_equal(ev.step, i)
            np.testing.assert_array_equal(ev.index, ch.neurons[j])
        else:
            t = run.trace(ch.layer, ch.kind)
            np.testing.assert_array_equal(t.step, steps)
            np.testing.assert_array_equal(t.neurons, ch.neurons)
            np.testing.assert_array_equal(t.values, mem[ch.kind][:, ch.cols])
    assert run.trace("h1", "modulator").values.any()  # plasticity ran: the comparison is not of zeros
    st = run.stimulus()
    np.testing.assert_array_equal(st.label, mem["label"])
    np.testing.assert_array_equal(st.image, mem["image"])
    assert run.raster("in").neurons.size == 30 and run.raster("out").neurons.size == 20


@pytest.mark.parametrize("fmt", ["packed", "events"])
def test_windows_and_every(tmp_path, fmt):
    """Windows ``0:10``, ``50%:7``, ``end:5`` of a 100-step run with ``every=3``: exactly the
    steps in the windows that are multiples of 3, and the window argument of the view, in
    both spike formats."""
    cfg = tiny_cfg(probes=["spikes layers=h2 every=3", "psp layers=h1 neurons=1"], windows=["0:10", "50%:7", "end:5"],
                   chunk_rows=16, measure_every=0, spike_format=fmt)
    net, rec, mem = drive(cfg, tmp_path / "w.h5", 100, block=13)
    run = load(tmp_path / "w.h5")
    np.testing.assert_array_equal(run.windows, [[0, 10], [50, 57], [95, 100]])
    in_win = np.r_[0:10, 50:57, 95:100]
    r = run.raster("h2")
    np.testing.assert_array_equal(r.step, in_win[in_win % 3 == 0])
    ch = next(c for c in rec.channels if c.layer == "h2")
    np.testing.assert_array_equal(r.spikes, mem["spikes"][r.step][:, ch.flat].astype(bool))
    np.testing.assert_array_equal(run.trace("h1", "V").step, in_win)
    np.testing.assert_array_equal(run.trace("h1", "psp", 1).step, np.arange(50, 57))
    np.testing.assert_array_equal(run.raster("h2", (52, 97)).step, [54, 96])


def test_rates_and_angles(tmp_path):
    """Rates equal spike counts over each interval of ``measure_every`` steps (blocks that
    straddle the sample points included); the angles at the end equal a direct computation."""
    cfg = tiny_cfg(probes=[], measure_every=50)
    net, rec, mem = drive(cfg, tmp_path / "m.h5", 230, block=37)
    run = load(tmp_path / "m.h5")
    r = run.rates("h1")
    np.testing.assert_array_equal(r["step"], [50, 100, 150, 200])
    np.testing.assert_array_equal(r["span"], [50, 50, 50, 50])
    h1 = slice(784, 824)
    expect = mem["spikes"][:200, h1].reshape(4, 50, -1).mean(axis=1)
    np.testing.assert_allclose(r["rates"], expect, rtol=1e-6)
    assert 0.2 < run.rates()["mean"]["h1"][0] < 0.8
    a = run.angles()
    # blocks of 37 steps end at 37, 74, ...: angles are taken at the first block end at or
    # after each multiple of 50 (train() cuts its blocks there, so it samples exactly)
    np.testing.assert_array_equal(a["step"], [0, 74, 111, 185, 222])
    assert np.isnan(a["modulator"]["h1"][0])  # e = 0 before the first step
    assert np.all(np.isfinite(a["modulator"]["h1"][1:]))
    assert np.all((a["weight"]["h1"] > 80) & (a["weight"]["h1"] < 100))  # random B starts near orthogonal
    assert a["weight"]["h1"][-1] == pytest.approx(a["weight"]["h1"][0], abs=5)
    w, _ = alignment_angles(net)[0]
    assert w != a["weight"]["h1"][-1]  # the network learned on after the last sample


def test_saturation_measures(tmp_path):
    """Saturation is sampled with the angles: at step 0 every PSP is 0, so mean |V| = 0 and
    mean sigma'(V) = 0.25 exactly, and |W| is the mean of |U[-w, w]| = w/2 within 5% (40,000
    weights: relative s.e. 0.3%); later samples are means of the state, bounded by
    0 < sigma'(V) <= 0.25, and the last equals a direct computation on a network stopped
    there; the saturation plot draws them."""
    from spikefa.plots import saturation as plot_saturation
    from spikefa.record import saturation
    from spikefa.train import network_from_checkpoint

    res = train(tiny_cfg(probes=[], measure_every=100), out=tmp_path / "s.h5", progress=False)
    sat = load(res.path).saturation()
    np.testing.assert_array_equal(sat["step"], np.arange(0, res.steps + 1, 100)[:sat["step"].size])
    assert set(sat["slope"]) == {"h1", "h2", "out"}
    assert sat["abs_psp"]["h1"][0] == 0 and sat["slope"]["h1"][0] == 0.25
    assert sat["abs_weight"]["h1"][0] == pytest.approx(0.05 / 2, rel=0.05)
    for layer, slope in sat["slope"].items():
        assert np.all((slope > 0) & (slope <= 0.25)), layer
        assert np.all(sat["abs_psp"][layer][1:] > 0), layer
    net = init_network(tiny_cfg(probes=[], measure_every=100))
    net2, _ = network_from_checkpoint(str(res.path) + ".ckpt")
    direct = saturation(net2)
    assert sat["step"][-1] == res.steps
    assert sat["abs_psp"]["out"][-1] == pytest.approx(direct[-1][0], rel=1e-12)
    assert sat["slope"]["h1"][-1] == pytest.approx(direct[0][1], rel=1e-12)
    assert direct[0][2] != saturation(net)[0][2]  # the weights did change
    assert plot_saturation(res.path).get_ylabel().startswith("mean sigma'")
    # sparse FA: the mean over the synapses that exist, not over the zeros of removed ones
    sparse = init_network(config_from_dict({"model": {"layers": [784, 100, 100, 100], "feedback": "sparse-fa"}}))
    assert saturation(sparse)[0][2] == pytest.approx(0.05 / 2, rel=0.05)


@pytest.mark.parametrize("variant", ["transport", "shallow", "dfa"])
def test_angles_per_variant(variant):
    """Weight transport: W^T and B are the same matrix (angle ~0). Shallow: no feedback (NaN).
    DFA: only the top hidden layer listens to layer l+1."""
    cfg = config_from_dict({"model": {"layers": [784, 30, 30, 30, 20], "feedback": variant}})
    net = init_network(cfg)
    net.state.phi_fb[:] = np.random.default_rng(0).uniform(-1, 1, net.n_units)
    got = alignment_angles(net)
    if variant == "transport":
        assert all(w < 1e-3 and m < 1e-3 for w, m in got)
    elif variant == "shallow":
        assert np.isnan(got).all()
    else:
        assert np.isnan(got[0]).all() and np.isnan(got[1]).all() and 70 < got[2][0] < 110


# ---------------------------------------------------------------------------- through train()
class Tee(Recorder):
    """The run's own recorder, also keeping every block in memory; optionally stops the run."""

    def __init__(self, cfg, total_steps, stop_after=None):
        super().__init__(cfg, total_steps=total_steps)
        self.blocks, self.stop_after = [], stop_after

    def on_block(self, net, step0, outputs):
        self.blocks.append((step0, outputs["spikes"].copy(), outputs["psp"].copy()))
        super().on_block(net, step0, outputs)
        if self.stop_after is not None and len(self.blocks) == self.stop_after:
            raise KeyboardInterrupt


def fig4_cfg(**train_keys):
    train_keys.setdefault("epochs", 0.12)
    return load_config("tiny").replace(
        train=train_keys, test={"n_test": 60}, run={"block_steps": 150},
        record={"probes": ["fig4"], "windows": ["0:100", "50%:100", "end:100"], "measure_every": 200,
                "test": True, "test_steps": 40, "chunk_rows": 32})


def test_train_records_what_the_kernels_computed(tmp_path):
    cfg = fig4_cfg(test_every=40)
    tee = Tee(cfg, total_steps=1200)
    res = train(cfg, out=tmp_path / "t.h5", progress=False, recorder=tee)
    assert res.steps == 1200
    run = load(res.path)
    assert run.complete and run.progress()["steps_recorded"] == 1200
    spikes = np.concatenate([b[1] for b in tee.blocks])
    psp = np.concatenate([b[2] for b in tee.blocks])
    assert [b[0] for b in tee.blocks][:3] == [0, 150, 200]  # blocks end at each measure point
    for i, (a, b) in enumerate(run.windows):
        for ch in tee.channels:
            if ch.kind == "spikes":
                np.testing.assert_array_equal(run.raster(ch.layer, i).spikes, spikes[a:b][:, ch.flat].astype(bool))
            elif ch.kind == "psp":
                np.testing.assert_array_equal(run.trace(ch.layer, "psp", i).values, psp[a:b][:, ch.cols])
    # three test passes of 60 images x 5 steps, the first 40 steps of each recorded
    passes = run.test_passes()
    np.testing.assert_array_equal(passes["train_step"], [200, 400, 600, 800, 1000, 1200])
    np.testing.assert_array_equal(passes["stop"] - passes["start"], 40)
    assert run.raster("out", (passes["start"][1], passes["stop"][1]), phase="test").spikes.shape == (40, 10 * 10)
    assert "modulator" not in run.recorded("test")["h1"]
    np.testing.assert_array_equal(run.angles()["step"], np.arange(0, 1201, 200))


def _all_datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.startswith(("record", "rates", "angles", "test/step")):
                out[name] = obj[...]
        f.visititems(visit)
    return out


def test_resume_records_each_step_once(tmp_path):
    """A run cut off after 5 blocks and resumed records exactly what the uninterrupted run
    records: every dataset (spikes, traces, stimuli, test passes, rates, angles) equal."""
    cfg = fig4_cfg(test_every=40)
    full = train(cfg, out=tmp_path / "full.h5", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "cut.h5", progress=False, recorder=Tee(cfg, 1200, stop_after=5))
    assert not load(tmp_path / "cut.h5").complete
    train(cfg, out=tmp_path / "cut.h5", resume=True, progress=False)
    # `--resume` alone (no --record options, the model's own empty [record] table) records
    # what the run recorded: it used to drop the probes and windows without a word
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "bare.h5", progress=False, recorder=Tee(cfg, 1200, stop_after=5))
    bare = cfg.replace(record=RecordParams().__dict__)
    train(bare, out=tmp_path / "bare.h5", resume=True, progress=False)
    assert load(tmp_path / "bare.h5").config.record == cfg.record
    a = _all_datasets(full.path)
    for resumed in ("cut.h5", "bare.h5"):
        b = _all_datasets(tmp_path / resumed)
        assert set(a) == set(b) and len(a) > 20
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{resumed}: {name}")


# ---------------------------------------------------------------------------- SIGKILL
KILL_SCRIPT = """
import sys
from spikefa.config import load_config
from spikefa.train import train
cfg = load_config("tiny").replace(
    train={{"epochs": {epochs}, "test_every": 0}}, test={{"n_test": 50}}, run={{"block_steps": 50, "checkpoint_minutes": 0.002}},
    record={{"probes": ["spikes layers=all", "psp layers=h1 random=3"], "chunk_rows": 64, "flush_seconds": 0.05}})
train(cfg, out=sys.argv[1], progress=False, overwrite=True)
"""


def test_sigkill_leaves_a_readable_incomplete_file(tmp_path):
    """Kill -9 a recording run mid-way: the file opens, what was flushed is readable and says
    it is incomplete; meanwhile it could be read while being written; it then resumes to a
    complete file that records every step once."""
    path = tmp_path / "k.h5"
    script = tmp_path / "k.py"
    # 40,000 steps (about 5 s): the kill lands long before the end even if this process
    # stalls for seconds after it has seen step 500 (10,000 steps left about one)
    script.write_text(KILL_SCRIPT.format(epochs=4.0))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env, cwd=tmp_path,
                            stderr=subprocess.PIPE)
    live = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                p = Run(path).progress()
            except runfile.RunFileError:
                continue
            if p["steps_recorded"] and p["steps_recorded"] >= 500:
                live = Run(path).raster("h2")  # read while the writer is running
                break
        assert proc.poll() is None, proc.stderr.read().decode()
        assert live is not None, "the run never flushed 500 steps"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert live.step.size >= 500
    run = Run(path)
    assert not run.complete
    p = run.progress()
    assert 500 <= p["steps_recorded"] < 40_000 and not p["complete"]
    r = run.raster("h2")
    assert r.step.size >= p["steps_recorded"]
    np.testing.assert_array_equal(r.step, np.arange(r.step.size))  # every flushed step, in order
    np.testing.assert_array_equal(r.spikes[:live.step.size], live.spikes)

    # resume: the file is repaired, data after the checkpoint dropped, every step recorded once
    res = train(load_config("tiny").replace(
        train={"epochs": 4.0, "test_every": 0}, test={"n_test": 50},
        run={"block_steps": 50, "checkpoint_minutes": 0.002},
        record={"probes": ["spikes layers=all", "psp layers=h1 random=3"], "chunk_rows": 64, "flush_seconds": 0.05}),
        out=path, resume=True, progress=False)
    run = Run(res.path)
    assert run.complete
    np.testing.assert_array_equal(run.raster("h2").step, np.arange(40_000))
    np.testing.assert_array_equal(run.raster("h2", (0, live.step.size)).spikes, live.spikes)
    with h5py.File(path, "r") as f:
        assert f.attrs["complete"]


@pytest.mark.parametrize("fmt", ["packed", "events"])
def test_a_series_read_while_its_columns_grow_one_after_the_other_keeps_its_rows_together(tmp_path, fmt):
    """A writer appends to a series column by column, resizing each before it fills it, so
    a reader of a running run could find ``step`` a chunk longer than ``bits`` (or
    ``values``, ``label``, ``index``): raster() then returned more steps than rows of
    spikes (seen once in 1,700 reads of a running run under load, and the SIGKILL test's
    comparison with the live raster fails on it). Rows are bounded by the shortest column."""
    cfg = load_config("tiny").replace(train={"epochs": 0.02, "test_every": 0}, record={
        "probes": ["spikes layers=all", "psp layers=h1 random=3"], "chunk_rows": 64, "spike_format": fmt})
    path = train(cfg, out=tmp_path / "g.h5", progress=False).path
    whole = Run(path)
    want_raster, want_trace, want_stim = whole.raster("h2"), whole.trace("h1"), whole.stimulus()
    want_spikes = whole.spikes("h2")
    with h5py.File(path, "a") as f:  # the instant after `step` grew and before the others did
        for series, column in [("h2/spikes", "index" if fmt == "events" else "bits"), ("h1/psp", "values"),
                               ("stimulus", "label"), ("stimulus", "image")]:
            ds = f[f"record/train/{series}/{column}"]
            ds.resize(max(f[f"record/train/{series}/step"].shape[0] - 64, 0), axis=0)
    run = Run(path)
    stim = run.stimulus()
    assert stim.step.size == stim.label.size == stim.image.size == want_stim.step.size - 64
    trace = run.trace("h1")
    assert trace.step.size == trace.values.shape[0] == want_trace.step.size - 64
    np.testing.assert_array_equal(trace.values, want_trace.values[:-64])
    spikes = run.spikes("h2")
    assert spikes.step.size == spikes.index.size < want_spikes.step.size
    for window in (None, (0, 10_000)):
        raster = run.raster("h2", window)
        assert raster.step.size == raster.spikes.shape[0] > 0
        if fmt == "packed":  # (events: one row per step of the stimulus, which has all its steps here)
            np.testing.assert_array_equal(raster.spikes, want_raster.spikes[:raster.step.size])


def test_an_events_raster_read_while_the_stimulus_lags_has_the_rows_flushed_so_far(tmp_path):
    """In the events format each series is flushed when its own buffer fills, so a reader of
    a running run can find spike events past the last stimulus step flushed: raster() then
    raised IndexError. It returns the rows of the stimulus steps there, with their spikes."""
    cfg = load_config("tiny").replace(train={"epochs": 0.02, "test_every": 0}, record={
        "probes": ["spikes layers=all"], "chunk_rows": 64, "spike_format": "events"})
    path = train(cfg, out=tmp_path / "e.h5", progress=False).path
    want = Run(path).raster("h2")
    assert want.spikes[-64:].any()  # events in the rows cut off below
    with h5py.File(path, "a") as f:  # the stimulus' last chunk not flushed yet
        for column in ("step", "label", "image"):
            f[f"record/train/stimulus/{column}"].resize(want.step.size - 64, axis=0)
    raster = Run(path).raster("h2")
    np.testing.assert_array_equal(raster.step, want.step[:-64])
    np.testing.assert_array_equal(raster.spikes, want.spikes[:-64])


def test_an_events_raster_read_while_the_events_lag_shows_only_rows_flushed_together(tmp_path):
    """The other way round: stimulus rows flushed before the events of their steps showed,
    while the run was written, as rows without spikes (wrong, not missing, data). Rows past
    progress/steps_recorded, the step through which every series was flushed together,
    are left out of the raster of a run not complete."""
    cfg = load_config("tiny").replace(train={"epochs": 0.02, "test_every": 0}, record={
        "probes": ["spikes layers=all"], "chunk_rows": 64, "spike_format": "events"})
    path = train(cfg, out=tmp_path / "e.h5", progress=False).path
    want = Run(path).raster("h2")
    cut = int(want.step[-64])
    with h5py.File(path, "a") as f:  # the events of the last 64 steps not flushed yet
        ev = f["record/train/h2/spikes"]
        keep = int(np.searchsorted(ev["step"][...], cut))
        for column in ("step", "index"):
            ev[column].resize(keep, axis=0)
        f["progress/steps_recorded"][()] = cut
        f.attrs["complete"] = False
    raster = Run(path).raster("h2")
    np.testing.assert_array_equal(raster.step, want.step[:-64])
    np.testing.assert_array_equal(raster.spikes, want.spikes[:-64])


def test_tables_read_while_their_columns_grow_keep_their_rows_together(tmp_path):
    """The test curve, angles, saturation, rates and test passes are grown column by column
    as well: a reader of a running run could find one column a row longer than another and
    get arrays that do not line up (a plot of them fails). Each comes back cut to the rows
    all its columns hold."""
    cfg = load_config("tiny").replace(train={"epochs": 0.02, "test_every": 10}, record={
        "measure_every": 50, "probes": ["spikes layers=out"], "test": True, "test_steps": 10})
    path = train(cfg, out=tmp_path / "g.h5", progress=False).path
    run = Run(path)
    want = dict(curve=run.test_curve(), angles=run.angles(), saturation=run.saturation(), rates=run.rates(),
                rates_h1=run.rates("h1"), passes=run.test_passes())
    assert want["curve"]["step"].size >= 3 and want["angles"]["step"].size >= 3
    with h5py.File(path, "a") as f:  # the first column of each grown by a row, the others not yet
        for table in ("test/step", "angles/step", "saturation/step", "rates/step", "record/test/passes/train_step"):
            ds = f[table]
            ds.resize(ds.shape[0] + 1, axis=0)
    run = Run(path)
    got = dict(curve=run.test_curve(), angles=run.angles(), saturation=run.saturation(), rates=run.rates(),
               rates_h1=run.rates("h1"), passes=run.test_passes())

    def flat(d, prefix=""):
        for k, v in d.items():
            yield from flat(v, f"{prefix}{k}/") if isinstance(v, dict) else [(prefix + k, v)]

    for name in want:
        w, g = dict(flat(want[name])), dict(flat(got[name]))
        assert w.keys() == g.keys()
        for key in w:
            np.testing.assert_array_equal(g[key], w[key], err_msg=f"{name}: {key}")


def test_a_test_pass_is_readable_whole_once_its_row_is_written(tmp_path, monkeypatch):
    """Each recorded series is written when its own buffer fills: during a test pass the
    stimulus (a row per step) fills its buffer long before the events of a sparse unit do,
    and the pass's row in record/test/passes waits for the next timed flush. When the test
    row's flush made them readable, a reader of the running run got a test raster with
    rows of zeros where the unit spiked, and no pass for the test steps it could read.
    The pass is flushed whole before its test row: what is read then is what the finished
    file holds."""
    cfg = load_config("tiny").replace(train={"epochs": 0.6, "test_every": 300}, record={
        "probes": ["spikes layers=out random=1"], "test": True, "test_steps": 300, "chunk_rows": 64,
        "spike_format": "events", "flush_seconds": 3600.0})
    seen = []
    append = runfile.append_test

    def append_and_read(path, row):
        append(path, row)  # the file's flush: what a reader of the running run reads from here
        run = Run(path)
        seen.append((run.raster("out", (0, 10**9), phase="test"), run.test_passes()))

    monkeypatch.setattr(runfile, "append_test", append_and_read)
    path = train(cfg, out=tmp_path / "t.h5", progress=False).path
    run = Run(path)
    want, passes = run.raster("out", (0, 10**9), phase="test"), run.test_passes()
    assert len(seen) >= 3 and want.spikes.any()
    for i, (got, got_passes) in enumerate(seen):
        k = got.step.size
        assert k == 300 * (i + 1)
        np.testing.assert_array_equal(got.step, want.step[:k])
        np.testing.assert_array_equal(got.spikes, want.spikes[:k], err_msg=f"after test pass {i}")
        for key in ("train_step", "start", "stop"):
            np.testing.assert_array_equal(got_passes[key], passes[key][:i + 1], err_msg=f"after test pass {i}: {key}")


def test_test_passes_line_up_before_the_first_pass(tmp_path):
    """A run that records its test passes has the passes table from its start: before the
    first pass ends (or is flushed) it is empty, and test_passes() gave one stop for no
    start, arrays that do not line up."""
    cfg = load_config("tiny").replace(train={"epochs": 0.02, "test_every": 10}, record={
        "probes": ["spikes layers=out"], "test": True, "test_steps": 10})
    path = train(cfg, out=tmp_path / "p.h5", progress=False).path
    with h5py.File(path, "a") as f:  # a pass listed before its first recorded step: empty, not reversed
        start = f["record/test/passes/start"][...]
        assert start.size >= 2
        n = int(np.searchsorted(f["record/test/stimulus/step"][...], start[-1]))
        for name in ("step", "label", "image"):
            f[f"record/test/stimulus/{name}"].resize(n, axis=0)
    passes = Run(path).test_passes()
    assert passes["stop"].size == start.size and passes["stop"][-1] == passes["start"][-1] == start[-1]
    with h5py.File(path, "a") as f:  # as a reader finds it before the first pass's rows
        for name in ("passes/train_step", "passes/start", "stimulus/step", "stimulus/label", "stimulus/image"):
            f[f"record/test/{name}"].resize(0, axis=0)
    passes = Run(path).test_passes()
    assert {k: v.size for k, v in passes.items()} == dict(train_step=0, start=0, stop=0)


def test_complete_only_when_finished(tmp_path):
    cfg = fig4_cfg(epochs=0.02)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "c.h5", progress=False, recorder=Tee(cfg, 200, stop_after=1))
    assert not load(tmp_path / "c.h5").complete
    res = train(cfg, out=tmp_path / "d.h5", progress=False)
    run = load(res.path)
    assert run.complete and run.attrs["schema_version"] == runfile.SCHEMA_VERSION
    for key in ("spikefa_version", "config", "seed"):
        assert key in run.attrs
    assert json.loads(run.attrs["config"])["record"]["probes"] == list(load_config(cfg).record.probes)


# ---------------------------------------------------------------------------- memory
MEMORY_SCRIPT = """
import resource, sys, tempfile, time
import numpy as np
from spikefa.config import load_config
from spikefa.network import init_network
from spikefa.record import Recorder
from spikefa.runfile import RunWriter, create_run_file

model, n_steps, fmt, record = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "on"
cfg = load_config(model).replace(record={{"probes": ["spikes layers=in", "spikes layers=all", "psp,modulator layers=h1 random=10"],
                                          "spike_format": fmt, "measure_every": 1000}})
net = init_network(cfg)
rng = np.random.default_rng(0)
T, N = 500, net.n_units
pool = [dict(spikes=(rng.random((T, N)) < 0.3).astype(np.uint8), psp=rng.random((T, 20)).astype(np.float32),
             feedback_psp=np.zeros((T, 20), np.float32), modulator=rng.random((T, 20)).astype(np.float32),
             label=rng.integers(0, 10, T), image=rng.integers(0, 2000, T)) for _ in range(8)]
path = tempfile.mkdtemp() + "/m.h5"
create_run_file(path, cfg, total_steps=n_steps)
rec = Recorder(cfg, total_steps=n_steps)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
marks = []
t0 = time.perf_counter()
with RunWriter(path, setup=lambda f: rec.attach(f, net, 0) if record else None):
    for b, s0 in enumerate(range(0, n_steps, T)):
        if record:
            rec.on_block(net, s0, pool[b % len(pool)])
        if s0 + T in (n_steps // 5, n_steps):
            marks.append(peak())
    rec.close()
import os
print(marks[0], marks[1], os.path.getsize(path), time.perf_counter() - t0)
"""


def measure(tmp_path, model, n_steps, fmt, record):
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT.format())
    out = subprocess.run([sys.executable, str(script), model, str(n_steps), fmt, record], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=tmp_path, check=True).stdout.split()
    return float(out[0]), float(out[1]), int(out[2]), float(out[3])


def test_memory_does_not_grow(tmp_path):
    """Every unit's spikes (tiny: 1,084 units, 30% active) and 20 traces for 200,000 steps of
    synthetic blocks: peak RSS at the end exceeds the peak after the first fifth by < 20 MB,
    and the peak with recording on exceeds the one with recording off by < 100 MB."""
    off = measure(tmp_path, "tiny", 200_000, "packed", "off")
    early, late, size, _ = measure(tmp_path, "tiny", 200_000, "packed", "on")
    print(f"recording off: {off[1]:.0f} MB; on: {early:.0f} MB after 40,000 steps, {late:.0f} MB after 200,000")
    assert size > 200_000 * 1084 / 8 * 0.5  # the spikes were written
    assert late - early < 20, (early, late)
    assert late - off[1] < 100, (off, late)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["packed", "events"])
def test_memory_bounded_for_a_million_steps(tmp_path, fmt):
    """The small preset (1,784 units), every unit's spikes for 1,000,000 steps: growth from the
    first fifth to the end < 20 MB, recording on vs off < 200 MB."""
    off = measure(tmp_path, "small", 1_000_000, fmt, "off")
    early, late, size, wall = measure(tmp_path, "small", 1_000_000, fmt, "on")
    print(f"{fmt}: off {off[1]:.0f} MB, on {early:.0f} -> {late:.0f} MB, file {size / 1e6:.0f} MB, {wall:.0f} s")
    assert late - early < 20 and late - off[1] < 200


# ---------------------------------------------------------------------------- specs
def test_probe_specs():
    layers = (784, 40, 30, 20)
    p = parse_probe("V,delta layers=h2,h1 neurons=3,1,0:2", layers)
    assert p.kinds == ("psp", "modulator") and p.layers == ("h1", "h2") and p.neurons == (0, 1, 3)
    assert parse_probe("spikes", layers).layers == ("h1", "h2", "out")
    assert parse_probe("spikes layers=hidden random=5 every=2", layers).text() == "spikes layers=h1,h2 random=5 every=2"
    cfg = load_config("tiny").replace(record={"probes": ["fig4"]})
    assert len(cfg.record.probes) == len(PRESETS["fig4"]) and "layers=h1,h2 random=50" in cfg.record.probes[0]
    assert Window.parse("50%:200").resolve(10_000) == (5000, 5200)
    assert Window.parse("end:200").resolve(10_000) == (9800, 10_000)
    assert Window.parse("9990:200").resolve(10_000) == (9990, 10_000)


def test_random_units_are_nested_and_events_keep_every():
    """``random=N`` draws from one fixed order per layer and seed, so a smaller draw is a
    subset of a larger one (Fig. 4's traced unit is one of its raster's units, as
    docs/file-format.md says); and ``every=K`` thins the events format as it does the packed one."""
    for seed in range(1, 6):
        for l, n in ((1, 40), (3, 20)):
            picks = [set(select_neurons(parse_probe(f"spikes random={k}", (784, 40, 30, 20)), l, n, seed))
                     for k in (1, 10, 50)]
            assert len(picks[0]) == 1 and len(picks[1]) == 10 and len(picks[2]) == n
            assert picks[0] <= picks[1] <= picks[2]
    assert not np.array_equal(select_neurons(parse_probe("spikes random=10", (784, 40)), 1, 40, 1),
                              select_neurons(parse_probe("spikes random=10", (784, 40)), 1, 40, 2))


@pytest.mark.parametrize("record, message", [
    ({"probes": ["spiks"]}, r"record.probes\[0\].*unknown population 'spiks'"),
    ({"probes": ["psp layers=in"]}, "input layer 'in' has spikes only"),
    ({"probes": ["spikes layers=h9"]}, "unknown layer 'h9'"),
    ({"probes": ["spikes neurons=99"]}, "must lie in 0..39"),
    ({"probes": ["spikes", "spikes layers=h1"]}, r"probes\[1\].*already recorded by probes\[0\]"),
    ({"probes": ["spikes colour=red"]}, "options are layers=, neurons=, random=, every="),
    ({"probes": "spikes"}, "a list of probe strings"),
    ({"windows": ["0-200"]}, r"record.windows\[0\].*START:LENGTH"),
    ({"windows": ["120%:5"]}, "0..100"),
    ({"spike_format": "bits"}, "record.spike_format.*'packed', 'events'"),
    ({"measure_every": -1}, "record.measure_every"),
    ({"flush_seconds": 0}, "record.flush_seconds"),
    ({"colour": 1}, "unknown key record.colour"),
    # the edges of each range (h1 has 40 units: 0..39)
    ({"probes": ["psp layers=h1 neurons=40"]}, "must lie in 0..39 for layer h1"),
    ({"probes": ["spikes neurons=-1"]}, "must lie in 0..39"),
    ({"probes": ["spikes every=0"]}, "every= must be >= 1"),
    ({"probes": ["spikes random=0"]}, "random= must be >= 1"),
    ({"flush_seconds": float("nan")}, "record.flush_seconds"),
    ({"test": "yes"}, "record.test = 'yes'.*true or false"),
    # integer keys: nan and inf name the key (they used to end in a bare int() error or a traceback)
    ({"measure_every": float("nan")}, "record.measure_every = nan.*expected an integer"),
    ({"test_steps": float("inf")}, "record.test_steps = inf.*expected an integer"),
    ({"chunk_rows": 2.5}, "record.chunk_rows = 2.5.*expected an integer"),
])
def test_bad_record_spec_is_a_clear_error(record, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"model": {"layers": [784, 40, 30, 20], "n_classes": 10}, "record": record})


def test_a_run_file_open_in_h5py_can_still_be_loaded(tmp_path):
    """A notebook that opened the file itself, as docs/file-format.md shows, can still use
    spikefa.load in the same process: HDF5 reopens a file only with the same SWMR and
    locking flags, and spikefa's own (SWMR, no locks) used to be refused."""
    path = train(fig4_cfg(epochs=0.02), out=tmp_path / "o.h5", progress=False).path
    want = load(path).test_curve()["error"]
    for flags in (dict(swmr=True), {}, dict(locking=False), dict(swmr=True, locking=False)):
        with h5py.File(path, "r", **flags):
            run = load(path)
            np.testing.assert_array_equal(run.test_curve()["error"], want)
            assert run.summary()["state"] == "complete"
            assert run.spikes("h1")[0].size > 0


def test_resume_with_other_probes_is_refused(tmp_path):
    cfg = fig4_cfg(epochs=0.02)
    train(cfg, out=tmp_path / "r.h5", progress=False)
    other = cfg.replace(record={"probes": ["spikes layers=h1 random=7"]})
    with pytest.raises(runfile.RunFileError, match="same \\[record\\] probes"):
        train(other, epochs=0.03, out=tmp_path / "r.h5", resume=True, progress=False)


def test_cli_record_flags(tmp_path):
    from spikefa.cli import main

    out = tmp_path / "c.h5"
    assert main(["train", "tiny", "--epochs", "0.02", "-o", str(out), "-q", "--record", "spikes layers=out",
                 "--record", "psp layers=h1 neurons=2", "--record-windows", "0:50,end:50", "--record-every", "100"]) == 0
    run = load(out)
    assert run.recorded() == {"h1": ("psp",), "out": ("spikes",)}
    np.testing.assert_array_equal(run.windows, [[0, 50], [150, 200]])
    np.testing.assert_array_equal(run.rates()["step"], [100, 200])
    assert main(["train", "tiny", "--epochs", "0.02", "-o", str(tmp_path / "d.h5"), "-q", "--record", "nope"]) == 2
    # --record-test records the probes during the test passes, the first N steps of each
    out = tmp_path / "t.h5"
    assert main(["train", "tiny", "--epochs", "0.02", "-o", str(out), "-q", "--record", "spikes layers=out",
                 "--record-test", "--record-test-steps", "20"]) == 0
    run = load(out)
    assert run.recorded("test") == {"out": ("spikes",)}
    passes = run.test_passes()
    assert passes["start"].size >= 1 and np.all(passes["stop"] - passes["start"] == 20)
    np.testing.assert_array_equal(passes["start"], 20 * np.arange(passes["start"].size))  # recorded steps only
    # windows are numbered in time order; one past the run's end is refused before the
    # run file is made (it recorded nothing, silently)
    assert main(["train", "tiny", "--epochs", "0.02", "-o", str(tmp_path / "o.h5"), "-q", "--record", "spikes",
                 "--record-windows", "150:10,0:10,end:5"]) == 0
    np.testing.assert_array_equal(load(tmp_path / "o.h5").windows, [[0, 10], [150, 160], [195, 200]])
    with pytest.raises(ConfigError, match="record.windows: the window '200:10' starts at or after the run's end"):
        train(load_config("tiny").replace(train={"epochs": 0.02}, record={"windows": ["0:10", "200:10"]}),
              out=tmp_path / "past.h5", progress=False)
    assert not (tmp_path / "past.h5").exists()
    # a window that starts before the run is clipped to its first step
    assert Window.parse("end:500").resolve(100) == (0, 100)


def test_test_passes_record_no_feedback_and_windows_name_them(tmp_path):
    """A test pass computes neither the modulator nor U (no plasticity, no feedback sweep),
    so neither is recorded there; in phase "test" an integer window is the i-th recorded
    test pass; a bad layer, kind, phase or window is an error that names it."""
    cfg = load_config("tiny").replace(
        train={"epochs": 0.1, "test_every": 100}, test={"n_test": 40},
        record={"probes": ["spikes layers=out", "psp,U,m layers=h2 neurons=0,1"], "test": True, "test_steps": 20})
    run = Run(train(cfg, out=tmp_path / "t.h5", progress=False).path)
    assert run.recorded("test") == {"h2": ("psp",), "out": ("spikes",)}
    assert set(run.recorded("train")["h2"]) == {"psp", "feedback_psp", "modulator"}
    passes = run.test_passes()
    assert passes["start"].size >= 2
    second = run.raster("out", 1, phase="test")
    assert second.step[0] == passes["start"][1] and second.step[-1] == passes["stop"][1] - 1
    for call, message in ((lambda: run.raster("h9"), "unknown layer 'h9'"),
                          (lambda: run.raster("out", 99, phase="test"), "test passes"),
                          (lambda: run.raster("out", (50, 10)), "stop must be after start"),
                          (lambda: run.raster("out", 1.5), "expected"),
                          (lambda: run.trace("h2", "spikes"), "a trace is one of"),
                          (lambda: run.raster("out", phase="tset"), "phase"),
                          # these were {} (read as "nothing recorded"), rows of (0, 50) and a bare
                          # "cannot convert float NaN to integer"
                          (lambda: run.recorded("val"), "phase = 'val'; valid: 'train', 'test'"),
                          (lambda: run.raster("out", (0.5, 50.5)), r"window = \(0.5, 50.5\): .*two integers"),
                          (lambda: run.trace("h2", "psp", (float("nan"), 50)), r"window = \(nan, 50\)"),
                          (lambda: run.final("out", "B"), "no final 'B'"),
                          (lambda: run.rates("h9"), "unknown layer")):
        with pytest.raises(ValueError, match=message):
            call()


def test_chunk_rows_past_hdf5s_chunk_limit_is_named(tmp_path):
    """record.chunk_rows = 10**8 tried to allocate a 292 GiB buffer for the input rates and
    ended in 'not enough memory ... is a size such as model.layers too large?', which
    pointed away from the key at fault; past HDF5's 4 GiB per chunk it cannot work at all."""
    cfg = load_config("tiny").replace(train={"epochs": 0.01, "test_every": 0},
                                      record={"chunk_rows": 10**8, "probes": ["fig4"]})
    with pytest.raises((ConfigError, runfile.RunFileError), match=r"record.chunk_rows = 100000000 is not allowed: .*rates.* over HDF5's limit"):
        train(cfg, out=tmp_path / "c.h5", progress=False)


def test_chunk_rows_0_picks_about_a_mebibyte_within_its_bounds(tmp_path):
    """record.chunk_rows = 0 (docs/file-format.md): rows per chunk, a power of two, make at
    most about 1 MiB of the widest field, at most 65,536 rows (narrow series) and at least
    16 (a field wider than 64 KiB per row); a chunk_rows given is taken as it is."""
    from spikefa.record import H5Sink

    with h5py.File(tmp_path / "c.h5", "w") as f:
        sink = H5Sink(f, chunk_rows=0)
        sink.declare("narrow", {"step": (np.int64, ()), "label": (np.int16, ())})
        sink.declare("layer", {"step": (np.int64, ()), "values": (np.float32, (784,))})
        sink.declare("wide", {"step": (np.int64, ()), "values": (np.float32, (100_000,))})
        assert f["narrow/step"].chunks == (65536,) and f["narrow/label"].chunks == (65536,)
        assert f["layer/values"].chunks == (256, 784)  # 1 MiB / 3,136 bytes = 334 rows, down to 256
        assert f["wide/values"].chunks == (16, 100_000)
        given = H5Sink(f, chunk_rows=100)
        given.declare("given", {"step": (np.int64, ()), "values": (np.float32, (784,))})
        assert f["given/values"].chunks == (100, 784) and given.series["given"].buf["values"].shape == (100, 784)


class _ReadDuringTestPasses(Recorder):
    """A recorder that reads its own run file (test raster, passes, progress) after every
    block of every test pass, as a reader of the running run would."""

    def __init__(self, cfg, path, **kw):
        super().__init__(cfg, **kw)
        self.path, self.seen = path, []

    def test_hook(self, train_step):
        hook = super().test_hook(train_step)
        if hook is None:
            return None

        def read_after(net, step0, outputs):
            hook(net, step0, outputs)
            run = Run(self.path)
            self.seen.append((self._test_clock, run.raster("out", (0, 10**9), phase="test"), run.test_passes(),
                              run.progress()))

        read_after.rec_idx = hook.rec_idx
        return read_after


def _test_pass_cfg(**record):
    return load_config("tiny").replace(train={"epochs": 0.6, "test_every": 300}, test={"n_test": 100},
                                       run={"block_steps": 100}, record={
        "probes": ["spikes layers=out random=1"], "test": True, "test_steps": 300, "chunk_rows": 64,
        "spike_format": "events", **record})


def test_an_events_raster_read_during_a_test_pass_shows_only_rows_flushed_together(tmp_path):
    """During a test pass the stimulus (a row per step) fills its buffer, and is written,
    long before the events of a sparse unit do: a reader of the running run got the pass's
    steps as rows without spikes where the unit spiked. As in training, a run not complete
    shows the test steps through /progress/test_steps_recorded only, which a flush sets
    once every series is on disk: what is read is a beginning of what the finished file
    holds."""
    cfg = _test_pass_cfg(flush_seconds=3600.0)
    path = tmp_path / "t.h5"
    rec = _ReadDuringTestPasses(cfg, path, total_steps=1200)
    train(cfg, out=path, progress=False, recorder=rec)
    run = Run(path)
    want, passes = run.raster("out", (0, 10**9), phase="test"), run.test_passes()
    assert passes["start"].size >= 3 and want.spikes.any()
    stimulus_ahead = 0
    with h5py.File(path, "r") as f:
        assert f["progress/test_steps_recorded"][()] == want.step[-1] + 1
    for clock, got, got_passes, prog in rec.seen:
        k = got.step.size
        assert k == prog["test_steps_recorded"] <= clock
        stimulus_ahead += k < clock
        np.testing.assert_array_equal(got.step, want.step[:k])
        np.testing.assert_array_equal(got.spikes, want.spikes[:k], err_msg=f"at test step {clock}")
        n = got_passes["start"].size
        for key in ("train_step", "start"):
            np.testing.assert_array_equal(got_passes[key], passes[key][:n])
        assert (got_passes["stop"] <= max(k, got_passes["start"][-1] if n else 0)).all()
    assert stimulus_ahead  # the case above happened: stimulus rows on disk past the cut


@pytest.mark.parametrize("flush_seconds", [5.0, 3600.0])
def test_a_long_test_pass_is_flushed_on_time(tmp_path, monkeypatch, flush_seconds):
    """Timed flushes happened only between blocks of training: a test pass (minutes for
    the full network) showed a reader nothing new until it ended. The recorder's clock
    (10 s a reading here) now flushes during test passes too, at most every flush_seconds,
    and test_steps_recorded follows the recorded test steps; with a longer flush_seconds a
    pass still becomes readable only with its row."""
    import types

    from spikefa import record

    now = [0.0]

    def monotonic():
        now[0] += 10.0
        return now[0]

    monkeypatch.setattr(record, "time", types.SimpleNamespace(monotonic=monotonic))
    cfg = _test_pass_cfg(flush_seconds=flush_seconds)
    path = tmp_path / "t.h5"
    rec = _ReadDuringTestPasses(cfg, path, total_steps=1200)
    train(cfg, out=path, progress=False, recorder=rec)
    want = Run(path).raster("out", (0, 10**9), phase="test")
    ends = set(Run(path).test_passes()["start"].tolist())  # a pass's first block starts where the last ended
    assert len(rec.seen) > len(ends)  # blocks inside passes
    for clock, got, _, prog in rec.seen:
        if flush_seconds < 3600:
            assert prog["test_steps_recorded"] == got.step.size == clock
        else:
            assert prog["test_steps_recorded"] in ends and prog["test_steps_recorded"] < clock
        np.testing.assert_array_equal(got.spikes, want.spikes[:got.step.size])


def test_a_file_from_before_test_steps_recorded_shows_the_test_passes_with_their_row(tmp_path):
    """A run file written before /progress/test_steps_recorded, read while not complete
    (running under an older spikefa, or killed): its test raster is cut to the passes whose
    row in /test is written (the writer flushes a pass whole before its row), not to the
    stimulus rows a pass in progress got on disk before its events and its entry in the
    passes table."""
    cfg = _test_pass_cfg(flush_seconds=3600.0)
    path = train(cfg, out=tmp_path / "old.h5", progress=False).path
    run = Run(path)
    want, passes = run.raster("out", (0, 10**9), phase="test"), run.test_passes()
    start = passes["start"]
    assert start.size >= 3 and want.spikes.any()
    with h5py.File(path, "a") as f:
        del f["progress/test_steps_recorded"]
        f.attrs["complete"] = False

    def drop_last(table):
        with h5py.File(path, "a") as f:
            for ds in f[table].values():
                ds.resize(ds.shape[0] - 1, axis=0)

    def check(upto, n_passes):
        run = Run(path)
        got, got_passes = run.raster("out", (0, 10**9), phase="test"), run.test_passes()
        keep = want.step < upto
        np.testing.assert_array_equal(got.step, want.step[keep])
        np.testing.assert_array_equal(got.spikes, want.spikes[keep])
        np.testing.assert_array_equal(got_passes["start"], start[:n_passes])
        assert got_passes["stop"][-1] == upto
        assert run.progress()["test_steps_recorded"] is None

    check(passes["stop"][-1], start.size)  # every pass has its row: all of them
    drop_last("test")  # the last pass ran, its row not yet written
    check(start[-1], start.size)
    drop_last("record/test/passes")  # ... nor its entry in the passes table
    check(start[-1], start.size - 1)


def test_a_running_run_this_process_holds_open_in_h5py_is_noted_as_an_old_view(tmp_path, caplog):
    """A notebook that opened a run file with h5py itself, then read it with spikefa while
    the run went on: HDF5 gave spikefa's reads that handle's view of the file, as of when
    it was opened, and the run's new rows were silently not seen. A note now says so, once
    per file; spikefa's own reads (nested or not) and a finished run's file give none."""
    import logging

    path = tmp_path / "r.h5"
    train(load_config("tiny").replace(train={"epochs": 0.05}), out=path, progress=False)
    with caplog.at_level(logging.WARNING, logger="spikefa.runfile"):
        run = load(path)
        run.summary(), run.test_curve(), run.progress()
        with h5py.File(path, "r"):
            load(path).summary()  # complete: its file will not change
        assert not caplog.records
        with h5py.File(path, "a") as f:
            f.attrs["complete"] = False  # (as a running run's file, or one that will be resumed)
        for kw in ({}, {"swmr": True}):
            with h5py.File(path, "r", **kw):
                assert load(path).test_curve()["step"].size == run.test_curve()["step"].size
                load(path).summary()
        notes = [r.getMessage() for r in caplog.records]
        assert len(notes) == 1 and "another h5py.File" in notes[0] and "close it to read the run as it is now" in notes[0]
