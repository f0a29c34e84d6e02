"""Benchmark: one training step of a model, spikefa vs its NumPy twin vs Brian2, side by side.

    python -m spikefa.bench [MODEL] [--steps N] [--numpy-steps N] [--brian2-steps N] [--json]
    spikefa bench [MODEL] ...

All implementations run in this one process on the same model, the same seed, the same
input images and the same uniforms, so the printed ratios compare like with like; the
spikefa rows take turns block by block (:func:`time_interleaved`). It is a
benchmark, not a test: it prints what it measured and asserts nothing.

For a model with fixed feedback the same model with ``model.feedback_storage = "int8"``
is timed too (row ``spikefa-int8``): its feedback matrices take a quarter of the bytes.
The same model with the other ``run.forward_pass`` is timed too (row ``spikefa-full-pass``
or ``spikefa-incremental``). ``--checkpoint CKPT`` starts every network from a training
run's checkpoint instead of fresh weights: late in training few units change state from
one step to the next, which is where the incremental forward pass saves its reads.

Also printed: the spike density of every layer, the bytes a training step has to move
(active forward rows read, feedback matrices read, active rows read and written by the
update), this machine's streaming read bandwidth measured here, and the floor those two
give; and the peak resident memory of a short full training run in a child process.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time

import numba
import numpy as np

from . import runfile
from .cli import Parser, int_at_least
from .config import MOVING_FEEDBACK, Config, load_config
from .data import load_subset
from .network import init_network, input_probabilities


@numba.njit(parallel=True, fastmath=True, cache=True)
def _stream_sum(a):
    s = 0.0
    for i in numba.prange(a.shape[0]):
        s += a[i]
    return s


def read_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Best streaming read bandwidth in bytes/s over ``repeats`` passes of a float32 array."""
    a = np.ones(n_bytes // 4, np.float32)
    # with NUMBA_DISABLE_JIT the kernel would be a Python loop over 67 million floats
    stream_sum = np.sum if numba.config.DISABLE_JIT else _stream_sum
    stream_sum(a[:1024])
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        stream_sum(a)
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best


def _stimulus(net, steps, seed):
    images, labels = load_subset("train")
    n_img = steps // net.config.train.steps_per_image + 1
    idx = np.arange(n_img) % images.shape[0]
    probs = input_probabilities(images[idx], net.config.model.p_max)
    step_image = np.arange(steps) // net.config.train.steps_per_image
    uniforms = np.random.default_rng(seed).random((steps, net.n_units))
    return uniforms, probs, step_image, labels[idx][step_image]


def time_spikefa(cfg, steps: int, backend: str, seed: int = 0, warmup: int = 100, block: int = 100, checkpoint=None):
    """ms per training step of ``backend``: the median over blocks of ``block`` steps."""
    return time_interleaved([("x", cfg, backend)], steps, seed, warmup, block, checkpoint)["x"]


def _network(cfg, checkpoint=None):
    """A fresh network of ``cfg``, or one with a checkpoint's weights and state (the state
    arrays that fit: a model with other ``run.deferred_steps`` than the checkpoint's starts
    with no pending updates)."""
    net = init_network(cfg)
    if checkpoint is not None:
        runfile.read_checkpoint(checkpoint, net, strict=False)
    return net


def time_interleaved(entries, steps: int, seed: int = 0, warmup: int = 100, block: int = 100, checkpoint=None) -> dict:
    """ms per training step of several ``(name, cfg, backend)``, timed block by block in turn.

    Each network first runs ``warmup`` untimed steps (JIT compilation included, and the
    network's first steps, which are slower than the rest). Then the networks take turns,
    ``block`` steps each, on the same inputs and uniforms; each one's time is the median of
    its blocks. Taking turns cancels the drift of a shared machine's speed from one minute
    to the next out of the ratios, and the median keeps one disturbed block from moving them.

    ``checkpoint``: a training checkpoint every network starts from (weights and state).

    Returns ``{name: (ms_per_step, spikes of the timed steps, network)}``.
    """
    nets = {name: _network(cfg, checkpoint) for name, cfg, _ in entries}
    backend = {name: be for name, _, be in entries}
    first = next(iter(nets.values()))
    u, probs, si, lab = _stimulus(first, steps + warmup, seed)
    for name, net in nets.items():
        net.run(u[:warmup], probs, si[:warmup], lab[:warmup], backend=backend[name])
    times = {name: [] for name in nets}
    spikes = {name: [] for name in nets}
    for a in range(warmup, warmup + steps, block):
        e = min(a + block, warmup + steps)
        for name, net in nets.items():
            t = time.perf_counter()
            out = net.run(u[a:e], probs, si[a:e], lab[a:e], backend=backend[name])
            times[name].append((time.perf_counter() - t) / (e - a))
            spikes[name].append(out["spikes"].copy())
    return {name: (1e3 * float(np.median(times[name])), np.concatenate(spikes[name]), nets[name]) for name in nets}


def forward_rows(net, spikes) -> np.ndarray:
    """Presynaptic rows the forward pass reads per step and layer, mean over the steps:
    the active ones, or with ``run.forward_pass = "incremental"`` those whose spike changed
    where they are fewer, with a full sum every ``K`` steps (an estimate: the kernel's full
    sums also follow each flush, which the ``K``-step cadence matches in training)."""
    K = net.state.pend_spikes.shape[0]
    rows = np.zeros(net.m)
    for l in range(1, net.m + 1):
        pre = spikes[:, net.layer_slice(l - 1)].astype(np.int8)
        act = pre.sum(axis=1).astype(float)
        if net.config.run.forward_pass == "incremental" and K > 1:
            ch = np.concatenate([[np.inf], np.abs(np.diff(pre, axis=0)).sum(axis=1)])
            inc = np.minimum(act, ch)
            full = np.arange(pre.shape[0]) % K == 0
            act = np.where(full, act, inc)
        rows[l - 1] = act.mean()
    return rows


def step_bytes(net, spikes) -> dict:
    """Bytes one training step must move, at the measured spike densities."""
    itemsize = net.W[0].dtype.itemsize
    K = net.state.pend_spikes.shape[0]  # deferred updates: rows written once per K steps
    fwd = upd = 0.0
    rows = forward_rows(net, spikes)
    for l in range(1, net.m + 1):
        pre = spikes[:, net.layer_slice(l - 1)]
        row = int(net.sizes[l]) * itemsize
        fwd += rows[l - 1] * row
        if net.wiring.learn[l - 1]:
            # rows that spiked at least once in a window of K steps, read and written once
            # (fewer than K steps: the one window they make, else the mean of no windows is NaN;
            # its rows over K then undercount a full window's, so bench with steps >= K)
            touched = np.mean([pre[t:t + K].any(axis=0).sum() for t in range(0, max(pre.shape[0] - K, 0) + 1, K)])
            upd += 2 * touched * row / K
    fb = sum(F.nbytes for F, on in zip(net.wiring.F, net.wiring.on) if on)
    return dict(forward_read=fwd, feedback_read=float(fb), update_read_write=upd, total=fwd + fb + upd)


def peak_rss_of_training(model, steps: int) -> float:
    """Peak resident memory (MiB) of a child process that trains ``model`` (a name, file or
    Config) for ``steps`` steps."""
    cfg = model if isinstance(model, Config) else load_config(model)
    code = (
        "import json, tempfile, os\n"
        "from spikefa.config import config_from_dict\nfrom spikefa.train import train\n"
        f"cfg = config_from_dict(json.loads({json.dumps(cfg.to_dict())!r}))\n"
        "n = 2000\n"
        f"cfg = cfg.replace(train=dict(dataset='mnist-subset', n_train=0, test_every=0, epochs={steps} / cfg.train.steps_per_image / n), test=dict(n_test=100))\n"
        "d = tempfile.mkdtemp()\n"
        "train(cfg, out=os.path.join(d, 'r.h5'), progress=False)\n"
        # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a child started
        # by a large parent would report the parent's peak
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024


def run_benchmark(model=None, steps=500, numpy_steps=20, brian2_steps=20, brian2_target="numpy",
                  rss=True, seed=0, int8=True, warmup=100, checkpoint=None, other_pass=True, brian2_threads=0) -> dict:
    """Time every implementation on ``model`` (a name, file or Config; default the paper's).

    With ``checkpoint`` every network starts from that training checkpoint's weights and
    state; the model is the checkpoint's own unless ``model`` names one of the same layers
    (to time, say, the bundled model's run options on a network trained with others)."""
    if checkpoint is not None:  # a run file stands for its checkpoint
        checkpoint = runfile.checkpoint_file(checkpoint)
    if checkpoint is not None and model is None:
        cfg = runfile.checkpoint_config(checkpoint)
    else:
        cfg = model if isinstance(model, Config) else load_config(model or "lillicrap2016-fig4")
        if checkpoint is not None:
            ck = runfile.checkpoint_config(checkpoint)
            if ck.model.layers != cfg.model.layers:
                raise ValueError(f"the checkpoint {checkpoint} holds a {list(ck.model.layers)} network; "
                                 f"{cfg.name} is {list(cfg.model.layers)}")
    results: dict = {}
    entries = [("spikefa", cfg, "numba"), ("spikefa-1-thread", cfg, "numba-serial")]
    with_int8 = int8 and cfg.model.feedback_storage == "float" and cfg.model.feedback not in MOVING_FEEDBACK
    if with_int8:
        # the same model with its fixed feedback stored as int8 levels (model.feedback_storage)
        entries.append(("spikefa-int8", cfg.replace(model=dict(feedback_storage="int8")), "numba"))
    other = "full" if cfg.run.forward_pass == "incremental" else "incremental"
    if other_pass:
        entries.append((f"spikefa-{'full-pass' if other == 'full' else 'incremental'}",
                        cfg.replace(run=dict(forward_pass=other)), "numba"))
    timed = time_interleaved(entries, steps, seed, warmup, checkpoint=checkpoint)
    ms, spikes, net = timed["spikefa"]
    results["spikefa"] = dict(ms_per_step=ms, steps=steps, forward_pass=cfg.run.forward_pass,
                              kernel="numba-parallel" if net.n_synapses >= 1e6 and numba.get_num_threads() > 1 else "numba-serial")
    results["spikefa-1-thread"] = dict(ms_per_step=timed["spikefa-1-thread"][0], steps=steps)
    extra = {}
    if with_int8:
        ms8, spikes8, net8 = timed["spikefa-int8"]
        results["spikefa-int8"] = dict(ms_per_step=ms8, steps=steps, feedback_storage="int8")
        extra["int8"] = step_bytes(net8, spikes8)
    if other_pass:
        name = entries[-1][0]
        mso, spikeso, neto = timed[name]
        results[name] = dict(ms_per_step=mso, steps=steps, forward_pass=other)
        extra["other_pass"] = step_bytes(neto, spikeso)
    if numpy_steps:
        ms_np, _, _ = time_spikefa(cfg, numpy_steps, "numpy", seed, warmup=1, block=numpy_steps, checkpoint=checkpoint)
        results["numpy"] = dict(ms_per_step=ms_np, steps=numpy_steps)
    notes = []
    if brian2_steps:
        try:
            from .export import brian2_ms_per_step as timer
        except ImportError as exc:  # brian2 not installed
            notes.append(f"brian2 skipped: {exc}")
        else:
            start = cfg if checkpoint is None else _network(cfg, checkpoint)  # Brian2 starts where spikefa does
            threads = brian2_threads if brian2_target == "cpp_standalone" else 0
            results["brian2"] = dict(ms_per_step=float(timer(start, brian2_steps, target=brian2_target, threads=threads)),
                                     steps=brian2_steps, target=brian2_target, threads=max(1, threads))
    for r in results.values():
        r["steps_per_s"] = 1e3 / r["ms_per_step"]
        r["ratio_to_spikefa"] = r["ms_per_step"] / results["spikefa"]["ms_per_step"]
    density = {net.names[l]: float(spikes[:, net.layer_slice(l)].mean()) for l in range(net.m + 1)}
    moved = step_bytes(net, spikes)
    bw = read_bandwidth()
    out = dict(
        model=cfg.name, layers=list(cfg.model.layers), dtype=cfg.model.dtype, feedback=cfg.model.feedback,
        feedback_storage=cfg.model.feedback_storage, deferred_steps=int(net.state.pend_spikes.shape[0]),
        forward_pass=cfg.run.forward_pass, checkpoint=None if checkpoint is None else str(checkpoint),
        threads=numba.get_num_threads(), cpu=platform.processor() or platform.machine(), results=results,
        spike_density=density, bytes_per_step=moved, read_bandwidth_GBps=bw / 1e9,
        floor_ms_per_step=1e3 * moved["total"] / bw, notes=notes,
    )
    if "int8" in extra:
        out["bytes_per_step_int8"] = extra["int8"]
        out["floor_ms_per_step_int8"] = 1e3 * extra["int8"]["total"] / bw
    if "other_pass" in extra:
        out["bytes_per_step_other_pass"] = extra["other_pass"]
        out["floor_ms_per_step_other_pass"] = 1e3 * extra["other_pass"]["total"] / bw
    if rss:
        out["peak_rss_MiB"] = peak_rss_of_training(cfg, 2000)
    return out


def format_table(r: dict) -> str:
    lines = [f"model {r['model']} {r['layers']} {r['dtype']} feedback={r['feedback']} "
             f"feedback_storage={r['feedback_storage']} deferred_steps={r['deferred_steps']} forward_pass={r['forward_pass']}, "
             f"{r['threads']} numba threads, one training step (plasticity on); spikefa rows: medians of 100-step blocks timed in turn", "",
             f"{'implementation':<21}{'ms/step':>10}{'steps/s':>10}{'x spikefa':>11}{'steps':>7}"]
    for name, x in r["results"].items():
        lines.append(f"{name:<21}{x['ms_per_step']:>10.3f}{x['steps_per_s']:>10.1f}{x['ratio_to_spikefa']:>11.2f}{x['steps']:>7}")
    if "brian2" in r["results"]:
        x = r["results"]["brian2"]
        lines.append(f"(brian2: target {x['target']}, {x['threads']} thread{'s' if x['threads'] > 1 else ''}; "
                     f"spikefa-1-thread is {x['ms_per_step'] / r['results']['spikefa-1-thread']['ms_per_step']:.1f}x faster than it)")
    b = r["bytes_per_step"]
    lines += ["", "spike density: " + ", ".join(f"{k} {v:.3f}" for k, v in r["spike_density"].items()),
              f"bytes per step: forward {b['forward_read'] / 1e6:.1f} MB read, feedback {b['feedback_read'] / 1e6:.1f} MB read, "
              f"update {b['update_read_write'] / 1e6:.1f} MB read+written (deferred, per step); total {b['total'] / 1e6:.1f} MB",
              f"streaming read bandwidth here: {r['read_bandwidth_GBps']:.1f} GB/s -> floor {r['floor_ms_per_step']:.3f} ms/step "
              f"(spikefa at {r['floor_ms_per_step'] / r['results']['spikefa']['ms_per_step']:.0%} of it)"]
    if "bytes_per_step_int8" in r:
        b8 = r["bytes_per_step_int8"]
        lines.append(f"spikefa-int8 (model.feedback_storage = 'int8'): feedback {b8['feedback_read'] / 1e6:.1f} MB read, "
                     f"total {b8['total'] / 1e6:.1f} MB -> floor {r['floor_ms_per_step_int8']:.3f} ms/step "
                     f"(at {r['floor_ms_per_step_int8'] / r['results']['spikefa-int8']['ms_per_step']:.0%} of it)")
    if "bytes_per_step_other_pass" in r:
        bo = r["bytes_per_step_other_pass"]
        name = next(n for n in r["results"] if n in ("spikefa-full-pass", "spikefa-incremental"))
        lines.append(f"{name}: forward {bo['forward_read'] / 1e6:.1f} MB read, total {bo['total'] / 1e6:.1f} MB -> floor "
                     f"{r['floor_ms_per_step_other_pass']:.3f} ms/step")
    if r.get("checkpoint"):
        lines.append(f"every network started from the checkpoint {r['checkpoint']}")
    if "peak_rss_MiB" in r:
        lines.append(f"peak resident memory of a 2,000-step training run of this model: {r['peak_rss_MiB']:.0f} MiB")
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = Parser(prog="spikefa bench", description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default=None,
                   help="model name or file (default lillicrap2016-fig4, or the checkpoint's own with --checkpoint)")
    p.add_argument("--steps", type=int_at_least(1), default=500, help="steps timed for spikefa")
    p.add_argument("--warmup", type=int_at_least(0), default=100, help="untimed steps first (JIT compilation, the network's first steps)")
    p.add_argument("--numpy-steps", type=int_at_least(0), default=20, help="steps timed for the NumPy twin (0: skip)")
    p.add_argument("--brian2-steps", type=int_at_least(0), default=20, help="steps timed for Brian2 (0: skip)")
    p.add_argument("--brian2-target", default="numpy", choices=["numpy", "cython", "cpp_standalone"], help="Brian2 code generation target (numpy, cython, cpp_standalone)")
    p.add_argument("--brian2-threads", type=int_at_least(0), default=0, help="cpp_standalone: OpenMP threads (0: Brian2's "
                   "default, one thread without OpenMP)")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-memory child run")
    p.add_argument("--no-int8", action="store_true", help="skip the int8-feedback row (model.feedback_storage)")
    p.add_argument("--checkpoint", metavar="CKPT", help="start every network from the weights and state of this "
                   "training checkpoint (RUN.h5.ckpt); its own model unless MODEL is given")
    p.add_argument("--no-other-pass", action="store_true", help="skip the row with the other run.forward_pass")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    r = run_benchmark(args.model, args.steps, args.numpy_steps, args.brian2_steps, args.brian2_target, rss=not args.no_rss,
                      int8=not args.no_int8, warmup=args.warmup, checkpoint=args.checkpoint,
                      other_pass=not args.no_other_pass, brian2_threads=args.brian2_threads)
    print(json.dumps(r, indent=1) if args.json else format_table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
