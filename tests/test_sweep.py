"""Sweeps on Dask (issue 8): sweep files, re-use by config hash, failures, kill and resume, report.

The runs are the ``tiny`` model cut to a fraction of an epoch: what is tested is the
bookkeeping around the runs, not learning. One local cluster of 2 single-threaded
workers serves the module; the kill-and-resume test starts its own sweep processes.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

import spikefa  # noqa: E402
from spikefa import sweep as sw  # noqa: E402
from spikefa.cli import main  # noqa: E402
from spikefa.config import ConfigError, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, env={"NUMBA_NUM_THREADS": "1"},
                      dashboard_address=":0", silence_logs=logging.CRITICAL) as cluster:
        yield cluster.scheduler_address


def _sweep_file(tmp_path, text: str, name="s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# With the JIT off (the suite's second mode) the numba kernel runs as Python loops; the
# NumPy reference keeps these runs at seconds. What is tested here is the same either way.
JIT_OFF = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
SET = '[set]\n"run.backend" = "numpy"\n' if JIT_OFF else ""

SIX = """
base = "tiny"
out = "{out}"
epochs = {epochs}
""" + SET + """
[grid]
seed = [1, 2, 3]
"model.feedback" = ["fa", "transport"]
"""


# ------------------------------------------------------------------------- sweep files
def test_points_cross_grid_and_runs_with_aliases_and_precedence():
    s = sw.load_sweep({
        "base": "tiny", "epochs": 0.5, "set": {"test.readout": "sum", "model.eta": 0.1},
        "grid": {"seed": [1, 2], "model": {"feedback": ["fa", "dfa"]}},
        "runs": [{"model.eta": 0.01}, {"base": "small"}],
    })
    pts = s.points()
    assert len(pts) == 2 * 2 * 2
    # [[runs]] is the outer loop, the grid's last key varies fastest
    assert [(p["run.seed"], p["model.feedback"]) for p in pts[:4]] == [(1, "fa"), (1, "dfa"), (2, "fa"), (2, "dfa")]
    assert all(p["train.epochs"] == 0.5 and p["test.readout"] == "sum" for p in pts)
    assert [p["model.eta"] for p in pts] == [0.01] * 4 + [0.1] * 4  # a point's key beats [set]
    assert [p["base"] for p in pts] == ["tiny"] * 4 + ["small"] * 4
    cfg = sw.resolve(pts[1])
    assert (cfg.name, cfg.run.seed, cfg.model.feedback, cfg.model.eta, cfg.train.epochs) == ("tiny", 1, "dfa", 0.01, 0.5)


@pytest.mark.parametrize("bad, match", [
    ({"grid": {"seed": 3}}, "non-empty list"),
    ({"grid": {"seed": []}}, "non-empty list"),
    ({"grid": {"seed": [1]}, "runs": [{"seed": 2}]}, "also varies"),
    ({"epochs": 1, "set": {"train.epochs": 2}}, "both given"),
    ({"model.feedback": ["fa"]}, "unknown sweep key"),
    ({"workers": 0}, "positive integer"),
    ({"grid": {"seed": [1], "run.seed": [2]}}, "twice"),
    ({"set": {"base": "small"}}, "top of the sweep file"),
    ({"out": 3}, "expected a folder path"),
])
def test_bad_sweep_files_are_refused_as_a_whole(bad, match):
    with pytest.raises(sw.SweepError, match=match):
        sw.load_sweep(bad)


def test_a_bad_key_is_the_failure_of_its_point_only(tmp_path):
    runs = sw.plan(sw.load_sweep({"base": "tiny", "runs": [{"model.feedback": "fa"}, {"model.nonsense": 1},
                                                            {"feedbak": "fa"}, {"model.feedback": "backprop"}]}),
                   tmp_path)
    assert [r.status for r in runs] == ["pending", "failed", "failed", "failed"]
    assert "model.nonsense" in runs[1].error and "section.key" in runs[2].error and "'backprop'" in runs[3].error
    with pytest.raises(ConfigError):
        sw.resolve({"base": "no-such-model"})


def test_the_config_hash_is_the_content_not_the_spelling():
    h = sw.config_hash
    plain = sw.resolve({"base": "tiny", "run.seed": 1})
    assert plain.model.feedback == "fa"
    assert h(plain) == h(sw.resolve({"base": "tiny", "run.seed": 1, "model.feedback": "fa"}))  # the default, spelt out
    assert h(plain) != h(sw.resolve({"base": "tiny", "run.seed": 2}))
    assert len(h(plain)) == sw.HASH_LEN
    # what a run records and how it is executed do not change what it computes
    assert h(plain) == h(sw.resolve({"base": "tiny", "run.seed": 1, "run.block_steps": 100,
                                     "record.measure_every": 500}))
    assert h(plain) != h(sw.resolve({"base": "tiny", "run.seed": 1, "run.deferred_steps": 1}))
    # a key added later, at the value that reproduces earlier runs, keeps their names
    assert h(sw.resolve({"base": "small", "run.seed": 1})) == "096c185d19a1"  # the name before feedback_storage
    assert h(plain) != h(sw.resolve({"base": "tiny", "run.seed": 1, "model.feedback_storage": "int8"}))
    # the back end and the checkpoint interval change how a run is executed, not its results
    assert h(plain) == h(sw.resolve({"base": "tiny", "run.seed": 1, "run.backend": "numpy"})) \
        == h(sw.resolve({"base": "tiny", "run.seed": 1, "run.checkpoint_minutes": 1}))


def test_plan_keeps_a_points_base_and_runs_a_repeated_model_once(tmp_path):
    """A [[runs]] entry with another base keeps it in its overrides (the task resolves the
    point from the sweep's base and the overrides); a point that resolves to the same
    model as an earlier one is run once, with a warning naming both."""
    sweep = sw.load_sweep({"base": "tiny", "runs": [{}, {"base": "small"}, {"model.feedback": "fa"}]})
    with pytest.warns(UserWarning, match="point 3 .* same model as point 1"):
        runs = sw.plan(sweep, tmp_path)
    assert len(runs) == 2
    assert runs[0].overrides == {} and runs[1].overrides == {"base": "small"}
    assert sw.resolve({"base": sweep.base, **runs[1].overrides}).name == "small"
    assert runs[1].file.startswith("small-fa-seed")


def test_a_lock_held_on_another_host_is_never_taken_over(tmp_path):
    """Whether a process on another host is alive cannot be seen from here: its lock
    counts as live even when a process of that number is gone here."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "x.lock"
    lock.write_text(f"not-{socket.gethostname()} {dead.pid}")
    with pytest.raises(sw.RunLockedError, match=f"process {dead.pid} on not-"):
        with sw.file_lock(lock, "x"):
            pass
    assert lock.exists()


def test_time_left_and_its_format():
    """Mean run 30 s (runs of 20 and 40 s); 3 runs not begun and one running for 10 s:
    3 * 30 + 20 = 110 s of work on 2 slots, 55 s. A run over the mean adds nothing."""
    now = time.time()
    assert sw._eta(3, [now - 10], [20.0, 40.0], 2) == pytest.approx(55.0, abs=0.5)
    assert sw._eta(3, [now - 100], [20.0, 40.0], 2) == pytest.approx(45.0, abs=0.5)
    assert sw._eta(1, [], [], 2) is None
    assert sw._fmt_s(3725) == "1:02:05" and sw._fmt_s(65) == "1:05" and sw._fmt_s(None) == "?"


class _FakeRun:
    def __init__(self, error, steps, epoch, wall_s):
        self.test_error = error
        self.attrs = {"wall_s": wall_s}
        self._curve = {"step": np.array(steps), "epoch": np.array(epoch, float),
                       "error": np.linspace(0.9, error, len(steps))}

    def test_curve(self):
        return self._curve


def test_condition_rows_and_curves_by_hand():
    """Final errors 0.1, 0.2, 0.3: mean 0.2, sample s.d. 0.1, s.e.m. 0.1 / sqrt(3). The
    curves are cut to the test passes the runs share: steps 0, 10 (20 and 25 differ)."""
    runs = [_FakeRun(0.1, [0, 10, 20, 30], [0, 1, 2, 3], 10.0), _FakeRun(0.2, [0, 10, 25], [0, 1, 2.5], 20.0),
            _FakeRun(0.3, [0, 10, 20], [0, 1, 2], 30.0)]
    cond = sw.Condition(values={"model.feedback": "fa"}, runs=runs, n_failed=1)
    row = sw._row(cond)
    assert row["n"] == 3 and row["n_failed"] == 1 and row["condition"] == "fa"
    assert row["error_mean"] == pytest.approx(0.2) and row["error_sd"] == pytest.approx(0.1)
    assert row["error_sem"] == pytest.approx(0.1 / np.sqrt(3))
    assert (row["error_min"], row["error_max"]) == (0.1, 0.3)
    assert row["epochs"] == pytest.approx((3 + 2.5 + 2) / 3) and row["wall_s_mean"] == pytest.approx(20.0)
    curves = cond.curves()
    assert curves["step"].tolist() == [[0, 10]] * 3
    assert curves["error"].shape == (3, 2)


def test_the_default_sweep_folder():
    assert sw.sweep_dir(sw.Sweep(name="abc")) == Path("runs") / "sweep-abc"
    assert sw.sweep_dir(sw.Sweep(name="abc", out="elsewhere")) == Path("elsewhere")
    assert sw.sweep_dir(sw.Sweep(name="abc", out="elsewhere"), out="here") == Path("here")


def test_file_lock_takes_over_a_dead_holder_and_refuses_a_live_one(tmp_path):
    lock = tmp_path / "x.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{socket.gethostname()} {dead.pid}")
    with sw.file_lock(lock, "x"):
        assert lock.read_text().split()[1] == str(os.getpid())
        with pytest.raises(sw.RunLockedError, match="in use by process"):
            with sw.file_lock(lock, "x"):
                pass
    assert not lock.exists()


# ------------------------------------------------------------------------- on the cluster
def test_sweep_of_3_seeds_x_2_variants_and_its_summary(scheduler, tmp_path):
    out = tmp_path / "sweep"
    path = _sweep_file(tmp_path, SIX.format(out=out, epochs=0.5))
    res = sw.run_sweep(path, scheduler=scheduler, progress=False)
    assert res.complete and len(res.ran) == 6 and not res.reused and not res.failed
    files = sorted(out.glob("*.h5"))
    assert len(files) == 6
    errors = {"fa": [], "transport": []}
    for f in files:
        run = spikefa.load(f)
        assert run.complete
        assert f.name.endswith(f"-{sw.config_hash(run.config)}.h5")  # named by the config it holds
        assert run.config.train.epochs == 0.5 and run.config.name == "tiny"
        errors[run.config.model.feedback].append((run.config.run.seed, run.test_error))
    assert {k: sorted(s for s, _ in v) for k, v in errors.items()} == {"fa": [1, 2, 3], "transport": [1, 2, 3]}

    rep = sw.sweep_report(out)
    rows = {r["model.feedback"]: r for r in rep["rows"]}
    assert list(rows) == ["fa", "transport"]  # the sweep file's order
    for feedback, row in rows.items():
        e = np.array([err for _, err in errors[feedback]])
        assert row["n"] == 3 and row["n_failed"] == 0
        assert row["error_mean"] == pytest.approx(e.mean(), abs=1e-12)
        assert row["error_sd"] == pytest.approx(e.std(ddof=1), abs=1e-12)
    with open(rep["csv"]) as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [float(r["error_mean"]) for r in csv_rows] == [rows["fa"]["error_mean"], rows["transport"]["error_mean"]]
    md = rep["md"].read_text()
    assert f"| fa | 3 | {100 * rows['fa']['error_mean']:.2f} \u00b1 {100 * rows['fa']['error_sd']:.2f} |" in md
    assert rep["figure"].stat().st_size > 10_000

    # started again: nothing runs, nothing is rewritten
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    again = sw.run_sweep(path, scheduler=scheduler, progress=False)
    assert len(again.reused) == 6 and not again.ran
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    # a run file of another config under a run's name is not taken for done
    victim = files[0]
    os.replace(files[1], victim)
    assert not sw.is_done(victim, victim.stem.rsplit("-", 1)[1])


def test_a_point_extended_with_resume_epochs_stays_done_and_is_reported_as_its_own_condition(scheduler, tmp_path):
    """The README's way to extend a point (spikefa train --resume --epochs on its run file):
    the sweep, started again, re-uses it instead of failing it ("a resume can raise the
    epochs, not lower them"), and sweep-report counts it, complete, in a row of its own
    length, not as an incomplete run of the original condition."""
    from spikefa.train import train

    out = tmp_path / "sweep"
    path = _sweep_file(tmp_path, f"""
base = "tiny"
out = "{out}"
epochs = 0.05
{SET}
[grid]
seed = [1, 2]
""")
    assert sw.run_sweep(path, scheduler=scheduler, progress=False).complete
    first = sw.read_manifest(out)["runs"][0]
    res = train(sw.resolve({"base": "tiny", **first["overrides"]}), epochs=0.1, out=out / first["file"],
                resume=True, progress=False)
    assert spikefa.load(out / first["file"]).complete

    assert [r.status for r in sw.plan(sw.load_sweep(path), out)] == ["done", "done"]  # what --dry-run shows
    again = sw.run_sweep(path, scheduler=scheduler, progress=False)
    assert again.complete and not again.failed and len(again.reused) == 2
    rows = sw.sweep_report(out)["rows"]
    by_epochs = {r["train.epochs"]: r for r in rows}
    assert set(by_epochs) == {0.05, 0.1}
    assert by_epochs[0.1]["n"] == 1 and by_epochs[0.1]["n_incomplete"] == 0 and by_epochs[0.1]["epochs"] == 0.1
    assert by_epochs[0.1]["error_mean"] == pytest.approx(res.test_error)
    assert by_epochs[0.05]["n"] == 1 and by_epochs[0.05]["n_incomplete"] == 0


def test_a_sweep_file_edited_in_execution_only_keys_keeps_one_row_per_condition(scheduler, tmp_path):
    """Runs re-used across an edit of keys that do not change results (run.checkpoint_minutes,
    [record]; not in the config hash) and the runs added with it are one condition: the
    table had a second row per variant, splitting its seeds, with a column of that key."""
    out = tmp_path / "sweep"
    text = f"""
base = "tiny"
out = "{out}"
epochs = 0.05
{SET or "[set]"}
{{extra}}
[grid]
seed = {{seeds}}
"model.feedback" = ["fa", "dfa"]
"""
    path = _sweep_file(tmp_path, text.format(extra="", seeds=[1, 2]))
    assert sw.run_sweep(path, scheduler=scheduler, progress=False).complete
    path = _sweep_file(tmp_path, text.format(extra='"run.checkpoint_minutes" = 5\n"record.measure_every" = 500',
                                             seeds=[1, 2, 3]))
    res = sw.run_sweep(path, scheduler=scheduler, progress=False)
    assert res.complete and len(res.reused) == 4 and len(res.ran) == 2
    rep = sw.sweep_report(out)
    assert [(r["condition"], r["n"]) for r in rep["rows"]] == [("fa", 3), ("dfa", 3)]
    assert "checkpoint_minutes" not in rep["markdown"]


def test_failed_runs_are_reported_and_the_others_finish(scheduler, tmp_path, capsys):
    out = tmp_path / "sweep"
    path = _sweep_file(tmp_path, f"""
base = "tiny"
out = "{out}"
epochs = 0.25
{SET}
[grid]
seed = [1, 2]
[[runs]]
"model.feedback" = "fa"
[[runs]]
"model.nonsense" = 3            # fails when resolved
[[runs]]
"model.layers" = [100, 20, 20]  # a valid model that raises on the worker (images have 784 pixels)
""")
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(path), "--scheduler", scheduler, "--quiet"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "model.nonsense" in err and "DataError" in err

    manifest = sw.read_manifest(out)
    status = [(e["overrides"].get("model.feedback") or next(k for k in e["overrides"] if k.startswith("model.")),
               e["status"]) for e in manifest["runs"]]
    assert status == [("fa", "done")] * 2 + [("model.nonsense", "failed")] * 2 + [("model.layers", "failed")] * 2
    runtime = [e for e in manifest["runs"] if "model.layers" in e["overrides"]]
    assert all(e["error"].startswith("DataError: the model expects images of 100 pixels") for e in runtime)
    assert all("check_images" in e["traceback"] for e in runtime)
    assert sum(spikefa.load(f).complete for f in out.glob("*.h5")) == 2
    failed_events = [e for e in sw.read_log(out) if e["event"] == "failed"]
    assert len(failed_events) == 4

    assert main(["sweep-report", str(out)]) == 0
    md = (out / "summary.md").read_text()
    assert "Not in the table: 2 points whose settings make no valid model" in md
    failed_lines = md.split("## Failed runs")[1].strip().splitlines()
    assert len(failed_lines) == 4
    assert sum("model.nonsense" in x for x in failed_lines) == 2 and sum("DataError" in x for x in failed_lines) == 2

    # the README's Python example of reading a sweep runs as written, on this sweep
    block = next(b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
                 if "spikefa.sweep" in b)
    capsys.readouterr()
    exec(compile(block.replace('"runs/sweep-small-variants"', repr(str(out))), "<README>", "exec"), {})
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 2  # the runs that named no valid model form no condition
    assert re.search(r" 2 runs, test errors \[0\.\d+ 0\.\d+\] 0 failed$", said[0]), said
    assert said[1].endswith("0 runs, test errors [] 2 failed")


def _finished(out: Path) -> list[dict]:
    return [e for e in sw.read_log(out) if e["event"] == "finished"]


def _wait_finished(out: Path, n: int, proc, timeout=300.0) -> None:
    """Until the sweep in ``proc`` has logged ``n`` finished runs in all. The first wait
    holds the Dask cluster's start, the workers' imports and, on a cold Numba cache, the
    kernels' compile (30 to 90 s on a loaded 2-core machine) before two runs end."""
    t0 = time.time()
    while len(_finished(out)) < n:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        assert time.time() - t0 < timeout, "the sweep did not get going"
        time.sleep(0.05)


@pytest.mark.skipif(JIT_OFF, reason="the sweep's bookkeeping, not the kernels; too slow without the JIT")
def test_a_killed_sweep_runs_only_the_missing_runs_when_started_again(scheduler, tmp_path):
    """Stop a sweep with SIGTERM (the CLI's Ctrl-C path), then kill one with SIGKILL
    (stale locks, no clean-up), and check each restart runs exactly what was not done."""
    out = tmp_path / "sweep"
    path = _sweep_file(tmp_path, SIX.format(out=out, epochs=1.0))
    cmd = [sys.executable, "-m", "spikefa.cli", "sweep", str(path), "--workers", "1", "--quiet",
           "--dashboard-address", ":0"]

    def done_files():
        return {f.name: f.stat().st_mtime_ns for f in out.glob("*.h5") if sw.is_done(f, f.stem.rsplit("-", 1)[1])}

    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _wait_finished(out, 2, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130, (tmp_path / "first.log").read_text()
    first = done_files()
    assert 2 <= len(first) < 6
    assert not (out / sw.LOCK).exists()
    assert sw.read_log(out)[-1]["event"] == "interrupted"

    with open(tmp_path / "second.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _wait_finished(out, len(_finished(out)) + 1, proc)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait(timeout=30)
        psutil.wait_procs(children, timeout=30)  # the workers notice their parent is gone
    second = done_files()
    assert len(first) < len(second) < 6
    assert {k: second[k] for k in first} == first  # nothing done was run again
    sessions = [e["session"] for e in sw.read_log(out) if e["event"] == "session-start"]
    assert len(sessions) == 2
    # a run can complete in the instant before the kill without its "finished" line
    ran_second = {e["file"] for e in _finished(out) if e["session"] == sessions[1]}
    assert ran_second and ran_second <= set(second) - set(first)

    res = sw.run_sweep(path, scheduler=scheduler, progress=False)  # takes over the stale locks
    assert res.complete
    assert {r.file for r in res.reused} == set(second)
    assert {r.file for r in res.ran} == {r.file for r in res.runs} - set(second)
    assert {k: v for k, v in done_files().items() if k in second} == second


def test_a_run_label_names_its_seed():
    """Failed points have no file name, so their label carries the seed: two seeds of one
    bad point are two different lines in the failure list."""
    run = sw.SweepRun(id="x", overrides={"run.seed": 2, "model.eta": -1.0})
    assert run.label() == "model.eta=-1.0, seed=2"
    assert sw.SweepRun(id="y", overrides={}).label() == "base"


def test_a_task_restarts_only_on_an_unreadable_checkpoint(tmp_path, monkeypatch):
    """A sweep task resumes a run's checkpoint; only a checkpoint it cannot read (cut short
    by a kill) makes it start the run again. An error inside the resumed training is not
    taken for one, so a run's progress is never thrown away (it was retrained from scratch)."""
    from spikefa.runfile import Run, checkpoint_path
    from spikefa.train import train as real_train

    cfg = load_config("tiny").replace(train={"epochs": 0.02, "test_every": 0})
    path = tmp_path / "r.h5"
    real_train(cfg, out=path, progress=False)
    checkpoint_path(path).write_bytes(b"not a checkpoint")
    with h5py.File(path, "a") as f:
        f.attrs["complete"] = False
    res = sw._run_task(cfg.to_json(), str(path), None, "t")
    assert res["resumed"] is False and Run(path).complete

    calls = []

    def failing_train(*args, **kwargs):
        calls.append(kwargs)
        raise sw.RunFileError("disk full")

    with h5py.File(path, "a") as f:
        f.attrs["complete"] = False
    monkeypatch.setattr("spikefa.train.train", failing_train)
    with pytest.raises(sw.RunFileError, match="disk full"):
        sw._run_task(cfg.to_json(), str(path), None, "t")
    assert len(calls) == 1 and calls[0]["resume"] is True


def _sigint_disposition():
    import signal

    return str(signal.getsignal(signal.SIGINT))


def test_sweep_workers_leave_ctrl_c_to_the_sweep():
    """Ctrl-C in a terminal reaches the whole process group: the worker processes ignore
    it (a worker that heard it printed a page of asyncio tracebacks over the sweep's own
    message), and the sweep's process keeps its handler."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    with sw.dask_client(n_workers=1, dashboard_address=None) as client:
        assert signal.getsignal(signal.SIGINT) is before
        assert list(client.run(_sigint_disposition).values()) == [str(signal.SIG_IGN)]


@pytest.mark.skipif(JIT_OFF, reason="the sweep's bookkeeping, not the kernels; too slow without the JIT")
def test_a_stopped_sweep_keeps_its_running_runs_work(scheduler, tmp_path):
    """One Ctrl-C stops a sweep without losing work: the run going writes its checkpoint at
    the end of its block (as `spikefa train` does) and the next session continues it from
    there; runs not begun are cancelled and start in the next session. Before, the running
    run was cancelled and started again from nothing."""
    out = tmp_path / "sweep"
    path = _sweep_file(tmp_path, """
base = "tiny"
out = "{out}"
epochs = 30.0
""".format(out=out) + """
[grid]
seed = [1, 2, 3]
""")
    cmd = [sys.executable, "-m", "spikefa.cli", "sweep", str(path), "--workers", "1", "--quiet",
           "--dashboard-address", ":0"]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        t0 = time.time()
        while not any(e["event"] == "started" for e in sw.read_log(out)):
            assert proc.poll() is None and time.time() - t0 < 300, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, (tmp_path / "first.log").read_text()
    said = (tmp_path / "first.log").read_text()
    assert "stopping the sweep" in said and "continue from their checkpoints" in said
    log = sw.read_log(out)
    assert [e["event"] for e in log][-3:] == ["stopping", "stopped", "interrupted"]
    stopped = log[-2]
    assert stopped["steps_done"] > 0 and not (out / f".stop-{log[0]['session']}").exists()
    assert (out / (stopped["file"] + ".ckpt")).exists() and not spikefa.load(out / stopped["file"]).complete
    manifest = sw.read_manifest(out)
    assert manifest["counts"] == {"done": 0, "running": 0, "pending": 3, "failed": 0}

    res = sw.run_sweep(path, scheduler=scheduler, progress=False)
    assert res.complete and len(res.ran) == 3
    finished = {e["file"]: e for e in _finished(out)}
    assert finished[stopped["file"]]["resumed"] is True
    assert sum(e["resumed"] for e in finished.values()) == 1
    assert [r["step"] for r in spikefa.load(out / stopped["file"]).resumes] == [stopped["steps_done"]]


def _one_run_of_30_epochs(tmp_path):
    """A sweep folder, the sweep and its plan: one tiny run, long enough (about 10 s) to be
    stopped while it trains."""
    out = tmp_path / "sweep"
    out.mkdir()
    sweep = sw.load_sweep({"base": "tiny", "out": str(out), "epochs": 30.0, "grid": {"seed": [1]}})
    return out, sweep, sw.plan(sweep, out)


@pytest.mark.skipif(JIT_OFF, reason="the sweep's bookkeeping, not the kernels; too slow without the JIT")
def test_a_stop_waits_for_a_run_that_began_before_the_sweep_heard_of_it(scheduler, tmp_path):
    """A run's 'started' event reaches the sweep up to a poll later than the run begins. A
    stop in between must not cancel the run as 'not begun': a Dask cancel leaves a begun
    task running, on an existing cluster to its end, after the sweep has gone and with its
    stop file deleted. The run must stop at the end of its block and checkpoint, as one
    seen running does. Here the events never arrive, and the stop comes as the run takes
    its file's lock."""
    out, sweep, runs = _one_run_of_30_epochs(tmp_path)

    class Stop:
        @property
        def requested(self):
            return any(out.glob("*.h5.lock"))

    class Deaf:
        """The client, less the 'started' events."""

        def __init__(self, client):
            self._client = client

        def subscribe_topic(self, topic, handler):
            pass

        def __getattr__(self, name):
            return getattr(self._client, name)

    with sw.dask_client(scheduler) as client:
        with pytest.raises(KeyboardInterrupt):
            sw._execute(Deaf(client), sweep, out, runs, list(runs), "s1", None, False, lambda: None, Stop(),
                        out / ".stop-s1")
        (out / ".stop-s1").unlink(missing_ok=True)  # as run_sweep does on its way out
        went_on = any(out.glob("*.h5.lock"))
        t0 = time.time()  # (wait for such a run, so that it does not hold a worker of the next tests)
        while any(out.glob("*.h5.lock")) and time.time() - t0 < 120:
            time.sleep(0.2)
    assert not went_on, "the run went on after the sweep had stopped"
    stopped = [e for e in sw.read_log(out) if e["event"] == "stopped"]
    assert [e["file"] for e in stopped] == [runs[0].file] and stopped[0]["steps_done"] > 0
    assert runs[0].status == "pending" and not spikefa.load(out / runs[0].file).complete


def test_info_continues_a_stopped_sweep_run_with_its_sweep():
    """A run that a stopped sweep left (its worker recorded the sweep's command) is continued
    by starting the sweep again: `spikefa info` must not offer `spikefa sweep ... --resume`,
    which the sweep refuses (unrecognized arguments), nor a train() call."""
    from spikefa.cli import _resume_command

    for command, shown in [("/venv/bin/spikefa sweep s.toml --workers 2", "spikefa sweep s.toml --workers 2"),
                           ("python -m spikefa sweep s.toml", "python -m spikefa sweep s.toml"),
                           ("/x/spikefa/__main__.py sweep s.toml", "python -m spikefa sweep s.toml"),
                           ("/x/spikefa/cli.py sweep s.toml --quiet", "python -m spikefa.cli sweep s.toml --quiet")]:
        said = _resume_command(command)
        assert said.startswith(shown + " (") and "--resume" not in said and "continues it" in said, said
        with pytest.raises(SystemExit):  # (what it says is a command the sweep takes)
            main(said.split(" (")[0].split()[3 if said.startswith("python") else 1:] + ["--help"])
    assert _resume_command("/x/spikefa/cli.py train tiny --out r.h5") == "python -m spikefa.cli train tiny --out r.h5 --resume"


@pytest.mark.skipif(JIT_OFF, reason="the sweep's bookkeeping, not the kernels; too slow without the JIT")
def test_a_second_ctrl_c_still_stops_a_run_an_existing_cluster_goes_on_with(scheduler, tmp_path):
    """A second Ctrl-C cancels at once, and a cancel does not stop a task that has begun:
    on an existing cluster, whose workers outlive the sweep, the run trained on to its end
    unattended. The stop file, now left in place, stops it at the end of its block with a
    checkpoint, from which the sweep continues it when started again."""
    out, sweep, runs = _one_run_of_30_epochs(tmp_path)

    class SecondCtrlC:
        """Lands in the sweep's loop once the run holds its file."""

        @property
        def requested(self):
            if any(out.glob("*.h5.lock")):
                raise KeyboardInterrupt
            return False

    with sw.dask_client(scheduler) as client:
        with pytest.raises(KeyboardInterrupt):
            sw._execute(client, sweep, out, runs, list(runs), "s2", None, False, lambda: None, SecondCtrlC(),
                        out / ".stop-s2")
        t0 = time.time()  # the task returns on its worker, which the sweep no longer watches
        while any(out.glob("*.h5.lock")) and time.time() - t0 < 120:
            time.sleep(0.2)
    assert (out / ".stop-s2").exists() and sw.read_log(out)[-1]["event"] == "interrupted"
    run = spikefa.load(out / runs[0].file)
    assert not run.complete and 0 < run.attrs["steps_done"] < run.attrs["total_steps"]
    assert (out / (runs[0].file + ".ckpt")).exists()


def test_a_sigterm_while_the_local_cluster_starts_stops_it_once_it_stands(monkeypatch):
    """SIGTERM (the CLI turns it into KeyboardInterrupt) that came while LocalCluster() was
    starting was raised inside it: the half-built cluster was left to Dask's exit
    handlers, which printed a page of tracebacks. It is now held until the cluster stands,
    then delivered, and the cluster is closed on the way out."""
    import distributed

    from spikefa.cli import _sigterm

    real, made = distributed.LocalCluster, []

    def starting(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # (its handler runs at once, here)
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(distributed, "LocalCluster", starting)
    before = signal.signal(signal.SIGTERM, _sigterm)
    try:
        with pytest.raises(KeyboardInterrupt):
            with sw.dask_client(n_workers=1, dashboard_address=None):
                raise AssertionError("the sweep went on after the SIGTERM")
        assert signal.getsignal(signal.SIGTERM) is _sigterm
    finally:
        signal.signal(signal.SIGTERM, before)
    assert len(made) == 1 and made[0].status.name == "closed"


def test_the_error_curves_of_a_sweep_with_no_finished_run_say_so(recwarn):
    """sweep-report on a sweep stopped before any run finished printed matplotlib's
    'No artists with labels found to put in legend' warning over its output."""
    ax = sw.plot_error_curves([])
    assert [t.get_text() for t in ax.texts] == ["no finished runs yet"] and ax.get_legend() is None
    assert not [w for w in recwarn if "legend" in str(w.message)]


@pytest.mark.skipif(JIT_OFF, reason="the sweep's bookkeeping, not the kernels; too slow without the JIT")
def test_a_ctrl_c_as_the_cluster_closes_after_the_last_run_leaves_the_sweep_finished(scheduler, tmp_path,
                                                                                     monkeypatch):
    """Every run done, a Ctrl-C while the cluster closed raised KeyboardInterrupt out of the
    finished sweep: 'sweep stopped', exit 130, no session-end in its log. It now only asks
    a stop of a sweep that has nothing left to stop."""
    from contextlib import contextmanager

    real = sw.dask_client

    @contextmanager
    def closing_with_a_ctrl_c(*args, **kwargs):
        with real(scheduler) as client:
            yield client
            os.kill(os.getpid(), signal.SIGINT)  # (its handler runs at once, here)

    monkeypatch.setattr(sw, "dask_client", closing_with_a_ctrl_c)
    out = tmp_path / "sweep"
    try:
        res = sw.run_sweep({"base": "tiny", "out": str(out), "epochs": 0.05, "grid": {"seed": [1]}}, progress=False)
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C stopped a finished sweep")
    assert res.complete and sw.read_log(out)[-1]["event"] == "session-end"


def test_only_the_sweeps_stop_makes_a_run_task_return_stopped(tmp_path, monkeypatch):
    """A task returns 'stopped' (a run kept pending, to continue from its checkpoint) only
    when the sweep's stop file asked for it. A KeyboardInterrupt from anywhere else (a
    Ctrl-C in the terminal of an existing cluster's worker) propagates, so that the sweep
    reports the run as failed instead of taking it for stopped by the sweep."""
    import threading

    import spikefa.train as module

    stop_file = tmp_path / ".stop-s1"

    def interrupted(cfg, *, out, stop=None, **kwargs):
        if asked:
            stop_file.touch()
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "train", interrupted)
    cfg_json = load_config("tiny").to_json()
    got = []

    def task():  # (in a thread: _run_task sets numba's thread count, per thread)
        try:
            got.append(sw._run_task(cfg_json, str(tmp_path / "r.h5"), None, "t", str(stop_file)))
        except BaseException as exc:  # noqa: BLE001 - what the task ended with is the test
            got.append(exc)

    for asked in (False, True):
        t = threading.Thread(target=task)
        t.start()
        t.join(60)
    assert isinstance(got[0], KeyboardInterrupt), got
    assert got[1]["stopped"] is True and got[1]["steps_done"] is None, got


def test_a_runs_notes_go_to_the_sweep_and_other_threads_notes_print_as_before(monkeypatch, capsys):
    """A note a run logs on its worker is sent to the sweep as an event (not printed on the
    worker); a note of another thread of that worker, or once the run has returned, prints
    on stderr as Python prints a logger's record when nothing handles it."""
    import threading

    class Worker:
        def __init__(self):
            self.events = []

        def log_event(self, topic, msg):
            self.events.append((topic, msg))

    monkeypatch.setattr(logging.root, "handlers", [])  # as on a worker (pytest adds its own)
    monkeypatch.setattr(logging.getLogger("spikefa"), "handlers", [])
    log = logging.getLogger("spikefa.train")
    worker = Worker()
    with sw._TaskNotes.forwarded(worker, "topic", "a.h5"):
        log.warning("spikefa: note: in the run")
        other = threading.Thread(target=log.warning, args=("spikefa: note: in another thread",))
        other.start()
        other.join()
        with sw._TaskNotes.forwarded(worker, "topic", "b.h5"):  # (installed once)
            pass
    log.warning("spikefa: note: after the run")
    assert worker.events == [("topic", {"event": "note", "file": "a.h5", "message": "spikefa: note: in the run"})]
    assert len(logging.getLogger("spikefa").handlers) == 1
    assert capsys.readouterr().err == "spikefa: note: in another thread\nspikefa: note: after the run\n"


@pytest.mark.skipif(JIT_OFF, reason="the sweep's bookkeeping, not the kernels; too slow without the JIT")
def test_a_note_a_run_logs_on_its_worker_is_the_sweeps_not_the_workers(tmp_path, capfd):
    """A run's note ("holds 2000 images, fewer than the 5000 asked for") printed on the
    worker's stderr, over the sweep's progress bar (or, on an existing cluster, into the
    worker's log): it now reaches the sweep, which prints it once above its bar and
    keeps it in sweep-log.jsonl with the run it came from."""
    out = tmp_path / "sweep"
    path = _sweep_file(tmp_path, f"""
base = "tiny"
out = "{out}"
epochs = 0.05
[set]
"train.n_train" = 5000
""" + SET.replace("[set]\n", ""))
    res = sw.run_sweep(path, workers=1, progress=True)
    assert res.complete
    err = capfd.readouterr().err
    note = "spikefa: note: train of mnist-subset holds 2000 images, fewer than the 5000 asked for: using all of them"
    assert err.count(note) == 1, err
    assert f"{note} (run {res.runs[0].file})" in err  # (the note does not name its run)
    logged = [e for e in sw.read_log(out) if e["event"] == "note"]
    assert [(e["id"], e["file"], e["message"]) for e in logged] == [(res.runs[0].id, res.runs[0].file, note)]


def test_a_note_of_another_thread_is_printed_once_where_a_handler_takes_it(monkeypatch, capsys):
    """Where the worker's logging has a handler (on the root logger here), a note of a thread
    that is not a sweep's run is left to that handler: _TaskNotes does not print it a second
    time on stderr as Python's last resort."""
    import io
    import threading

    class Worker:
        def __init__(self):
            self.events = []

        def log_event(self, topic, msg):
            self.events.append((topic, msg))

    stream = io.StringIO()
    monkeypatch.setattr(logging.root, "handlers", [logging.StreamHandler(stream)])
    monkeypatch.setattr(logging.getLogger("spikefa"), "handlers", [])
    log = logging.getLogger("spikefa.train")
    worker = Worker()
    with sw._TaskNotes.forwarded(worker, "topic", "a.h5"):
        other = threading.Thread(target=log.warning, args=("spikefa: note: in another thread",))
        other.start()
        other.join()
    assert worker.events == []
    assert stream.getvalue() == "spikefa: note: in another thread\n"
    assert capsys.readouterr().err == ""


def test_a_run_task_off_a_worker_leaves_its_notes_to_logging(tmp_path, monkeypatch, capsys):
    """_run_task called where there is no Dask worker (get_worker fails) forwards nothing: a
    note is printed as logging prints it, not lost in a 'Logging error' about a worker that
    is not there."""
    import threading

    import spikefa.train as module

    stop_file = tmp_path / ".stop-s1"

    def noted(cfg, *, out, stop=None, **kwargs):
        logging.getLogger("spikefa.train").warning("spikefa: note: off a worker")
        stop_file.touch()
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "train", noted)
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.getLogger("spikefa"), "handlers", [])
    cfg_json, got = load_config("tiny").to_json(), []
    t = threading.Thread(target=lambda: got.append(sw._run_task(cfg_json, str(tmp_path / "r.h5"), None, "t",
                                                                str(stop_file))))
    t.start()
    t.join(60)
    assert got and got[0]["stopped"] is True, got
    assert capsys.readouterr().err == "spikefa: note: off a worker\n"
