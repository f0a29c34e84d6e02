"""The benchmark command runs and prints what issue 3 asks for (it times nothing here)."""

from __future__ import annotations

import json

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
