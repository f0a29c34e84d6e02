"""The Python examples of README.md and docs/file-format.md run as written (against a short
run of the README's own Fig. 4 command), so that the documentation cannot drift from the API."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

from spikefa.cli import main

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(doc: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), flags=re.S)


@pytest.fixture(scope="module")
def fig4_run(tmp_path_factory):
    """The README's `spikefa train small --record fig4 ...` command, a hundredth as long."""
    where = tmp_path_factory.mktemp("docs")
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^spikefa train small --record fig4 .*--out runs/small-fig4\.h5$", readme, flags=re.M)
    assert command, "the README's Fig. 4 command is gone: update this test"
    args = command.group(0).split()[1:] + ["--epochs", "0.1", "-q"]
    args[args.index("--out") + 1] = str(where / "runs" / "small-fig4.h5")
    assert main(args) == 0
    return where


def run_blocks(blocks, where, monkeypatch, edits=()):
    matplotlib.use("Agg")
    monkeypatch.chdir(where)
    for block in blocks:
        for old, new in edits:
            block = block.replace(old, new)
        exec(compile(block, "<doc example>", "exec"), {})


def test_readme_python_examples_run(fig4_run, monkeypatch):
    blocks = [b for b in python_blocks("README.md") if "spikefa.sweep" not in b]  # that one: test_sweep.py
    assert len(blocks) == 2
    shorter = ('load_config("small")', 'load_config("small").replace(train={"epochs": 0.05})')
    assert shorter[0] in blocks[1], "the README's training example changed: update this test"
    run_blocks(blocks, fig4_run, monkeypatch, edits=[shorter])
    assert (fig4_run / "runs" / "small-transport.h5").exists()


def test_file_format_examples_run(fig4_run, monkeypatch):
    blocks = python_blocks("docs/file-format.md")
    assert len(blocks) == 2
    run_blocks(blocks, fig4_run, monkeypatch, edits=[('"run.h5"', '"runs/small-fig4.h5"')])


def test_every_model_file_key_is_documented_where_docs_model_md_says():
    """docs/model.md said every key of a model file is written out in
    models/lillicrap2016-fig4.toml, which has no [record] table: those keys are in
    docs/file-format.md's [record] table, and model.md now says so."""
    import tomllib

    from spikefa.config import Config

    model_file = tomllib.loads((ROOT / "models" / "lillicrap2016-fig4.toml").read_text())
    in_model_file = {f"{s}.{k}" for s, table in model_file.items() if isinstance(table, dict) for k in table}
    record_table = (ROOT / "docs" / "file-format.md").read_text().split("## What is recorded: `[record]`")[1]
    for key in Config().flat():
        if "." not in key:  # name, description
            assert key in model_file, key
            continue
        section, name = key.split(".", 1)
        if section == "record":
            assert f"| `{name}` |" in record_table, key
        else:
            assert key in in_model_file, key
    intro = (ROOT / "docs" / "model.md").read_text().split("The ones a study most often changes")[0]
    assert "[record]" in intro and "file-format.md" in intro


def test_minimum_python_is_what_the_code_needs():
    """The README and setup.cfg said Python >= 3.10, but spikefa imports tomllib (the
    standard library's TOML reader, new in 3.11) unconditionally: on 3.10 `import
    spikefa.config` fails. The stated minimum must be one version, and at least 3.11."""
    import ast

    readme = re.search(r"Python >= (\d+)\.(\d+)", (ROOT / "README.md").read_text())
    setup = re.search(r"python_requires = >=(\d+)\.(\d+)", (ROOT / "setup.cfg").read_text())
    assert readme and setup
    stated = tuple(map(int, readme.groups()))
    assert stated == tuple(map(int, setup.groups()))
    uses_tomllib = any(
        isinstance(node, ast.Import) and any(a.name == "tomllib" for a in node.names)
        for path in (ROOT / "spikefa").glob("*.py") for node in ast.walk(ast.parse(path.read_text())))
    if uses_tomllib:
        assert stated >= (3, 11), f"spikefa imports tomllib (Python 3.11+), but the stated minimum is {stated}"


def test_model_md_names_every_default_the_paper_model_file_departs_from():
    """docs/model.md said the config classes hold the same defaults as
    models/lillicrap2016-fig4.toml, but that file sets run.deferred_steps = 32 and
    run.forward_pass = "incremental" against the defaults 8 and "full": each key on which
    they differ must be named, with both values, in the sentence that says so."""
    import tomllib

    from spikefa.config import Config

    model_file = tomllib.loads((ROOT / "models" / "lillicrap2016-fig4.toml").read_text())
    defaults = Config().flat()
    differ = {f"{s}.{k}": (defaults[f"{s}.{k}"], v) for s, table in model_file.items() if isinstance(table, dict)
              for k, v in table.items() if (list(defaults[f"{s}.{k}"]) if isinstance(defaults[f"{s}.{k}"], tuple)
                                            else defaults[f"{s}.{k}"]) != v}
    intro = (ROOT / "docs" / "model.md").read_text().split("The ones a study most often changes")[0]
    sentence = " ".join(intro.split("hold the same", 1)[1].split("[record]")[0].split())
    for key, (default, there) in differ.items():
        assert f"`{key}`" in sentence, key
        for value in (default, there):
            assert (f'"{value}"' if isinstance(value, str) else f"{value}") in sentence, (key, value)


def _layout_rows() -> dict:
    """docs/file-format.md's layout table: ``{path pattern: the row's text}``."""
    text = (ROOT / "docs" / "file-format.md").read_text().split("## Layout")[1].split("\n\n")[1]
    rows, above = {}, ""
    for line in text.splitlines():
        if m := re.match(r"\| `([^`]+)`", line):
            rows[m.group(1)] = line + (above if "attrs as above" in line else "")  # (the row above's)
            above = line
    return rows


def _row_for(rows: dict, path: str) -> str:
    """The layout row that documents the group ``path`` (``/rates``, ``/final/h1``,
    ``/record/train/h1/psp``): of the patterns that match it part for part (a ``{...}``
    part matches any name, a ``...`` part the rest), the one with most literal parts."""
    parts = path.strip("/").split("/")
    best = None
    for pattern in rows:
        pat = [p for p in pattern.strip("/").split("/") if p]
        if pattern == "/" or not pat:
            continue
        ok = len(parts) >= len(pat) if pat[-1] == "..." else len(parts) == len(pat)
        exact = 0
        for want, have in zip(pat, parts):
            if want == "...":
                break
            ok &= want == have or want.startswith("{")  # ({layer}, {h1..out}: any name)
            exact += want == have
        if ok and (best is None or (exact, len(pat)) > best[0]):
            best = (exact, len(pat)), pattern
    assert best is not None, f"no row of docs/file-format.md's layout table documents {path}"
    return rows[best[1]]


def test_file_format_names_every_attribute_a_run_file_has(fig4_run):
    """Every attribute a run file holds is named in the layout row of its group in
    docs/file-format.md (the root's in the `/` row, a test recording's in the rows of the
    training recordings it repeats). /rates, /angles and /saturation carry an attribute
    `every` (record.measure_every) that the layout did not name."""
    import h5py

    rows = _layout_rows()
    with h5py.File(fig4_run / "runs" / "small-fig4.h5", "r") as f:
        missing = [f"/ attr {a}" for a in f.attrs if f"`{a}`" not in rows["/"]]

        def visit(name, obj):
            if not isinstance(obj, h5py.Group) or not obj.attrs:
                return
            path = "/" + name.replace("record/test/", "record/train/", 1)
            row = rows["/record/"] if path == "/record" else _row_for(rows, path)
            missing.extend(f"/{name} attr {a}" for a in obj.attrs if f"`{a}`" not in row)

        f.visititems(visit)
    assert not missing, missing


def test_branched_from_is_the_checkpoint_as_documented(tmp_path):
    """docs/file-format.md said `branched_from` holds the checkpoint "as given", but
    `--branch-from RUN.h5` records `RUN.h5.ckpt`, the checkpoint that the run file names."""
    import h5py

    old, new = tmp_path / "old.h5", tmp_path / "new.h5"
    assert main(["train", "tiny", "--epochs", "0.01", "-q", "--out", str(old)]) == 0
    assert main(["train", "tiny", "--epochs", "0.02", "-q", "--branch-from", str(old), "--out", str(new)]) == 0
    with h5py.File(new, "r") as f:
        recorded = f.attrs["branched_from"]
    assert recorded == f"{old}.ckpt"
    row = _layout_rows()["/"]
    said = row.split("`branched_from` and `branch_step`")[1].split(";")[0]
    assert "`--branch-from RUN.h5` records `RUN.h5.ckpt`" in said, said


def _train_help(option: str) -> str:
    from spikefa.cli import build_parser

    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" train"))
    action = next(a for a in train._actions if option in a.option_strings)
    return " ".join(action.help.split())


def test_train_out_help_says_which_set_keys_stay_out_of_the_default_name():
    """`spikefa train --help` said -SECTION.KEY=VALUE is added to the default run file
    name "for each --set", but the keys a resume may change (train.epochs,
    train.test_every, the [run] keys but run.seed) and [record] keys stay out of it, so
    that `--resume` with another --epochs finds its own file."""
    from spikefa.cli import _set_out
    from spikefa.config import load_config
    from spikefa.train import RESUMABLE_KEYS

    cfg = load_config("tiny")
    help_text = _train_help("--out")
    for section, key in sorted(RESUMABLE_KEYS) + [("record", "flush_seconds")]:
        value = 2 if key != "backend" else "numpy"
        assert _set_out(cfg, None, [(section, key, value)]).name == "tiny-fa-seed1.h5", (section, key)
        named = f"{section}.{key}" in help_text or f"[{section}] keys" in help_text
        assert named, f"--out's help does not say that --set {section}.{key} stays out of the name"
    assert _set_out(cfg, None, [("run", "seed", 2)]).name != "tiny-fa-seed2.h5"  # run.seed is named
    assert "run.seed" in help_text


def test_train_branch_from_help_names_what_a_branch_may_change():
    """`spikefa train --help` said a branch continues "with this model's learning rates,
    decay, test settings and epochs", but of the test settings only test.readout and
    test.n_test may change (test.steps_per_image is refused): the help names each key."""
    from spikefa.train import BRANCHABLE_KEYS, RESUMABLE_KEYS

    help_text = _train_help("--branch-from")
    for section, key in sorted(BRANCHABLE_KEYS - RESUMABLE_KEYS) + [("train", "epochs"), ("train", "test_every")]:
        assert f"{section}.{key}" in help_text or f" {key}" in help_text, (section, key)
    assert "test settings" not in help_text
    assert {("run", k) for k in ("backend", "block_steps", "checkpoint_minutes", "deferred_steps",
                                 "forward_pass")} <= BRANCHABLE_KEYS and "[run] keys a resume may change" in help_text


def test_test_help_says_a_run_still_going_is_tested_from_its_checkpoint(tmp_path, capsys):
    """`spikefa test --help` said it tests "the final weights of a run file", but of a run
    still running or cut off it tests the checkpoint's weights (what the README says), and
    a checkpoint file may be given itself."""
    import json
    import shutil

    from spikefa.cli import build_parser

    parser = build_parser()
    test = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" test"))
    assert "checkpoint" in " ".join(test.description.split())
    run = tmp_path / "r.h5"
    assert main(["train", "tiny", "--epochs", "0.01", "-q", "--out", str(run)]) == 0
    capsys.readouterr()
    shutil.copy(f"{run}.ckpt", tmp_path / "c.ckpt")
    assert main(["test", str(tmp_path / "c.ckpt"), "--n-test", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == "checkpoint"
