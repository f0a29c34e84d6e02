"""spikefa against its Brian2 export (issue 5): same weights and noise, same spikes.

The Brian2 side runs on its numpy target (no compilation). Tolerances are those of
:mod:`spikefa.validate`: ``TOL_FACTOR * eps(dtype) * steps * max|X|``; spikes must be equal.
The shifted variants show that the comparison can fail: a layer driven by the previous
step's spikes, noise read one row off on either side, plasticity applied one step late.
"""

from __future__ import annotations

import math
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest

brian2 = pytest.importorskip("brian2")

from spikefa import export  # noqa: E402
from spikefa.cli import main  # noqa: E402
from spikefa.config import load_config  # noqa: E402
from spikefa.network import SEED_NOISE, init_network, input_probabilities, rng_for  # noqa: E402
from spikefa.validate import TOL_FACTOR, cross_validate, paired_t_test, statistical_validate  # noqa: E402


# With the JIT off (the suite's second mode) the numba kernel runs as Python loops; the
# NumPy reference keeps spikefa's side at seconds. The comparison is the same either way.
JIT_OFF = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
BACKEND = "numpy" if JIT_OFF else "numba"
RUN_TABLE = f'[run]\nbackend = "{BACKEND}"\n'


def small(layers=(784, 100, 100, 100, 100), **model):
    return load_config("tiny").replace(name="brian2-test", model={"layers": list(layers), **model},
                                       run={"backend": BACKEND})


MINI = (784, 40, 40, 20)


def test_small_network_same_spikes_psps_and_weights_with_plasticity():
    rep = cross_validate(small(), steps=300, dtype="float64")
    assert rep.passed, str(rep)
    assert [r.name for r in rep.rows] == ["in", "h1", "h2", "h3", "out"]
    for r in rep.rows:
        assert r.first_spike_diff is None and r.spike_diffs == 0
        assert 0.05 < r.rate < 0.8  # the network is active: equal spikes are not equal silence
    hidden = rep.rows[1]
    # plasticity did act: weights moved far more than the tolerance
    assert set(hidden.diffs) == {"V", "U", "W", "b", "B"}
    assert all(hidden.diffs[q] <= hidden.tols[q] for q in hidden.diffs)
    assert rep.rows[-1].tols["W"] < 1e-11


def test_weights_really_change_during_the_comparison():
    cfg = small(MINI, dtype="float64")
    net = init_network(cfg)
    before = net.weights(1).copy()
    images, labels = export.stimulus(cfg, 10)
    bnet = export.to_brian2(net, images, labels, uniforms=rng_for(1, SEED_NOISE).random((50, net.n_units)))
    bnet.run_steps(50)
    changed = np.abs(export.network_state(bnet)["W_h1"] - before).max()
    eps = np.finfo(np.float64).eps
    assert changed > 1e6 * TOL_FACTOR * eps * 50 * np.abs(before).max()


def _delay_layer_2(bnet):
    # h2 summed before h1 is updated: h2 is driven by h1's spikes of the previous step
    bnet["W_h2"].summed_updaters["drive_post"].order = 0


def test_delayed_forward_sweep_is_caught():
    rep = cross_validate(small(MINI), steps=40, dtype="float64", modify_brian2=_delay_layer_2)
    assert not rep.passed
    rows = {r.name: r for r in rep.rows}
    assert rows["in"].first_spike_diff is None
    assert rows["h2"].first_spike_diff is not None and rows["h2"].first_spike_diff <= 2
    # h1 can only follow later, through plasticity driven by the changed feedback
    assert rep.first_diff["population"] == "h2"
    # the u reported is the uniform of that unit (spikefa's stream, columns in layer order), and
    # it lies between the two probabilities: one side spiked on it, the other did not
    f = rep.first_diff
    cfg = small(MINI).replace(model={"dtype": "float64"})
    uniforms = rng_for(cfg.run.seed, SEED_NOISE).random((40, sum(MINI)))
    assert f["u"] == uniforms[f["step"], MINI[0] + MINI[1] + f["unit"]]
    assert (f["u"] < f["p_spikefa"]) != (f["u"] < f["p_brian2"])
    assert rows["h1"].first_spike_diff is None or rows["h1"].first_spike_diff > rows["h2"].first_spike_diff


@pytest.mark.parametrize("shift", [+1, -1], ids=["brian2-ahead", "brian2-behind"])
def test_noise_shifted_by_one_step_is_caught(shift):
    cfg = small(MINI, dtype="float64")
    steps = 30
    uniforms = rng_for(cfg.run.seed, SEED_NOISE).random((steps, init_network(cfg).n_units))
    # ahead: Brian2 reads row t+1 at step t; behind: row t-1 (row 0 at steps 0 and 1)
    shifted = (np.concatenate([uniforms[1:], uniforms[-1:]]) if shift > 0
               else np.concatenate([uniforms[:1], uniforms[:-1]]))
    rep = cross_validate(cfg, steps=steps, dtype="float64", brian2_uniforms=shifted)
    assert not rep.passed
    assert rep.rows[0].first_spike_diff == (0 if shift > 0 else 1)


def _late_plasticity(bnet):
    # apply the updates at the start of the next step instead of at the end of this one
    for obj in bnet.sorted_objects:
        if obj.when == "plasticity":
            obj.when = "start"


def test_plasticity_one_step_late_is_caught_by_the_weight_tolerance():
    rep = cross_validate(small(MINI), steps=30, dtype="float64", check_every=10, modify_brian2=_late_plasticity)
    assert not rep.passed
    assert any(r.diffs["W"] > 1e3 * r.tols["W"] for r in rep.rows[1:])


@pytest.mark.parametrize("feedback,phi_d", [("transport", "tanh"), ("dfa", "2sigma-1"), ("shallow", "tanh"),
                                            ("sparse-fa", "sigma-0.5"), ("learned", "tanh")])
def test_feedback_variants_match(feedback, phi_d):
    rep = cross_validate(small(MINI, feedback=feedback, phi_d=phi_d), steps=60, dtype="float64")
    assert rep.passed, str(rep)
    if feedback == "learned":
        assert "running mean of V (node perturbation)" in rep.extra


def test_float32_spikefa_agrees_to_float32_precision():
    rep = cross_validate(small(MINI), steps=60, dtype="float32")
    t = rep.first_diff["step"] if rep.first_diff else rep.steps
    assert t > 20  # no spike flips early on (a near-tie later is allowed in float32)
    if rep.first_diff is None:
        assert rep.passed, str(rep)
    else:
        assert rep.first_diff["near_tie"]
        assert all(d <= tol for d, tol in rep.before_first_diff.values())


def test_testing_mode_no_plasticity_no_feedback():
    cfg = small(MINI, dtype="float64")
    net = init_network(cfg)
    net.state.feedback_psp[:] = 0.25  # must stay: no feedback sweep when testing
    images, labels = export.stimulus(cfg, 4, "test")
    M = cfg.test.steps_per_image
    uniforms = rng_for(5, SEED_NOISE).random((4 * M, net.n_units))
    bnet = export.to_brian2(net, images, labels, uniforms=uniforms, plastic=False)
    assert bnet.n_steps_max == 4 * M
    bnet.run_steps(4 * M)
    step_image = np.arange(4 * M) // M
    out = net.run(uniforms, input_probabilities(images, cfg.model.p_max), step_image, labels[step_image],
                  plastic=False)
    for l, n in enumerate(net.names):
        assert np.array_equal(export.spike_raster(bnet, n), out["spikes"][:, net.layer_slice(l)])
    st = export.network_state(bnet)
    assert np.array_equal(st["W_h1"], net.weights(1))
    assert np.all(st["U_h1"] == 0.25)


def test_exported_test_script_reports_spikefas_test_error(tmp_path, capsys):
    """export-brian2 --test: the script prints the test error of the images it ran, from
    its own output spikes by spikefa's read-outs. With the shared noise its spikes are
    spikefa's, so its error is what spikefa's read-out gives on spikefa's spikes."""
    cfg = small(MINI, dtype="float64")
    net = init_network(cfg)
    M = cfg.test.steps_per_image
    images, labels = export.stimulus(cfg, 12, "test")
    uniforms = rng_for(4, SEED_NOISE).random((12 * M, net.n_units))
    script, npz = export.write_script(net, tmp_path / "t.py", images, labels, uniforms=uniforms, plastic=False)
    script_main = runpy.run_path(str(script))["main"]
    script_main(["--data", str(npz), "--steps", str(10 * M + 2), "--out", str(tmp_path / "res.npz")])
    said = capsys.readouterr().out
    from spikefa.train import spike_counts

    with np.load(npz) as f:
        spikes = f[f"spikefa_spikes_{net.names[-1]}"][:10 * M]  # 10 whole images; the 11th is cut
    want = {r: np.argmax(c, axis=1) for r, c in spike_counts(spikes, M, cfg.model.n_classes).items()}
    err = {r: np.mean(g != labels[:10]) for r, g in want.items()}
    assert (f"test error {err['last']:.2%} on 10 images (read-out at the last of each image's {M} steps; "
            f"{err['sum']:.2%} with the spikes summed over them)") in said, said
    assert "test.readout" not in said  # the run's own read-out is the last step's
    with np.load(tmp_path / "res.npz") as f:
        np.testing.assert_array_equal(f["guess_last"], want["last"])
        np.testing.assert_array_equal(f["guess_sum"], want["sum"])
    # a run that reads out summed spikes (test.readout = "sum") heads with that error, as spikefa does
    net_sum = init_network(cfg.replace(test={"readout": "sum"}))
    script, npz = export.write_script(net_sum, tmp_path / "s.py", images, labels, uniforms=uniforms, plastic=False)
    runpy.run_path(str(script))["main"](["--data", str(npz), "--steps", str(10 * M)])
    said = capsys.readouterr().out
    assert (f"test error {err['sum']:.2%} on 10 images (read-out: output spikes summed over each image's {M} "
            f"steps, the run's test.readout; {err['last']:.2%} at the last step)") in said, said
    # one that reads out firing probabilities (test.readout = "prob"), which the script cannot: it says so
    net_prob = init_network(cfg.replace(test={"readout": "prob"}))
    script, npz = export.write_script(net_prob, tmp_path / "q.py", images, labels, uniforms=uniforms, plastic=False)
    runpy.run_path(str(script))["main"](["--data", str(npz), "--steps", str(10 * M)])
    said = capsys.readouterr().out
    assert f"test error {err['last']:.2%} on 10 images (read-out at the last of each image's {M} steps; " in said
    assert ("(the run's test.readout is 'prob', which spikefa reads from firing probabilities; this script reads "
            "spikes only)") in said, said
    # training (plasticity on): no test error
    script, npz = export.write_script(net, tmp_path / "p.py", images, labels, uniforms=uniforms)
    runpy.run_path(str(script))["main"](["--data", str(npz), "--steps", "10"])
    assert "test error" not in capsys.readouterr().out


def test_refuses_to_run_past_its_noise():
    cfg = small(MINI)
    net = init_network(cfg)
    images, labels = export.stimulus(cfg, 5)  # 25 steps of stimulus
    bnet = export.to_brian2(net, images, labels, uniforms=rng_for(1, SEED_NOISE).random((12, net.n_units)))
    assert bnet.n_steps_max == 12
    bnet.run_steps(10)
    with pytest.raises(ValueError, match="12 steps"):
        bnet.run_steps(3)
    with pytest.raises(ValueError, match="repeat its last row"):
        bnet.run(3 * bnet.step_dt)
    bnet.run_steps(2)
    assert bnet.steps_done == 12
    with pytest.raises(ValueError, match="uniforms must be float64"):
        export.to_brian2(net, images, labels, uniforms=np.zeros((5, 3)))


def test_objects_are_named_and_scheduled_in_spec_order():
    cfg = small(MINI, feedback="learned")
    net = init_network(cfg)
    images, labels = export.stimulus(cfg, 2)
    bnet = export.to_brian2(net, images, labels)
    order = [(o.name, o.when) for o in bnet.sorted_objects if o.when in export.SCHEDULE[1:6]]
    names = [n for n, _ in order]
    assert names.index("in_input") < names.index("W_h1_summed_variable_drive_post") < names.index("h1_forward") \
        < names.index("W_h2_summed_variable_drive_post") < names.index("h2_forward") < names.index("out_forward") \
        < names.index("out_fb_error") < names.index("B_h2_summed_variable_feedback_drive_post") \
        < names.index("h2_fb_feedback") < names.index("h1_fb_feedback") < names.index("h1_plasticity") \
        < names.index("W_h1_plasticity") < names.index("h1_reward_update") < names.index("h1_fb_estimate") \
        < names.index("B_h1_plasticity") < names.index("h2_baseline")
    for name in ["in", "h1", "h1_fb", "out_fb", "W_out", "B_h1", "h1_reward", "spikes_out"]:
        assert bnet[name].name == name
    assert not any("network_operation" in type(o).__name__.lower() for o in bnet.sorted_objects)


def test_script_runs_alone_and_reproduces_the_in_memory_export(tmp_path, capsys):
    cfg = small(MINI, feedback="learned")
    net = init_network(cfg)
    images, labels = export.stimulus(cfg, 12)
    uniforms = rng_for(3, SEED_NOISE).random((60, net.n_units))
    script, npz = export.write_script(net, tmp_path / "mini_brian2.py", images, labels, uniforms=uniforms)
    assert npz.exists() and "import spikefa" not in script.read_text() and "from spikefa" not in script.read_text()
    res = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "res.npz")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    # with the shared noise the script checks itself against spikefa's spikes, stored in the .npz
    assert res.stdout.count("the same spikes as spikefa in all 60 steps") == len(net.names)
    with np.load(tmp_path / "res.npz") as f:
        got = dict(f)
    bnet = export.to_brian2(net, images, labels, uniforms=uniforms)
    bnet.run_steps(60)
    want = export.network_state(bnet)
    for n in net.names:
        assert np.array_equal(got[f"spikes_{n}"], export.spike_raster(bnet, n))
    for key, value in want.items():
        assert np.array_equal(got[key], value), key
    # and running it longer than its noise is refused (in-process: Brian2 is imported already)
    script_main = runpy.run_path(str(script))["main"]
    with np.load(npz) as f:   # a spikefa that spiked otherwise at step 7 of h1 is reported
        arrays = dict(f)
    arrays[f"spikefa_spikes_{net.names[1]}"][7, 0] ^= 1
    np.savez(tmp_path / "other.npz", **arrays)
    script_main(["--data", str(tmp_path / "other.npz"), "--steps", "20"])
    said = capsys.readouterr().out
    assert "NOT the same as spikefa's: 1 of 20 steps differ, the first at step 7" in said
    assert said.count("the same spikes as spikefa in all 20 steps") == len(net.names) - 1
    with pytest.raises(ValueError, match="60 steps only"):
        script_main(["--steps", "61", "--data", str(npz)])


def test_update_from_brian2_continues_in_spikefa():
    cfg = small(MINI, dtype="float64")
    net = init_network(cfg)
    ref = net.copy()
    images, labels = export.stimulus(cfg, 8)
    uniforms = rng_for(1, SEED_NOISE).random((40, net.n_units))
    bnet = export.to_brian2(net, images, labels, uniforms=uniforms)
    bnet.run_steps(20)
    export.update_from_brian2(net, bnet)
    step_image = np.arange(40) // cfg.train.steps_per_image
    probs = input_probabilities(images, cfg.model.p_max)
    ref.run(uniforms[:20], probs, step_image[:20], labels[step_image[:20]])
    a = net.run(uniforms[20:], probs, step_image[20:], labels[step_image[20:]])["spikes"].copy()
    b = ref.run(uniforms[20:], probs, step_image[20:], labels[step_image[20:]])["spikes"]
    assert np.array_equal(a, b)
    assert np.abs(net.weights(2) - ref.weights(2)).max() < 1e-13



def test_update_from_brian2_into_a_network_that_ran_before():
    """The usual hand-over: spikefa ran 20 steps (4 of its K = 8 updates pending, decay
    scale below 1), Brian2 takes over from that state for 20 steps, and spikefa continues
    from Brian2's weights. It must match a spikefa run of all 60 steps: Brian2's weights
    already hold every update, so the pending ones are dropped and the scale is 1."""
    cfg = small(MINI, dtype="float64")
    k = cfg.train.steps_per_image
    net = init_network(cfg)
    images, labels = export.stimulus(cfg, 60 // k)
    uniforms = rng_for(4, SEED_NOISE).random((60, net.n_units))
    step_image = np.arange(60) // k
    probs = input_probabilities(images, cfg.model.p_max)

    def run(n, a, b):
        return n.run(uniforms[a:b], probs, step_image[a:b], labels[step_image[a:b]])["spikes"].copy()

    run(net, 0, 20)
    assert net.state.n_pend[0] == 20 % cfg.run.deferred_steps and net.scale[0] < 1.0
    ref = net.copy()
    bnet = export.to_brian2(net, images[20 // k:40 // k], labels[20 // k:40 // k], uniforms=uniforms[20:40])
    bnet.run_steps(20)
    export.update_from_brian2(net, bnet)
    assert np.array_equal(run(ref, 20, 40)[:, net.layer_slice(1)], export.spike_raster(bnet, "h1"))
    for l in range(1, net.m + 1):
        assert np.abs(net.weights(l) - ref.weights(l)).max() < 1e-13
    assert np.array_equal(run(net, 40, 60), run(ref, 40, 60))
    for l in range(1, net.m + 1):
        assert np.abs(net.weights(l) - ref.weights(l)).max() < 1e-13

def test_paired_t_test_matches_closed_forms():
    # df = 1: Student's t is the Cauchy distribution, p = 1 - 2 atan(|t|) / pi
    t, p = paired_t_test([1.0, 3.0], [0.0, 0.0])
    assert t == pytest.approx(2.0)
    assert p == pytest.approx(1 - 2 * math.atan(2.0) / math.pi, rel=1e-12)
    # df = 2: p = 1 - |t| / sqrt(2 + t^2)
    t, p = paired_t_test([1.0, 2.0, 4.0], [0.0, 0.0, 0.0])
    assert p == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), rel=1e-12)
    assert paired_t_test([1, 2], [1, 2]) == (0.0, 1.0)
    assert paired_t_test([1, 2], [0, 1])[1] == 0.0
    with pytest.raises(ValueError, match="at least two pairs"):  # one pair has no spread to test against
        paired_t_test([1.0], [0.0])


def test_cli_validate_and_export(tmp_path, capsys):
    model = tmp_path / "mini.toml"
    model.write_text('name = "mini"\n[model]\nlayers = [784, 40, 40, 20]\n[train]\ndataset = "mnist-subset"\n'
                     + RUN_TABLE)
    assert main(["validate", str(model), "--steps", "30", "--check-every", "10"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "1st spike diff" in out and "tolerance" in out and "ms/step" in out
    assert main(["export-brian2", str(model), "-o", str(tmp_path / "m.py"), "--images", "4", "--noise-steps", "20"]) == 0
    assert (tmp_path / "m.py").exists() and (tmp_path / "m.npz").exists()
    with np.load(tmp_path / "m.npz") as f:
        assert f["noise_in"].shape == (20, 784)
    with pytest.raises(SystemExit):
        main(["export-brian2", str(model), "-o", str(tmp_path / "m.py"), "--images", "2", "--noise-steps", "20"])


def test_export_from_a_run_file_carries_its_final_weights(tmp_path):
    from spikefa.runfile import Run
    from spikefa.train import train

    model = tmp_path / "mini.toml"
    model.write_text('name = "mini"\n[model]\nlayers = [784, 40, 40, 20]\n[train]\ndataset = "mnist-subset"\n'
                     'n_train = 20\nepochs = 1.0\ntest_every = 0\n[test]\nn_test = 10\n' + RUN_TABLE)
    run = train(str(model), out=tmp_path / "run.h5", progress=False).path
    script, npz = export.export_model(str(model), tmp_path / "m.py", run_file=run, n_images=3)
    with np.load(npz) as f:
        assert np.array_equal(f["W_h2"], Run(run).final("h2", "W").astype(np.float64))
        assert np.array_equal(f["V_out"], Run(run).final("out", "V").astype(np.float64))
    rep = cross_validate(str(model), steps=20, run_file=run)
    assert rep.passed and "final weights and state" in str(rep)
    # the network validated from a run file holds the run's final state, U included
    from spikefa.validate import network_for

    start = network_for(load_config(str(model)).replace(model={"dtype": "float64"}), run)
    for l, n in enumerate(start.names[1:], start=1):
        assert np.array_equal(start.state.feedback_psp[start.layer_slice(l)], Run(run).final(n, "U"))
        assert np.array_equal(start.state.psp[start.layer_slice(l)], Run(run).final(n, "V"))
    other = tmp_path / "other.toml"
    other.write_text('name = "other"\n[model]\nlayers = [784, 40, 40, 30]\n[train]\ndataset = "mnist-subset"\n'
                     + RUN_TABLE)
    with pytest.raises(ValueError, match="another model"):
        export.export_model(str(other), tmp_path / "o.py", run_file=run)
    with pytest.raises(ValueError, match="another model"):
        cross_validate(str(other), steps=5, run_file=run)


def test_cli_validate_exit_status_on_failure(tmp_path, monkeypatch):
    import spikefa.validate as va

    real = va.cross_validate
    monkeypatch.setattr(va, "cross_validate", lambda *a, **k: real(*a, **k, modify_brian2=_delay_layer_2))
    model = tmp_path / "mini.toml"
    model.write_text('name = "mini"\n[model]\nlayers = [784, 40, 40, 20]\n[train]\ndataset = "mnist-subset"\n'
                     + RUN_TABLE)
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(model), "--steps", "20"])
    assert exc.value.code == 1


def test_brian2_ms_per_step_numpy():
    ms = export.brian2_ms_per_step(small(MINI), steps=5, target="numpy", warmup=1)
    assert 0 < ms < 10_000


def test_bench_names_brian2_target_and_threads():
    from spikefa import bench

    r = bench.run_benchmark(small(MINI), steps=4, numpy_steps=0, brian2_steps=3, brian2_target="numpy", rss=False,
                            warmup=1, int8=False, other_pass=False, brian2_threads=2)
    assert r["results"]["brian2"]["threads"] == 1  # the runtime targets run one thread whatever is asked
    assert "(brian2: target numpy, 1 thread;" in bench.format_table(r)


@pytest.mark.slow
def test_brian2_cpp_standalone_with_openmp_threads():
    ms = export.brian2_ms_per_step(small(MINI), steps=5, target="cpp_standalone", threads=2)
    assert 0 < ms < 10_000
    assert brian2.prefs.devices.cpp_standalone.openmp_threads == 0  # restored


@pytest.mark.slow
def test_full_size_network_exports_and_matches_for_a_few_steps():
    cfg = load_config("lillicrap2016-fig4").replace(run={"backend": BACKEND})
    rep = cross_validate(cfg, steps=20, dtype="float64", check_every=10)
    assert rep.rows[1].units == 1500
    assert rep.passed, str(rep)


@pytest.mark.slow
def test_statistical_mode_passes_for_the_same_model():
    rep = statistical_validate(small(MINI), seeds=4, train_steps=300, n_test=50)
    assert rep.passed, str(rep)
    assert set(rep.values) == {"rate in", "rate h1", "rate h2", "rate out", "test error"}


def test_statistical_mode_compares_spike_counts_for_the_prob_readout():
    """The Brian2 export records spikes, not sigma(V): a model read out by "prob" is
    compared on the summed spike count on both sides (it was spikefa's prob against
    Brian2's sum), and the report names the read-out compared."""
    from spikefa.validate import _readout_error

    with pytest.raises(ValueError, match="'prob'"):
        _readout_error(np.zeros((10, 20)), np.zeros(2, int), 5, 10, "prob")
    cfg = small(MINI).replace(test={"readout": "prob"})
    rep = statistical_validate(cfg, seeds=2, train_steps=20, n_test=10)
    assert rep.readout == "sum" and rep.model_readout == "prob"
    assert "(read-out 'sum'; the model's 'prob' is compared as the summed spike count: Brian2 records spikes, " \
           "not sigma(V))" in str(rep)
    assert rep.seeds == [cfg.run.seed, cfg.run.seed + 1]
    for q in ("rate in", "rate h1", "rate h2", "rate out"):
        sf, b2 = rep.values[q]
        # a rate is spikes per unit and step: in [0, 1] on both sides
        assert np.all((0 <= sf) & (sf <= 1)) and np.all((0 <= b2) & (b2 <= 1)), (q, sf, b2)
    # the input population spikes with the same probabilities on both sides: 20 x 784 draws
    # per seed agree to well within 0.02 (s.d. of the difference < 0.004)
    sf, b2 = rep.values["rate in"]
    assert np.all(np.abs(sf - b2) < 0.02), (sf, b2)


def test_readout_error_by_hand():
    """Three images, M = 2 steps, one output unit per class of 3. Spike sums per class:
    [0, 2, 0], [0, 0, 2], [2, 0, 1] -> guesses 1, 2, 0; at the last step [0, 1, 0],
    [0, 0, 1], [1, 0, 1] -> 1, 2, 0 (a tie goes to the lower class). Labels 1, 2, 1:
    one error in three either way."""
    from spikefa.validate import _readout_error

    spikes = np.array([[0, 1, 0], [0, 1, 0],
                       [0, 0, 1], [0, 0, 1],
                       [1, 0, 0], [1, 0, 1]], np.uint8)
    labels = np.array([1, 2, 1])
    assert _readout_error(spikes, labels, 2, 3, "sum") == pytest.approx(1 / 3)
    assert _readout_error(spikes, labels, 2, 3, "last") == pytest.approx(1 / 3)
    assert _readout_error(spikes, np.array([1, 2, 0]), 2, 3, "sum") == 0.0


def test_reports_pass_only_within_every_tolerance_and_level():
    """The verdicts, on reports built by hand: a cross-validation fails on an extra
    quantity over its tolerance; the statistical mode's level is alpha over the number
    of comparisons (Bonferroni), so p = 0.007 passes two comparisons at alpha = 0.01
    (level 0.005) and p = 0.004 does not."""
    from spikefa.validate import PopulationDiff, StatisticalReport, ValidationReport

    row = PopulationDiff(name="h1", units=3, first_spike_diff=None, spike_diffs=0, rate=0.5,
                         diffs={"V": 1e-15}, tols={"V": 1e-14})
    common = dict(model="m", layers=(784, 3), feedback="fa", dtype="float64", steps=10, n_images=2,
                  steps_per_image=5, seed=1, target="numpy", brian2_version="x", rows=[row])
    assert ValidationReport(**common).passed
    assert ValidationReport(**common, extra={"running mean of V": (1e-14, 1e-14)}).passed
    over = ValidationReport(**common, extra={"running mean of V": (2e-14, 1e-14)})
    assert not over.passed and "FAIL" in str(over).splitlines()[-1]

    def stat(p):
        return StatisticalReport(model="m", layers=(784, 3), feedback="fa", dtype="float64", seeds=[1, 2],
                                 train_steps=10, n_test=5, readout="sum", target="numpy", alpha=0.01,
                                 values={}, tests={"rate in": (0.5, p), "test error": (0.0, 1.0)})
    assert stat(0.007).level == 0.005
    assert stat(0.007).passed and not stat(0.004).passed


def test_weights_are_compared_after_the_warm_up_and_every_check_every_steps(monkeypatch):
    """30 steps with check_every = 10: W, b and B are compared after the 5 warm-up steps
    and at steps 10, 20 and 30."""
    real = export.network_state
    seen = []

    def counting(bnet):
        seen.append(bnet.steps_done)
        return real(bnet)

    monkeypatch.setattr(export, "network_state", counting)
    rep = cross_validate(small(MINI), steps=30, dtype="float64", check_every=10)
    assert rep.passed, str(rep)
    assert seen == [5, 10, 20, 30]


def test_node_perturbation_variance_floor_is_exported():
    """With model.np_variance_floor = 0.25 (its largest value) the floor is the divisor of
    every unit's estimate (p (1 - p) <= 0.25): the learned B of both sides agree only if
    Brian2 clips as spikefa does."""
    rep = cross_validate(small(MINI, feedback="learned", np_variance_floor=0.25), steps=40, dtype="float64")
    assert rep.passed, str(rep)
    assert "B" in rep.rows[1].diffs


def test_stimulus_noise_and_input_checks():
    """What the export refuses before building anything: float32 uniforms (spikefa's
    stream is float64), images of the wrong width, labels that do not match the images,
    an .npz whose noise columns do not fit the layer; and a spike raster of some steps
    is those rows of the full one."""
    cfg = small(MINI, dtype="float64")
    net = init_network(cfg)
    images, labels = export.stimulus(cfg, 4)
    uniforms = rng_for(2, SEED_NOISE).random((12, net.n_units))
    with pytest.raises(ValueError, match="uniforms must be float64"):
        export.to_brian2(net, images, labels, uniforms=uniforms.astype(np.float32))
    with pytest.raises(ValueError, match="images must have shape"):
        export.to_brian2(net, images[:, :100], labels)
    with pytest.raises(ValueError, match="labels of shape"):
        export.to_brian2(net, images, labels[:3])
    arrays = export.model_arrays(net, images, labels, uniforms=uniforms)
    arrays["noise_h1"] = arrays["noise_h1"][:, :-1]
    with pytest.raises(ValueError, match="noise_h1 has 39 columns, layer h1 40 units"):
        export.build_network(arrays)
    with pytest.raises(ValueError, match="end in .py"):
        export.write_script(net, "/nonexistent/m.txt", images, labels)
    bnet = export.to_brian2(net, images, labels, uniforms=uniforms)
    bnet.run_steps(12)
    full = export.spike_raster(bnet, "h1")
    assert full.shape == (12, 40) and full.any()
    assert np.array_equal(export.spike_raster(bnet, "h1", 2, 5), full[2:5])


def test_testing_with_the_feedback_sweep_on():
    """plastic=False with feedback=True: no plasticity, but the feedback PSPs U follow
    spikefa's feedback sweep (the two flags are independent)."""
    cfg = small(MINI, dtype="float64")
    net = init_network(cfg)
    images, labels = export.stimulus(cfg, 3, "test")
    M = cfg.test.steps_per_image
    uniforms = rng_for(6, SEED_NOISE).random((3 * M, net.n_units))
    bnet = export.to_brian2(net, images, labels, uniforms=uniforms, plastic=False, feedback=True)
    bnet.run_steps(3 * M)
    step_image = np.arange(3 * M) // M
    U0 = net.state.feedback_psp.copy()
    net.run(uniforms, input_probabilities(images, cfg.model.p_max), step_image, labels[step_image],
            plastic=False, feedback=True)
    st = export.network_state(bnet)
    for l, n in enumerate(net.names[1:], start=1):
        sl = net.layer_slice(l)
        assert not np.array_equal(net.state.feedback_psp[sl], U0[sl])  # the sweep ran
        np.testing.assert_allclose(st[f"U_{n}"], net.state.feedback_psp[sl], rtol=0, atol=1e-12)
    assert np.array_equal(st["W_h1"], net.weights(1))


def test_export_of_test_images(tmp_path):
    """export_model(test=True): the bundled test images in their seeded order, shown
    test.steps_per_image steps each, plasticity off."""
    cfg = small(MINI)
    script, npz = export.export_model(cfg, tmp_path / "t.py", n_images=3, test=True)
    images, labels = export.stimulus(cfg, 3, "test")
    with np.load(npz) as f:
        assert np.array_equal(f["labels"], labels)
        assert np.array_equal(f["pixels"], images / 255.0)
        assert int(f["steps_per_image"]) == cfg.test.steps_per_image
        assert not bool(f["plastic"])
    assert "plasticity off (test)" in script.read_text()



def _stopped_run(tmp_path):
    """A mini run stopped (as by Ctrl-C) at step 100 of 400: a checkpoint, no final weights."""
    from spikefa.record import Recorder
    from spikefa.runfile import Run, checkpoint_path
    from spikefa.train import train

    model = tmp_path / "mini.toml"
    model.write_text('name = "mini"\n[model]\nlayers = [784, 40, 40, 20]\n[train]\ndataset = "mnist-subset"\n'
                     'n_train = 40\nepochs = 2.0\ntest_every = 0\n[test]\nn_test = 10\n' + RUN_TABLE)
    cfg = load_config(str(model)).replace(record={"probes": ["spikes layers=out"]})

    class StopAt100(Recorder):
        def on_block(self, net, step0, outputs):
            super().on_block(net, step0, outputs)
            if self.step >= 100:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=tmp_path / "run.h5", progress=False, recorder=StopAt100(cfg, total_steps=400))
    run = tmp_path / "run.h5"
    assert not Run(run).complete and checkpoint_path(run).exists()
    return model, run


def test_export_from_a_run_that_is_not_complete_takes_its_checkpoint(tmp_path):
    """`spikefa export-brian2 --from RUN.h5` of a run still running or stopped failed with
    'has no final weights yet (the run is not complete) and no checkpoint' although the run
    had a checkpoint; it now exports the checkpoint's network, as spikefa test does."""
    from spikefa.runfile import checkpoint_path
    from spikefa.train import network_from_checkpoint

    model, run = _stopped_run(tmp_path)
    script, npz = export.export_model(str(model), tmp_path / "m.py", run_file=run, n_images=3)
    net, info = network_from_checkpoint(checkpoint_path(run))
    with np.load(npz) as f:
        assert np.array_equal(f["W_h2"], net.weights(2).astype(np.float64))
    assert f"checkpoint at step {info['step']}" in script.read_text()


def test_validate_from_a_run_that_is_not_complete_starts_from_its_checkpoint(tmp_path):
    """`spikefa validate --from RUN.h5` of a run still running or stopped failed as
    export-brian2 did ('no final weights yet ... and no checkpoint'); it starts from the
    run's checkpoint and says so."""
    from spikefa.runfile import checkpoint_path
    from spikefa.train import network_from_checkpoint
    from spikefa.validate import network_for

    model, run = _stopped_run(tmp_path)
    start = network_for(load_config(str(model)).replace(model={"dtype": "float64"}), run)
    ck, info = network_from_checkpoint(checkpoint_path(run))
    for l, n in enumerate(start.names[1:], start=1):
        assert np.array_equal(start.weights(l), ck.weights(l).astype(np.float64))
        assert np.array_equal(start.state.psp[start.layer_slice(l)], ck.state.psp[ck.layer_slice(l)])
    rep = cross_validate(str(model), steps=10, run_file=run)
    assert rep.passed and f"checkpoint (step {info['step']})" in str(rep)


def test_export_on_a_full_disk_keeps_the_export_there_and_names_the_file(tmp_path, capsys, monkeypatch):
    """export-brian2 wrote its .npz in place: a full disk (or a Ctrl-C) in the middle left a
    truncated one ('File is not a zip file') over the good export, beside the script that
    reads it, and the error named no file ('[Errno 28] No space left on device'). Both
    files are written whole now: the export there stays as it was."""
    import errno

    assert main(["export-brian2", "tiny", "-o", str(tmp_path / "m.py"), "--images", "2"]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"m.py", "m.npz"}
    capsys.readouterr()

    def savez_compressed(f, **arrays):
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 half an archive")
        else:  # (given a path, as before)
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", savez_compressed)
    assert main(["export-brian2", "tiny", "-o", str(tmp_path / "m.py"), "--images", "3"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'm.npz'}: no space left" in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("feedback", ["fa", "sparse-fa"])
def test_validate_from_a_run_of_another_seed_keeps_the_runs_feedback_and_masks(tmp_path, feedback):
    """`spikefa validate MODEL --from RUN.h5` of a run trained with `--seed 2` (the model
    file says run.seed = 1) put the fresh B (and sparse-fa masks) of seed 1 beside the run's
    trained W: fa validated a network that never existed, sparse-fa failed at step 0 (Brian2
    connects only the synapses of the wrong mask, spikefa sums every weight)."""
    from spikefa.train import network_from_file, train
    from spikefa.validate import network_for

    model = tmp_path / "mini.toml"
    model.write_text(f'name = "mini"\n[model]\nlayers = [784, 40, 40, 20]\nfeedback = "{feedback}"\n'
                     '[train]\ndataset = "mnist-subset"\nn_train = 20\nepochs = 1.0\ntest_every = 0\n'
                     '[test]\nn_test = 10\n' + RUN_TABLE)
    run = train(load_config(str(model)).replace(run={"seed": 2}), out=tmp_path / "run.h5", progress=False).path
    src = network_from_file(run)[0]
    start = network_for(load_config(str(model)).replace(model={"dtype": "float64"}), run)
    for l in range(1, start.m):
        assert np.array_equal(start.feedback_matrix(l), src.feedback_matrix(l).astype(np.float64))
    for l in range(1, start.m + 1):
        a, b = start.wiring.W_mask[l - 1], src.wiring.W_mask[l - 1]
        assert (a is None and b is None) or np.array_equal(a, b)
    rep = cross_validate(str(model), steps=20, run_file=run)
    assert rep.passed, str(rep)


def test_plasticity_without_feedback_flag_still_runs_the_feedback_sweep():
    """to_brian2(plastic=True, feedback=False) dropped the error and feedback sweep while
    keeping plasticity (on a stale phi_d(U)); spikefa's Network.run sweeps whenever it is
    plastic, so the two diverged silently. The export now runs the sweep as spikefa does."""
    cfg = small(MINI, dtype="float64")
    net = init_network(cfg)
    images, labels = export.stimulus(cfg, 4)
    T, k = 20, cfg.train.steps_per_image
    uniforms = rng_for(1, SEED_NOISE).random((T, net.n_units))
    bnet = export.to_brian2(net, images, labels, uniforms=uniforms, plastic=True, feedback=False)
    bnet.run_steps(T)
    step_image = np.arange(T) // k
    out = net.run(uniforms, input_probabilities(images, cfg.model.p_max), step_image, labels[step_image],
                  plastic=True, feedback=False)
    for l, n in enumerate(net.names):
        assert np.array_equal(export.spike_raster(bnet, n), out["spikes"][:, net.layer_slice(l)])
    st = export.network_state(bnet)
    eps = np.finfo(np.float64).eps
    for l, n in enumerate(net.names[1:], start=1):
        assert np.abs(st[f"W_{n}"] - net.weights(l)).max() <= TOL_FACTOR * eps * T
        assert np.abs(st[f"U_{n}"] - net.state.feedback_psp[net.layer_slice(l)]).max() <= TOL_FACTOR * eps * T


def _error_neurons_off_by_1e9(bnet):
    o = bnet["out_fb_error"]
    o.abstract_code = o.abstract_code.replace("tau*(spike - target)", "tau*(spike - target)*(1 + 1e-9)")


def test_report_names_the_first_step_and_population_over_tolerance():
    """A difference that flips no spike (error neurons off by 1e-9 relative) failed every
    population's row with no step and no origin: the report now says where each quantity
    first went over its tolerance, in the step's order, the error neurons' U first."""
    rep = cross_validate(small(MINI), steps=20, dtype="float64", check_every=10, modify_brian2=_error_neurons_off_by_1e9)
    assert not rep.passed and rep.first_diff is None
    rows = {r.name: r for r in rep.rows}
    assert rows["out"].first_over["U"] == 0 and rows["h1"].first_over["U"] == 0
    assert rows["out"].first_over["V"] == 1  # the forward sweep sees it one step later, through plasticity
    assert "first step over tolerance: out U at step 0, h2 U at step 0, h1 U at step 0" in str(rep)
    ok = cross_validate(small(MINI), steps=20, dtype="float64", check_every=10)
    assert ok.passed and all(not r.first_over for r in ok.rows) and "over tolerance" not in str(ok)


@pytest.mark.parametrize("train", [{}, {"n_train": 20}, {"shuffle": False}], ids=["default", "n_train", "no-shuffle"])
def test_training_stimulus_is_the_order_spikefa_train_shows(train):
    """export.stimulus claims the order of spikefa train's first epoch (so that an export
    with shared noise replays a training run); with train.n_train or train.shuffle = false
    it was a permutation of the whole subset: other images than the run saw."""
    from spikefa.data import load_dataset
    from spikefa.train import ImageOrder

    cfg = load_config("tiny").replace(train=train)
    x, y = load_dataset("mnist-subset", "train")
    n = min(cfg.train.n_train, len(x)) if cfg.train.n_train else len(x)
    idx = ImageOrder(cfg, n)(np.arange(30))
    images, labels = export.stimulus(cfg, 30)
    assert np.array_equal(images, x[idx]) and np.array_equal(labels, y[idx])
