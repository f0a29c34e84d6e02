"""The benchmark command runs and prints what issue 3 asks for (it times nothing here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spikefa import bench


def test_bench_json_has_every_implementation(capsys):
    assert bench.main(["tiny", "--steps", "10", "--warmup", "2", "--numpy-steps", "3", "--brian2-steps", "0", "--no-rss",
                       "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"spikefa", "spikefa-1-thread", "spikefa-int8", "numpy"} <= set(r["results"])
    for name, x in r["results"].items():
        assert x["ms_per_step"] > 0, name
    assert r["results"]["spikefa"]["ratio_to_spikefa"] == 1.0
    assert r["feedback_storage"] == "float" and r["deferred_steps"] == 8
    # the int8 row reads a quarter of the feedback bytes of the float row
    assert r["bytes_per_step_int8"]["feedback_read"] * 4 == r["bytes_per_step"]["feedback_read"]
    assert set(r["spike_density"]) == {"in", "h1", "h2", "out"}
    assert 0 < r["floor_ms_per_step"] and r["read_bandwidth_GBps"] > 0


def test_bench_table_and_no_int8_row_for_moving_feedback():
    r = bench.run_benchmark("tiny", steps=10, numpy_steps=0, brian2_steps=0, rss=False, warmup=2)
    text = bench.format_table(r)
    assert "spikefa-int8" in text and "floor" in text
    from spikefa.config import load_config

    cfg = load_config("tiny").replace(model=dict(feedback="transport"))
    r = bench.run_benchmark(cfg, steps=10, numpy_steps=0, brian2_steps=0, rss=False, warmup=2, int8=True)
    assert "spikefa-int8" not in r["results"]


def _spikes_4_3_10():
    """Four steps of a 4-3-10 network: the input spikes below, hidden and output silent."""
    inp = np.array([[1, 1, 0, 0],
                    [0, 0, 0, 0],   # two units stop: 2 changes, 0 active
                    [0, 1, 1, 1],
                    [1, 1, 1, 1]], np.uint8)  # one change, 4 active
    return np.concatenate([inp, np.zeros((4, 13), np.uint8)], axis=1)


def test_forward_rows_and_step_bytes_by_hand():
    """Rows read per step, counted by hand for K = 2 deferred steps (full sums at steps 0
    and 2). Full pass: the active rows, 2, 0, 3, 4 -> mean 2.25. Incremental: at steps 1
    and 3 the fewer of active and changed rows, min(0, 2) = 0 and min(4, 1) = 1 -> mean
    (2 + 0 + 3 + 1) / 4 = 1.5. Bytes: a row of W^1 is 3 float32 = 12 bytes; the update
    reads and writes once per window of K steps the rows that spiked in it (windows
    {0, 1}: 2 rows, {2, 3}: 4 rows), 2 * 3 * 12 / 2 = 36 bytes per step; feedback reads
    B^1, 3 x 10 float32 = 120 bytes."""
    from spikefa.config import load_config
    from spikefa.network import init_network

    cfg = load_config("tiny").replace(model=dict(layers=[4, 3, 10], dtype="float32"),
                                      run=dict(deferred_steps=2, forward_pass="full"))
    spikes = _spikes_4_3_10()
    net = init_network(cfg)
    np.testing.assert_allclose(bench.forward_rows(net, spikes), [2.25, 0.0])
    inc = init_network(cfg.replace(run=dict(forward_pass="incremental")))
    np.testing.assert_allclose(bench.forward_rows(inc, spikes), [1.5, 0.0])
    b = bench.step_bytes(inc, spikes)
    assert b["forward_read"] == 1.5 * 12
    assert b["update_read_write"] == 36.0
    assert b["feedback_read"] == 120.0
    assert b["total"] == 18.0 + 36.0 + 120.0
    # fewer steps than K: the steps make one window (all 4 input rows spiked in it), 2 * 4 * 12 / 8
    # bytes per step with K = 8 (it was the mean of no windows, NaN, for a bench of fewer than K steps)
    k8 = init_network(cfg.replace(run=dict(deferred_steps=8)))
    assert bench.step_bytes(k8, spikes)["update_read_write"] == 12.0
    # shallow learning drives no feedback population: no feedback bytes are read
    shallow = init_network(cfg.replace(model=dict(feedback="shallow")))
    assert bench.step_bytes(shallow, spikes)["feedback_read"] == 0.0


def test_bench_floor_is_bytes_over_bandwidth_in_ms():
    r = bench.run_benchmark("tiny", steps=4, numpy_steps=0, brian2_steps=0, rss=False, warmup=1, int8=False,
                            other_pass=False)
    seconds = r["bytes_per_step"]["total"] / (r["read_bandwidth_GBps"] * 1e9)
    assert r["floor_ms_per_step"] == pytest.approx(1e3 * seconds, rel=1e-12)
