"""Figures from a small saved run (issue 4): every plot renders, at the expected size, and
Fig. 4 has its panels."""

from __future__ import annotations

import matplotlib.image
import h5py
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spikefa import load, plots
from spikefa.config import load_config
from spikefa.runfile import RunFileError
from spikefa.train import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """tiny (784-100-100-100), 1,000 steps with the Fig. 4 probes in three windows, tests
    every 500 steps, rates and angles every 250."""
    cfg = load_config("tiny").replace(
        train={"epochs": 0.1, "test_every": 100}, test={"n_test": 50},
        record={"probes": ["fig4"], "windows": ["0:60", "50%:60", "end:60"], "measure_every": 250, "test": True,
                "test_steps": 30})
    res = train(cfg, out=tmp_path_factory.mktemp("plots") / "run.h5", progress=False)
    return load(res.path)


CALLS = {
    "raster": lambda run, ax: plots.raster(run, "h1", 0, ax=ax),
    "raster-out": lambda run, ax: plots.raster(run, "out", 2, ax=ax),
    "raster-test": lambda run, ax: plots.raster(run, "out", (0, 30), phase="test", ax=ax),
    "traces": lambda run, ax: plots.traces(run, "h1", window=1, ax=ax),
    "error": lambda run, ax: plots.test_error(run, ax=ax),
    "angles": lambda run, ax: plots.angles(run, ax=ax),
    "rates": lambda run, ax: plots.rates(run, ax=ax),
}


@pytest.mark.parametrize("name", CALLS)
def test_every_plot_renders(run, name, tmp_path):
    """With ax=None each function makes its own figure; given an axes it draws into it and
    returns it. The PNG is figsize x dpi pixels."""
    ax = CALLS[name](run, None)
    assert isinstance(ax, Axes) and ax.has_data()
    fig = Figure(figsize=(4, 3))
    mine = fig.add_subplot()
    assert CALLS[name](run, mine) is mine
    png = plots.save(fig, tmp_path / f"{name}.png", dpi=50)
    assert matplotlib.image.imread(png).shape[:2] == (150, 200)


def test_raster_shows_what_was_recorded(run):
    ax = plots.raster(run, "h1", 0)
    x, y = ax.lines[0].get_data()
    r = run.raster("h1", 0)
    assert x.size == r.spikes.sum() and set(np.unique(x)) <= set(r.step)


def test_fig4_has_its_panels(run, tmp_path):
    fig = plots.fig4(run)
    labels = {ax.get_label() for ax in fig.axes}
    for col in range(3):
        for row in ("images", "h1", "h2", "out", "traces"):
            assert f"fig4:{row}:{col}" in labels
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [t.split()[0] for t in titles] == ["early", "middle", "late"]
    out = [ax for ax in fig.axes if ax.get_label() == "fig4:out:0"][0]
    assert [t.get_text() for t in out.get_yticklabels()] == [str(c) for c in range(10)]
    assert out.collections  # the class of the image shown is shaded
    traces = [ax for ax in fig.axes if ax.get_label() == "fig4:traces:2"][0]
    assert traces.lines and traces.right_ax.lines  # V and delta
    for suffix in (".png", ".pdf"):
        path = plots.save(fig, tmp_path / f"fig4{suffix}", dpi=40)
        assert path.stat().st_size > 1000
    assert matplotlib.image.imread(tmp_path / "fig4.png").shape[:2] == (11 * 40, 12 * 40)


def test_plot_from_the_command_line(run, tmp_path, capsys):
    from spikefa.cli import main

    for kind in ("fig4", "raster", "traces", "error", "angles", "rates"):
        assert main(["plot", kind, str(run.path), "-o", str(tmp_path / f"{kind}.png"), "--dpi", "30"]) == 0
        assert (tmp_path / f"{kind}.png").stat().st_size > 500
    assert main(["plot", "raster", str(run.path), "-o", str(tmp_path / "r.pdf"), "--layer", "h2", "--window", "1"]) == 0
    assert main(["plot", "error", str(run.path), "-o", str(tmp_path / "e.jpg")]) == 2
    assert "suffix" in capsys.readouterr().err
    # rates at a chosen training step: the sample nearest it (measured every 250 steps)
    assert main(["plot", "rates", str(run.path), "--at", "260", "-o", str(tmp_path / "r250.png")]) == 0
    ax = plots.rates(run, step=260)
    assert "after 250 training steps" in ax.get_title()
    assert main(["plot", "error", str(run.path), "--at", "260", "-o", str(tmp_path / "e.png")]) == 2
    assert "rates plot only" in capsys.readouterr().err
    # options a plot does not take are errors, not dropped (fig4 --window 1 drew the usual
    # three columns; --phase test drew the training recordings)
    for extra, what in ((["--window", "1"], "window"), (["--phase", "test"], "--phase test"),
                        (["--layer", "h1"], "layer")):
        assert main(["plot", "fig4", str(run.path), "-o", str(tmp_path / "f.png"), *extra]) == 2
        err = capsys.readouterr().err
        assert what in err and "not to fig4" in err and "first, middle and last" in err
    assert main(["plot", "error", str(run.path), "--steps", "50", "-o", str(tmp_path / "e.png")]) == 2
    assert "fig4 plot only" in capsys.readouterr().err
    # a bad layer is named as such (it read as a damaged file), an unwritable output in one line
    assert main(["plot", "rates", str(run.path), "--layer", "h9", "-o", str(tmp_path / "r.png")]) == 2
    assert "layer 'h9'" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main(["plot", "error", str(run.path), "-o", str(tmp_path / "a-file" / "e.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikefa: error: ") and "Traceback" not in err


def test_error_curves_of_several_runs_over_each_other(run, tmp_path, capsys):
    """`spikefa plot error A.h5 B.h5` compares runs: one colour each, labelled by file name,
    their other read-out dotted in the same colour; the other plots take one run."""
    import shutil

    from spikefa.cli import main

    other = tmp_path / "other.h5"
    shutil.copy(run.path, other)
    ax = plots.test_error([run, other])
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_label() for line in solid] == ["run (last)", "other (last)"]
    assert [line.get_color() for line in solid] == [line.get_color() for line in dotted] == ["C0", "C1"]
    np.testing.assert_allclose(solid[1].get_ydata(), 100 * run.test_curve()["error"])
    np.testing.assert_allclose(dotted[1].get_ydata(), 100 * run.test_curve()["error_sum"])
    assert main(["plot", "error", str(run.path), str(other), "-o", str(tmp_path / "both.png")]) == 0
    assert (tmp_path / "both.png").stat().st_size > 500
    assert main(["plot", "angles", str(run.path), str(other), "-o", str(tmp_path / "a.png")]) == 2
    assert "only 'error' draws several" in capsys.readouterr().err


def test_missing_recordings_are_clear_errors(tmp_path):
    res = train("tiny", epochs=0.1, out=tmp_path / "bare.h5", progress=False)
    with pytest.raises(RunFileError, match="spikes of h1 .* were not recorded; recorded: nothing"):
        plots.raster(res.path, "h1")
    with pytest.raises(RunFileError, match="no PSP was recorded"):
        plots.traces(res.path)
    plots.angles(res.path)  # rates and angles are recorded by default
    plots.rates(res.path)
    with pytest.raises(RunFileError, match=r"record=\{'probes': \['fig4'\]\}"):  # the Python form too
        plots.fig4(res.path)
    # no feedback, no alignment: said, not an empty plot
    shallow = train(load_config("tiny").replace(model={"feedback": "shallow"}), epochs=0.05,
                    out=tmp_path / "shallow.h5", progress=False)
    with pytest.raises(RunFileError, match="'shallow' sends no feedback"):
        plots.angles(shallow.path)
    unmeasured = train(load_config("tiny").replace(record={"measure_every": 0}), epochs=0.01,
                       out=tmp_path / "unmeasured.h5", progress=False)
    with pytest.raises(RunFileError, match=r"no angles were recorded \(record.measure_every = 0\)"):
        plots.angles(unmeasured.path)


def test_angles_mark_the_flattened_ceiling_of_fixed_feedback(tmp_path):
    from spikefa.alignment import flat_ceilings
    from spikefa.network import init_network

    res = train("tiny", epochs=0.1, out=tmp_path / "fa.h5", progress=False)
    ax = plots.angles(res.path)
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    net = init_network(load_config("tiny"))
    lows = flat_ceilings([net.feedback_matrix(l) for l in range(1, net.m)])
    # one dotted line per distinct floor: layers of one size share it (within 0.05 degrees)
    distinct = [low for i, low in enumerate(lows) if all(abs(low - x) >= 0.05 for x in lows[:i])]
    assert [line.get_ydata()[0] for line in dotted] == pytest.approx(distinct)
    labels = [line.get_label() for line in dotted]
    named = [name.strip() for label in labels for name in label.split(":")[0].split(",")]
    assert sorted(named) == ["h1", "h2"]                 # every hidden layer named once
    assert all(60 < low < 80 for low in lows)            # 10 of 100 directions in tiny: about 72 degrees
    assert not [line for line in plots.angles(res.path, ceiling=False).get_lines() if line.get_linestyle() == ":"]


@pytest.mark.parametrize("kind", ["raster", "traces"])
def test_render_shows_one_window_of_several(run, kind, tmp_path, monkeypatch):
    """`spikefa plot raster|traces` of a run recorded in three windows draws the first one
    (not three slivers on one long axis) and says so in the title; --window picks another."""
    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, out, dpi=150: drawn.append(fig) or out)
    plots.render(kind, run, tmp_path / "a.png")
    ax = drawn[-1].axes[0]
    first = run.windows[0]
    assert first[0] - 1 <= ax.get_xlim()[0] and ax.get_xlim()[1] <= first[1] + 1
    assert "window 0 of 3" in ax.get_title() and "window=N (--window N)" in ax.get_title()
    plots.render(kind, run, tmp_path / "b.png", window=2)
    ax = drawn[-1].axes[0]
    assert ax.get_xlim()[0] >= run.windows[2][0] - 1 and ax.get_title() == ""


def test_plot_of_nothing_recorded_says_how_to_record(tmp_path):
    res = train(load_config("tiny").replace(train={"epochs": 0.01, "test_every": 0}),
                out=tmp_path / "bare.h5", progress=False)
    with pytest.raises(RunFileError, match="--record fig4"):
        plots.raster(res.path, "out")


def test_raster_of_a_window_with_no_recording_says_where_the_recordings_are(run):
    with pytest.raises(ValueError, match="the run recorded train steps in 0:60"):
        plots.raster(run, "h1", (70, 80))


def test_each_panel_draws_its_own_data(run):
    """Each Fig. 4 column shows its own recording window (rasters and the traced neuron), the
    rates histogram is the last sample, the angle lines are the recorded angles, and a
    test-pass raster shades the classes of the test images shown (a panel drawing another
    window's or phase's data passed the render checks above)."""
    fig = plots.fig4(run)
    axes = {ax.get_label(): ax for ax in fig.axes}
    for c, (a, b) in enumerate(run.windows):
        for row in ("h1", "h2", "out"):
            assert axes[f"fig4:{row}:{c}"].get_xlim() == (a - 0.5, b - 0.5)
            x = axes[f"fig4:{row}:{c}"].lines[0].get_xdata()
            assert x.size and a <= x.min() and x.max() < b
        for line in axes[f"fig4:traces:{c}"].lines:
            x = line.get_xdata()
            assert x.size and a <= x.min() and x.max() < b
    r = run.rates("h1")
    ax = plots.rates(run, layers=["h1"])
    assert f"after {int(r['step'][-1]):,} training steps" in ax.get_title()
    heights = np.histogram(r["rates"][-1], bins=np.linspace(0, 1, 31))[0] / r["rates"].shape[1]
    path = ax.patches[0].get_path().vertices  # the step outline: heights at its top edges
    assert set(np.round(heights, 9)) <= set(np.round(path[:, 1], 9))
    angles = run.angles()
    ax = plots.angles(run, ceiling=False)
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata()) > 2]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    for line, layer in zip(solid, angles["weight"]):
        np.testing.assert_array_equal(line.get_ydata(), angles["weight"][layer])
    for line, layer in zip(dashed, angles["modulator"]):
        np.testing.assert_array_equal(line.get_ydata(), angles["modulator"][layer])
    assert len(solid) == len(dashed) == len(angles["weight"]) == len(run.layers) - 2  # one per hidden layer
    # shading in a test pass: one band per image shown, at the class of that test image
    npc = run.config.model.layers[-1] // run.config.model.n_classes
    ax = plots.raster(run, "out", 0, phase="test")
    st = run.stimulus(0, phase="test")
    change = np.flatnonzero(np.diff(st.label) != 0) + 1
    want = [int(st.label[i]) for i in np.r_[0, change]]
    bands = [int(round((coll.get_paths()[0].vertices[:, 1].min() + 0.5) / npc)) for coll in ax.collections]
    assert bands == want
    train_labels = run.stimulus(run.windows[0], phase="train").label[:st.label.size]
    assert not np.array_equal(train_labels, st.label)  # else the check above could not tell the phases apart


def test_fig4_and_traces_of_runs_with_fewer_or_unreached_windows(tmp_path):
    """Fig. 4 of a run with two recording windows draws those two (its middle column fell in
    the gap between them and ended in an IndexError traceback); of a stopped run whose last
    window was not reached, the windows it did record; a traces plot of an unrecorded
    window is an error, as a raster's is, which says how far the stopped run got."""
    from spikefa.record import Recorder

    cfg = load_config("tiny").replace(train={"epochs": 0.5, "test_every": 0},
                                      record={"probes": ["fig4"], "windows": ["0:100", "end:100"]})
    two = load(train(cfg, out=tmp_path / "two.h5", progress=False).path)
    fig = plots.fig4(two)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["window 0 (steps 0-99)", "window 1 (steps 4,900-4,999)"]
    with pytest.raises(ValueError, match=r"no recorded steps of h1 in window \(200, 300\).*0:100, 4900:5000"):
        plots.traces(two, "h1", window=(200, 300))

    class StopAt3000(Recorder):
        def on_block(self, net, step0, outputs):
            super().on_block(net, step0, outputs)
            if self.step >= 3000:
                raise KeyboardInterrupt

    cfg = cfg.replace(record={"windows": ["0:100", "50%:100", "end:100"]})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "cut.h5", progress=False, recorder=StopAt3000(cfg, total_steps=5000))
    cut = load(tmp_path / "cut.h5")
    fig = plots.fig4(cut)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["window 0 (steps 0-99)", "window 1 (steps 2,500-2,599)"]
    with pytest.raises(ValueError, match="window 2;.*not complete: its recordings reach step 3,000 so far"):
        plots.raster(cut, "h1", 2)
    with h5py.File(cut.path, "a") as f:  # as a reader finds a run that has not ended its first block
        f["progress/steps_recorded"][()] = 0
    with pytest.raises(ValueError, match=r"window \(200, 300\);.*not complete: none of its recordings has reached the file yet"):
        plots.raster(load(cut.path), "h1", (200, 300))


def test_save_to_a_folder_or_without_a_suffix_names_the_whole_path(tmp_path):
    """`spikefa plot ... -o DIR` said 'cannot write DIR-name: the suffix must be ...' with
    only the last part of the path and no word that it is a folder."""
    ax = Figure().add_subplot()
    with pytest.raises(ValueError, match=f"{tmp_path} is a folder: give a file name such as .*figure.png"):
        plots.save(ax, tmp_path)
    with pytest.raises(ValueError, match=f"cannot write {tmp_path / 'sub' / 'x'}: the suffix"):
        plots.save(ax, tmp_path / "sub" / "x")


def test_fig4_of_a_run_with_nothing_flushed_yet_says_so(tmp_path):
    """`spikefa plot fig4` of a running run before its first flush (record.flush_seconds,
    30 s by default) said 'nothing was recorded', as if the run recorded nothing at all; it
    now says that nothing has reached the file yet and which steps the run records."""
    from spikefa.record import Recorder

    cfg = load_config("tiny").replace(train={"epochs": 0.5, "test_every": 0},
                                      record={"probes": ["fig4"], "windows": ["0:100", "50%:100", "end:100"]})

    class StopFirst(Recorder):
        def on_block(self, net, step0, outputs):
            raise KeyboardInterrupt  # before its first block is recorded: nothing flushed

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "cut.h5", progress=False, recorder=StopFirst(cfg, total_steps=5000))
    cut = load(tmp_path / "cut.h5")
    assert not cut.complete and not cut.stimulus().step.size
    with pytest.raises(RunFileError, match=r"no recorded steps to draw yet; the run records train steps in "
                                           r"0:100, 2500:2600, 4900:5000; the run is not complete: none of "
                                           r"its recordings has reached the file yet"):
        plots.fig4(cut)


def test_a_run_file_just_created_says_its_recordings_are_not_set_up_yet(tmp_path):
    """Between creating its run file and setting up its recordings (a sweep restarting a
    run over its old file, read at that moment), a run that records fig4 read as one that
    records nothing: 'no spikes or traces were recorded for Fig. 4 (record with the probe
    'fig4')' and 'nothing was recorded ... (record with spikefa train ... --record PROBE',
    advice to train again. It now says the run records them but has not set them up yet."""
    from spikefa.runfile import create_run_file

    cfg = load_config("tiny").replace(record={"probes": ["fig4"]})
    path = create_run_file(tmp_path / "new.h5", cfg, total_steps=1000)
    run = load(path)
    hint = r"the run records spikes layers=h1,h2 .* but has not set up its recordings in the file yet \(it is starting"
    with pytest.raises(RunFileError, match="nothing was recorded in phase 'train'; " + hint):
        plots.fig4(run)
    with pytest.raises(RunFileError, match="no spikes or traces were recorded for Fig. 4; " + hint):
        plots.fig4(run, windows=[(0, 100)])
    with pytest.raises(RunFileError, match="nothing was recorded in phase 'train'; " + hint):
        run.stimulus()
    with pytest.raises(RunFileError, match=r"spikes of h1 \(train\) were not recorded; recorded: nothing; " + hint):
        run.raster("h1")
    # a run that records nothing still gets the advice to record
    bare = load(create_run_file(tmp_path / "bare.h5", load_config("tiny"), total_steps=1000))
    with pytest.raises(RunFileError, match=r"nothing was recorded in phase 'train' \(record with spikefa train"):
        plots.fig4(bare)
    with pytest.raises(RunFileError, match="record with the probe 'fig4'"):
        plots.fig4(bare, windows=[(0, 100)])
    with pytest.raises(RunFileError, match=r"nothing \(record with spikefa train"):
        bare.raster("h1")


def test_traces_whose_delta_was_traced_for_other_units(tmp_path):
    """`spikefa plot traces` of a run tracing V of some units and the delta of others
    ('psp layers=h1 neurons=0,7' with 'modulator layers=h1 neurons=3,7') ended in an
    IndexError traceback. It now shows a unit traced in both by default; a unit without a
    delta gets its V and a right axis that says the delta was not recorded, never a labelled
    delta axis with nothing on it (as a test pass, which records no delta, also had)."""
    cfg = load_config("tiny").replace(
        train={"epochs": 0.02, "test_every": 0},
        record={"probes": ["psp layers=h1 neurons=0,7", "modulator layers=h1 neurons=3,7"], "windows": ["0:100"]})
    run = load(train(cfg, out=tmp_path / "mixed.h5", progress=False).path)
    ax = plots.traces(run)
    assert ax.get_ylabel() == "V (h1:7)"
    d = run.trace("h1", "modulator")
    np.testing.assert_array_equal(ax.right_ax.lines[0].get_ydata(), d.values[:, 1])
    ax = plots.traces(run, "h1", neuron=0)
    assert ax.get_ylabel() == "V (h1:0)" and not ax.right_ax.lines
    assert "not recorded" in ax.right_ax.get_ylabel()


def test_traces_of_a_test_pass_do_not_label_a_delta_axis(run):
    ax = plots.traces(run, "h1", window=0, phase="test")
    assert ax.lines and not ax.right_ax.lines
    assert "not recorded" in ax.right_ax.get_ylabel()


def test_error_plot_of_a_run_without_a_test_pass_says_so(run, tmp_path, capsys):
    """`spikefa plot error` of a run stopped (or still running) before its first test pass
    wrote an empty axes with a legend and exited 0, as if the run had a curve to show."""
    from spikefa.cli import main
    from spikefa.runfile import create_run_file

    cfg = load_config("tiny").replace(train={"test_every": 0})
    empty = create_run_file(tmp_path / "new.h5", cfg, total_steps=1000)
    with pytest.raises(RunFileError, match=r"new.h5: no test pass yet \(train.test_every = 0: it tests only at the end"):
        plots.test_error(empty)
    with pytest.raises(RunFileError, match="no test pass yet"):  # not left out of a comparison unsaid
        plots.test_error([run, empty])
    assert main(["plot", "error", str(empty), "-o", str(tmp_path / "e.png")]) == 2
    assert "no test pass yet" in capsys.readouterr().err and not (tmp_path / "e.png").exists()


def test_fig4_images_of_a_run_trained_on_mnist_from_its_own_folder(run, tmp_path, monkeypatch):
    """A full-MNIST run trained with --data DIR records DIR as the file's data_dir (where
    spikefa test looks first); fig4 looked only on the usual search path and, not finding
    MNIST there, left its images row empty without a word."""
    import shutil

    from spikefa import data
    from spikefa.data import DataError

    folder = tmp_path / "mnist"
    folder.mkdir()
    path = tmp_path / "mnist-run.h5"
    shutil.copy(run.path, path)
    cfg = run.config.replace(train={"dataset": "mnist"})
    with h5py.File(path, "a") as f:
        f.attrs["config"] = cfg.to_json()
        f.attrs["data_dir"] = str(folder)
    subset = data.load_dataset("mnist-subset", "train")

    def load_dataset(name, split="train", data_dir=None):  # MNIST only in the run's own folder
        if name == "mnist" and data_dir is not None and str(data_dir) == str(folder):
            return subset
        raise DataError("MNIST not found")

    monkeypatch.setattr(data, "load_dataset", load_dataset)
    fig = plots.fig4(load(path))
    strip = [ax for ax in fig.axes if ax.get_label() == "fig4:images:0"][0]
    assert strip.images and strip.axison
    # without the data the row stays empty, and says why
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(DataError("MNIST not found")))
    fig = plots.fig4(load(path))
    strip = [ax for ax in fig.axes if ax.get_label() == "fig4:images:0"][0]
    assert not strip.images and "images not shown: MNIST not found" in strip.texts[0].get_text()


@pytest.mark.parametrize("kind", ["raster", "traces"])
def test_a_test_pass_is_drawn_on_its_own_step_axis(run, kind):
    """A test pass's raster and traces were labelled 'step' 0, 1, ... like training steps
    (test passes count their recorded steps from 0), with nothing saying that they came
    from a test pass, nor after how much training: read as the first steps of training."""
    tp = run.test_passes()
    draw = {"raster": lambda w: plots.raster(run, "out", w, phase="test"),
            "traces": lambda w: plots.traces(run, "h1", window=w, phase="test")}[kind]
    ax = draw(1)
    assert ax.get_xlabel() == "recorded test step"
    assert ax.get_title() == f"test pass after {int(tp['train_step'][1]):,} training steps"
    ax = draw((int(tp["start"][0]), int(tp["stop"][1])))
    assert ax.get_title() == f"test passes after {int(tp['train_step'][0]):,}, {int(tp['train_step'][1]):,} training steps"
    assert {"raster": lambda: plots.raster(run, "out", 0),
            "traces": lambda: plots.traces(run, "h1", window=0)}[kind]().get_xlabel() == "step"


def test_angles_of_dfa_name_only_the_layers_drawn(tmp_path):
    """With dfa the lower hidden layers get no B from the layer above: their angles are
    all NaN, and the legend still named 'h1: W vs B' and 'h1: modulators' for lines that
    were not drawn (one could look for them under the others'). They are now left out of
    the legend, and the title says that h1 has no angle."""
    res = train(load_config("tiny").replace(model={"feedback": "dfa"}, record={"measure_every": 200}), epochs=0.05,
                out=tmp_path / "dfa.h5", progress=False)
    a = load(res.path).angles()
    assert np.isnan(a["weight"]["h1"]).all() and np.isfinite(a["weight"]["h2"]).any()
    ax = plots.angles(res.path)
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["h2: W vs B", "h2: modulators"]
    assert "no angle for h1" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert not [t for t in legend if t.startswith("h1")]


def test_error_curves_of_runs_with_the_same_file_name_have_their_own_labels(run, tmp_path):
    """Runs of the same name in two folders (runs/old/tiny-fa-seed1.h5 and
    runs/new/tiny-fa-seed1.h5) were both labelled 'tiny-fa-seed1 (last)': the legend did
    not say which curve is which."""
    import shutil

    for d in ("old", "new"):
        (tmp_path / d).mkdir()
        shutil.copy(run.path, tmp_path / d / "run.h5")
    ax = plots.test_error([tmp_path / "old" / "run.h5", tmp_path / "new" / "run.h5"])
    solid = [line.get_label() for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert solid == ["old/run (last)", "new/run (last)"]


def test_fig4_of_one_short_window_draws_each_step_once(tmp_path):
    """Fig. 4 of a run recorded in one window shorter than three columns of 200 steps drew
    overlapping columns (0:100 three times as 'early', 'middle' and 'late', all steps
    0-99), under names that read as stages of training although the window lies at its
    start. Its columns are now three parts of the window that do not overlap, named as
    parts of the window; a recording of the whole run keeps early, middle and late."""
    cfg = load_config("tiny").replace(train={"epochs": 0.2, "test_every": 0},
                                      record={"probes": ["fig4"], "windows": ["0:150"], "measure_every": 0})
    fig = plots.fig4(load(train(cfg, out=tmp_path / "short.h5", progress=False).path))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["start of window 0 (steps 0-49)", "middle of window 0 (steps 50-99)",
                      "end of window 0 (steps 100-149)"]
    whole = cfg.replace(record={"windows": []})
    fig = plots.fig4(load(train(whole, out=tmp_path / "whole.h5", progress=False).path), steps=100)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["early (steps 0-99)", "middle (steps 950-1,049)", "late (steps 1,900-1,999)"]


def test_test_pass_plot_of_a_run_that_records_training_only_says_so(tmp_path, capsys):
    """`spikefa plot raster|traces RUN.h5 --phase test` of a run that records its probes
    in training only (record.test = false) said 'recorded: nothing (record with spikefa
    train ... --record PROBE, e.g. --record fig4' and 'no PSP was recorded (add a probe',
    advice that a run recorded with --record fig4 already follows; the cause is that it
    records no test pass."""
    from spikefa.cli import main

    cfg = load_config("tiny").replace(train={"epochs": 0.02, "test_every": 0},
                                      record={"probes": ["fig4"], "windows": ["0:50"]})
    path = train(cfg, out=tmp_path / "train-only.h5", progress=False).path
    with pytest.raises(RunFileError, match=r"were not recorded; recorded: nothing \(the run records .* in training "
                                           r"only, record.test = false: .*--record-test"):
        plots.raster(path, "out", phase="test")
    with pytest.raises(RunFileError, match=r"no PSP was recorded in test passes \(the run records .*--record-test"):
        plots.traces(path, phase="test")
    assert main(["plot", "raster", str(path), "--phase", "test", "-o", str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert "--record-test" in err and "e.g. --record fig4" not in err


def test_plots_of_a_branched_run_show_the_windows_it_recorded(tmp_path):
    """A run branched from another's checkpoint (--branch-from) at step 500 records only
    its windows after that step. Its fig4 column showing run.windows[2] was titled
    'window 0' (--window 0 gives other steps), and a raster or traces plot without
    --window took window 0, recorded in the run it came from, and failed with 'the run
    recorded train steps in 0:50, ...', steps it did not record."""
    base = load_config("tiny").replace(train={"epochs": 0.05, "test_every": 0})
    first = train(base, out=tmp_path / "a.h5", progress=False)
    cfg = base.replace(train={"epochs": 0.1}, record={"probes": ["fig4"], "windows": ["0:50", "50%:50", "end:50"]})
    run = load(train(cfg, out=tmp_path / "b.h5", branch_from=first.path, progress=False).path)
    assert run.windows.tolist() == [[0, 50], [500, 550], [950, 1000]]
    fig = plots.fig4(run)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["window 1 (steps 500-549)", "window 2 (steps 950-999)"]
    for draw in (lambda: plots.raster(run, "h1"), lambda: plots.traces(run)):
        ax = draw()
        assert ax.get_title().startswith("recording window 1 of 3 (steps 500-549)")
        assert 500 <= ax.lines[0].get_xdata()[0] < 550
    with pytest.raises(ValueError, match=r"0:50, 500:550, 950:1000 \(from step 500 on: the run was branched"):
        plots.raster(run, "h1", 0)


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg"])
def test_save_stopped_while_drawing_leaves_the_old_figure_whole(tmp_path, suffix):
    """A Ctrl-C (or an error) while `spikefa plot -o FIG` drew the figure left a truncated
    file over the figure already there; it is now written whole or not at all."""
    path = tmp_path / f"fig{suffix}"
    ax = Figure().add_subplot()
    ax.plot([0, 1], [1, 0])
    plots.save(ax, path, dpi=30)
    old = path.read_bytes()
    fig = ax.figure
    draw = fig.savefig

    def interrupted(f, **kw):
        draw(f, **kw)
        raise KeyboardInterrupt  # after the bytes went out, before the save returned

    fig.savefig = interrupted
    ax.plot([0, 1], [0, 1])
    with pytest.raises(KeyboardInterrupt):
        plots.save(fig, path, dpi=30)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    fig.savefig = draw
    assert plots.save(fig, path, dpi=30) == path and path.read_bytes() != old


def test_angles_above_135_degrees_are_not_cut_off(run, tmp_path):
    """The angles axis was fixed at 0-135 degrees, so an angle above it (up to 180: W
    against B, as a sign-flipped feedback gives) was cut off without a sign."""
    import shutil

    path = tmp_path / "run.h5"
    shutil.copy(run.path, path)
    assert plots.angles(path, ceiling=False).get_ylim() == (0, 135)
    with h5py.File(path, "a") as f:
        f["angles/weight/h2"][-1] = 172.0
    ax = plots.angles(path, ceiling=False)
    assert ax.get_ylim()[1] >= 175
    drawn = [line for line in ax.get_lines() if line.get_label() == "h2: W vs B"][0]
    assert drawn.get_ydata()[-1] == 172.0


def test_plot_on_a_full_disk_names_the_file_and_keeps_the_old_one(run, tmp_path, monkeypatch, capsys):
    """A full disk while a figure was written ended with 'spikefa: error: [Errno 28] No space
    left on device', naming no file: the write into the open file carries no name. The
    error names the figure now, and the figure already there stays as it was."""
    import errno

    from spikefa.cli import main

    out = tmp_path / "e.png"
    assert main(["plot", "error", str(run.path), "-o", str(out), "--dpi", "30"]) == 0
    before = out.read_bytes()

    def savefig(self, f, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", savefig)
    capsys.readouterr()
    assert main(["plot", "error", str(run.path), "-o", str(out), "--dpi", "30"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out}: no space left" in err, err
    assert out.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_bad_plot_arguments_name_themselves(run):
    """Silent before: rates(step=nan) drew the first sample, rates(bins=0) an empty axes,
    fig4(steps=0 or nan) whole windows; errors from elsewhere before: rates(layers='h1')
    ('unknown layer h'), rates(step='100') (a ufunc error), fig4(windows=[7]) (TypeError),
    test_error([]) ('max() arg is an empty sequence'), ax = the array of plt.subplots(1, 2)
    ("'numpy.ndarray' object has no attribute 'plot'")."""
    fig = Figure()
    axs = np.array([fig.add_subplot(121), fig.add_subplot(122)])
    calls = {
        "step = nan": lambda: plots.rates(run, step=float("nan")),
        "step = '100'": lambda: plots.rates(run, step="100"),
        "bins = 0: the number of histogram bins": lambda: plots.rates(run, bins=0),
        "steps = 0: the most steps of each window": lambda: plots.fig4(run, steps=0),
        "steps = nan": lambda: plots.fig4(run, steps=float("nan")),
        r"windows = \[7\]: a list of \(start, stop\) steps.*recording windows: \[\(0, 60\)": lambda: plots.fig4(run, windows=[7]),
        r"run = \[\]": lambda: plots.test_error([]),
        "ax = ndarray: one matplotlib Axes": lambda: plots.raster(run, "h1", 0, ax=axs),
        "ax = Figure": lambda: plots.angles(run, ax=fig),
    }
    for message, call in calls.items():
        with pytest.raises(ValueError, match=message):
            call()
    ax = plots.rates(run, layers="h1")
    assert [t.get_text() for t in ax.get_legend().get_texts()][0].startswith("h1 ")
