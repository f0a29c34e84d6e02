"""``run.forward_pass = "incremental"`` (issue 3): the forward drive is the last step's sums
plus the rows of units that started spiking minus those of units that stopped.

It changes how the kernel adds, not what: the NumPy twin keeps summing every active row,
and the two agree as the full pass does (sums in float64, rounded once to the dtype).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from spikefa import bench, runfile
from spikefa.config import ConfigError, config_from_dict, load_config
from spikefa.network import init_network
from spikefa.runfile import Run
from spikefa.train import train
from test_core import CutAfter, block_inputs

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")


def cfg_of(layers=(784, 256, 256, 20), K=8, forward_pass="incremental", **model):
    model = dict(layers=list(layers), n_classes=10, **model)
    return config_from_dict({"model": model, "train": {"dataset": "mnist-subset"},
                             "run": {"deferred_steps": K, "forward_pass": forward_pass}})


inputs = functools.partial(block_inputs, n_img=50)  # test_core's block inputs, over 50 images


@pytest.mark.parametrize("backend", ["numba-serial", "numba-parallel"])
@pytest.mark.parametrize("dtype, storage", [("float32", "float"), ("float32", "int8"), ("float64", "float")])
def test_incremental_kernel_matches_twin(backend, dtype, storage):
    """300 learning steps, layers wide enough for several shares: identical spikes; PSPs and
    weights within 64 eps of the dtype; the kernel's cached sums (built incrementally) equal
    the twin's full sums within 1e-12 of the largest; the step counter agrees."""
    cfg = cfg_of(dtype=dtype, feedback_storage=storage, eta=5e-3)
    a = init_network(cfg)
    b = a.copy()
    u, probs, si, lab = inputs(a, 300)
    rec = np.arange(784, 900)
    oa = a.run(u, probs, si, lab, rec_idx=rec, backend=backend)
    ob = b.run(u, probs, si, lab, rec_idx=rec, backend="numpy")
    np.testing.assert_array_equal(oa["spikes"], ob["spikes"])
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(oa["psp"], ob["psp"], rtol=0, atol=64 * eps)
    for l in range(a.m):
        np.testing.assert_allclose(a.W[l], b.W[l], rtol=0, atol=64 * eps * 0.1)
    hidden = slice(784, a.n_units)
    ca, cb = a.state.fwd_cache[hidden], b.state.fwd_cache[hidden]
    assert np.abs(cb).max() > 0
    np.testing.assert_allclose(ca, cb, rtol=0, atol=1e-12 * np.abs(cb).max())
    assert a.state.fwd_age[0] == b.state.fwd_age[0]


@pytest.mark.skipif(NO_JIT, reason="the twin never reads the cache; the kernel does")
def test_the_cache_is_read_and_refreshed_in_full():
    """The kernel really adds onto the cached sums: a corrupted cache shows in the next
    step's PSPs. A full sum replaces it after a flush of the deferred updates, after
    ``K`` steps of testing, and after ``invalidate_forward_cache``."""
    cfg = cfg_of(layers=(784, 100, 100, 20), K=4)
    net = init_network(cfg)
    u, probs, si, lab = inputs(net, 40)
    h1 = net.layer_slice(1)

    def corrupt_then_step(t, plastic=True):
        ref = net.copy()
        net.state.fwd_cache[h1] += 100.0
        net.run(u[t:t + 1], probs, si[t:t + 1], lab[t:t + 1], plastic=plastic, backend="numba-serial")
        ref.run(u[t:t + 1], probs, si[t:t + 1], lab[t:t + 1], plastic=plastic, backend="numpy")
        return np.abs(net.state.psp[h1] - ref.state.psp[h1]).max()

    net.run(u[:2], probs, si[:2], lab[:2], backend="numba-serial")  # full sum at step 1, then 1 step added on
    assert net.state.fwd_age[0] == 2 and net.state.n_pend[0] == 2
    assert corrupt_then_step(2) > 50  # used the corrupted cache
    net.invalidate_forward_cache()
    assert net.state.n_pend[0] == 3
    net.run(u[3:4], probs, si[3:4], lab[3:4], backend="numba-serial")  # the 4th update: a flush
    assert net.state.n_pend[0] == 0 and net.state.fwd_age[0] == 4
    assert corrupt_then_step(4) == 0  # summed in full after the flush
    # testing (no flushes): a full sum every K = 4 steps
    net.run(u[5:8], probs, si[5:8], lab[5:8], plastic=False, backend="numba-serial")
    assert net.state.fwd_age[0] == 4
    assert corrupt_then_step(8, plastic=False) == 0


def test_incremental_tracks_the_full_pass():
    """Over 3,000 learning steps (eta 2e-2: weights move by most of their range), then 1,000
    test steps, the incremental and the full forward pass stay together: spikes agree at
    >= 99.9% of unit-steps, weights within 1e-5 of their largest value (measured: identical,
    since float64 sums of float32 rows are exact but for the smallest terms)."""
    nets = {fp: init_network(cfg_of(layers=(784, 200, 200, 100), K=8, forward_pass=fp, eta=2e-2))
            for fp in ("full", "incremental")}
    u, probs, si, lab = inputs(nets["full"], 4000, seed=3, n_img=500)
    out = {fp: n.run(u[:3000], probs, si[:3000], lab[:3000])["spikes"].copy() for fp, n in nets.items()}
    assert (out["full"] == out["incremental"]).mean() >= 0.999
    for l in range(1, 4):
        a, b = nets["full"].weights(l), nets["incremental"].weights(l)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
        assert not np.allclose(a, init_network(cfg_of(layers=(784, 200, 200, 100))).weights(l), atol=1e-3)
    out = {fp: n.run(u[3000:], probs, si[3000:], lab[3000:], plastic=False)["spikes"].copy() for fp, n in nets.items()}
    assert (out["full"] == out["incremental"]).mean() >= 0.999


def test_with_one_deferred_step_every_pass_is_full():
    """``K = 1`` (and the variants that cannot defer: transport, sparse FA) writes W every
    step, so the cache is never valid and the result is the full pass's, bit for bit."""
    for extra in ({"feedback": "fa", "K": 1}, {"feedback": "transport", "K": 8}):
        K = extra.pop("K")
        a = init_network(cfg_of(layers=(784, 100, 100, 20), K=K, forward_pass="full", **extra))
        b = init_network(cfg_of(layers=(784, 100, 100, 20), K=K, forward_pass="incremental", **extra))
        u, probs, si, lab = inputs(a, 60)
        oa, ob = a.run(u, probs, si, lab), b.run(u, probs, si, lab)
        np.testing.assert_array_equal(oa["spikes"], ob["spikes"])
        np.testing.assert_array_equal(a.state.psp, b.state.psp)


@pytest.mark.skipif(NO_JIT, reason="no threads without the JIT")
def test_incremental_thread_count_does_not_change_the_bits(monkeypatch):
    """Changed rows are summed in the same fixed shares as active ones: serial, 2 and 7
    threads give bit-identical float64 PSPs, weights and cached sums."""
    import numba

    cfg = cfg_of(layers=(784, 600, 300, 20), dtype="float64", eta=5e-3)
    u, probs, si, lab = inputs(init_network(cfg), 100)
    results = []
    for backend, threads in (("numba-serial", 1), ("numba-parallel", 2), ("numba-parallel", 7)):
        monkeypatch.setattr(numba, "get_num_threads", lambda t=threads: t)
        net = init_network(cfg)
        net.run(u, probs, si, lab, backend=backend)
        results.append([net.state.psp.copy(), net.state.fwd_cache.copy()] + [w.copy() for w in net.W])
    for r in results[1:]:
        for x, x0 in zip(r, results[0]):
            np.testing.assert_array_equal(x, x0)


def test_block_size_and_resume_do_not_change_an_incremental_run(tmp_path):
    """The cache is part of the network's state (and of its checkpoints): a run in blocks of
    77 steps, and one cut off and resumed, end with the weights of a run in blocks of 300."""
    base = load_config("tiny").replace(train={"epochs": 0.5, "test_every": 0}, test={"n_test": 50},
                                       run={"forward_pass": "incremental", "deferred_steps": 8})
    ref = train(base.replace(run={"block_steps": 300}), out=tmp_path / "a.h5", progress=False)
    other = train(base.replace(run={"block_steps": 77}), out=tmp_path / "b.h5", progress=False)

    cfg = base.replace(run={"block_steps": 300})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "c.h5", progress=False, recorder=CutAfter(5))
    with h5py.File(runfile.checkpoint_path(tmp_path / "c.h5"), "r") as f:
        assert "state/fwd_cache" in f and f["state/fwd_age"][0] < 8
    resumed = train(cfg, out=tmp_path / "c.h5", resume=True, progress=False)
    for run in (other, resumed):
        for layer in ("h1", "h2", "out"):
            np.testing.assert_array_equal(Run(ref.path).final(layer, "W"), Run(run.path).final(layer, "W"))


def test_checkpoint_without_the_cache_still_loads(tmp_path):
    """A checkpoint written before ``run.forward_pass`` existed lacks the cache: it loads,
    and the next step sums in full."""
    cfg = cfg_of(layers=(784, 100, 100, 20))
    net = init_network(cfg)
    u, probs, si, lab = inputs(net, 3)
    net.run(u, probs, si, lab)
    runfile.save_checkpoint(tmp_path / "r.h5", net, rng=np.random.default_rng(0), step=3, n_tests=0, wall_s=0.0)
    ck = runfile.checkpoint_path(tmp_path / "r.h5")
    with h5py.File(ck, "a") as f:
        del f["state/fwd_cache"], f["state/fwd_age"]
    back = init_network(cfg)
    back.state.fwd_age[0] = 0  # as if valid: loading must mark it stale
    info = runfile.read_checkpoint(ck, back)
    assert info["step"] == 3 and back.state.fwd_age[0] == 8
    np.testing.assert_array_equal(back.W[0], net.W[0])


def test_a_cache_is_kept_only_from_an_incremental_checkpoint_of_the_same_K(tmp_path):
    """Loading a full-pass checkpoint, or one of another K (``strict=False``, as the bench
    does), leaves no cache marked valid: the next step equals the twin's."""
    for saved_pass, saved_K, K, kept in (("full", 2, 8, False), ("full", 8, 8, False),
                                         ("incremental", 2, 8, False), ("incremental", 8, 8, True)):
        net = init_network(cfg_of(layers=(784, 100, 100, 20), K=saved_K, forward_pass=saved_pass))
        u, probs, si, lab = inputs(net, 12)
        net.run(u[:11], probs, si[:11], lab[:11])
        runfile.save_checkpoint(tmp_path / "r.h5", net, rng=np.random.default_rng(0), step=11, n_tests=0, wall_s=0.0)
        back = init_network(cfg_of(layers=(784, 100, 100, 20), K=K))
        runfile.read_checkpoint(runfile.checkpoint_path(tmp_path / "r.h5"), back, strict=K == saved_K)
        assert (back.state.fwd_age[0] < K) == kept, (saved_pass, saved_K)
        twin = back.copy()
        back.run(u[11:], probs, si[11:], lab[11:], backend="numba-serial")
        twin.run(u[11:], probs, si[11:], lab[11:], backend="numpy")
        np.testing.assert_allclose(back.state.psp, twin.state.psp, rtol=0, atol=1e-6)


def test_forward_pass_option_is_checked_and_recorded(tmp_path):
    with pytest.raises(ConfigError, match="run.forward_pass = 'sparse'.*'full', 'incremental'"):
        config_from_dict({"run": {"forward_pass": "sparse"}})
    assert load_config("lillicrap2016-fig4").run.forward_pass == "incremental"
    assert load_config("small").run.forward_pass == "full"
    cfg = load_config("tiny").replace(train={"epochs": 0.05, "test_every": 0}, test={"n_test": 20},
                                      run={"forward_pass": "incremental"})
    res = train(cfg, out=tmp_path / "r.h5", progress=False)
    assert Run(res.path).config.run.forward_pass == "incremental"


def test_bench_times_the_other_pass_and_starts_from_a_checkpoint(tmp_path):
    cfg = load_config("tiny")
    net = init_network(cfg)
    u, probs, si, lab = inputs(net, 50)
    net.run(u, probs, si, lab)
    runfile.save_checkpoint(tmp_path / "r.h5", net, rng=np.random.default_rng(0), step=50, n_tests=0, wall_s=0.0)
    r = bench.run_benchmark(None, steps=10, numpy_steps=2, brian2_steps=0, rss=False, warmup=2,
                            checkpoint=runfile.checkpoint_path(tmp_path / "r.h5"))
    assert {"spikefa", "spikefa-incremental", "numpy"} <= set(r["results"])
    assert r["forward_pass"] == "full" and r["checkpoint"].endswith(".ckpt")
    assert r["bytes_per_step_other_pass"]["forward_read"] <= r["bytes_per_step"]["forward_read"]
    assert "spikefa-incremental" in bench.format_table(r)
    # another model of the same layers takes the checkpoint's weights (not its K = 8 pending updates)
    other = cfg.replace(run=dict(deferred_steps=4, forward_pass="incremental"))
    r = bench.run_benchmark(other, steps=4, numpy_steps=0, brian2_steps=0, rss=False, warmup=1,
                            checkpoint=tmp_path / "r.h5", int8=False)  # a run file stands for its checkpoint
    assert r["forward_pass"] == "incremental" and r["deferred_steps"] == 4 and "spikefa-full-pass" in r["results"]
    with pytest.raises(ValueError, match="holds a \\[784, 100, 100, 100\\] network"):
        bench.run_benchmark("small", steps=2, numpy_steps=0, brian2_steps=0, rss=False, warmup=1,
                            checkpoint=runfile.checkpoint_path(tmp_path / "r.h5"))


def test_resume_may_change_the_speed_options_and_says_so(tmp_path):
    """A long run can be resumed with ``run.forward_pass`` and ``run.deferred_steps`` changed
    (they change float rounding only): the checkpoint's pending updates (7 of K = 8 at the
    cut) are written into the weights, the run ends within float32 rounding of the
    uninterrupted one, and the run file's ``resumes`` keeps the old values."""
    base = load_config("tiny").replace(train={"epochs": 0.5, "test_every": 0}, test={"n_test": 50},
                                       run={"forward_pass": "full", "deferred_steps": 8, "block_steps": 75})
    ref = train(base, out=tmp_path / "a.h5", progress=False)

    with pytest.raises(KeyboardInterrupt):
        train(base, out=tmp_path / "c.h5", progress=False, recorder=CutAfter(5))
    with h5py.File(runfile.checkpoint_path(tmp_path / "c.h5"), "r") as f:
        assert f["state/n_pend"][0] == 375 % 8 and f.attrs["step"] == 375
    faster = base.replace(run={"forward_pass": "incremental", "deferred_steps": 32})
    resumed = train(faster, out=tmp_path / "c.h5", resume=True, progress=False)
    run = Run(resumed.path)
    assert run.complete and run.config.run.deferred_steps == 32
    assert [r["step"] for r in run.resumes] == [375]
    assert sorted(run.resumes[0]["changed"]) == ["run.deferred_steps: 8 -> 32",
                                                 "run.forward_pass: 'full' -> 'incremental'"]
    assert Run(ref.path).resumes == []
    # the run and every resume name the source they ran at ("" outside a git checkout)
    assert run.resumes[0]["git_commit"] == runfile.source_revision() == run.attrs["git_commit"]
    assert re.fullmatch(r"([0-9a-f]{40}(\+dirty)?)?", run.attrs["git_commit"])
    assert run.resumes[0]["command"] and run.resumes[0]["time"]
    for l, layer in enumerate(("h1", "h2", "out"), start=1):
        a, b = Run(ref.path).final(layer, "W"), run.final(layer, "W")
        assert not np.allclose(a, init_network(base).weights(l), atol=1e-3)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    # the model itself still may not change
    with pytest.raises(ConfigError, match="model.eta"):
        train(faster.replace(model={"eta": 0.1}), out=tmp_path / "c.h5", resume=True, progress=False)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_source_revision_is_dirty_only_for_source_edits(tmp_path):
    """``+dirty`` marks a run whose package or install files differ from the commit; a
    README or model file edited beside a long run does not, and outside a checkout the
    revision is empty."""
    assert runfile.source_revision(tmp_path) == ""
    (tmp_path / "spikefa").mkdir()
    (tmp_path / "models").mkdir()
    files = {"spikefa/kernel.py": "x = 1\n", "setup.cfg": "[metadata]\n",
             "models/m.toml": "eta = 1\n", "README.md": "# r\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                        *args], check=True, capture_output=True)
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    clean = runfile.source_revision(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", clean)
    (tmp_path / "README.md").write_text("# r, edited\n")
    (tmp_path / "models/m.toml").write_text("eta = 2\n")
    (tmp_path / "spikefa/new.py").write_text("untracked = True\n")
    assert runfile.source_revision(tmp_path) == clean
    for name in ("spikefa/kernel.py", "setup.cfg"):
        (tmp_path / name).write_text(files[name] + "# edited\n")
        assert runfile.source_revision(tmp_path) == clean + "+dirty", name
        (tmp_path / name).write_text(files[name])
    assert runfile.source_revision(tmp_path) == clean
