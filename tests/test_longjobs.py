"""What a user of long runs meets when a run is cut off or its files are disturbed
(user study f): a writer killed while it writes outside SWMR mode, a run file deleted
while the run goes on, what `spikefa info` says of a running run. The tiny model for a
few hundred steps, so the file takes seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from spikefa.runfile import Run, RunFileError, checkpoint_path
from spikefa.train import train
from test_resume import LAYERS, spikefa_env
from test_resume import short_cfg as resume_cfg


def short_cfg(**changes):
    """test_resume's short run, 500 steps long."""
    return resume_cfg(**{**changes, "train": {"epochs": 0.05, **changes.get("train", {})}})


KILLED_IN_FINAL_WRITES = """
import os, signal, h5py
from spikefa import runfile
from spikefa.config import load_config
from spikefa.train import train

def killed(path, net):  # SIGKILL in the middle of writing the final weights
    f = h5py.File(path, "a", libver="latest")
    f.create_group("final/h1").create_dataset("W", data=net.weights(1))
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

runfile.write_final = killed
cfg = load_config("tiny").replace(train={{"epochs": 0.05, "test_every": 60}}, test={{"n_test": 50}},
                                  run={{"block_steps": 100}})
train(cfg, out={out!r}, progress=False)
"""


def test_a_run_killed_while_writing_its_final_weights_stays_readable_and_resumes(tmp_path):
    """After the loop the run file leaves SWMR mode to write the final weights (seconds for
    the paper's network). A SIGKILL then left the file marked open by a plain writer: every
    spikefa command, `--resume` included, failed with h5py's 'file is not already open for
    SWMR writing', although the docs say a killed run leaves a readable file that --resume
    repairs."""
    out = tmp_path / "k.h5"
    proc = subprocess.run([sys.executable, "-c", KILLED_IN_FINAL_WRITES.format(out=str(out))], env=spikefa_env(),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    run = Run(out)  # readable, as the docs promise of a killed run
    s = run.summary()
    assert s["state"] == "stopped" and not run.complete
    assert s["test_passes"] == 2 and s["steps_done"] == 500
    train(short_cfg(), out=out, resume=True, progress=False)
    full = tmp_path / "full.h5"
    train(short_cfg(), out=full, progress=False)
    assert Run(out).complete
    for layer in LAYERS:
        np.testing.assert_array_equal(Run(out).final(layer, "W"), Run(full).final(layer, "W"))
    np.testing.assert_array_equal(Run(out).test_curve()["error"], Run(full).test_curve()["error"])


class DeleteAt:
    """A recorder that deletes the run file when the block ending at ``step`` has run."""

    def __init__(self, out, step):
        self.out, self.step = out, step

    def on_block(self, net, step0, outputs):
        if step0 + outputs["spikes"].shape[0] == self.step:
            os.remove(self.out)


def test_a_run_file_deleted_while_the_run_goes_on_stops_it_with_a_clear_error(tmp_path):
    """The run went on writing into the deleted file to its end (hours, for a long run),
    then created a new file under the old name holding only the final weights and
    attributes, and failed with 'not a spikefa run file (no schema_version)'; that file
    then blocked --overwrite ('an HDF5 file but not a spikefa run file')."""
    out = tmp_path / "d.h5"
    with pytest.raises(RunFileError, match="deleted or replaced while the run was going") as info:
        train(short_cfg(), out=out, progress=False, recorder=DeleteAt(out, 200))
    assert "--branch-from" in str(info.value)
    assert not out.exists()  # no half-empty file made under its name
    ck = checkpoint_path(out)
    with h5py.File(ck, "r") as f:
        assert int(f.attrs["step"]) == 200
    # what the message says to do works, and continues the same trajectory
    res = train(short_cfg(), out=out, progress=False, branch_from=ck)
    full = tmp_path / "full.h5"
    train(short_cfg(), out=full, progress=False)
    assert res.steps == 500
    for layer in LAYERS:
        np.testing.assert_array_equal(Run(out).final(layer, "W"), Run(full).final(layer, "W"))


class ReplaceAt:
    """A recorder that puts another HDF5 file in the run file's place when the block
    ending at ``step`` has run (a copy of an older run restored over it, say)."""

    def __init__(self, out, step):
        self.out, self.step = out, step

    def on_block(self, net, step0, outputs):
        if step0 + outputs["spikes"].shape[0] == self.step:
            other = self.out.with_name("other.h5")
            with h5py.File(other, "w") as f:
                f.attrs["mine"] = 1
            os.replace(other, self.out)


def test_a_run_file_replaced_while_the_run_goes_on_stops_it_and_the_new_file_is_left_alone(tmp_path):
    """A file put in the run file's place during the run (not deleted: the path names
    another file) stops the run as a deleted one does, and the attributes the run held
    back for its closing writes do not go into that other file."""
    out = tmp_path / "r.h5"
    with pytest.raises(RunFileError, match="deleted or replaced while the run was going"):
        train(short_cfg(), out=out, progress=False, recorder=ReplaceAt(out, 200))
    with h5py.File(out, "r") as f:
        assert dict(f.attrs) == {"mine": 1} and list(f) == []
    with h5py.File(checkpoint_path(out), "r") as f:
        assert int(f.attrs["step"]) == 200


class SummaryAt:
    """A recorder that reads the run's summary when the block ending at ``step`` has run."""

    def __init__(self, out, step):
        self.out, self.step, self.summary = out, step, None

    def on_block(self, net, step0, outputs):
        if step0 + outputs["spikes"].shape[0] == self.step:
            self.summary = Run(self.out).summary()


def test_info_of_a_running_run_counts_the_run_time_of_its_checkpoint(tmp_path):
    """`spikefa info` said '0 s of run time' for a running run until its first test pass
    (minutes to hours with the long model), although its checkpoint holds the run time."""
    out = tmp_path / "w.h5"
    probe = SummaryAt(out, 400)
    train(short_cfg(train={"test_every": 0}, run={"checkpoint_minutes": 1e-6}), out=out, progress=False,
          recorder=probe)
    s = probe.summary
    assert s["state"] == "running" and s["test_passes"] == 0 and s["checkpoint_step"] == 300
    assert s["wall_s"] > 0


def test_a_checkpoint_that_cannot_be_written_is_named_in_the_error(tmp_path):
    """A checkpoint write that failed (a full disk, a folder that cannot be written) ended
    the run with h5py's bare 'Unable to synchronously create file (... run.h5.ckpt.tmp ...)',
    not saying that it was the checkpoint that could not be written."""
    out = tmp_path / "c.h5"
    Path(str(out) + ".ckpt.tmp").mkdir()
    with pytest.raises(RunFileError, match=r"cannot write the checkpoint .*c\.h5\.ckpt"):
        train(short_cfg(), out=out, progress=False)


def test_a_reader_that_meets_a_plain_writer_mid_write_waits_instead_of_failing(tmp_path, monkeypatch):
    """While a plain (not SWMR) writer starts or finishes a run, a reader opens the file
    through the 'left open' view and reads its writer's pid. Caught mid-write, that read
    raised h5py's 'len not positive after adjustment for EOA' out of Run.progress() (CI saw
    it once in test_sigkill_leaves_a_readable_incomplete_file); now the reader waits and
    asks again, as it does for a writer it sees alive."""
    from spikefa import runfile
    out = tmp_path / "r.h5"
    train(short_cfg(), out=out, progress=False)
    real_read, real_left_open = runfile._open_read, runfile._open_left_open
    calls = {"read": 0, "left_open": 0}

    def read(path, *args):
        if args:  # the check for truncation, not a SWMR open
            return real_read(path, *args)
        calls["read"] += 1
        if calls["read"] == 1:  # the file is marked open by a plain writer
            raise OSError(f"Unable to synchronously open file ({runfile._LEFT_OPEN})")
        return real_read(path, *args)

    def left_open(path):
        calls["left_open"] += 1
        f = real_left_open(path)
        f.close()
        raise OSError("Can't synchronously read data (len not positive after adjustment for EOA)")

    monkeypatch.setattr(runfile, "_open_read", read)
    monkeypatch.setattr(runfile, "_open_left_open", left_open)
    assert Run(out).progress()["complete"]
    assert calls["left_open"] == 1 and calls["read"] >= 2  # it waited, then read the file


PAUSED_IN_A_PLAIN_WRITE = """
import sys
from spikefa import runfile
from spikefa.config import load_config

def pause(*args):
    print("paused", flush=True)
    sys.stdin.readline()  # until the test has read the file
    return ""

cfg = load_config("tiny")
if sys.argv[2] == "create":
    runfile.source_revision = pause  # called inside create_run_file's write, before its attributes
    runfile.create_run_file(sys.argv[1], cfg, total_steps=1000)
else:
    runfile.create_run_file(sys.argv[1], cfg, total_steps=1000)
    runfile.RunWriter(sys.argv[1], setup=pause).close()  # paused where a recorder makes its datasets
print("closed", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("phase", ["create", "setup"])
def test_a_reader_waits_for_a_live_writer_that_has_not_named_itself_yet(tmp_path, monkeypatch, phase):
    """A run file is written outside SWMR mode while it is created and while its writer
    sets it up for the loop, before the writer has written (and flushed) its pid. A reader
    then took the pid it found (none, or the last writer's) for a dead writer's and read
    the half-written file: 'is truncated' for a file being created, a stale view, or any
    of h5py's errors for a torn read (CI: RuntimeError 'wrong fractal heap header
    signature' from Run.progress() in test_sigkill_leaves_a_readable_incomplete_file).
    HDF5's file lock says that a live writer holds the file: the reader waits for it."""
    from spikefa import runfile

    out = tmp_path / "w.h5"
    writer = subprocess.Popen([sys.executable, "-c", PAUSED_IN_A_PLAIN_WRITE, str(out), phase], env=spikefa_env(),
                              cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    waits = []
    monkeypatch.setattr(runfile.time, "sleep", waits.append)  # the writer stays paused: no need to wait
    try:
        assert writer.stdout.readline().strip() == "paused"
        with pytest.raises(RunFileError, match="is writing it outside SWMR mode.*try again in a moment"):
            Run(out).progress()
        assert waits  # it waited for the writer before it said so
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "closed"
        p = Run(out).progress()  # the writer has closed the file (and lives on)
        assert p["total_steps"] == 1000 and not p["complete"]
    finally:
        writer.kill()
        writer.wait()


STOPPED_IN_A_LIVE_KERNEL = """
import sys, time
from spikefa.config import load_config
from spikefa.train import train

class Stop:
    def on_block(self, net, step0, outputs):
        if step0 >= 200:
            raise KeyboardInterrupt  # Ctrl-C in a notebook: the run stops, the kernel lives on

cfg = load_config("tiny").replace(train={{"epochs": 0.05, "test_every": 0}}, test={{"n_test": 50}},
                                  run={{"block_steps": 100}})
try:
    train(cfg, out={out!r}, progress=False, recorder=Stop())
except KeyboardInterrupt:
    pass
print("stopped", flush=True)
sys.stdin.readline()
import h5py  # then, as a run does at its end or at a stop: writes its checkpoint, the run file closed
f = h5py.File({out!r} + ".ckpt.tmp", "w")
print("checkpointing", flush=True)
sys.stdin.readline()
f.close()
print("checkpointed", flush=True)
time.sleep(120)
"""


def test_info_of_a_run_stopped_in_a_process_that_lives_on_says_stopped(tmp_path):
    """A run stopped by Ctrl-C in a notebook names the kernel as its writer, and the kernel
    lives on; `spikefa info` said it was 'running' until the kernel was shut down, although
    nothing wrote the file (and --overwrite already knew: it is refused only while the
    writer holds the file open)."""
    out = tmp_path / "n.h5"
    proc = subprocess.Popen([sys.executable, "-c", STOPPED_IN_A_LIVE_KERNEL.format(out=str(out))], env=spikefa_env(),
                            cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)

    def next_phase(said):
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == said

    try:
        assert proc.stdout.readline().strip() == "stopped", proc.stderr.read()
        run = Run(out)
        assert run.attrs["writer_pid"] == proc.pid and proc.poll() is None  # its writer lives on
        assert run.summary()["state"] == "stopped"
        # but a live run writing its checkpoint, its run file closed meanwhile, is running
        next_phase("checkpointing")
        assert run.summary()["state"] == "running"
        next_phase("checkpointed")  # (a .ckpt.tmp nobody holds is a killed writer's leftover)
        assert run.summary()["state"] == "stopped"
    finally:
        proc.kill()
        proc.wait()


def test_a_run_file_written_under_a_looser_check_stays_readable(tmp_path, caplog, capsys):
    """model.eta * model.gamma >= 1 became an error in a later version; a run file written
    before, with such a config, could no longer be opened at all (Run, spikefa info, plot:
    'model.eta * model.gamma = ... is not allowed'), its results lost to the reader. It is
    now read as written, with a note; resuming it is still refused."""
    import json

    from spikefa.cli import main
    from spikefa.config import ConfigError, config_from_dict

    out = tmp_path / "old.h5"
    train(short_cfg(), out=out, progress=False)
    for path in (out, checkpoint_path(out)):  # an old run's checkpoint holds the same config
        with h5py.File(path, "a") as f:
            d = json.loads(f.attrs["config"])
            d["model"]["eta"] = 1e10  # eta * gamma = 100 with the default gamma
            f.attrs["config"] = json.dumps(d)
    with pytest.raises(ConfigError, match=r"model.eta \* model.gamma"):
        config_from_dict(d)
    run = Run(out)
    assert run.config.model.eta == 1e10 and run.complete
    assert "fails a check of this spikefa version" in caplog.text and "model.eta * model.gamma" in caplog.text
    Run(out).test_curve()
    assert caplog.text.count("fails a check of this spikefa version") == 1  # once, not at every read
    assert main(["info", str(out)]) == 0
    assert "complete" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"model.eta \* model.gamma"):  # resuming it stays refused
        train(short_cfg(train={"epochs": 0.1}), out=out, resume=True, progress=False)
    assert Run(out).complete


KILLED_PLAIN_WRITER = """
import os, signal, h5py
f = h5py.File({path!r}, "a", libver={libver!r})
f.attrs["late"] = 2
f.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("libver", [("v108", "v108"), "latest"])  # superblock version 2, 3
def test_the_view_of_a_file_left_open_reads_as_h5clear_would_write_it(tmp_path, libver):
    """runfile._FlagsCleared shows a file whose plain writer was killed with the status
    flags of its superblock cleared and the superblock's checksum made anew: its bytes
    are a file that HDF5's own driver opens (h5py reads the view through a Python file
    object, whose driver does not check the flags, so a view that left them set, or a
    checksum that does not match them, went unnoticed when read back through h5py)."""
    from spikefa import runfile

    path = tmp_path / "left.h5"
    with h5py.File(path, "w", libver=libver) as f:
        f.attrs["early"] = 1
        f["x"] = np.arange(5)
    proc = subprocess.run([sys.executable, "-c", KILLED_PLAIN_WRITER.format(path=str(path), libver=libver)])
    assert proc.returncode == -9
    data = path.read_bytes()
    assert data[11] != 0  # the killed writer's mark
    view = runfile._FlagsCleared(path)
    try:
        cleared = view.read()
    finally:
        view.close()
    assert len(cleared) == len(data) and cleared[11] == 0 and cleared[:11] == data[:11]
    copy = tmp_path / "cleared.h5"
    copy.write_bytes(cleared)
    with h5py.File(copy, "r") as f:  # HDF5's own driver checks the flags and the checksum
        assert f.attrs["early"] == 1 and list(f["x"][...]) == [0, 1, 2, 3, 4]
    assert path.read_bytes() == data  # the file itself is not changed


SWMR_WRITER = """
import os, socket, time, h5py
f = h5py.File({path!r}, "a", libver="latest")
f.attrs.update(writer_pid=os.getpid(), writer_host=socket.gethostname())
f.flush()
f.swmr_mode = True
print("writing", flush=True)
time.sleep(60)
"""


def test_recover_refuses_a_file_whose_writer_is_alive(tmp_path):
    """recover() copies a run file into a new one that takes its name: for a writer that
    is alive (it only looks killed, e.g. on a file system without locks) that would swap
    the file under it; it is refused, naming the writer, and the file stays as it was."""
    from spikefa import runfile

    out = tmp_path / "live.h5"
    runfile.create_run_file(out, short_cfg(), total_steps=500)
    writer = subprocess.Popen([sys.executable, "-c", SWMR_WRITER.format(path=str(out))], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        inode = os.stat(out).st_ino
        with pytest.raises(RunFileError, match=f"being written by process {writer.pid}"):
            runfile.recover(out)
        assert os.stat(out).st_ino == inode and not (tmp_path / "live.h5.recover").exists()
    finally:
        writer.kill()
        writer.wait()


def test_recover_drops_a_part_its_killed_writer_left_unfinished(tmp_path, monkeypatch, caplog):
    """A part of the file that cannot be copied (its killed writer was in the middle of
    writing it) is dropped whole, with a note naming it, and the rest is kept: no half
    copy is left for a resume to trip over."""
    from spikefa import runfile

    out = train(short_cfg(train={"epochs": 0.02}), out=tmp_path / "u.h5", progress=False).path
    curve = Run(out).test_curve()["error"]
    real_copy = h5py.Group.copy

    def copy(self, source, dest, name=None, **kw):
        real_copy(self, source, dest, name=name, **kw)
        if name == "final":  # copied in part, then the damaged bytes
            raise OSError("Can't synchronously read data (filter returned failure during read)")

    monkeypatch.setattr(h5py.Group, "copy", copy)
    runfile.recover(out)
    monkeypatch.undo()
    with h5py.File(out, "r") as f:
        assert "final" not in f and "test" in f and f.attrs["complete"]
    np.testing.assert_array_equal(Run(out).test_curve()["error"], curve)
    assert "dropped /final, which its killed writer left unfinished" in caplog.text


def test_recover_cut_off_leaves_no_half_copy_and_the_file_untouched(tmp_path, monkeypatch):
    """recover() copies into RUN.h5.recover and then renames it; a Ctrl-C (or a full disk)
    during the copy left that half copy behind, beside a file that it had not touched."""
    from spikefa import runfile

    out = train(short_cfg(train={"epochs": 0.02}), out=tmp_path / "c.h5", progress=False).path
    before = out.read_bytes()

    def copy(self, source, dest, name=None, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py.Group, "copy", copy)
    with pytest.raises(KeyboardInterrupt):
        runfile.recover(out)
    monkeypatch.undo()
    assert not (tmp_path / "c.h5.recover").exists()
    assert out.read_bytes() == before


LOCKING_READER = """
import sys, h5py
f = h5py.File({path!r}, "r")  # a plain reader holds the file's lock
print("reading", flush=True)
sys.stdin.readline()  # until told to let go
f.close()
"""


def test_a_writer_waits_for_a_reader_that_holds_the_file_lock(tmp_path):
    """A plain h5py reader (a notebook's h5py.File(path, "r")) holds the file's lock; a
    write (set_attrs, a test row, a resume's checks) waits for it to let go instead of
    failing at once with HDF5's 'unable to lock file'."""
    from spikefa import runfile

    out = tmp_path / "l.h5"
    runfile.create_run_file(out, short_cfg(), total_steps=500)
    reader = subprocess.Popen([sys.executable, "-c", LOCKING_READER.format(path=str(out))], stdout=subprocess.PIPE,
                              stdin=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "reading"
        t0 = time.monotonic()

        def let_go():  # told after 1 s, whatever the load (the reader holds the lock till then)
            time.sleep(1.0)
            reader.stdin.write("done\n")
            reader.stdin.flush()

        threading.Thread(target=let_go, daemon=True).start()
        runfile.set_attrs(out, n_train=7)
        assert time.monotonic() - t0 >= 1.0  # it waited for the reader to let go
    finally:
        reader.kill()
        reader.wait()
    assert Run(out).attrs["n_train"] == 7


PLAIN_WRITER_FINISHING = """
import os, socket, time, h5py
f = h5py.File({path!r}, "a", libver="latest")  # a plain writer, as at the end of a run
f.attrs.update(writer_pid=os.getpid(), writer_host=socket.gethostname())
f.flush()
print("writing", flush=True)
time.sleep(0.3)  # the reader asks for 2 s before it gives up
f.attrs["complete"] = True  # its last write
f.close()
time.sleep(60)
"""


def test_a_reader_waits_for_a_live_plain_writer_to_finish(tmp_path):
    """A file marked open by a plain writer that is alive (finishing or starting a run) is
    read once that writer is done, not through the view of the file as it was when the
    writer opened it, which would say the run is not complete."""
    out = tmp_path / "f.h5"
    train(short_cfg(train={"epochs": 0.02}), out=out, progress=False)
    with h5py.File(out, "a") as f:
        f.attrs["complete"] = False
    writer = subprocess.Popen([sys.executable, "-c", PLAIN_WRITER_FINISHING.format(path=str(out))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        assert Run(out).progress()["complete"]
    finally:
        writer.kill()
        writer.wait()


def test_a_file_that_looks_truncated_for_an_instant_is_asked_again(tmp_path, monkeypatch):
    """A file that a plain writer is in the middle of writing can look truncated to HDF5
    for an instant; the check asks again before it calls the file truncated."""
    from spikefa import runfile

    out = train(short_cfg(train={"epochs": 0.02}), out=tmp_path / "t.h5", progress=False).path
    real_read = runfile._open_read
    calls = {"plain": 0}

    def read(path, *args):
        if args:  # the check for truncation: a plain open
            calls["plain"] += 1
            if calls["plain"] == 1:
                raise OSError("Unable to synchronously open file (truncated file: eof = 1024, "
                              "sblock->base_addr = 0, stored_eof = 4096)")
        return real_read(path, *args)

    monkeypatch.setattr(runfile, "_open_read", read)
    assert Run(out).progress()["complete"]
    assert calls["plain"] >= 2


class DeleteInFinalTest:
    """A recorder that deletes the run file during the test pass after the last block."""

    def __init__(self, out, total):
        self.out, self.total = out, total

    def on_block(self, net, step0, outputs):
        pass

    def test_hook(self, train_step):
        def hook(net, step0, outputs):
            if train_step == self.total and self.out.exists():
                os.remove(self.out)
        return hook


def test_a_run_file_deleted_during_the_final_test_pass_is_not_made_anew(tmp_path):
    """Deleted after the last block's check, during the final test pass: the final weights
    and attributes are not written into a new file of the same name (which would hold
    nothing else, and block --overwrite as 'not a spikefa run file'). The error is the one a
    deletion during training gives, saying how to go on (it was h5py's bare 'cannot write
    the run file ...: [Errno 2] ...')."""
    out = tmp_path / "f.h5"
    with pytest.raises(RunFileError, match="f.h5 was deleted or replaced .* at step 500.*--branch-from"):
        train(short_cfg(), out=out, progress=False, recorder=DeleteInFinalTest(out, 500))
    assert not out.exists()
    res = train(short_cfg(), out=out, progress=False, branch_from=checkpoint_path(out))  # as the error says
    assert res.steps == 500 and Run(out).complete


STATE_READER = """
import sys
from spikefa.runfile import Run
print("ready", flush=True)
for line in sys.stdin:  # a run file's path: what `spikefa info` says of it now
    print(Run(line.strip()).summary()["state"], flush=True)
"""


class StopAt:
    """A recorder that stops the run (Ctrl-C) once ``step`` steps are done."""

    def __init__(self, step):
        self.step = step

    def on_block(self, net, step0, outputs):
        if step0 >= self.step:
            raise KeyboardInterrupt


def test_info_says_running_whenever_a_live_run_will_write_its_file_again(tmp_path, monkeypatch):
    """Outside the training loop a run opens its file for each write and closes it after:
    at the start of a run, resume or branch, and at the end (final weights, attributes,
    `complete`) or a stop (the attributes kept until the loop's file closed). Between those
    writes `spikefa info` (and `writer_state`) said 'stopped' of a run alive and about to
    write again, for 10-110 ms at every run's end. Asked from another process (and another
    thread) just before each such write, it now says 'running'; once a run is stopped in a
    process that lives on, 'stopped'; once finished, 'complete'."""
    import threading

    from spikefa import runfile

    reader = subprocess.Popen([sys.executable, "-c", STATE_READER], env=spikefa_env(), cwd=tmp_path,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def state(path):
        reader.stdin.write(f"{path}\n")
        reader.stdin.flush()
        said = reader.stdout.readline().strip()
        assert said, reader.stderr.read()
        return said

    seen = []  # (what is about to be written, the state another process reads, another thread)

    def asked(what, path):
        path = Path(str(path).removesuffix(".ckpt.tmp"))
        pid, host = runfile._writer(Run(path).attrs)
        in_thread = []
        t = threading.Thread(target=lambda: in_thread.append(runfile.writer_state(path, pid, host)))
        t.start()
        t.join()
        seen.append((what, path.name, state(path), in_thread[0]))

    real_open, real_ckpt = runfile._open_for_write, runfile._write_checkpoint

    def open_for_write(path):
        asked("open", path)
        return real_open(path)

    def write_checkpoint(tmp, net, **kw):
        asked("checkpoint", tmp)
        return real_ckpt(tmp, net, **kw)

    monkeypatch.setattr(runfile, "_open_for_write", open_for_write)
    monkeypatch.setattr(runfile, "_write_checkpoint", write_checkpoint)
    cfg = short_cfg(train={"test_every": 0})
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        train(cfg, out=a, progress=False)  # start, end
        assert state(a) == "complete"
        with pytest.raises(KeyboardInterrupt):
            train(cfg, out=b, progress=False, recorder=StopAt(200))  # a stop
        assert state(b) == "stopped"  # (this process lives on, as a notebook's kernel does)
        train(cfg, out=b, progress=False, resume=True)  # a resume's start
        train(cfg, out=tmp_path / "c.h5", progress=False, branch_from=a)  # a branch's start
        assert state(b) == state(tmp_path / "c.h5") == "complete"
    finally:
        reader.kill()
        reader.wait()
    whats = {(what, name) for what, name, _, _ in seen}
    assert {("open", "a.h5"), ("checkpoint", "a.h5"), ("open", "b.h5"), ("checkpoint", "b.h5"),
            ("open", "c.h5")} <= whats
    assert [s for s in seen if s[2:] != ("running", "running")] == [], seen
    assert not list(tmp_path.glob("*.writer"))  # each run let its lock go, and removed its file


LOCK_HOLDER = """
import sys
from spikefa.runfile import WriterLock
lock = WriterLock(sys.argv[1])  # as a run holds it, between its writes
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_runs_lock_refuses_a_second_run_and_a_killed_runs_lock_means_nothing(tmp_path):
    """The lock a run holds from its first write to its last says 'running' (naming its
    process) of a file that names no writer yet (a run's setup), and refuses a second run
    with the same --out; its process killed, the lock file left behind means nothing, and
    the next run takes it over and removes it."""
    from spikefa import runfile

    out = tmp_path / "l.h5"
    runfile.create_run_file(out, short_cfg(), total_steps=500)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], env=spikefa_env(), cwd=tmp_path,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        s = Run(out).summary()
        assert s["state"] == "running" and s["writer"].startswith(f"{holder.pid}@")
        with pytest.raises(RunFileError, match=f"being written by process {holder.pid}"):
            train(short_cfg(), out=out, progress=False, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    assert runfile.lock_path(out).exists() and Run(out).summary()["state"] == "stopped"
    assert train(short_cfg(), out=out, progress=False, overwrite=True).steps == 500
    assert not runfile.lock_path(out).exists()


def test_refusals_name_the_process_that_holds_a_runs_lock(tmp_path):
    """While a run holds its lock and its file still names an earlier writer (a resume's
    setup), `recover` and an overwrite (create_run_file) name the lock's holder, the
    process to stop, not the file's old writer. A lock file its holder has not written yet
    names no process 0 (`kill -INT 0`, as the refusal advises, signals the user's own
    process group): the file's writer is named then."""
    import fcntl

    from spikefa import runfile

    out = tmp_path / "l.h5"
    runfile.create_run_file(out, short_cfg(), total_steps=500)
    old = 4_000_000  # a writer long gone
    runfile.set_attrs(out, writer_pid=old, writer_host=__import__("socket").gethostname())
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out)], env=spikefa_env(), cwd=tmp_path,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFileError, match=f"being written by process {holder.pid};"):
            runfile.recover(out)
        with pytest.raises(RunFileError, match=f"being written by process {holder.pid};"):
            runfile.create_run_file(out, short_cfg(), total_steps=500, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    fd = os.open(runfile.lock_path(out), os.O_RDWR | os.O_TRUNC)  # held, not yet written
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert Run(out).summary()["writer"].startswith(f"{old}@")
        with pytest.raises(RunFileError, match=f"being written by process {old};"):
            runfile.create_run_file(out, short_cfg(), total_steps=500, overwrite=True)
    finally:
        os.close(fd)


def test_a_second_run_of_a_file_in_this_process_is_refused_as_such(tmp_path):
    """A second run of a file that a run in this process (a notebook's other thread) writes
    is refused as such, not with advice to stop `process PID` by `kill -INT PID`: this
    process, the notebook's kernel itself."""
    from spikefa.runfile import WriterLock

    out = tmp_path / "r.h5"
    with WriterLock(out):
        with pytest.raises(RunFileError, match="this one, in another thread") as exc:
            train(short_cfg(), out=out, progress=False)
        assert "kill" not in str(exc.value)
    assert train(short_cfg(), out=out, progress=False).steps == 500


FORKED_DURING_A_RUN = """
import os, sys, time
from spikefa import runfile
path = sys.argv[1]
lock = runfile.WriterLock(path)
parent = os.getpid()
if os.fork() == 0:  # a process forked during the run (multiprocessing), which outlives it
    deadline = time.monotonic() + 30
    while os.getppid() == parent and time.monotonic() < deadline:  # until the run's process has gone
        time.sleep(0.01)
    free = runfile._lock_holder(path) is None
    try:
        runfile.WriterLock(path).release()
        took = True
    except runfile.RunFileError as exc:
        took = str(exc)
    print(free, took, flush=True)
    os._exit(0)
os._exit(0)  # the run's process killed: its lock is not let go
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_process_forked_during_a_run_does_not_hold_the_runs_lock(tmp_path):
    """A child forked during a run shares the lock's open file: unless it closes it, the
    run's lock outlives the run (killed) for as long as the child lives, and `spikefa info`
    says 'running' of a dead run; nor may the child take itself for the run's writer."""
    out = tmp_path / "r.h5"
    said = subprocess.run([sys.executable, "-c", FORKED_DURING_A_RUN, str(out)], env=spikefa_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert said.stdout.split() == ["True", "True"], (said.stdout, said.stderr)


def test_a_checkpoint_cut_off_by_a_full_disk_leaves_no_half_file_and_the_last_one_resumes(tmp_path, monkeypatch):
    """A checkpoint whose write failed (a full disk) left its half-written RUN.h5.ckpt.tmp
    beside the run: a file that held the space the resume needed, looked like a
    checkpoint, and was removed only by the next successful one. It goes now; the last
    whole checkpoint stays and resumes to the uninterrupted run."""
    import errno as _errno

    from spikefa import runfile

    cfg = short_cfg(run={"checkpoint_minutes": 1e-9})  # a checkpoint after every block
    real, calls = runfile._write_checkpoint, []

    def write(tmp, *args, **kwargs):
        calls.append(kwargs["step"])
        if len(calls) < 3:
            return real(tmp, *args, **kwargs)
        Path(tmp).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(4096))  # part of it, then the disk is full
        raise OSError(_errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runfile, "_write_checkpoint", write)
    out = tmp_path / "c.h5"
    with pytest.raises(RunFileError, match=r"cannot write the checkpoint .*c\.h5\.ckpt.*No space left"):
        train(cfg, out=out, progress=False)
    monkeypatch.undo()
    assert not Path(str(checkpoint_path(out)) + ".tmp").exists()
    with h5py.File(checkpoint_path(out), "r") as f:
        assert int(f.attrs["step"]) == calls[1]
    res = train(cfg, out=out, progress=False, resume=True)
    full = train(cfg, out=tmp_path / "full.h5", progress=False)
    assert res.steps == full.steps == 500
    np.testing.assert_array_equal(res.curve["error"], full.curve["error"])
    for layer in LAYERS:
        np.testing.assert_array_equal(Run(out).final(layer, "W"), Run(full.path).final(layer, "W"))


def test_a_recording_cut_off_by_a_full_disk_resumes_to_the_uninterrupted_recordings(tmp_path, monkeypatch):
    """A recording's flush grows its columns one by one (step, then the spike bits); a
    full disk as it wrote the first left the step column longer than the bits, and the stop's
    checkpoint flushed again and grew it further, its unwritten rows zeros. A resume cut
    the recordings back by searching that column, unsorted now, and kept the zeros: the
    resumed run's raster paired its spikes with the wrong steps (step 0 over and over).
    The columns now stay together and the resume searches only the rows they all hold."""
    import errno as _errno

    cfg = short_cfg(train={"test_every": 0}, run={"checkpoint_minutes": 1e-9},
                    record={"probes": ["spikes layers=h1 random=5"], "chunk_rows": 50, "measure_every": 0})
    real, writes = h5py.Dataset.__setitem__, []

    def setitem(self, key, value):
        if self.name == "/record/train/h1/spikes/step":
            writes.append(key)
            if len(writes) > 4:  # the disk is full from here on (the column has grown already)
                raise OSError(_errno.ENOSPC, "Can't synchronously write data (No space left on device)")
        return real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", setitem)
    out = tmp_path / "r.h5"
    with pytest.raises(OSError, match="No space left"):
        train(cfg, out=out, progress=False)
    monkeypatch.undo()
    with h5py.File(out, "r") as f:  # what the cut-off run left: its columns together
        g = f["record/train/h1/spikes"]
        assert g["step"].shape[0] == g["bits"].shape[0]
    with h5py.File(out, "r+") as f:  # as a run killed between two columns' writes leaves them
        step = f["record/train/h1/spikes/step"]
        step.resize(step.shape[0] + 100, axis=0)
    res = train(cfg, out=out, progress=False, resume=True)
    full = train(cfg, out=tmp_path / "full.h5", progress=False)
    assert res.steps == full.steps == 500
    a, b = Run(out).raster("h1"), Run(full.path).raster("h1")
    np.testing.assert_array_equal(a.step, np.arange(500))
    np.testing.assert_array_equal(a.step, b.step)
    np.testing.assert_array_equal(a.spikes, b.spikes)
    with h5py.File(out, "r") as f, h5py.File(full.path, "r") as g:
        for name in ("step", "bits"):
            np.testing.assert_array_equal(f["record/train/h1/spikes"][name][...], g["record/train/h1/spikes"][name][...])
