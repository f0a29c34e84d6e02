"""The ``spikefa`` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import signal
import sys
import tomllib
from pathlib import Path

from .config import FEEDBACK_CHOICES, ConfigError, available_models
from .interrupt import StopRequest


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that takes a word starting with ``-`` and a digit (``-10:10``,
    ``-5%:10%``, ``-1e3``, ``-.5``) as an option's value, not as an unknown option.

    Notes
    -----
    argparse lets only plain negative numbers (``-1``, ``-.5``) through, so
    ``--record-windows -10:10`` or ``--epochs -1e3`` failed with "expected one argument"
    instead of the value's own error, which ``--record-windows=-10:10`` gives. No option of
    spikefa's looks like a number, so such a word is never meant as one; argparse still
    matches real options (``-o``, ``--out``) before it asks this pattern. Subparsers are
    made of the same class. ``_negative_number_matcher`` is argparse's own (private) hook
    for this, unchanged in name since Python 2.7; a test checks that it still works.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"-\.?\d")


def int_at_least(lo: int):
    """An argparse ``type``: a whole number ``>= lo``, else an error naming the value."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be {lo} or more, got {value}")
        return value

    return parse


def _without_data(argv, *extra) -> str:
    """The command ``spikefa ARGV`` without its ``--data`` option, ``extra`` added: what to
    run instead when the full MNIST set is missing."""
    words, rest = [], iter(argv)
    for word in rest:
        if word == "--data":
            next(rest, None)
        elif not word.startswith("--data="):
            words.append(word)
    return shlex.join(["spikefa", *words, *extra])


def _train(args):
    from .config import load_config
    from .data import DataError
    from .train import train

    model = args.model
    record = dict(probes=args.record, windows=args.record_windows, measure_every=args.record_every,
                  test=True if args.record_test else None, test_steps=args.record_test_steps,
                  spike_format=args.record_format)
    record = {k: v for k, v in record.items() if v is not None}
    if record:
        model = load_config(model).replace(record=record)
    if args.feedback:
        cfg = load_config(model)
        if args.feedback != cfg.model.feedback:  # the model file's description names its own variant
            said = f"--feedback {args.feedback}"
            model = cfg.replace(model={"feedback": args.feedback},
                                description=f"{cfg.description} ({said})" if cfg.description else said)
    out = args.out
    if args.feedback and any((section, name) == ("model", "feedback") for section, name, _ in (args.set or [])):
        raise ConfigError("the feedback variant is given twice, by --feedback and by --set model.feedback: give it once")
    if args.set:
        model = _apply_sets(load_config(model), args.set)
        if out is None:
            out = _set_out(model, args.seed, args.set)
    try:
        res = train(model, epochs=args.epochs, seed=args.seed, data_dir=args.data, out=out,
                    resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, backend=args.backend,
                    branch_from=args.branch_from)
    except DataError as exc:
        if args.resume or args.branch_from or load_config(model).train.dataset != "mnist":
            raise  # (a run goes on with the data it began with; the subset's own error is not a missing set)
        # its advice names the dataset key, not the table or the flag that sets it
        raise DataError(f"{exc}\nOr train on the bundled 2,000/500-image subset: "
                        f"`{_without_data(args.argv, '--set', 'train.dataset=mnist-subset')}`") from None
    print(f"test error {res.test_error:.2%} after {_count(res.epochs, 'epoch')} ({res.steps} steps, {res.wall_s:.0f} s); "
          f"run file {res.path}")


def _resume_command(command: str) -> str:
    """The command a run last ran with, made to continue it: ``--overwrite`` (which would
    start it again) dropped, ``--resume`` added, the executable's path shortened."""
    import shlex

    try:
        words = shlex.split(command)
    except ValueError:
        return f"{command} --resume"
    if not words:
        return "spikefa train MODEL --out RUN.h5 --resume (the file does not record its command)"
    from .runfile import invocation

    words = shlex.split(invocation(words))  # `python -m spikefa` as older files recorded it, too
    if Path(words[0]).name == "spikefa":
        words[0] = "spikefa"
    elif Path(words[0]).name == "cli.py" and Path(words[0]).parent.name == "spikefa":
        words[:1] = ["python", "-m", "spikefa.cli"]  # (the file cannot run as a script)
    elif words[:3] != ["python", "-m", "spikefa"]:
        return f"the same train() call with resume=True (the run was started from Python: {command})"
    if words[1 if words[0] == "spikefa" else 3:][:1] == ["sweep"]:
        # a sweep's run (its worker records the sweep's command): the sweep, which has no
        # --resume, continues it when started again
        return f"{shlex.join(words)} (the sweep, started again, continues it from its checkpoint)"
    words = [w for w in words if w != "--overwrite"]
    if "--resume" not in words:
        words.append("--resume")
    return shlex.join(words)


def _duration(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``5.76 h``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def _count(n, noun: str) -> str:
    """``1 epoch``, ``2.5 epochs``, ``0 resumes``."""
    return f"{n:g} {noun}" + ("" if n == 1 else "es" if noun.endswith("s") else "s")


def _set_arg(text):
    """``SECTION.KEY=VALUE`` with VALUE in TOML (``3e-2``, ``[784, 300, 10]``, ``"dfa"``); a bare word is a string."""
    key, eq, value = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not eq or not dot or not section or not name or not value.strip():
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE, e.g. model.eta=3e-2, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return section, name.strip(), parsed


def _set_value_text(value):
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, list):
        return ",".join(_set_value_text(v) for v in value)
    return str(value)


def _set_out(cfg, seed, sets):
    """Default run file of a ``--set`` run: the model's default name with the changes appended
    (``runs/small-fa-seed1-model.eta=0.03.h5``), so that runs with different ``--set`` values
    do not share one file and ``--resume`` with the same ``--set`` finds its own. Keys that a
    resume may change (``train.epochs``, ``[run]`` settings, ``[record]``) are left out of the name."""
    from .train import RESUMABLE_KEYS, default_out

    if seed is not None:
        cfg = cfg.replace(run={"seed": seed})
    base = default_out(cfg)
    named = [(s, n, v) for s, n, v in sets if (s, n) not in RESUMABLE_KEYS and s != "record"]
    if not named:
        return base
    tag = re.sub(r"[^\w.=,+-]+", "_", "-".join(f"{s}.{n}={_set_value_text(v)}" for s, n, v in named))
    if len(tag) > 80:
        tag = "set-" + hashlib.sha256(tag.encode()).hexdigest()[:10]
    return base.with_name(f"{base.stem}-{tag}{base.suffix}")


def _apply_sets(cfg, sets):
    """Apply ``--set`` changes to a config; the description says which, so ``spikefa info`` shows them."""
    changes: dict[str, dict] = {}
    for section, name, value in sets:
        if section in ("name", "description"):
            raise ConfigError(f"--set {section}.{name}: name and description are not tables; "
                              "--set changes keys of [model], [train], [test], [run] or [record]")
        changes.setdefault(section, {})[name] = value
    said = ", ".join(f"{s}.{n} = {v!r}" for s, n, v in sets)
    description = f"{cfg.description} (--set {said})" if cfg.description else f"--set {said}"
    return cfg.replace(description=description, **changes)


def _test(args):
    from .train import test_run

    res = test_run(args.run, data_dir=args.data, n_test=args.n_test, split=args.split, dataset=args.dataset,
                   progress=not args.json)
    if args.json:
        print(json.dumps(res))
    else:
        what = "test error" if args.split == "test" else "error on training images"
        if res["dataset"] != res["trained_on"]:
            what += f" on {res['dataset']} (trained on {res['trained_on']})"
        print(f"{what} {res['test_error']:.2%} ({res['readout']} read-out; last {res['test_error_last']:.2%}, "
              f"sum {res['test_error_sum']:.2%}, prob {res['test_error_prob']:.2%}) on {res['n_test']} images after {_count(res['epochs'], 'epoch')}")


def _plot(args):
    from .plots import render

    try:
        path = render(args.kind, args.run, args.out, layer=args.layer, window=args.window, phase=args.phase,
                      steps=args.steps, at_step=args.at, dpi=args.dpi)
    except ValueError as exc:
        raise SystemExit(f"spikefa: error: {exc}") from None
    print(f"figure {path}")


def _window_arg(text):
    """``A:B`` (steps A <= s < B) or ``I`` (the run's I-th recording window)."""
    a, colon, b = text.partition(":")
    try:
        return (int(a), int(b)) if colon else int(a)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP or a window number, got {text!r}") from None


def _experiment(args):
    from .experiments import checkpoint_path, checkpoint_progress, read_checkpoint, resume_command, run_experiment
    from .data import DataError

    out = args.out or f"runs/rate-{args.name}{'-quick' if args.quick else ''}"
    result_json = Path(out) / f"{args.name}.json"

    def json_stat():
        try:
            st = os.stat(result_json)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    before = json_stat()
    try:
        res = run_experiment(args.name, out, quick=args.quick, seed=args.seed, data_dir=args.data,
                             config=args.model, resume=args.resume, overwrite=args.overwrite)
    except DataError as exc:
        from .experiments import load_experiment_config

        if args.quick or args.resume or \
                load_experiment_config(args.name, True, args.model)["data"]["dataset"] != "mnist-subset":
            # (a model file whose [quick] table keeps the full set: --quick would fail the same way; a
            # resume goes on with its own settings)
            raise
        # (its advice names the data.dataset key; here the subset is one flag away)
        raise DataError(f"{exc}\nOr run `{_without_data(args.argv, '--quick')}`: its quick form, on the bundled "
                        f"2,000-image subset with the model file's [quick] settings, in seconds.") from None
    except KeyboardInterrupt:
        after = json_stat()
        if after is not None and after != before:  # stopped as it ended, after its JSON was written
            checkpoint_path(out, args.name).unlink(missing_ok=True)  # (its numbers are in the JSON)
            print(f"\nspikefa: experiment {args.name} stopped as it ended: it had finished, its figure and "
                  f"numbers are in {result_json}; nothing needs to be run again", file=sys.stderr)
            raise SystemExit(130) from None
        try:
            saved = read_checkpoint(out, args.name)
        except ValueError:  # (not one that this run wrote: it writes whole files only)
            saved = None
        if saved is None:  # fig2, fig3d and fig5 run in a minute or two and keep none
            print(f"\nspikefa: experiment {args.name} stopped: nothing of it was written (its figure and JSON are "
                  f"written when it ends); run it again to make them", file=sys.stderr)
        else:
            print(f"\nspikefa: experiment {args.name} stopped: its checkpoint ({checkpoint_progress(saved['meta'])}) "
                  f"is kept in {checkpoint_path(out, args.name)}; continue it with: "
                  f"{resume_command(out, args.name, saved['meta'], args.data)}", file=sys.stderr)
        raise SystemExit(130) from None
    # the curves are in the JSON file; print what a reader wants at once
    brief = {k: res[k] for k in ("experiment", "quick", "seed", "seconds", "summary", "files")}
    print(json.dumps(brief, indent=1, default=float))


def _curve(args):
    from .runfile import TEST_FIELDS, Run

    run = Run(args.run)
    if args.of == "error":
        curve = run.test_curve()
        columns = {k: curve[k] for k in TEST_FIELDS if k in curve}
    else:  # {"step": (n,), measure: {layer: (n,)}} -> one column per measure and layer
        series = run.angles() if args.of == "angles" else run.saturation()
        columns = {"step": series["step"]}
        for measure, per_layer in series.items():
            if measure != "step":
                columns.update({f"{measure}_{layer}": values for layer, values in per_layer.items()})
        if len(columns) == 1:
            print(f"spikefa: note: {args.run} holds no {args.of} (feedback {run.config.model.feedback!r})",
                  file=sys.stderr)
    print(",".join(columns))
    for i in range(len(columns["step"])):
        print(",".join(f"{v[i]:.6g}" if v.dtype.kind == "f" else str(v[i]) for v in columns.values()))


def _info(args):
    from .runfile import Run, RunFileError

    runs = []
    try:
        for path in args.run:
            runs.append(Run(path))
        infos = [run.summary() for run in runs]
    except RunFileError as exc:
        hint = _not_a_run_hint(Path(args.run[len(runs)])) if len(runs) < len(args.run) else ""
        raise SystemExit(f"spikefa: error: {exc}{hint}") from None
    if args.json:
        print(json.dumps(infos[0] if len(infos) == 1 else infos, indent=1))
        return
    for i, info in enumerate(infos):
        if i:
            print()
        _print_info(info)
    if len(runs) > 1:  # what sets them apart
        flats = [run.config.flat() for run in runs]
        keys = [k for k in flats[0] if k not in ("name", "description")
                and any(f.get(k) != flats[0][k] for f in flats[1:])]
        print("\nsettings that differ:" + ("" if keys else " none"))
        for k in keys:
            print(f"  {k}: " + ", ".join(f"{run.path} = {f.get(k)!r}" for run, f in zip(runs, flats)))


def _not_a_run_hint(path: Path) -> str:
    """For `spikefa info` given an experiment's or a sweep's folder (or an experiment's
    checkpoint) instead of a run file: what that is and the command that reads or
    continues it."""
    from .experiments import EXPERIMENTS, checkpoint_path, checkpoint_progress, read_checkpoint, resume_command

    folder = path if path.is_dir() else path.parent if path.name.endswith(".ckpt.npz") else None
    if folder is None:
        return ""
    from .sweep import MANIFEST

    if (folder / MANIFEST).exists():
        return f"; it is a sweep's folder: spikefa sweep-report {shlex.quote(str(folder))} summarizes it"
    hints, finished = [], []
    for name in EXPERIMENTS:
        if path.is_file() and path != checkpoint_path(folder, name):
            continue
        try:
            saved = read_checkpoint(folder, name)
        except ValueError as exc:
            hints.append(str(exc))
            continue
        if saved is not None:
            meta = saved["meta"]
            data = "DIR" if meta["config"].get("data", {}).get("dataset") == "mnist" else None  # (its own folder)
            hints.append(f"it {'is' if path.is_file() else 'holds'} the checkpoint of a stopped experiment {name} "
                         f"({checkpoint_progress(meta)}): continue it with {resume_command(folder, name, meta, data)}")
        elif (folder / f"{name}.json").exists():
            finished.append(name)
    if finished:
        hints.append(f"it holds the finished experiment{'s' * (len(finished) > 1)} {', '.join(finished)}, whose "
                     f"numbers are in {', '.join(f'{n}.json' for n in finished)} there")
    files = sorted(p.name for p in folder.glob("*.h5")) if path.is_dir() and not hints else []
    if files:
        hints.append(f"the run files in it: {', '.join(files[:5])}" + (f" and {len(files) - 5} more" * (len(files) > 5)))
    return "".join(f"; {h}" for h in hints)


def _print_info(info):
    from .runfile import checkpoint_path

    print(f"{info['path']}: {info['model']}, seed {info['seed']}, feedback {info['feedback']}, "
          + "-".join(str(n) for n in info["layers"]))
    if info["description"]:
        print(f"  {info['description']}")
    if info["settings_changed"]:
        base = info["settings_from"]
        where = f"the bundled model {base}" if base != "defaults" else "the defaults of docs/model.md"
        label = "there" if base != "defaults" else "default"
        print(f"  differs from {where}: " + ", ".join(f"{k} = {new!r} ({label}: {old!r})"
                                                   for k, (old, new) in info["settings_changed"].items()))
    state = {"running": f"running (writer {info['writer']})",
             "unknown": f"not complete; written by {info['writer']}, another host, so whether it still runs is not known here"
             }.get(info["state"], info["state"])
    print(f"state: {state}")

    ep = info["epochs_done"], info["epochs_total"]
    ckpt = info["checkpoint_step"]
    print(f"steps done: {info['steps_done']:,} of {info['total_steps']:,}"
          + (f" ({ep[0]:.4g} of {_count(ep[1], 'epoch')})" if ep[0] is not None else "")
          + ("; no checkpoint" if ckpt is None else f"; checkpoint at step {ckpt:,}" if ckpt != info["steps_done"] else ""))
    if info["branched_from"] is not None:
        print(f"branched from {info['branched_from']} at step {info['branch_step']:,}: its steps and test passes "
              "before that are in the run it came from, and its run time counts from the branch")
    for name in ("last", "best"):
        r = info[name]
        if r is not None:
            reads = ", ".join(f"{k[6:]} {100 * r[k]:.2f}%" for k in ("error_last", "error_sum", "error_prob") if k in r)
            at = _count(float(f"{r['epoch']:.4g}"), "epoch")
            print(f"{name} test pass: {100 * r['error']:.2f}% at {at} ({reads}; {r['n_test']:,} images)")
    if not info["test_passes"]:
        print("no test pass yet")
    print(f"{_count(info['test_passes'], 'test pass')}, {_duration(info['wall_s'])} of run time, "
          f"{_count(info['resumes'], 'resume')}; "
          f"created {info['created']} at {info['git_commit'] or 'an unknown revision'}")
    if info["state"] == "stopped" and ckpt is None:
        # --resume would only say "nothing to resume"; the test passes above are all that is left
        print(f"its checkpoint {checkpoint_path(info['path'])} is gone, so it cannot be resumed: run it again "
              f"with --overwrite (or --branch-from a copy of an older checkpoint); it last ran as: {info['command']}")
    elif info["state"] == "stopped":
        print(f"continue it with: {_resume_command(info['command'])}")


def _align(args):
    from . import alignment
    from .config import load_config
    from .data import DataError
    from .network import init_network
    from .runfile import RunFileError
    from .train import epochs_at, load_data, network_from_file

    if args.share_steps < 0:
        raise SystemExit(f"spikefa: error: --share-steps must be 0 or more, got {args.share_steps}")
    data, failed, shown = {}, [], False
    several = len(args.files) > 1  # then a first column names the file of each row
    for path in args.files:
        try:
            if Path(path).suffix in (".h5", ".ckpt") and not Path(path).exists():
                raise RunFileError(f"{path}: no such run file or checkpoint")
            if str(path).endswith(".toml") or not Path(path).exists():
                net, steps = init_network(load_config(path)), 0        # a model: its fresh network
            else:
                net, steps = network_from_file(path)[:2]
            rows = alignment.class_alignment(net)
            if args.share_steps:
                key = (net.config.train.dataset, net.config.train.n_train)
                if key not in data:
                    data[key] = load_data(net.config, "train", args.data, net.config.train.n_train)
                for r, share in zip(rows, alignment.error_share(net, *data[key], steps=args.share_steps)):
                    r["share"] = share
        except (ValueError, RunFileError, DataError) as exc:
            where = "" if str(exc).startswith(str(path)) else f"{path}: "
            if not several:
                raise SystemExit(f"spikefa: error: {where}{exc}") from None
            print(f"spikefa: error: {where}{exc}", file=sys.stderr, flush=True)  # the others still go on
            failed.append(path)
            continue
        cfg = net.config
        lines = alignment.markdown_rows(rows, steps, epochs_at(cfg, steps))
        if not shown:
            header = alignment.header(args.share_steps).split("\n")
            print("\n".join(["| run " + header[0], "| --- " + header[1]] if several else header))
            shown = True
        print("\n".join(f"| {path} {line}" for line in lines) if several else "\n".join(lines), flush=True)
    # the key goes to stderr, so that `spikefa align ... > table.md` keeps a plain table
    if shown:
        print("\n" + alignment.LEGEND, file=sys.stderr)
    if failed:
        raise SystemExit(f"spikefa: error: {len(failed)} of {len(args.files)} could not be measured "
                         f"(said above): {', '.join(failed)}")


def _download(args):
    from .data import download_mnist

    print(f"MNIST verified in {download_mnist(args.dest)}")


def _sweep(args):
    from . import sweep as sw

    if args.dry_run:
        spec = sw.load_sweep(args.sweep)
        runs = sw.plan(spec, sw.sweep_dir(spec, args.out))
        print(sw.describe(runs))
        return
    try:
        res = sw.run_sweep(args.sweep, out=args.out, workers=args.workers, scheduler=args.scheduler, data_dir=args.data,
                           progress=not args.quiet, dashboard_address=args.dashboard_address)
    except KeyboardInterrupt:
        print("\nspikefa: sweep stopped; finished runs are kept, and stopped runs continue from their checkpoints: "
              "start it again to run the rest", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"{len(res.runs)} runs: {len(res.ran)} ran, {len(res.reused)} re-used, {len(res.failed)} failed "
          f"({res.wall_s:.0f} s); sweep folder {res.out}; table and figure: spikefa sweep-report {res.out}")
    if res.failed:
        print(sw.describe(res.failed), file=sys.stderr)
        raise SystemExit(1)


def _sweep_report(args):
    from .sweep import sweep_report

    rep = sweep_report(args.sweep_dir, out=args.out)
    print(rep["markdown"])
    print(f"written: {rep['csv']}, {rep['md']}, {rep['figure']}")


def _export_brian2(args):
    from .export import export_model

    try:
        script, npz = export_model(args.model, args.out, run_file=args.run_file, n_images=args.images,
                                   noise_steps=args.noise_steps, test=args.test, seed=args.seed)
    except ValueError as exc:
        print(f"spikefa: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {script} and {npz}; run it with: python {script} [--steps N] [--target ...] [--out results.npz]")


def _validate(args):
    from . import validate as va

    common = dict(seed=args.seed, target=args.target or "numpy")
    if args.statistical:
        rep = va.statistical_validate(args.model, seeds=args.seeds, train_steps=args.steps or 500, n_test=args.n_test,
                                      dtype=args.dtype, run_file=args.run_file, **common)
    else:
        rep = va.cross_validate(args.model, steps=args.steps or 500, dtype=args.dtype or "float64",
                                check_every=args.check_every, run_file=args.run_file, **common)
    print(rep)
    if not rep.passed:
        raise SystemExit(1)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="spikefa",
        description="Simulate learning with random feedback in networks of stochastic binary integrating "
                    "neurons (Lillicrap et al. 2016).",
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"spikefa {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model and write a run file",
                       description="Train a model (a bundled name or a .toml file) and save its run file (HDF5). "
                                   f"Bundled models: {', '.join(available_models())}.")
    t.add_argument("model", help="bundled model name (e.g. small) or path to a .toml model file")
    t.add_argument("--epochs", type=float, help="passes over the training set (overrides train.epochs)")
    t.add_argument("--seed", type=int_at_least(0), help="random seed (overrides run.seed)")
    t.add_argument("--feedback", choices=FEEDBACK_CHOICES, help="feedback variant (overrides model.feedback)")
    t.add_argument("--set", action="append", type=_set_arg, metavar="SECTION.KEY=VALUE",
                   help="change one key of the model file (repeatable), e.g. --set model.eta=3e-2; "
                        "the run file records the changed config")
    t.add_argument("--data", metavar="DIR", help="folder with the four MNIST files (else $SPIKEFA_MNIST_DIR, "
                                                 "data/mnist, ~/.cache/spikefa/mnist)")
    t.add_argument("--out", "-o", metavar="RUN.h5", help="run file (default runs/MODEL-FEEDBACK-seedS.h5, "
                                                                   "with -SECTION.KEY=VALUE added for each --set of a "
                                                                   "key that a resume may not change: train.epochs, "
                                                                   "train.test_every, [record] keys and the [run] keys "
                                                                   "but run.seed stay out of the name)")
    again = t.add_mutually_exclusive_group()  # keep the run file, or replace it: not both
    again.add_argument("--resume", action="store_true", help="continue the run file's checkpoint (--epochs may be raised, "
                                                             "run settings changed)")
    t.add_argument("--branch-from", metavar="RUN.h5", help="start this new run from another run's checkpoint (RUN.h5's "
                                                          "RUN.h5.ckpt, or a .ckpt file), continued with this model's "
                                                          "model.eta, gamma, eta_feedback and np_baseline_rate, "
                                                          "test.readout and n_test, train.epochs and test_every and "
                                                          "the [run] keys a resume may change; every other key must "
                                                          "match the checkpoint's")
    again.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    t.add_argument("--backend", choices=["numba", "numpy"], help="numba kernels (fast) or the NumPy reference")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    t.add_argument("--record", action="append", metavar="PROBE",
                   help="record a probe (repeatable; replaces record.probes), e.g. 'spikes layers=h1,h2 random=50', "
                        "'psp,modulator layers=h1 neurons=0,7', or 'fig4' for the paper's Fig. 4")
    t.add_argument("--record-windows", type=lambda s: [w for w in s.split(",") if w], metavar="W,W,...",
                   help="parts of training the probes record, START:LENGTH with START a step, P%% or end, "
                        "e.g. 0:200,50%%:200,end:200 (default: the whole run)")
    t.add_argument("--record-every", type=int_at_least(0), metavar="K",
                   help="measure firing rates, alignment angles and saturation every K steps (0: off; default "
                        "1000); how often a probe samples is its own every=K, as in 'psp layers=h1 every=10'")
    t.add_argument("--record-test", action="store_true", help="record the probes during test passes too")
    t.add_argument("--record-test-steps", type=int_at_least(0), metavar="N",
                   help="record the first N steps of each test pass (0: all of them)")
    t.add_argument("--record-format", choices=["packed", "events"], help="spikes as bit-packed rows or (step, index) events")
    t.set_defaults(func=_train)

    s = sub.add_parser("test", help="test a saved run's weights (final, or its checkpoint's while it runs)",
                       description="Test the final weights of a run file on its test set, plasticity off; of a run "
                                   "still running or cut off, the weights of its checkpoint (RUN.h5.ckpt), which "
                                   "may also be given itself.")
    s.add_argument("run", metavar="RUN.h5", help="a run file, or a checkpoint (RUN.h5.ckpt)")
    s.add_argument("--data", metavar="DIR", help="folder with the four MNIST files")
    s.add_argument("--n-test", type=int_at_least(1), help="test on the first N test images only")
    s.add_argument("--split", choices=["test", "train"], default="test",
                   help="train: the same test on the training images (training error; with --n-test, the first N)")
    s.add_argument("--dataset", choices=["mnist", "mnist-subset"],
                   help="test on this dataset instead of the run's own: mnist tests a run trained on the bundled "
                        "subset on the full MNIST test set (all 10,000 images unless --n-test)")
    s.add_argument("--json", action="store_true", help="print one JSON object (test_error, n_test, epochs, steps, ...)")
    s.set_defaults(func=_test)

    g = sub.add_parser("plot", help="draw a figure from a saved run (fig4, raster, traces, error, angles, rates, saturation)",
                       description="Draw a figure from a run file, also while the run is still writing it: fig4 "
                                   "(the layout of the paper's Fig. 4), raster, traces (PSP and delta), error (test "
                                   "error curve), angles (alignment angles), rates (firing-rate histograms), saturation "
                                   "(mean sigma'(V) and |V| per layer over training).")
    g.add_argument("kind", choices=["fig4", "raster", "traces", "error", "angles", "rates", "saturation"])
    g.add_argument("run", metavar="RUN.h5", nargs="+", help="the run file (error: one or several, drawn over each other)")
    g.add_argument("--out", "-o", metavar="OUT.png", required=True, help="figure file: .png, .pdf or .svg")
    g.add_argument("--layer", help="layer of raster, traces or rates (in, h1, ..., out)")
    g.add_argument("--window", type=_window_arg, metavar="A:B", help="steps A..B-1, or the run's recording window "
                                                                     "number (raster, traces)")
    g.add_argument("--phase", choices=["train", "test"], default="train", help="training or test-pass recordings")
    g.add_argument("--steps", type=int_at_least(1), help="fig4: at most this many steps per column")
    g.add_argument("--at", type=int_at_least(0), metavar="STEP",
                   help="rates: the sample nearest this training step (default: the last)")
    g.add_argument("--dpi", type=int_at_least(1), default=150)
    g.set_defaults(func=_plot)

    e = sub.add_parser("experiment", help="run one of the paper's rate-based experiments (fig2, fig3a, fig3d, fig5)")
    e.add_argument("name", help="fig2 | fig3a | fig3d | fig5")
    e.add_argument("--out", "-o", help="folder for the figure and numbers (default: "
                   "runs/rate-NAME, runs/rate-NAME-quick with --quick)")
    e.add_argument("--model", metavar="FILE", help="a model file of this experiment to run instead of the bundled "
                                                   "models/rate-NAME.toml (an edited copy; every key is required)")
    e.add_argument("--quick", action="store_true", help="the small version (seconds)")
    e.add_argument("--seed", type=int_at_least(0), default=0)
    e.add_argument("--data", metavar="DIR", help="folder with the four MNIST files (fig3a)")
    again = e.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the checkpoint a stopped fig3a left in the "
                                                             "folder (the same --seed, --quick and model file)")
    again.add_argument("--overwrite", action="store_true", help="start again, deleting such a checkpoint")
    e.set_defaults(func=_experiment)

    c = sub.add_parser("curve", help="print a run's test-error curve (every read-out), alignment angles or "
                                     "saturation over training as CSV")
    c.add_argument("run", metavar="RUN.h5")
    c.add_argument("--of", choices=["error", "angles", "saturation"], default="error",
                   help="error: one row per test pass (default); angles: W vs B and modulator angles per layer "
                        "(degrees); saturation: mean |V|, |W| and sigma'(V) per layer; rows every "
                        "record.measure_every steps (step = training steps done)")
    c.set_defaults(func=_curve)

    n = sub.add_parser("info", help="where a saved or running run stands: steps, state, last and best test pass")
    n.add_argument("run", nargs="+", help="a run file (RUN.h5), also one still being written; with several, "
                                          "also the settings that differ between them")
    n.add_argument("--json", action="store_true", help="print the summary as JSON (a list for several runs)")
    n.set_defaults(func=_info)

    a = sub.add_parser("align", help="alignment of W with B inside the class-error subspace (markdown table)",
                       description="For each run file, checkpoint or model (its fresh network), per hidden layer: "
                                   "the flattened angle between W^T and B the run file records, the value that angle "
                                   "takes for a W equal to B in the class-error subspace and zero elsewhere (the "
                                   "'ceiling' of alignment by class errors alone), and the angle inside the class-error "
                                   "subspace, where the error that decides the guess lies (spikefa.alignment).")
    a.add_argument("files", nargs="+", metavar="RUN.h5|CKPT|MODEL")
    a.add_argument("--share-steps", type=int, default=0, metavar="T",
                   help="'error in Q' as a mean over T steps on training images (needs the data; default 0: "
                        "one snapshot of the saved state)")
    a.add_argument("--data", metavar="DIR", help="folder with the four MNIST files (with --share-steps)")
    a.set_defaults(func=_align)

    d = sub.add_parser("download-mnist", help="download and verify the four MNIST files")
    d.add_argument("dest", nargs="?", help="folder (default ~/.cache/spikefa/mnist)")
    d.set_defaults(func=_download)

    bn = sub.add_parser("bench", add_help=False, help="time one training step: spikefa vs NumPy twin vs Brian2",
                        description="Benchmark; `spikefa bench --help` lists its options.")
    bn.add_argument("options", nargs="*", help="see `spikefa bench --help`")

    w = sub.add_parser("sweep", help="run a sweep over seeds, variants and model keys on Dask",
                       description="Run every point of a sweep file (a grid or list over seeds, feedback variants and "
                                   "model keys) as its own run file in the sweep folder, on a local Dask cluster or "
                                   "an existing one. Finished runs are re-used; a failed run does not stop the others. "
                                   "See spikefa/sweep.py for the file format.")
    w.add_argument("sweep", metavar="SWEEP.toml", help="sweep file")
    w.add_argument("--out", "-o", metavar="DIR", help="sweep folder (default: the file's out, else runs/sweep-NAME)")
    w.add_argument("--workers", "-j", type=int_at_least(1), help="worker processes of the local cluster (default: the file's "
                                                     "workers, else the cores this process may use)")
    w.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster (tcp://host:8786); its "
                                                          "workers must see the sweep folder")
    w.add_argument("--data", metavar="DIR", help="folder with the four MNIST files, as the workers see it")
    w.add_argument("--dashboard-address", default=":8787", help="dashboard of the local cluster (default :8787)")
    w.add_argument("--dry-run", action="store_true", help="list the runs and which are done; run nothing")
    w.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    w.set_defaults(func=_sweep)

    r = sub.add_parser("sweep-report", help="table and error-curve figure of a sweep folder",
                       description="Write summary.csv, summary.md (final test error mean, s.d. and n per condition) "
                                   "and error-curves.png (mean +- 1 s.d. over seeds) for a sweep folder.")
    r.add_argument("sweep_dir", metavar="SWEEP_DIR")
    r.add_argument("--out", "-o", metavar="DIR", help="folder for the table and figure (default SWEEP_DIR)")
    r.set_defaults(func=_sweep_report)

    x = sub.add_parser("export-brian2", help="write a model as a standalone Brian2 script (+ .npz of its arrays)",
                       description="Write a readable, standalone Brian2 script of a model (one NeuronGroup per "
                                   "population, Synapses per projection, plasticity as Brian2 code, the step "
                                   "order of docs/model.md as schedule slots) and its weights, state and "
                                   "stimulus in an .npz beside "
                                   "it. Stimulus: images of the bundled MNIST subset in the seeded training order.")
    x.add_argument("model", help="bundled model name or path to a .toml model file")
    x.add_argument("--from", dest="run_file", metavar="RUN.h5", help="export the final weights and state of this run "
                                                                    "(of a run still running or stopped: its "
                                                                    "checkpoint; default: a fresh network)")
    x.add_argument("--out", "-o", metavar="SCRIPT.py", required=True, help="the script; the arrays go to SCRIPT.npz")
    x.add_argument("--images", type=int_at_least(1), default=100, help="images in the stimulus (default 100)")
    x.add_argument("--noise-steps", type=int_at_least(0), default=0, metavar="N",
                   help="include spikefa's uniforms for N steps, so that Brian2 takes the same random decisions "
                        "(default 0: the script draws its own noise)")
    x.add_argument("--test", action="store_true", help="plasticity off, test images (default: training); the script then "
                                                       "prints its test error on the images it ran")
    x.add_argument("--seed", type=int_at_least(0), help="random seed (overrides run.seed)")
    x.set_defaults(func=_export_brian2)

    v = sub.add_parser("validate", help="check spikefa against its Brian2 export, step for step",
                       description="Run spikefa and its Brian2 export from the same weights and noise and print, per "
                                   "population, the first step where spikes differ and the largest PSP, feedback "
                                   "PSP and weight differences against dtype-scaled tolerances (exit status 1 on "
                                   "failure). With --statistical: independent noise, several seeds, firing rates "
                                   "and test errors compared by paired t-tests.")
    v.add_argument("model", help="bundled model name or path to a .toml model file")
    v.add_argument("--steps", type=int_at_least(1), help="steps with plasticity (default 500; --statistical: training steps, "
                                             "default 500)")
    v.add_argument("--dtype", choices=["float64", "float32"],
                   help="spikefa's dtype (default float64; --statistical: the model's); Brian2 computes in float64")
    v.add_argument("--seed", type=int_at_least(0), help="random seed (overrides run.seed; --statistical: the first seed)")
    v.add_argument("--target", choices=["numpy", "cython"], help="Brian2 code generation target (default numpy)")
    v.add_argument("--check-every", type=int_at_least(1), default=100, metavar="N", help="steps between weight comparisons")
    v.add_argument("--from", dest="run_file", metavar="RUN.h5", help="start from the final weights and state of this "
                                                                    "run (default: a fresh network)")
    v.add_argument("--statistical", action="store_true", help="independent noise: compare rates and test errors "
                                                              "over seeds")
    v.add_argument("--seeds", type=int_at_least(1), default=5, help="--statistical: number of seeds (default 5)")
    v.add_argument("--n-test", type=int_at_least(1), default=100, help="--statistical: test images (default 100)")
    v.set_defaults(func=_validate)
    return p


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] != ["train"]:
        return _main(argv)
    # Ctrl-C from here on is a request that training takes over (spikefa.interrupt)
    stop = StopRequest()
    stop.install()
    try:
        return _main(argv)
    finally:
        stop.uninstall()  # main() may be called from Python: leave the handlers as they were


def _main(argv) -> int:
    from .data import DataError
    from .runfile import RunFileError

    try:
        if argv[:1] == ["bench"]:  # the benchmark parses its own options (and its own --help)
            from .bench import main as bench_main

            return bench_main(argv[1:])
        args = build_parser().parse_args(argv)
        args.argv = argv  # (what a hint of another command to run starts from)
        if argv[:1] != ["train"]:  # training has its StopRequest (main); elsewhere SIGTERM is Ctrl-C
            signal.signal(signal.SIGTERM, _sigterm)
            if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
                # started in the background (`&`, nohup), which ignores SIGINT: `kill -INT`
                # stops a sweep or experiment as it stops a training run
                signal.signal(signal.SIGINT, signal.default_int_handler)
        args.func(args)
    except (ConfigError, DataError, RunFileError) as exc:
        print(f"spikefa: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # training has said what it kept (spikefa.train.train)
        print("spikefa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output stopped (spikefa curve RUN.h5 | head): not an error; keep
        # Python from complaining again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a command's own one-line error
            print(exc.code, file=sys.stderr)
            return 2
        raise
    except (ValueError, OSError, MemoryError) as exc:
        # bad input, refused by spikefa's own checks or by a library it reached (an
        # unwritable output, a file that is not text, an array too large): one line, the
        # traceback only on request. An error a library raised may also be a fault of
        # spikefa's, so the line says where it was raised and how to see the traceback.
        if os.environ.get("SPIKEFA_TRACEBACK"):
            raise
        print(f"spikefa: error: {_one_line(exc)}", file=sys.stderr)
        where = _raised_in(exc)
        if where is not None:
            print(f"(raised in {where}; set SPIKEFA_TRACEBACK=1 to see the traceback)", file=sys.stderr)
        return 2
    return 0


def _raised_in(exc: BaseException) -> str | None:
    """Where ``exc`` was raised, unless spikefa raised it on purpose (a ``raise`` statement
    of its own, with a message meant for the user): the module outside spikefa (``numpy``,
    ``h5py``, ...) or the spikefa line whose call failed."""
    import linecache

    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "?")
    if module == "spikefa" or module.startswith("spikefa."):
        line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).strip()
        return None if line.startswith("raise") else f"{module}, line {tb.tb_lineno}"
    return module.split(".")[0]


def _one_line(exc: BaseException) -> str:
    """A library's error as the user's problem, in one line."""
    import errno

    if isinstance(exc, MemoryError):
        return f"not enough memory ({' '.join(str(exc).split())}): is a size such as model.layers too large?"
    if isinstance(exc, OSError) and exc.filename is not None:
        name = exc.filename
        if exc.errno in (errno.EEXIST, errno.ENOTDIR):
            return f"cannot write {name}: a part of that path is a file, not a folder"
        if exc.errno == errno.ENOENT:
            return f"cannot write or find {name}: no such folder or file"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"cannot write {name}: permission denied (a read-only place?)"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"cannot write {name}: no space left on its device (a full disk, or a quota reached)"
        return f"{name}: {exc.strerror or exc}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
