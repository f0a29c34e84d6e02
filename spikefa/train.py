"""Training and testing protocols (docs/model.md, "Protocol").

Training: each image is shown for ``N = train.steps_per_image`` consecutive steps, then
the next, with no reset of any state between images; the order is a seeded shuffle per
epoch. Testing: plasticity off, each test image for ``M = test.steps_per_image`` steps,
no reset; the guess is the class whose output units spike most (at the last of the M
steps, or summed over them: ``test.readout``), ties to the lowest class.

A test pass runs on a copy of the state with its own seeded noise, so when and how often
the network is tested never changes the training trajectory. The run advances in blocks
of ``run.block_steps`` steps; the noise of a block is one draw of float64 uniforms from
the run's generator, so the trajectory does not depend on the block size either, and a
run resumed from a checkpoint equals the uninterrupted one.
"""

from __future__ import annotations

import importlib
import json
import logging
import shlex
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import record, runfile
from .config import READOUT_CHOICES, Config, ConfigError, is_integer, load_config, unused_settings
from .data import DataError, find_mnist_dir, load_dataset
from .interrupt import StopRequest
from .network import SEED_NOISE, SEED_ORDER, SEED_TEST, Network, init_network, input_probabilities, rng_for

log = logging.getLogger(__name__)

RESUMABLE_KEYS = {("train", "epochs"), ("train", "test_every"), ("run", "backend"), ("run", "block_steps"),
                  ("run", "checkpoint_minutes"), ("run", "forward_pass"), ("run", "deferred_steps")}
# (forward_pass and deferred_steps change how a step is computed, not what: float rounding
# only; every resume, and what it changed, is listed in the run file's ``resumes``)
# a branch (``train(..., branch_from=...)``) may also change how the network learns from then on
BRANCHABLE_KEYS = RESUMABLE_KEYS | {("model", "eta"), ("model", "gamma"), ("model", "eta_feedback"),
                                    ("model", "np_baseline_rate"), ("test", "readout"), ("test", "n_test")}


@dataclass
class TestResult:
    """One test pass: the error with every read-out, all from the same run of the test set.

    ``last``: output spikes at the last of the M steps; ``sum``: spikes summed over the M
    steps; ``prob``: spike probabilities ``sigma(V)`` of the output units at the last step
    (the Methods' "highest activity ... after M = 5 time steps", read as the units' rate).
    """

    __test__ = False  # not a pytest class

    error: float
    error_last: float
    error_sum: float
    error_prob: float
    n_test: int
    guesses: np.ndarray


@dataclass
class TrainResult:
    path: Path
    test_error: float
    steps: int
    epochs: float
    wall_s: float
    curve: dict


def load_data(cfg: Config, split: str, data_dir=None, limit: int = 0):
    """Images (uint8 or float in [0, 1]) and labels of ``split``, checked against the model."""
    name = cfg.train.dataset
    if data_dir is not None and name != "mnist":
        log.warning("spikefa: note: the data folder %s is not used: this model reads the bundled "
                    "subset (train.dataset = %r)", data_dir, name)
    images, labels = load_dataset(name, split, data_dir if name == "mnist" else None)
    if limit > len(images):
        log.warning("spikefa: note: %s of %s holds %d images, fewer than the %d asked for: using all of them",
                    split, name, len(images), limit)
    if limit:
        images, labels = images[:limit], labels[:limit]
    check_images(images, labels, cfg)
    return images, labels


def train_set_size(cfg: Config) -> int:
    """Training images per epoch of ``cfg`` (``train.n_train`` of the dataset, or all of it),
    without loading them."""
    from .data import MNIST_COUNTS, SUBSET_COUNTS

    n = (MNIST_COUNTS if cfg.train.dataset == "mnist" else SUBSET_COUNTS)["train"]
    return min(cfg.train.n_train, n) if cfg.train.n_train else n


def epochs_at(cfg: Config, steps: int) -> float:
    """Epochs of ``cfg``'s training set that ``steps`` training steps make."""
    return steps / cfg.train.steps_per_image / train_set_size(cfg)


def check_images(images, labels, cfg: Config) -> None:
    """Clear errors for images that do not fit the model (shape, NaN, range, labels)."""
    n_in = cfg.model.layers[0]
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be integers (class indices), got dtype {labels.dtype}")
    if images.ndim != 2 or images.shape[1] != n_in:
        raise DataError(f"the model expects images of {n_in} pixels (model.layers[0]); got an array of shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DataError(f"{images.shape[0]} images but labels of shape {labels.shape}")
    if images.dtype != np.uint8:
        bad = ~np.isfinite(images)
        if bad.any():
            raise DataError(f"images contain {int(bad.sum())} NaN or infinite pixels (first at image {int(np.argwhere(bad)[0][0])})")
        if images.min() < 0 or images.max() > 1:
            raise DataError(f"float images must be scaled to [0, 1]; got values in [{images.min()}, {images.max()}]")
    if labels.size and (labels.min() < 0 or labels.max() >= cfg.model.n_classes):
        raise DataError(f"labels must lie in 0..{cfg.model.n_classes - 1} (model.n_classes); got {labels.min()}..{labels.max()}")


def spike_counts(spikes_out, M: int, n_classes: int) -> dict:
    """Each class's output spikes per test image, from the output spikes ``(n*M, n_out)`` of
    ``n`` images shown ``M`` steps each: ``"last"`` at the last step, ``"sum"`` over all M
    (the spike-count read-outs; the guess is the argmax, ties to the lowest class)."""
    per_step = spikes_out.reshape(-1, M, n_classes, spikes_out.shape[1] // n_classes).sum(axis=3)
    return {"last": per_step[:, -1], "sum": per_step.sum(axis=1)}


def evaluate(net: Network, images, labels, *, seed_key: int = 0, backend=None, n_test: int = 0,
             on_block=None, rec_idx=None) -> TestResult:
    """Test error with plasticity off, on a copy of the state (the network is not changed).

    Parameters
    ----------
    net : Network
    images, labels : arrays
        Test images (n, n_in) and classes.
    seed_key : int
        Selects the test noise stream (``rng_for(seed, SEED_TEST, seed_key)``).
    backend : str, optional
        ``"numba"`` or ``"numpy"`` (default: the model's ``run.backend``).
    n_test : int
        Use only the first ``n_test`` images (0: all).
    on_block : callable, optional
        ``on_block(net, step0, outputs)`` after every block, ``step0`` counted from the start
        of the pass, ``outputs`` as returned by :meth:`Network.run` plus ``label`` and
        ``image`` per step (a recorder's :meth:`~spikefa.record.Recorder.test_hook`).
    rec_idx : int array, optional
        Neurons whose traces ``outputs`` should carry.
    """
    cfg = net.config
    # labels of another length were an IndexError or a broadcast error deep in the pass,
    # n_test = -1 dropped the last image, no images an error of NaN
    if not is_integer(n_test) or n_test < 0:
        raise ValueError(f"n_test = {n_test!r}: expected an integer >= 0 (0: all the images)")
    images, labels = np.asarray(images), np.asarray(labels)
    if n_test:
        images, labels = images[:n_test], labels[:n_test]
    check_images(images, labels, cfg)
    if not images.shape[0]:
        raise DataError("no images to test (an error over no images is undefined)")
    M = cfg.test.steps_per_image
    n = images.shape[0]
    n_classes = cfg.model.n_classes
    out = net.layer_slice(net.m)
    # the output units' V is traced for the "prob" read-out; the caller's traces follow it
    out_idx = np.arange(out.start, out.stop)
    user_idx = np.zeros(0, np.int64) if rec_idx is None else np.asarray(rec_idx, dtype=np.int64)
    n_out = out_idx.size
    rng = rng_for(cfg.run.seed, SEED_TEST, seed_key)
    saved = net.state.copy()
    per_block = max(1, cfg.run.block_steps // M)
    counts = {r: np.zeros((n, n_classes)) for r in READOUT_CHOICES}
    try:
        for i0 in range(0, n, per_block):
            i1 = min(i0 + per_block, n)
            k = i1 - i0
            probs = input_probabilities(images[i0:i1], cfg.model.p_max)
            step_image = np.repeat(np.arange(k), M)
            res = net.run(rng.random((k * M, net.n_units)), probs, step_image, labels[i0:i1][step_image],
                          plastic=False, backend=backend, rec_idx=np.concatenate([out_idx, user_idx]))
            v_out = res["psp"][:, :n_out]
            if on_block is not None:
                traces = {name: res[name][:, n_out:] for name in ("psp", "feedback_psp", "modulator")}
                on_block(net, i0 * M, dict(res, **traces, label=labels[i0:i1][step_image], image=i0 + step_image))
            for r, c in spike_counts(res["spikes"][:, out], M, n_classes).items():
                counts[r][i0:i1] = c
            p_out = 1.0 / (1.0 + np.exp(-v_out.astype(np.float64).reshape(k, M, n_classes, -1)[:, -1]))
            counts["prob"][i0:i1] = p_out.sum(axis=2)
    finally:
        net.state = saved
    # np.argmax returns the first maximum: ties go to the lowest class index
    guesses = {r: np.argmax(c, axis=1) for r, c in counts.items()}
    errors = {r: float(np.mean(g != labels)) for r, g in guesses.items()}
    return TestResult(error=errors[cfg.test.readout], error_last=errors["last"], error_sum=errors["sum"],
                      error_prob=errors["prob"], n_test=n, guesses=guesses[cfg.test.readout])


def _compatible(old: Config, new: Config, allowed=RESUMABLE_KEYS) -> list[str]:
    """Keys that differ between a checkpoint's config and the requested one (not allowed)."""
    a, b = old.to_dict(), new.to_dict()
    diffs = []
    for section in ("model", "train", "test", "run"):
        for key in a[section]:
            if a[section][key] != b[section][key] and (section, key) not in allowed:
                diffs.append(f"{section}.{key}: {a[section][key]!r} -> {b[section][key]!r}")
    return diffs


def default_out(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.name}-{cfg.model.feedback}-seed{cfg.run.seed}.h5"


class ImageOrder:
    """Which training image is the k-th of the stream: epoch after epoch, each in its own
    order (a permutation seeded by the run's seed and the epoch, or file order when
    ``train.shuffle`` is off), so that the image at any step follows from the step alone and
    a resumed run shows the same images as the uninterrupted one."""

    def __init__(self, cfg: Config, n_train: int):
        self.seed, self.shuffle, self.n_train = cfg.run.seed, cfg.train.shuffle, n_train
        self._orders: dict[int, np.ndarray] = {}  # the current epoch's only: 60,000 ints

    def __call__(self, k: np.ndarray) -> np.ndarray:
        """Training-set indices of the stream positions ``k`` (an int array)."""
        epochs, pos = np.divmod(k, self.n_train)
        result = np.empty_like(k)
        for epoch in np.unique(epochs):
            if epoch not in self._orders:
                self._orders.clear()
                self._orders[epoch] = (rng_for(self.seed, SEED_ORDER, epoch).permutation(self.n_train)
                                       if self.shuffle else np.arange(self.n_train))
            sel = epochs == epoch
            result[sel] = self._orders[epoch][pos[sel]]
        return result


def _open_run(cfg: Config, out: Path, net: Network, rng, *, total_steps: int, n_train: int, resume: bool,
              overwrite: bool, branch_from) -> tuple[Config, int, int, float, dict]:
    """Start ``out`` afresh, or from a branch's checkpoint, or resume it from its own: the
    network and generator take the checkpoint's state, and the file is made ready for the
    training loop. Returns the config to run (a resume that asks nothing of the recorder
    keeps the run's own ``[record]`` table), the step, test passes done, run time so far
    and the recorder's saved state."""
    N = cfg.train.steps_per_image
    step, n_tests, wall0, extra = 0, 0, 0.0, {}
    if branch_from is not None and resume:
        raise ValueError("branch_from starts a new run file; resume continues one: give one of them")
    if branch_from is not None:
        ck = runfile.checkpoint_file(branch_from)
        if not ck.exists():
            raise runfile.RunFileError(f"nothing to branch from: {ck} does not exist")
        old, branch_step = runfile.checkpoint_config(ck, with_step=True)
        diffs = _compatible(old, cfg, BRANCHABLE_KEYS)
        if diffs:
            raise ConfigError(f"{ck} was run with a different network or protocol; a branch may change only "
                              + ", ".join(sorted(f"{a}.{b}" for a, b in BRANCHABLE_KEYS)) + ": " + "; ".join(diffs))
        if branch_step > total_steps:
            raise ConfigError(f"{ck} is at step {branch_step}, past the {total_steps} steps of "
                              f"train.epochs = {cfg.train.epochs}")
        # read before the run file is made: making it removes the checkpoint of its name,
        # which is the one branched from when the new run takes the old one's --out
        info = runfile.read_checkpoint(ck, net, rng)
        runfile.create_run_file(out, cfg, total_steps=total_steps, overwrite=overwrite)
        step = info["step"]
        extra = info.get("extra", {})
        # steps_done starts at the branch, so `spikefa info` reads the run's place before its first checkpoint
        runfile.set_attrs(out, n_train=n_train, branched_from=str(ck), branch_step=int(step), steps_done=int(step))
    elif resume:
        if not runfile.checkpoint_path(out).exists():
            raise runfile.RunFileError(f"nothing to resume: {runfile.checkpoint_path(out)} does not exist")
        saved = runfile.checkpoint_config(out)
        default, asked, kept = Config().to_dict()["record"], cfg.to_dict()["record"], saved.to_dict()["record"]
        # nothing asked of the recorder but, at most, how often it flushes
        nothing_asked = all(asked[k] == default[k] for k in asked if k != "flush_seconds")
        if asked != kept and (nothing_asked or (kept["probes"] and not asked["probes"])):
            # no probes asked for this time (`--resume` alone, as the stop message says): it
            # records what it did, rather than silently dropping its probes; how often it
            # flushes may change (--set record.flush_seconds=5), what it records stays, and a
            # note names any other record key asked for now that is not taken
            if asked["flush_seconds"] != default["flush_seconds"]:
                kept["flush_seconds"] = asked["flush_seconds"]
            ignored = [f"record.{k} = {v!r} (the run's: {kept[k]!r})" for k, v in asked.items()
                       if v != default[k] and v != kept[k]]
            if ignored:
                log.warning("spikefa: note: %s goes on recording as it did, since no probes were given: not taken "
                            "from this resume: %s", out, "; ".join(ignored))
            cfg = cfg.replace(record=kept)
        diffs = _compatible(saved, cfg)
        if diffs:
            raise ConfigError(f"{out} was run with a different model; only "
                              + ", ".join(sorted(f"{a}.{b}" for a, b in RESUMABLE_KEYS)) + " may change: " + "; ".join(diffs))
        # probes that differ from the recorded ones are refused before the file changes (it was
        # marked incomplete, its config replaced and the resume listed, and then refused)
        with runfile._readable(out) as f:
            record.Recorder(cfg, total_steps=total_steps).check(f)
            was_complete = bool(f.attrs.get("complete", False))
        info = runfile.load_checkpoint(out, net, rng)
        step, n_tests, wall0 = info["step"], info["n_tests"], info["wall_s"]
        if step > total_steps:
            raise ConfigError(f"{out} is at step {step:,}, past the {total_steps:,} steps of train.epochs = "
                              f"{cfg.train.epochs:g}: a resume can raise the epochs, not lower them")
        if step == total_steps and was_complete:
            log.warning("spikefa: note: %s is already at its %g epochs: nothing to train (raise --epochs to "
                        "continue it)", out, cfg.train.epochs)
        elif step == total_steps:
            log.warning("spikefa: note: %s was cut off after its last step: finishing it (its last test pass "
                        "and final weights)", out)
        extra = info.get("extra", {})
        runfile.truncate_tests(out, n_tests)
        runfile.set_attrs(out, complete=False, total_steps=total_steps, config=cfg.to_json())
        # the config attribute now holds the new values: keep the old ones, and the commit
        changed = _compatible(saved, cfg, allowed=set())
        runfile.append_resume(out, step=step, epoch=step / N / n_train, changed=changed)
    else:
        runfile.create_run_file(out, cfg, total_steps=total_steps, overwrite=overwrite)
        runfile.set_attrs(out, n_train=n_train)
    return cfg, step, n_tests, wall0, extra


def train(model, *, epochs=None, seed=None, data_dir=None, out=None, resume=False, overwrite=False,
          progress=True, backend=None, recorder=None, branch_from=None, stop=None) -> TrainResult:
    """Train a model and write its run file; the library call behind ``spikefa train``.

    Parameters
    ----------
    model : str, path or Config
        A bundled model name (``small``), a model file, or a config.
    epochs, seed, backend : optional
        Override ``train.epochs``, ``run.seed``, ``run.backend``.
    data_dir : path, optional
        Folder of the four MNIST files (dataset ``mnist`` only).
    out : path, optional
        Run file; default ``runs/{name}-{feedback}-seed{seed}.h5``.
    resume : bool
        Continue from ``out``'s checkpoint (``train.epochs`` may be raised).
    overwrite : bool
        Replace an existing run file.
    branch_from : path, optional
        Start a new run file from another run's checkpoint (``RUN.h5``, whose ``RUN.h5.ckpt``
        is read, or a checkpoint file itself): its network, noise generator and step, so
        that the new run is the old one continued with the changes of ``model`` (learning
        rates, decay, test settings and epochs only; ``BRANCHABLE_KEYS``). A learning-rate
        schedule, for instance. The run file records ``branched_from`` and ``branch_step``;
        its test curve starts after the branch.
    progress : bool
        Show a progress bar (steps per second, latest test error).
    stop : spikefa.interrupt.StopRequest, optional
        Honoured at the end of every block: when its ``requested`` turns true, training
        writes its checkpoint and raises KeyboardInterrupt, as at a Ctrl-C. Default: the
        request ``spikefa train`` installed, else a new one for SIGINT and SIGTERM (main
        thread only). A sweep's task passes a :class:`~spikefa.interrupt.StopFile`.
    recorder : object, optional
        Receives every block (``recorder.on_block(net, step0, outputs)``; ``outputs`` also
        carries the ``label`` and training ``image`` of every step). Default: a
        :class:`spikefa.record.Recorder` for the config's ``[record]`` table. Optional
        methods used if present: ``attach``, ``next_stop``, ``rec_idx``, ``test_hook``
        (whose hook's ``done()``, if it has one, is called when its pass has ended),
        ``flush``, ``state``, ``close`` (see :class:`~spikefa.record.Recorder`).

    Returns
    -------
    TrainResult
    """
    cfg = load_config(model)
    changes = {}
    if epochs is not None:
        changes.setdefault("train", {})["epochs"] = epochs
    if seed is not None:
        changes.setdefault("run", {})["seed"] = seed
    if backend is not None:
        changes.setdefault("run", {})["backend"] = backend
    if changes:
        cfg = cfg.replace(**changes)
    out = Path(out) if out is not None else default_out(cfg)

    for note in unused_settings(cfg):
        log.warning("spikefa: note: %s", note)
    train_x, train_y = load_data(cfg, "train", data_dir, cfg.train.n_train)
    # (a data folder that the model does not read is noted once, with the training set)
    test_x, test_y = load_data(cfg, "test", data_dir if cfg.train.dataset == "mnist" else None, cfg.test.n_test)
    n_train = train_x.shape[0]
    N = cfg.train.steps_per_image
    total_images = int(round(cfg.train.epochs * n_train))
    total_steps = total_images * N
    test_every = cfg.train.test_every * N if cfg.train.test_every else 0

    if not resume:  # refuse an empty window before the run file is made (a resume's run only grows)
        record.resolve_windows(cfg.record.windows, total_steps)
    # from before the run's first write of its file to after its last, so that a reader
    # never takes it for stopped between two of its writes (runfile.WriterLock)
    lock = runfile.WriterLock(out)
    try:
        net = init_network(cfg)
        rng = rng_for(cfg.run.seed, SEED_NOISE)
        cfg, step, n_tests, wall0, extra = _open_run(cfg, out, net, rng, total_steps=total_steps, n_train=n_train,
                                                     resume=resume, overwrite=overwrite, branch_from=branch_from)
        if recorder is None:
            recorder = record.Recorder(cfg, total_steps=total_steps)
            recorder.load_state(extra)
        rec_idx = getattr(recorder, "rec_idx", None)
        rec_flush, rec_state = getattr(recorder, "flush", None), getattr(recorder, "state", None)
        next_stop, test_hook = getattr(recorder, "next_stop", None), getattr(recorder, "test_hook", None)

        image_at = ImageOrder(cfg, n_train)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True, mininterval=1.0,
                       desc=f"{cfg.name} ({cfg.model.feedback})")
        t_start = time.perf_counter()
        last_ckpt = t_start

        def wall():
            return wall0 + time.perf_counter() - t_start

        def do_test():
            nonlocal n_tests
            # a pass over the weights per test pass: cheap beside the test. B learns too (learned
            # feedback), at its own rate, and W and B drag each other along: name what blew up
            bad_w = [l for l in range(1, net.m + 1) if not (np.isfinite(net.W[l - 1]).all() and np.isfinite(net.b[l - 1]).all())]
            bad_b = [l for l in range(1, net.m) if cfg.model.feedback == "learned"
                     and net.feedback_matrix(l) is not None and not np.isfinite(net.feedback_matrix(l)).all()]
            if bad_w or bad_b:
                what = ([f"the feedback weights into {net.names[bad_b[0]]}"] if bad_b else []) + \
                       ([f"the weights into {net.names[bad_w[0]]}"] if bad_w else [])
                rates = ([f"model.eta = {cfg.model.eta:g}"] if bad_w else []) + \
                        ([f"model.eta_feedback = {cfg.model.eta_feedback:g}"] if bad_b else [])
                raise ConfigError(f"training diverged: {' and '.join(what)} are not finite at step {step:,} "
                                  f"({' or '.join(rates)} too large?)")
            hook = test_hook(step) if test_hook is not None else None
            if bar is not None:  # the bar stands still during the test pass: say why
                bar.set_postfix_str(f"testing on {len(test_y):,} images", refresh=True)
            res = evaluate(net, test_x, test_y, seed_key=step, on_block=hook, rec_idx=getattr(hook, "rec_idx", None))
            if hasattr(hook, "done"):
                hook.done()  # (a checkpoint from here keeps this pass)
            if hook is not None and rec_flush is not None:
                # the pass's recordings, every series of it, reach the file before the test row's
                # flush makes the file's new rows readable: each series is written when its own
                # buffer fills, so the stimulus rows could be read without the events (a raster of
                # zeros), or without the pass they belong to, until the next timed flush
                rec_flush()
            runfile.append_test(out, dict(step=step, images=step // N, epoch=step / N / n_train, error=res.error,
                                          error_last=res.error_last, error_sum=res.error_sum, error_prob=res.error_prob, n_test=res.n_test,
                                          wall_s=wall()))
            n_tests += 1
            if bar is not None:
                bar.set_postfix(test_error=f"{res.error:.2%}", refresh=False)
            return res

        def tested_now():
            done = runfile.Run(out).test_curve()["step"]
            return bool(done.size) and int(done[-1]) == step

        def refuse_if_gone():
            if not writer.still_there():
                ck = runfile.checkpoint_path(out)
                raise runfile.RunFileError(
                    f"the run file {out} was deleted or replaced while the run was going (noticed at step {step:,}), "
                    f"and with it its test curve and recordings; the network at this step is kept in {ck}: "
                    f"the same command with --branch-from {shlex.quote(str(ck))} instead of --resume continues it "
                    "in a new run file")

        def checkpoint():
            if rec_flush is not None:
                rec_flush()  # the run file holds every recorded step up to the checkpoint
            runfile.save_checkpoint(out, net, rng=rng, step=step, n_tests=n_tests, wall_s=wall(),
                                    extra=rec_state() if rec_state is not None else None)

        # the file stays open in SWMR mode during the loop, so that it can be read meanwhile
        attach = getattr(recorder, "attach", None)
        if cfg.train.dataset == "mnist":  # where the data was, so that `spikefa test RUN.h5` finds it again
            runfile.set_attrs(out, data_dir=str(find_mnist_dir(data_dir)))
        writer = runfile.RunWriter(out, setup=(lambda f: attach(f, net, step)) if attach is not None else None)
        if stop is None:
            stop = StopRequest.installed() or StopRequest()  # spikefa train installs one before its imports
        settled = True
        try:
            stop.install()
            if resume and test_every and 0 < step < total_steps and step % test_every == 0 and not tested_now():
                # a stop that came at a test point checkpointed before the test ran: run it now,
                # where the uninterrupted run does (a test never changes the trajectory)
                do_test()
                if stop.requested:  # a stop during that pass, as below
                    raise KeyboardInterrupt
            while step < total_steps:
                end = min(step + cfg.run.block_steps, total_steps)
                if test_every:
                    end = min(end, (step // test_every + 1) * test_every)
                if next_stop is not None:
                    end = min(end, next_stop(step))  # measures every k steps, exactly
                ks = np.arange(step, end) // N
                first = ks[0]
                idx = image_at(np.arange(first, ks[-1] + 1))
                step_label = train_y[idx][ks - first]
                settled = False  # from here the generator and network move past `step`
                outputs = net.run(rng.random((end - step, net.n_units)),
                                  input_probabilities(train_x[idx], cfg.model.p_max), ks - first, step_label,
                                  plastic=True, rec_idx=rec_idx)
                step0, step = step, end  # network, generator and step agree again
                settled = True
                if recorder is not None:
                    outputs.update(label=step_label, image=idx[ks - first])
                    recorder.on_block(net, step0, outputs)
                if bar is not None:
                    bar.update(step - step0)
                if stop.requested:
                    raise KeyboardInterrupt
                refuse_if_gone()
                if test_every and step % test_every == 0 and step < total_steps:
                    do_test()
                    if stop.requested:
                        # a stop that came during the pass: here, with its row written, and
                        # not after one more block of training
                        raise KeyboardInterrupt
                if time.perf_counter() - last_ckpt > 60 * cfg.run.checkpoint_minutes:
                    checkpoint()
                    runfile.set_attrs(out, steps_done=step, wall_s=wall())
                    last_ckpt = time.perf_counter()
            if not tested_now():
                do_test()
                refuse_if_gone()  # (the last test pass can take minutes)
        except BaseException as exc:
            # Ctrl-C, SIGTERM or an error: keep what was done; the file stays incomplete. Outside
            # a block's kernel call the network, generator and step agree, and a checkpoint
            # saves them; inside it (a second Ctrl-C lands as the kernel returns, an error in
            # the kernel) they do not, and the last checkpoint is kept instead, so that a
            # resume still equals the uninterrupted run.
            if bar is not None:
                bar.close()
            stopped = isinstance(exc, KeyboardInterrupt)
            if step > 0 and settled:
                checkpoint()
                runfile.set_attrs(out, steps_done=step, wall_s=wall())
                if stopped and stop.tell:
                    print(f"spikefa: checkpoint at step {step:,} written to {runfile.checkpoint_path(out)}; "
                          f"continue with the same command and --resume (spikefa info {shlex.quote(str(out))} "
                          "prints it)", file=sys.stderr)
            elif not settled and stop.tell:
                kept = (f"the last checkpoint is kept (continue with the same command and --resume; spikefa info "
                        f"{shlex.quote(str(out))} prints it)" if runfile.checkpoint_path(out).exists()
                        else "no checkpoint was written yet, so the run must start again (--overwrite)")
                print(f"spikefa: stopped inside a block of steps from {step:,}: {kept}", file=sys.stderr)
            elif stopped and stop.tell:
                print("spikefa: stopped before its first block ended: no checkpoint, so the run must start "
                      "again (--overwrite)", file=sys.stderr)
            raise
        finally:
            stop.uninstall()
            try:
                if hasattr(recorder, "close"):
                    recorder.close()
            finally:
                writer.close()
        if bar is not None:
            bar.close()
        checkpoint()
        runfile.write_final(out, net)
        runfile.set_attrs(out, wall_s=wall())
        runfile.mark_complete(out, step)
        curve = runfile.Run(out).test_curve()
        return TrainResult(path=out, test_error=float(curve["error"][-1]), steps=step,
                           epochs=step / N / n_train, wall_s=wall(), curve=curve)
    finally:
        lock.release()


def network_from_run(run: runfile.Run) -> Network:
    """Rebuild the network at the end of a saved run (effective weights, scale 1).

    The run file keeps the weights, biases, feedback matrices and the PSPs ``V`` and ``U``
    of its last step; the rest of that step's state (spikes, spike probabilities,
    ``phi_d(U)``, the modulator) is zero here until the network takes a step, which
    computes all of it from ``V``, ``U`` and the weights. A checkpoint
    (:func:`network_from_checkpoint`) restores the whole state."""
    cfg = run.config
    net = init_network(cfg)
    for l in range(1, net.m + 1):
        name = net.names[l]
        net.W[l - 1][...] = run.final(name, "W")
        net.b[l - 1][...] = run.final(name, "b")
        sl = net.layer_slice(l)
        net.state.psp[sl] = run.final(name, "V")
        net.state.feedback_psp[sl] = run.final(name, "U")
        if l < net.m and net.wiring.learns[l - 1]:
            net.wiring.F[l - 1][...] = run.final(name, "B")
    net.scale[:] = 1.0
    return net


def network_from_checkpoint(ck) -> tuple[Network, dict]:
    """Rebuild the network held by a checkpoint file (``RUN.h5.ckpt``, or a copy of one)."""
    import h5py

    try:
        with h5py.File(ck, "r") as f:
            cfg = runfile.config_from_dict(json.loads(f.attrs["config"]))
    except OSError as exc:
        raise runfile.RunFileError(f"cannot read the checkpoint {ck}: {exc}") from None
    net = init_network(cfg)
    info = runfile.read_checkpoint(ck, net, strict=False)
    return net, info


def network_from_file(path) -> tuple[Network, int, bool, str]:
    """The network a run file or checkpoint file holds: ``(net, steps, complete, source)``.

    A run file gives its final weights when complete (or when it has no checkpoint),
    else its checkpoint (a run still running or cut off); ``source`` says which
    (``"final"`` or ``"checkpoint"``).
    """
    path = Path(path)
    if runfile.h5_kind(path) == "checkpoint":
        net, info = network_from_checkpoint(path)
        return net, int(info["step"]), False, "checkpoint"
    run = runfile.Run(path)
    if run.complete or not runfile.checkpoint_path(path).exists():
        return network_from_run(run), int(run.attrs.get("steps_done", 0)), run.complete, "final"
    net, info = network_from_checkpoint(runfile.checkpoint_path(path))
    return net, int(info["step"]), False, "checkpoint"


def test_run(path, *, data_dir=None, n_test=None, seed_key: int = 0, readout=None, split: str = "test",
             dataset: str | None = None, progress: bool = False) -> dict:
    """Test a run's weights on its test set (``spikefa test``), plasticity off.

    ``path`` is a run file (its final weights, or, while it is still running or was cut
    off, its checkpoint) or a checkpoint file itself. ``split="train"`` tests on the
    training images instead (the first ``n_test`` of the file, unshuffled), with the same
    protocol: the training error, to tell slow learning from overfitting. ``dataset``
    tests on another dataset than the run's own, e.g. a run trained on the bundled subset
    on all 10,000 images of the full MNIST test set (``"mnist"``). ``progress``: a
    progress bar over the images (on stderr).
    """
    from .config import DATASET_CHOICES

    if split not in ("test", "train"):
        raise ValueError(f"split {split!r} unknown; valid: 'test', 'train'")
    if dataset is not None and dataset not in DATASET_CHOICES:
        raise ValueError(f"dataset {dataset!r} unknown; valid: {', '.join(map(repr, DATASET_CHOICES))}")
    net, steps, complete, source = network_from_file(path)
    cfg = net.config
    data_cfg = cfg.replace(train={"dataset": dataset}) if dataset is not None else cfg
    changes = {}
    if n_test is not None:
        changes["n_test"] = n_test
    if readout is not None:
        changes["readout"] = readout
    net.config = cfg = cfg.replace(test=changes) if changes else cfg
    if data_dir is None and data_cfg.train.dataset == "mnist" and runfile.h5_kind(path) == "run":
        # the folder the run was trained from, when it is still there (else the usual search)
        saved = runfile.Run(path).attrs.get("data_dir")
        if saved and Path(str(saved)).is_dir():
            data_dir = str(saved)
    test_x, test_y = load_data(data_cfg, split, data_dir, cfg.test.n_test)
    n_train = train_set_size(cfg)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(test_y), unit="image", desc=f"testing {Path(path).name}", mininterval=0.5, leave=False)

    def count_images(net, step0, outputs):
        bar.update(outputs["spikes"].shape[0] // cfg.test.steps_per_image)

    try:
        res = evaluate(net, test_x, test_y, seed_key=seed_key, on_block=count_images if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return dict(test_error=res.error, test_error_last=res.error_last, test_error_sum=res.error_sum,
                test_error_prob=res.error_prob, n_test=res.n_test, split=split, readout=cfg.test.readout, steps=steps,
                epochs=steps / cfg.train.steps_per_image / n_train, complete=complete, weights=source,
                model=cfg.name, feedback=cfg.model.feedback, seed=cfg.run.seed, path=str(path),
                dataset=data_cfg.train.dataset, trained_on=cfg.train.dataset)


test_run.__test__ = False  # not a pytest test


class _CallableModule(types.ModuleType):
    """This module, made callable: ``spikefa.train(cfg, ...)`` is ``spikefa.train.train(cfg, ...)``.

    ``import spikefa; spikefa.train(cfg)`` reads as training, but ``spikefa.train`` is this
    module (``spikefa/__init__.py`` loads it on first use), and calling it failed with
    "'module' object is not callable". Giving the module object a subclass of ModuleType
    with ``__call__`` is the way Python allows (the import docs, "Customizing module
    attribute access"); everything else stays as it was: ``from spikefa.train import
    train``, ``spikefa.train.train`` (pickled by reference, as Dask does), ``help``, and
    the module itself in a pickled function's globals.
    """

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)  # looked up at each call, so a patched train is the one called

    def __reduce__(self):
        # pickle (cloudpickle, for a Dask task whose globals hold this module) knows plain
        # modules only; this one is re-imported by name, as they are
        return importlib.import_module, (self.__name__,)


sys.modules[__name__].__class__ = _CallableModule
