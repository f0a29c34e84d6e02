"""Stopping, checkpointing, resuming and reading a run while it runs (mutation audit).

Each test pins a behaviour that no other test held down: what a reader of the run file
sees during a run (flushed recordings, the checkpoint's step, ``spikefa info``'s count),
what a checkpoint restores (learned feedback, the PSPs written as the final state),
what a resume keeps and drops (measures at the checkpoint's step, test rows written after
an older checkpoint, a test pass done before the checkpoint), how a stop, an error and
``--overwrite`` leave the checkpoint, and the exit status of ``spikefa`` when stopped by
Ctrl-C or when the reader of its output goes away. The runs are the ``tiny`` model for a
few hundred steps (a tenth of an epoch is 1,000 steps), so the whole file takes seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from spikefa.config import load_config
from spikefa.record import Recorder
from spikefa.runfile import Run, RunFileError, checkpoint_config, checkpoint_path, create_run_file
from spikefa.train import network_from_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("h1", "h2", "out")


def short_cfg(**changes):
    """The tiny model for 1,000 steps in blocks of 100, tested on 50 images every 300 steps."""
    sections = dict(train={"epochs": 0.1, "test_every": 60}, test={"n_test": 50}, run={"block_steps": 100})
    for section, keys in changes.items():
        sections[section] = {**sections.get(section, {}), **keys}
    return load_config("tiny").replace(**sections)


def ckpt_step(out) -> int:
    return checkpoint_config(out, with_step=True)[1]


def spikefa_env() -> dict:
    """The environment of a `python -m spikefa` subprocess: this checkout first on the path."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def signal_once_started(argv, started: Path, cwd, sig=signal.SIGINT, **popen) -> tuple[int, str]:
    """Run `python -m spikefa *argv`, send it ``sig`` once ``started`` exists (its run file
    or output folder: it is working), and return its exit status and stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "spikefa", *argv], env=spikefa_env(), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists(), proc.communicate()[1] if proc.poll() is not None else f"no {started} after 120 s"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


class RaiseAt:
    """A recorder that raises ``exc`` when the block ending at ``step`` has run."""

    def __init__(self, step, exc=KeyboardInterrupt):
        self.step, self.exc = step, exc

    def on_block(self, net, step0, outputs):
        if step0 + outputs["spikes"].shape[0] == self.step:
            raise self.exc("stopped by the test")


class RaiseAtRecorder(Recorder):
    """The run's own recorder, raising KeyboardInterrupt when the block ending at ``step`` has run."""

    def __init__(self, cfg, step):
        super().__init__(cfg, total_steps=1000)
        self.stop_at = step

    def on_block(self, net, step0, outputs):
        super().on_block(net, step0, outputs)
        if step0 + outputs["spikes"].shape[0] == self.stop_at:
            raise KeyboardInterrupt


def assert_same_run(full, resumed, names=("W", "b", "V", "U")):
    for layer in LAYERS:
        for name in names:
            np.testing.assert_array_equal(Run(full).final(layer, name), Run(resumed).final(layer, name),
                                          err_msg=f"{layer} {name}")
    a, b = Run(full).test_curve(), Run(resumed).test_curve()
    for k in ("step", "error", "error_sum", "error_prob"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---------------------------------------------------------------------------- read while running
def test_recordings_are_flushed_on_time_and_info_counts_them_before_the_first_checkpoint(tmp_path):
    """With record.flush_seconds tiny and no checkpoint due for 10 minutes, the file's
    /progress/steps_recorded keeps up with every block, and summary()["steps_done"] (what
    `spikefa info` prints) counts those steps although there is no checkpoint and no test
    pass past step 0."""
    out = tmp_path / "r.h5"
    cfg = short_cfg(train={"epochs": 0.05, "test_every": 0}, record={"flush_seconds": 1e-6})
    seen = []

    class Watch(Recorder):
        def on_block(self, net, step0, outputs):
            super().on_block(net, step0, outputs)
            run = Run(out)
            seen.append((self.step, run.progress()["steps_recorded"], run.summary()["steps_done"],
                         run.summary()["checkpoint_step"]))

    train(cfg, out=out, progress=False, recorder=Watch(cfg, total_steps=500))
    assert seen == [(s, s, s, None) for s in (100, 200, 300, 400, 500)]


def test_progress_during_a_run_says_the_last_checkpointed_step(tmp_path):
    """With a checkpoint after every block, Run.progress()["steps_done"] read during the
    run is the step of the checkpoint on disk (0 before the first), not the 0 the file
    started with: the loop writes it to /progress, since attributes cannot change while
    the file is open in SWMR mode."""
    out = tmp_path / "r.h5"
    cfg = short_cfg(train={"epochs": 0.05, "test_every": 0}, run={"checkpoint_minutes": 1e-9})
    seen = []

    class Peek:
        def on_block(self, net, step0, outputs):
            on_disk = ckpt_step(out) if checkpoint_path(out).exists() else 0
            seen.append((Run(out).progress()["steps_done"], on_disk))

    train(cfg, out=out, progress=False, recorder=Peek())
    assert seen == [(s, s) for s in (0, 100, 200, 300, 400)]


def test_final_psps_are_the_checkpointed_network_state(tmp_path):
    """The final V of each layer is the forward PSP and U the feedback PSP of the network
    the (final) checkpoint holds, not one for the other."""
    out = train(short_cfg(train={"epochs": 0.02, "test_every": 0}), out=tmp_path / "r.h5", progress=False).path
    net, info = network_from_checkpoint(checkpoint_path(out))
    assert info["step"] == 200
    for l, layer in enumerate(LAYERS, start=1):
        sl = net.layer_slice(l)
        np.testing.assert_array_equal(Run(out).final(layer, "V"), net.state.psp[sl])
        np.testing.assert_array_equal(Run(out).final(layer, "U"), net.state.feedback_psp[sl])
    assert not np.array_equal(net.state.psp[net.layer_slice(1)], net.state.feedback_psp[net.layer_slice(1)])


# ---------------------------------------------------------------------------- resume
def test_resume_cut_at_a_measure_point_keeps_the_measures_taken_there(tmp_path):
    """A stop at step 400 with record.measure_every = 200: the rates, angles and
    saturation sampled at 400 are in the checkpoint's past and stay; the resumed run's
    series equal the uninterrupted run's, step for step."""
    cfg = short_cfg(train={"test_every": 0}, record={"measure_every": 200})
    full = train(cfg, out=tmp_path / "full.h5", progress=False).path

    class StopAt400(Recorder):
        def on_block(self, net, step0, outputs):
            super().on_block(net, step0, outputs)
            if self.step == 400:
                raise KeyboardInterrupt

    cut = tmp_path / "cut.h5"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=cut, progress=False, recorder=StopAt400(cfg, total_steps=1000))
    assert ckpt_step(cut) == 400 and Run(cut).rates()["step"].tolist() == [200, 400]
    train(cfg, out=cut, resume=True, progress=False)
    a, b = Run(full), Run(cut)
    np.testing.assert_array_equal(a.rates()["step"], [200, 400, 600, 800, 1000])
    for series in ("rates", "angles", "saturation"):
        np.testing.assert_array_equal(getattr(a, series)()["step"], getattr(b, series)()["step"], err_msg=series)
    for layer, mean in a.rates()["mean"].items():
        np.testing.assert_array_equal(mean, b.rates()["mean"][layer], err_msg=layer)
    np.testing.assert_array_equal(a.angles()["weight"]["h1"], b.angles()["weight"]["h1"])


def test_resume_with_learned_feedback_restores_the_feedback_weights(tmp_path):
    """feedback = "learned" changes B during training: the checkpoint's B comes back on
    resume, so B and W at the end equal the uninterrupted run's (not a B that restarted
    from its initial values)."""
    cfg = short_cfg(model={"feedback": "learned"})
    full = train(cfg, out=tmp_path / "full.h5", progress=False).path
    cut = tmp_path / "cut.h5"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=cut, progress=False, recorder=RaiseAt(400))
    train(cfg, out=cut, resume=True, progress=False)
    for layer in ("h1", "h2"):
        np.testing.assert_array_equal(Run(full).final(layer, "B"), Run(cut).final(layer, "B"), err_msg=layer)
    assert_same_run(full, cut)


def test_resume_from_an_older_checkpoint_drops_the_test_rows_written_after_it(tmp_path):
    """As after a SIGKILL: the checkpoint on disk is at step 300 while the file holds test
    passes up to step 700. The resume drops the rows past the checkpoint and runs those
    tests again: the curve equals the uninterrupted run's, each step once."""
    cfg = short_cfg(train={"test_every": 20}, run={"checkpoint_minutes": 1e-9})  # tests every 100 steps
    full = train(cfg, out=tmp_path / "full.h5", progress=False).path
    cut, saved = tmp_path / "cut.h5", tmp_path / "at-300.ckpt"

    class KeepOldThenStop:
        def on_block(self, net, step0, outputs):
            step = step0 + outputs["spikes"].shape[0]
            if step == 400:  # the checkpoint written after the test at 300
                shutil.copyfile(checkpoint_path(cut), saved)
            if step == 800:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=cut, progress=False, recorder=KeepOldThenStop())
    assert Run(cut).test_curve()["step"].tolist() == [100, 200, 300, 400, 500, 600, 700]
    os.replace(saved, checkpoint_path(cut))
    assert ckpt_step(cut) == 300
    train(cfg, out=cut, resume=True, progress=False)
    steps = Run(cut).test_curve()["step"]
    assert np.unique(steps).size == steps.size
    assert_same_run(full, cut, names=("W",))


def test_resume_after_a_test_point_does_not_repeat_its_test(tmp_path, monkeypatch):
    """The checkpoint at a test point was written after the test (a stop inside the next
    block's kernel keeps it): the resume must not run that test again, or the curve holds
    the step twice."""
    from spikefa.network import Network

    cfg = short_cfg(run={"checkpoint_minutes": 1e-9})
    full = train(cfg, out=tmp_path / "full.h5", progress=False).path
    original, plastic_calls = Network.run, []

    def run_then_interrupt(self, *args, **kwargs):
        res = original(self, *args, **kwargs)
        plastic_calls.append(kwargs.get("plastic"))
        if plastic_calls.count(True) == 4:  # the block from 300 to 400, after the test at 300
            raise KeyboardInterrupt
        return res

    cut = tmp_path / "cut.h5"
    monkeypatch.setattr(Network, "run", run_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=cut, progress=False)
    monkeypatch.setattr(Network, "run", original)
    assert ckpt_step(cut) == 300 and Run(cut).test_curve()["step"].tolist() == [300]
    train(cfg, out=cut, resume=True, progress=False)
    np.testing.assert_array_equal(Run(cut).test_curve()["step"], [300, 600, 900, 1000])
    assert_same_run(full, cut, names=("W",))


def test_an_error_mid_run_leaves_a_checkpoint_that_resumes_to_the_same_end(tmp_path):
    """A RuntimeError from a callback (not a Ctrl-C) after the block ending at 400, with no
    timed checkpoint due: the run still checkpoints at 400 (the state is consistent there),
    and --resume finishes it equal to the uninterrupted run."""
    cfg = short_cfg()
    full = train(cfg, out=tmp_path / "full.h5", progress=False).path
    cut = tmp_path / "cut.h5"
    with pytest.raises(RuntimeError, match="stopped by the test"):
        train(cfg, out=cut, progress=False, recorder=RaiseAt(400, RuntimeError))
    assert not Run(cut).complete and ckpt_step(cut) == 400
    assert Run(cut).summary()["steps_done"] == 400
    res = train(cfg, out=cut, resume=True, progress=False)
    assert res.steps == 1000 and Run(cut).complete
    assert_same_run(full, cut)


def test_resume_with_more_epochs_keeps_the_windows_already_recorded(tmp_path, monkeypatch):
    """Windows given in % or end move with a new --epochs: those begun before the resume stay
    windows of the run, where their data was recorded, and the moved ones that begin after
    it are recorded. Before, run.windows listed only the moved ones, and the data of the
    first 50% and end windows dropped out of it."""
    rec = {"probes": ["spikes layers=h1 random=5"], "windows": ["0:50", "50%:50", "end:50"]}
    one = train(short_cfg(record=rec), out=tmp_path / "one.h5", progress=False).path
    grown = tmp_path / "grown.h5"
    shutil.copy(one, grown)
    shutil.copy(checkpoint_path(one), checkpoint_path(grown))
    train(short_cfg(record=rec, train={"epochs": 0.2}), out=grown, resume=True, progress=False)
    run = Run(grown)
    np.testing.assert_array_equal(run.windows, [[0, 50], [500, 550], [950, 1000], [1000, 1050], [1950, 2000]])
    for w in range(len(run.windows)):
        np.testing.assert_array_equal(run.stimulus(w).step, np.arange(*run.windows[w]))
    for w in range(3):  # the short run's windows hold what they held
        a, b = Run(one).spikes("h1", window=w), run.spikes("h1", window=tuple(Run(one).windows[w]))
        assert a.step.size > 0
        np.testing.assert_array_equal(a.step, b.step)
        np.testing.assert_array_equal(a.index, b.index)

    # cut at 600 (checkpoint there) and resumed longer: the short run's end window had not
    # begun, so it is not a window of the run
    on_block = Recorder.on_block

    def cut_at_600(self, net, step0, outputs):
        on_block(self, net, step0, outputs)
        if step0 + outputs["spikes"].shape[0] == 600:
            raise KeyboardInterrupt

    cut = tmp_path / "cut.h5"
    with monkeypatch.context() as m:
        m.setattr(Recorder, "on_block", cut_at_600)
        with pytest.raises(KeyboardInterrupt):
            train(short_cfg(record=rec), out=cut, progress=False)
    assert ckpt_step(cut) == 600
    train(short_cfg(record=rec, train={"epochs": 0.2}), out=cut, resume=True, progress=False)
    np.testing.assert_array_equal(Run(cut).windows, [[0, 50], [500, 550], [1000, 1050], [1950, 2000]])
    np.testing.assert_array_equal(Run(cut).stimulus(1).step, np.arange(500, 550))
    # resumed at the same length, the windows are the run's own
    again = tmp_path / "again.h5"
    with monkeypatch.context() as m:
        m.setattr(Recorder, "on_block", cut_at_600)
        with pytest.raises(KeyboardInterrupt):
            train(short_cfg(record=rec), out=again, progress=False)
    train(short_cfg(record=rec), out=again, resume=True, progress=False)
    np.testing.assert_array_equal(Run(again).windows, Run(one).windows)


def test_keep_begun_windows_at_the_resume_step():
    """A window that begins exactly at the resume step has not begun: the resumed run's
    window takes its place (once, not beside it); windows begun before it stay, in time
    order even as an older file listed them."""
    from spikefa.record import keep_begun_windows

    same = [[0, 50], [500, 550], [950, 1000]]
    np.testing.assert_array_equal(keep_begun_windows(same, same, 500), same)
    longer = [[0, 50], [1000, 1050], [1950, 2000]]
    np.testing.assert_array_equal(keep_begun_windows(same, longer, 500), [[0, 50], [1000, 1050], [1950, 2000]])
    np.testing.assert_array_equal(keep_begun_windows(same, longer, 501), [[0, 50], [500, 550], [1000, 1050],
                                                                           [1950, 2000]])
    listed = [[950, 1000], [0, 50], [500, 550]]  # a file from before windows were put in time order
    np.testing.assert_array_equal(keep_begun_windows(listed, longer, 960), [[0, 50], [500, 550], [950, 1000],
                                                                            [1000, 1050], [1950, 2000]])


def test_resume_with_more_epochs_records_to_the_new_end_without_windows(tmp_path):
    """Without record.windows a run records all of itself; resumed with more epochs, it
    records on to the new end (the whole-run window it stored is not a begun window to keep)."""
    rec = {"probes": ["spikes layers=h1 random=5"]}
    out = train(short_cfg(record=rec, train={"epochs": 0.02, "test_every": 0}), out=tmp_path / "w.h5",
                progress=False).path
    train(short_cfg(record=rec, train={"epochs": 0.04, "test_every": 0}), out=out, resume=True, progress=False)
    run = Run(out)
    np.testing.assert_array_equal(run.windows, [[0, 400]])
    np.testing.assert_array_equal(run.stimulus().step, np.arange(400))


def test_resume_with_a_model_that_records_no_probes_keeps_the_runs_probes(tmp_path):
    """A model file whose own [record] table has no probes (measure_every only), run with
    --record and resumed with --resume alone, asks nothing of the probes: the run goes on
    recording what it recorded, instead of recording nothing after the resume."""
    model_rec = {"measure_every": 50}
    probes = {**model_rec, "probes": ["spikes layers=h1 random=5"]}
    out = tmp_path / "m.h5"
    with pytest.raises(KeyboardInterrupt):
        train(short_cfg(record=probes), out=out, progress=False,
              recorder=RaiseAtRecorder(short_cfg(record=probes), 300))
    assert ckpt_step(out) == 300
    train(short_cfg(record=model_rec), out=out, resume=True, progress=False)
    run = Run(out)
    assert run.complete and run.config.record.probes == ("spikes layers=h1 random=5",)
    np.testing.assert_array_equal(run.stimulus().step, np.arange(1000))


def test_resume_without_probes_keeps_the_runs_probes_and_a_record_key_set_now(tmp_path, caplog):
    """--resume --set record.flush_seconds=5 (no probes asked): the run's probes go on, and
    how often it flushes is taken; the whole saved [record] table replaced the asked one,
    so the setting was dropped without a word. Other record keys asked for (what it
    records) stay the run's, and a note says so."""
    probes = {"probes": ["spikes layers=h1 random=5"], "windows": ["0:100", "end:100"], "chunk_rows": 64}
    out = tmp_path / "f.h5"
    with pytest.raises(KeyboardInterrupt):
        train(short_cfg(record=probes), out=out, progress=False,
              recorder=RaiseAtRecorder(short_cfg(record=probes), 300))
    train(short_cfg(record={"flush_seconds": 5.0, "measure_every": 50}), out=out, resume=True, progress=False)
    rec = Run(out).config.record
    assert rec.flush_seconds == 5.0
    assert rec.probes == ("spikes layers=h1 random=5",) and rec.windows == ("0:100", "end:100") and rec.chunk_rows == 64
    # what it records stays as it was (the measures' cadence too), with a note saying so
    assert rec.measure_every == 1000
    assert "not taken from this resume: record.measure_every = 50 (the run's: 1000)" in caplog.text


def test_resume_of_a_run_without_probes_takes_a_flush_seconds_set_now(tmp_path):
    """A run without probes whose [record] table differs from the defaults (measures every
    50 steps), resumed with --resume --set record.flush_seconds=5: as with --resume alone,
    it goes on recording as it did and flushes as asked now. The flush setting made the
    asked table differ from the defaults, so the defaults replaced the run's table, and the
    resume was refused ('/rates was recorded with every = 50, now 1000')."""
    rec = {"measure_every": 50}
    out = tmp_path / "n.h5"
    with pytest.raises(KeyboardInterrupt):
        train(short_cfg(record=rec), out=out, progress=False, recorder=RaiseAtRecorder(short_cfg(record=rec), 300))
    train(short_cfg(record={"flush_seconds": 5.0}), out=out, resume=True, progress=False)
    run = Run(out)
    assert run.complete and run.config.record.measure_every == 50 and run.config.record.flush_seconds == 5.0
    np.testing.assert_array_equal(run.angles()["step"], np.arange(0, 1001, 50))


def test_a_branch_at_the_end_of_its_checkpoint_finishes_with_the_new_test_settings(tmp_path):
    """A branch from a checkpoint at the very step the branch's epochs end (not past it) is
    allowed: it trains nothing and tests the network with the branch's test settings."""
    cfg = short_cfg(train={"epochs": 0.02, "test_every": 0})
    a = train(cfg, out=tmp_path / "a.h5", progress=False)
    b = train(cfg.replace(test={"n_test": 100}), out=tmp_path / "b.h5", branch_from=a.path, progress=False)
    run = Run(b.path)
    assert b.steps == a.steps == 200 and run.complete and run.attrs["branch_step"] == 200
    curve = run.test_curve()
    assert list(curve["step"]) == [200] and list(curve["n_test"]) == [100]
    np.testing.assert_array_equal(run.final("h1", "W"), Run(a.path).final("h1", "W"))


# ---------------------------------------------------------------------------- stop and overwrite
def test_a_stop_request_ends_the_run_at_the_block_with_a_checkpoint(tmp_path, capsys):
    """Ctrl-C during training (the StopRequest's handler, called here from a callback at
    step 300) stops the loop at the end of that block: train raises KeyboardInterrupt,
    the checkpoint is at 300 and the file is not complete."""

    class CtrlCAt300:
        def on_block(self, net, step0, outputs):
            if step0 + outputs["spikes"].shape[0] == 300:
                from spikefa.interrupt import StopRequest

                StopRequest.installed()._handler(signal.SIGINT, None)

    out = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        train(short_cfg(train={"test_every": 0}), out=out, progress=False, recorder=CtrlCAt300())
    err = capsys.readouterr().err
    assert "SIGINT received" in err and "checkpoint at step 300 written" in err
    assert ckpt_step(out) == 300 and not Run(out).complete
    with h5py.File(out, "r") as f:
        assert "final" not in f



def test_a_stop_request_during_a_test_pass_stops_at_its_test_point(tmp_path, capsys):
    """Ctrl-C (or SIGTERM) during a test pass: the pass ends, its row is written, and the
    run stops there with a checkpoint at the test point. It went on to train one more
    block first (a kill -INT during the test at 35,000 of a 'small' run checkpointed at
    35,500), although the message says it stops at the end of this block; the resume
    neither repeats the test nor changes the run."""
    cfg = short_cfg()
    full = train(cfg, out=tmp_path / "full.h5", progress=False).path

    class CtrlCInTestAt300:
        def on_block(self, net, step0, outputs):
            pass

        def test_hook(self, train_step):
            def hook(net, step0, outputs):
                if train_step == 300 and step0 == 0:  # the first block of the test pass at 300
                    from spikefa.interrupt import StopRequest

                    StopRequest.installed()._handler(signal.SIGINT, None)
            return hook

    cut = tmp_path / "cut.h5"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=cut, progress=False, recorder=CtrlCInTestAt300())
    assert "checkpoint at step 300 written" in capsys.readouterr().err
    assert ckpt_step(cut) == 300 and Run(cut).test_curve()["step"].tolist() == [300]
    train(cfg, out=cut, resume=True, progress=False)
    np.testing.assert_array_equal(Run(cut).test_curve()["step"], [300, 600, 900, 1000])
    assert_same_run(full, cut, names=("W",))

def test_ctrl_c_to_spikefa_train_exits_130_with_the_resume_hint(tmp_path):
    """End to end: SIGINT to `python -m spikefa train tiny` once it has started training
    exits with status 130, says where the checkpoint is and how to continue, and leaves a
    checkpoint."""
    out = tmp_path / "c.h5"
    code, err = signal_once_started(["train", "tiny", "--epochs", "20", "-o", str(out), "-q"], out, tmp_path)
    assert code == 130, err
    assert "--resume" in err and f"written to {out}.ckpt" in err and "spikefa: interrupted" in err
    assert checkpoint_path(out).exists() and not Run(out).complete


def test_sigint_stops_a_command_started_in_the_background(tmp_path):
    """A job started with `&` or nohup inherits SIGINT ignored: `spikefa train` took it back,
    other commands (a sweep, an experiment) ran on to their end after `kill -INT`."""
    out = tmp_path / "fig2"
    code, err = signal_once_started(["experiment", "fig2", "--out", str(out)], out, tmp_path,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert code == 130, err
    assert "experiment fig2 stopped: nothing of it was written" in err and not (out / "fig2.json").exists()


def test_overwrite_removes_the_old_checkpoint(tmp_path, capsys, monkeypatch):
    """A run file created anew with overwrite takes the old run's checkpoint with it; so
    `spikefa train ... --overwrite` stopped before its first checkpoint says it must start
    again, and --resume then finds nothing to resume (it would have continued the old run)."""
    from spikefa.cli import main
    from spikefa.network import Network

    cfg = short_cfg(train={"test_every": 0})
    out = tmp_path / "o.h5"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=out, progress=False, recorder=RaiseAt(300))
    assert checkpoint_path(out).exists()
    create_run_file(out, cfg, total_steps=1000, overwrite=True)
    assert not checkpoint_path(out).exists()
    assert Run(out).test_curve()["step"].size == 0 and Run(out).progress()["steps_done"] == 0

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=out, progress=False, overwrite=True, recorder=RaiseAt(300))
    assert ckpt_step(out) == 300
    original = Network.run

    def interrupted(self, *args, **kwargs):
        res = original(self, *args, **kwargs)
        if kwargs.get("plastic"):
            raise KeyboardInterrupt  # inside the first block: no checkpoint of the new run
        return res

    monkeypatch.setattr(Network, "run", interrupted)
    capsys.readouterr()
    argv = ["train", "tiny", "--epochs", "0.02", "-o", str(out), "-q"]
    assert main(argv + ["--overwrite"]) == 130
    assert "no checkpoint was written yet" in capsys.readouterr().err
    monkeypatch.setattr(Network, "run", original)
    assert not checkpoint_path(out).exists()
    assert main(argv + ["--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_overwrite_refuses_a_run_file_another_process_is_writing(tmp_path):
    """--overwrite of a run that another live process is still writing is refused, naming
    that process: it truncated the file under the SWMR writer, and both processes (and any
    reader after them) then hung in HDF5's retries, deaf to Ctrl-C and SIGTERM."""
    cfg = short_cfg()
    out = tmp_path / "busy.h5"
    create_run_file(out, cfg, total_steps=1000)
    # a writer as RunWriter is one: its pid in the file, which it holds open in SWMR mode
    writer = subprocess.Popen([sys.executable, "-c", f"""
import os, socket, sys, time, h5py
f = h5py.File({str(out)!r}, "a", libver="latest")
f.attrs.update(writer_pid=os.getpid(), writer_host=socket.gethostname())
f.flush()
f.swmr_mode = True
print("writing", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        checkpoint_path(out).write_bytes(b"the running run's checkpoint")
        with pytest.raises(RunFileError, match=f"being written by process {writer.pid}"):
            create_run_file(out, cfg, total_steps=1000, overwrite=True)
        assert checkpoint_path(out).exists() and Run(out).summary()["state"] == "running"
    finally:
        writer.kill()
        writer.wait()
    create_run_file(out, cfg, total_steps=1000, overwrite=True)  # its writer gone: allowed
    assert not checkpoint_path(out).exists()


def test_overwrite_refuses_an_old_format_run_file_another_process_is_writing(tmp_path):
    """A run file of schema 1 (not in the latest HDF5 format) is written without SWMR and
    its superblock carries no open-for-write mark: only the writer's file lock says that it
    holds the file, and --overwrite is refused by it as for a file of the latest format."""
    out = tmp_path / "old.h5"
    with h5py.File(out, "w", libver="earliest") as f:
        f.attrs.update(schema_version=1, complete=False)
    writer = subprocess.Popen([sys.executable, "-c", f"""
import os, socket, time, h5py
f = h5py.File({str(out)!r}, "a")
f.attrs.update(writer_pid=os.getpid(), writer_host=socket.gethostname())
f.flush()
print("writing", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        with pytest.raises(RunFileError, match=f"being written by process {writer.pid}"):
            create_run_file(out, short_cfg(), total_steps=1000, overwrite=True)
    finally:
        writer.kill()
        writer.wait()
    create_run_file(out, short_cfg(), total_steps=1000, overwrite=True)  # its writer gone: allowed


def read_across(path, script, write) -> str:
    """Run ``script`` (python, given ``path``) as a reader that opens the file, prints
    'open', and on a line from stdin reads on; call ``write()`` between the two and return
    what the reader printed after."""
    reader = subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=spikefa_env())
    try:
        assert reader.stdout.readline().strip() == "open"
        write()
        got, err = reader.communicate("go\n", timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    return got


def test_overwrite_leaves_a_reader_of_the_old_file_reading_it(tmp_path):
    """A run started again over a stopped one (a sweep restarting a run killed without a
    checkpoint, spikefa train --overwrite) truncated the file in place: a reader that had
    the old file open (spikefa plot, a notebook) met the new file's bytes on its next read,
    a RuntimeError 'bad object header version number' out of h5py. The new file now
    replaces the old one by a rename, so the reader finishes on the old file, and the
    folder holds no leftover temporary file."""
    cfg = short_cfg(record={"probes": ["fig4"]}, train={"test_every": 0})
    out = tmp_path / "run.h5"
    train(cfg, out=out, progress=False)
    want = Run(out).raster("h1")
    got = read_across(out, """
import sys
import numpy as np
from spikefa import runfile
with runfile._readable(sys.argv[1]) as f:
    f["test/step"].shape
    print("open", flush=True)
    sys.stdin.readline()
    g = f["record/train/h1/spikes"]
    bits = np.unpackbits(g["bits"][...], axis=1, count=g.attrs["neurons"].size)
    print(int(bits.sum()), int(f.attrs["steps_done"]), flush=True)
""", lambda: create_run_file(out, cfg, total_steps=1000, overwrite=True))
    assert got.split() == [str(int(want.spikes.sum())), "1000"]
    assert Run(out).attrs["steps_done"] == 0 and not Run(out).complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]


def test_a_reader_of_a_stopped_run_that_is_resumed_under_it_is_told_the_file_changed(tmp_path):
    """A reader that opened a stopped run file (no writer then, so nothing to wait for)
    while `--resume` started writing it outside SWMR mode read torn bytes: spikefa plot
    said 'RUN.h5 is damaged or not a complete spikefa file: ... addr overflow' of a sound
    file (seen live), and a direct read 'is damaged: a read failed (... len not positive
    after adjustment for EOA)'. It now says the file changed while it was read."""
    cfg = short_cfg(train={"test_every": 100}, test={"n_test": 20},
                    record={"probes": ["fig4"], "windows": ["0:60", "50%:60", "end:60"]})

    class StopAt300(Recorder):
        def on_block(self, net, step0, outputs):
            super().on_block(net, step0, outputs)
            if self.step >= 300:
                raise KeyboardInterrupt

    out = tmp_path / "run.h5"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=out, progress=False, recorder=StopAt300(cfg, total_steps=1000))
    got = read_across(out, """
import sys
from spikefa import runfile
try:
    with runfile._readable(sys.argv[1]) as f:
        f["test/step"].shape
        print("open", flush=True)
        sys.stdin.readline()
        g = f["record/train/out/spikes"]
        print("read", g["step"].shape, g.attrs["format"], dict(f.attrs).get("complete"), flush=True)
except runfile.RunFileError as exc:
    print(exc, flush=True)
""", lambda: train(cfg, out=out, resume=True, progress=False))
    assert "changed while it was read" in got and "damaged" not in got, got


def test_overwrite_refuses_a_run_file_this_process_is_writing(tmp_path):
    """A run file that this very process holds open for writing (a run going on in another
    thread of a notebook's kernel) is refused too. (HDF5 lets a process open a file that it
    has open for writing itself, so the check that asks whether a writer holds the file
    cannot tell; the writer's pid does.)"""
    from spikefa.runfile import RunWriter

    cfg = short_cfg()
    out = tmp_path / "own.h5"
    create_run_file(out, cfg, total_steps=1000)
    with RunWriter(out):
        with pytest.raises(RunFileError, match=f"being written by process {os.getpid()}"):
            create_run_file(out, cfg, total_steps=1000, overwrite=True)
        assert Run(out).summary()["state"] == "running"
    assert Run(out).summary()["state"] == "stopped"
    create_run_file(out, cfg, total_steps=1000, overwrite=True)  # closed: allowed


def test_overwrite_replaces_a_stopped_run_whose_process_lives_on(tmp_path):
    """A run stopped (Ctrl-C, or an error) in a process that lives on, a notebook's kernel,
    still names that process as its writer, but the file is closed: --overwrite from
    another process was refused ('being written by process N ... kill -INT N') although
    nothing writes it, and stayed refused for as long as the kernel ran."""
    import socket

    cfg = short_cfg()
    out = tmp_path / "stopped.h5"
    create_run_file(out, cfg, total_steps=1000)
    kernel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with h5py.File(out, "a", libver="latest") as f:  # the writer closed the file when it stopped
            f.attrs.update(writer_pid=kernel.pid, writer_host=socket.gethostname())
        create_run_file(out, cfg, total_steps=1000, overwrite=True)
        assert Run(out).test_curve()["step"].size == 0
    finally:
        kernel.kill()
        kernel.wait()


def test_overwrite_replaces_only_run_files(tmp_path):
    """--overwrite with a mistyped --out (a model file, notes) replaced that file with a run
    file; it is refused, and an empty file or a damaged run file is still replaced."""
    cfg = short_cfg()
    notes = tmp_path / "model.toml"
    notes.write_text("[model]\neta = 2e-2\n")
    with pytest.raises(RunFileError, match="not a spikefa run file.*will not replace it"):
        create_run_file(notes, cfg, total_steps=1000, overwrite=True)
    assert notes.read_text() == "[model]\neta = 2e-2\n"
    other = tmp_path / "data.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(RunFileError, match="HDF5 file but not a spikefa run file"):
        create_run_file(other, cfg, total_steps=1000, overwrite=True)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    create_run_file(empty, cfg, total_steps=1000, overwrite=True)
    run = tmp_path / "run.h5"
    create_run_file(run, cfg, total_steps=1000)
    data = run.read_bytes()
    run.write_bytes(data[: len(data) // 2])  # cut short: still a run file to start again
    create_run_file(run, cfg, total_steps=1000, overwrite=True)
    assert Run(run).test_curve()["step"].size == 0


# ---------------------------------------------------------------------------- pipes
def test_curve_piped_into_head_exits_quietly(tmp_path):
    """`spikefa curve RUN.h5 | head -1`: head closes the pipe after one line, long before
    spikefa has written its thousands of rows; spikefa exits 0 and prints nothing on
    stderr (no BrokenPipeError traceback, no "Exception ignored" at exit)."""
    out = train(short_cfg(train={"epochs": 0.02, "test_every": 0}), out=tmp_path / "r.h5", progress=False).path
    n = 20000  # ~1 MB of CSV, far more than a pipe holds
    with h5py.File(out, "a") as f:
        for ds in f["test"].values():
            first = ds[0]
            ds.resize((n,))
            ds[...] = first
        f["test/step"][...] = np.arange(1, n + 1)
    spikefa = subprocess.Popen([sys.executable, "-m", "spikefa", "curve", str(out)], env=spikefa_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-1"], stdin=spikefa.stdout, stdout=subprocess.PIPE)
    spikefa.stdout.close()  # head alone reads the pipe now
    first, _ = head.communicate(timeout=60)
    err = spikefa.stderr.read()
    spikefa.wait(timeout=60)
    spikefa.stderr.close()
    assert first.decode().startswith("step,images,epoch,error")
    assert spikefa.returncode == 0 and err == b"", err.decode()


def test_a_resume_refused_for_its_probes_leaves_the_run_file_as_it_was(tmp_path, capsys):
    """A resume with other probes was refused only once the file had been changed: a complete
    run then read 'stopped', its config named the refused probes, a resume was listed, and
    spikefa info suggested the very command that had failed."""
    from spikefa.cli import main

    out = tmp_path / "p.h5"
    argv = ["train", "tiny", "--epochs", "0.02", "-o", str(out), "-q"]
    assert main(argv + ["--record", "spikes layers=h1 random=5"]) == 0
    before = Run(out).summary()
    assert main(argv + ["--resume", "--record", "spikes layers=h1 random=7"]) == 2
    assert "must record the same [record] probes" in capsys.readouterr().err
    after = Run(out)
    assert after.complete and after.summary()["state"] == "complete"
    assert after.resumes == [] and after.config.record.probes == ("spikes layers=h1 random=5",)
    assert after.summary()["command"] == before["command"]


def test_two_runs_started_at_once_with_one_out_do_not_share_it(tmp_path, monkeypatch):
    """Two runs started together with the same --out both passed the 'exists' check before
    either had made the file, and the second truncated it under the first (whose SWMR
    writer then hung). The file is created exclusively: the second is refused."""
    cfg = short_cfg()
    out = tmp_path / "same.h5"
    create_run_file(out, cfg, total_steps=1000)  # the first run made it just now
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: False if self == out else real_exists(self))
    with pytest.raises(RunFileError, match="exists; pass --resume"):
        create_run_file(out, cfg, total_steps=1000)  # the second had found no file


def test_a_resume_refused_for_its_chunk_rows_leaves_the_run_file_as_it_was(tmp_path):
    """record.chunk_rows past HDF5's limit per chunk, given to a resume, was refused only
    once the file had been changed: the complete run then read 'stopped', with the refused
    value in its config and a resume listed."""
    rec = {"probes": ["spikes layers=h1 random=5"]}
    cfg = load_config("tiny").replace(train={"epochs": 0.02, "test_every": 0}, record=rec)
    out = train(cfg, out=tmp_path / "c.h5", progress=False).path
    with pytest.raises(RunFileError, match="record.chunk_rows = 100000000 is not allowed"):
        train(cfg.replace(record={**rec, "chunk_rows": 10**8}, train={"epochs": 0.04}), out=out, resume=True,
              progress=False)
    run = Run(out)
    assert run.complete and run.resumes == [] and run.config.record.chunk_rows == 0


def test_a_run_stopped_inside_a_test_pass_records_that_pass_once_when_resumed(tmp_path, monkeypatch):
    """A second Ctrl-C (or an error) inside a recorded test pass checkpoints at the test
    point; the resume runs the pass again. It used to run it from where the first try was
    cut (the recorder's test clock, mid-pass) beside the half pass it kept: the passes table
    listed that training step twice and the test recordings were not the uninterrupted
    run's. Now the half pass is cut back and the resumed file records what the
    uninterrupted run does."""
    from spikefa import record

    cfg = short_cfg(record={"probes": ["spikes layers=out"], "test": True, "chunk_rows": 16})
    full = train(cfg, out=tmp_path / "full.h5", progress=False).path

    real = record.Recorder.test_hook
    cut_once = []

    def cut_in_the_pass_at_300(self, train_step):
        hook = real(self, train_step)

        def wrapped(net, step0, outputs):
            hook(net, step0, outputs)
            if train_step == 300 and step0 > 0 and not cut_once:  # after the pass's second block
                cut_once.append(step0)
                raise KeyboardInterrupt
        wrapped.__dict__.update(hook.__dict__)  # rec_idx, done
        return wrapped

    monkeypatch.setattr(record.Recorder, "test_hook", cut_in_the_pass_at_300)
    cut = tmp_path / "cut.h5"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=cut, progress=False)
    assert cut_once and ckpt_step(cut) == 300 and Run(cut).test_curve()["step"].tolist() == []
    monkeypatch.setattr(record.Recorder, "test_hook", real)
    train(cfg, out=cut, resume=True, progress=False)
    a, b = Run(full), Run(cut)
    for k in ("train_step", "start", "stop"):
        np.testing.assert_array_equal(b.test_passes()[k], a.test_passes()[k])
    ra, rb = a.raster("out", (0, 10**9), phase="test"), b.raster("out", (0, 10**9), phase="test")
    np.testing.assert_array_equal(rb.step, ra.step)
    np.testing.assert_array_equal(rb.spikes, ra.spikes)
    assert_same_run(full, cut, names=("W",))
