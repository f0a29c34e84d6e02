"""Tests of the MNIST data layer (spikefa.data).

Everything written goes to tmp_path; nothing touches the network (download_mnist is
exercised with file:// mirrors). The full-MNIST tests read the folder named by
SPIKEFA_MNIST_DIR (set by CI), else ../shared/data/mnist next to the checkout, else skip.
"""

import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from spikefa import data
from spikefa.data import DataError

TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
ALL_NAMES = [name for pair in data.MNIST_FILES.values() for name in pair]
TRAIN_IMAGES, TRAIN_LABELS = data.MNIST_FILES["train"]


# --------------------------------------------------------------------------- fixtures


def _full_mnist_dir():
    env = os.environ.get(data.ENV_VAR)
    if env:
        return Path(env)
    fallback = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
    return fallback if fallback.is_dir() else None


@pytest.fixture(scope="module")
def full_dir():
    folder = _full_mnist_dir()
    if folder is None:
        pytest.skip(f"full MNIST not available: set {data.ENV_VAR}")
    return folder


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No env var, an empty fake repo root and an empty cache: nothing to find."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    repo = tmp_path / "repo"
    cache = tmp_path / "cache"
    repo.mkdir()
    cache.mkdir()
    monkeypatch.setattr(data, "_REPO_ROOT", repo)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return repo, cache


def _subset_raw(name):
    """Decompressed bytes of one bundled subset file."""
    return gzip.decompress((data.bundled_data_dir() / f"{name}{data.SUBSET_SUFFIX}.gz").read_bytes())


def _idx(array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape) + array.tobytes()


@pytest.fixture
def fake_bundle(tmp_path, monkeypatch):
    """A writable copy of the bundled subset that load_subset reads instead of the real one."""
    repo = tmp_path / "bundle-repo"
    folder = repo / "data" / "mnist-subset"
    shutil.copytree(data.bundled_data_dir(), folder)
    monkeypatch.setattr(data, "_REPO_ROOT", repo)
    return folder


def _touch_mnist(folder, gz=True):
    """Empty placeholder files: enough for find_mnist_dir, which only checks presence."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ALL_NAMES:
        (folder / (f"{name}.gz" if gz else name)).touch()
    return folder


# --------------------------------------------------------------------------- full MNIST


def test_full_mnist_both_splits(full_dir):
    for split, n, counts, first_label in (
        ("train", 60000, TRAIN_CLASS_COUNTS, 5),
        ("test", 10000, TEST_CLASS_COUNTS, 7),
    ):
        images, labels = data.load_mnist(split, data_dir=full_dir)  # verify=True: md5 checked
        assert images.shape == (n, 784) and images.dtype == np.uint8
        assert images.flags.c_contiguous and not images.flags.writeable
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert not labels.flags.writeable
        assert np.bincount(labels, minlength=10).tolist() == counts
        assert labels[0] == first_label
        if split == "train":
            assert abs(images.mean() / 255.0 - 0.1307) < 1e-3


def test_full_mnist_found_through_env_var_and_cached(full_dir, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(full_dir))
    assert data.find_mnist_dir() == full_dir
    first = data.load_dataset("mnist", "test")
    second = data.load_mnist("test")
    assert first[0] is second[0] and first[1] is second[1]


# --------------------------------------------------------------------------- subset


@pytest.mark.parametrize("split, n, per_class", [("train", 2000, 200), ("test", 500, 50)])
def test_subset_loads_stratified_and_verified(split, n, per_class):
    images, labels = data.load_dataset("mnist-subset", split)
    assert images.shape == (n, 784) and images.dtype == np.uint8 and images.flags.c_contiguous
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
    assert 0 < images.mean() < 255
    # The md5 table in the code is the one of the committed files.
    for name in data.MNIST_FILES[split]:
        assert hashlib.md5(_subset_raw(name)).hexdigest() == data.SUBSET_MD5[name]


def test_subset_is_read_only_and_cached():
    images, labels = data.load_subset("train")
    with pytest.raises(ValueError):
        images[0, 0] = 1
    with pytest.raises(ValueError):
        labels[0] = 1
    again = data.load_subset("train")
    assert again[0] is images and again[1] is labels


def test_subset_images_come_from_full_mnist(full_dir):
    """Every subset training image is a training image of the full set (no test leakage)."""
    full_images, full_labels = data.load_mnist("train", data_dir=full_dir)
    sub_images, sub_labels = data.load_subset("train")
    index = {row.tobytes(): label for row, label in zip(full_images, full_labels)}
    assert all(index.get(row.tobytes()) == label for row, label in zip(sub_images, sub_labels))


def test_raw_files_and_gzip_detected_by_content(fake_bundle):
    # Unpack train images to a raw file and store the test labels raw under a .gz name.
    raw = _subset_raw(TRAIN_IMAGES)
    (fake_bundle / f"{TRAIN_IMAGES}{data.SUBSET_SUFFIX}.gz").unlink()
    (fake_bundle / f"{TRAIN_IMAGES}{data.SUBSET_SUFFIX}").write_bytes(raw)
    test_labels = data.MNIST_FILES["test"][1]
    (fake_bundle / f"{test_labels}{data.SUBSET_SUFFIX}.gz").write_bytes(_subset_raw(test_labels))
    images, _ = data.load_subset("train")
    assert images.tobytes() == raw[16:]
    _, labels = data.load_subset("test")
    assert labels.shape == (500,)


# --------------------------------------------------------------------------- bad input


def test_wrong_magic_number(tmp_path):
    raw = bytearray(_subset_raw(TRAIN_IMAGES))
    raw[2] = 0x0D  # float32 type code instead of unsigned byte
    path = tmp_path / TRAIN_IMAGES
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="magic") as err:
        data.read_idx(path)
    assert str(path) in str(err.value) and "0x00000d03" in str(err.value)
    assert "0x00000803" in str(err.value)


def test_labels_file_where_images_expected(tmp_path):
    path = tmp_path / "swapped"
    path.write_bytes(_subset_raw(TRAIN_LABELS))
    with pytest.raises(DataError, match="0x00000801") as err:
        data.read_idx(path, expect_dims=(28, 28))
    assert "0x00000803" in str(err.value) and "swapped" in str(err.value)


def test_truncated_file(tmp_path):
    raw = _subset_raw(TRAIN_IMAGES)
    path = tmp_path / f"{TRAIN_IMAGES}.gz"
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(DataError, match="truncated") as err:
        data.read_idx(path)
    msg = str(err.value)
    assert str(path) in msg and str(len(raw)) in msg and str(len(raw) - 100) in msg


def test_over_long_file(tmp_path):
    raw = _subset_raw(TRAIN_LABELS)
    path = tmp_path / TRAIN_LABELS
    path.write_bytes(raw + b"\x00")
    with pytest.raises(DataError, match="over-long") as err:
        data.read_idx(path)
    assert str(len(raw)) in str(err.value) and str(len(raw) + 1) in str(err.value)


def test_header_shorter_than_itself(tmp_path):
    path = tmp_path / "stub"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="header"):
        data.read_idx(path)


@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_corrupt_gzip(tmp_path, damage):
    gz = (data.bundled_data_dir() / f"{TRAIN_IMAGES}{data.SUBSET_SUFFIX}.gz").read_bytes()
    if damage == "flip":
        mid = len(gz) // 2
        gz = gz[:mid] + bytes(b ^ 0xFF for b in gz[mid : mid + 64]) + gz[mid + 64 :]
    else:
        gz = gz[: len(gz) // 2]
    path = tmp_path / f"{TRAIN_IMAGES}.gz"
    path.write_bytes(gz)
    with pytest.raises(DataError, match="gzip") as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


def test_wrong_checksum(fake_bundle):
    raw = bytearray(_subset_raw(TRAIN_IMAGES))
    raw[-1] ^= 0x01  # still a valid IDX file, one pixel different
    actual = hashlib.md5(raw).hexdigest()
    (fake_bundle / f"{TRAIN_IMAGES}{data.SUBSET_SUFFIX}.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="md5") as err:
        data.load_subset("train")
    msg = str(err.value)
    assert TRAIN_IMAGES in msg and actual in msg and data.SUBSET_MD5[TRAIN_IMAGES] in msg


def test_full_mnist_checksum_and_count(tmp_path):
    # The subset under the full set's names: well-formed, but not MNIST.
    folder = tmp_path / "not-mnist"
    folder.mkdir()
    for name in ALL_NAMES:
        shutil.copy(data.bundled_data_dir() / f"{name}{data.SUBSET_SUFFIX}.gz", folder / f"{name}.gz")
    with pytest.raises(DataError, match="md5") as err:
        data.load_mnist("train", data_dir=folder)
    assert data.MNIST_MD5[TRAIN_IMAGES] in str(err.value)
    with pytest.raises(DataError, match="2000 examples, expected 60000"):
        data.load_mnist("train", data_dir=folder, verify=False)


def test_image_label_count_mismatch(fake_bundle):
    labels = np.frombuffer(_subset_raw(TRAIN_LABELS), np.uint8, offset=8)
    (fake_bundle / f"{TRAIN_LABELS}{data.SUBSET_SUFFIX}.gz").write_bytes(gzip.compress(_idx(labels[:-1])))
    # The md5 would catch it first, so look at the structural check without it.
    with pytest.raises(DataError) as err:
        data._load_from(fake_bundle, "train", 2000, None, "", suffix=data.SUBSET_SUFFIX)
    msg = str(err.value)
    assert "2000 images" in msg and "1999 labels" in msg and TRAIN_LABELS in msg


@pytest.mark.parametrize("label", [12, 10])
def test_label_out_of_range(fake_bundle, label):
    """Digits are 0..9: 10, the first value outside, is refused too (the boundary, not
    just any big value)."""
    labels = np.frombuffer(_subset_raw(TRAIN_LABELS), np.uint8, offset=8).copy()
    labels[3] = label
    (fake_bundle / f"{TRAIN_LABELS}{data.SUBSET_SUFFIX}.gz").write_bytes(gzip.compress(_idx(labels)))
    with pytest.raises(DataError, match=f"label value {label} outside 0..9"):
        data._load_from(fake_bundle, "train", 2000, None, "", suffix=data.SUBSET_SUFFIX)


def test_two_dimensional_idx_is_not_mnist(tmp_path):
    """MNIST IDX files have 1 (labels) or 3 (images) dimensions: a well-formed 2-D
    unsigned-byte file (magic 0x00000802) is refused, not read as some (n, m) array."""
    path = tmp_path / "two-d"
    path.write_bytes(_idx(np.arange(6).reshape(2, 3)))
    assert path.read_bytes()[:4] == b"\x00\x00\x08\x02"
    with pytest.raises(DataError, match="bad IDX magic number 0x00000802"):
        data.read_idx(path)


def test_a_raw_file_is_preferred_to_its_gz(fake_bundle):
    """With both NAME and NAME.gz in a folder the raw file is read (a user who unpacked
    and edited a file gets what is on disk under the plain name)."""
    raw = bytearray(_subset_raw(TRAIN_IMAGES))
    raw[-1] ^= 0x01
    (fake_bundle / f"{TRAIN_IMAGES}{data.SUBSET_SUFFIX}").write_bytes(bytes(raw))
    assert (fake_bundle / f"{TRAIN_IMAGES}{data.SUBSET_SUFFIX}.gz").exists()
    images, _ = data._load_from(fake_bundle, "train", 2000, None, "", suffix=data.SUBSET_SUFFIX)
    assert images.tobytes() == bytes(raw[16:])

def test_missing_everywhere_lists_places(isolated):
    repo, cache = isolated
    with pytest.raises(DataError) as err:
        data.find_mnist_dir()
    msg = str(err.value)
    for expected in (
        str(repo / "data" / "mnist"),
        str(cache / "spikefa" / "mnist"),
        data.ENV_VAR,
        "download-mnist",
        "mnist-subset",
        "train-images-idx3-ubyte",
    ):
        assert expected in msg
    with pytest.raises(DataError, match="MNIST not found"):
        data.load_dataset("mnist", "train")


def test_cli_train_without_mnist_gives_the_command_that_trains_on_the_subset(tmp_path, capsys):
    """`spikefa train MODEL` without the full set: the data error, then the user's own
    command without --data and with the dataset set to the bundled subset (the advice named
    a 'dataset' key but not its table, train, nor --set). That command runs as printed."""
    import re
    import shlex

    from spikefa.cli import main

    out = tmp_path / "r.h5"
    assert main(["train", "lillicrap2016-fig4", "--data", str(tmp_path / "none"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"data_dir {tmp_path / 'none'} does not exist" in err
    line = (f"Or train on the bundled 2,000/500-image subset: `spikefa train lillicrap2016-fig4 --out {out} "
            f"--set train.dataset=mnist-subset`")
    assert line in err and not out.exists()
    # run as printed, for tiny set to the full set (seconds; fig4's network tests for minutes)
    assert main(["train", "tiny", "--set", "train.dataset=mnist", f"--data={tmp_path / 'none'}", "--epochs", "0.01",
                 "--quiet", "--out", str(out)]) == 2
    command = re.search(r"Or train on the bundled 2,000/500-image subset: `([^`]*)`", capsys.readouterr().err).group(1)
    assert command == f"spikefa train tiny --set train.dataset=mnist --epochs 0.01 --quiet --out {out} " \
                      f"--set train.dataset=mnist-subset"
    assert main(shlex.split(command)[1:]) == 0 and out.exists()


def test_explicit_dir_without_files_does_not_fall_through(isolated, tmp_path):
    repo, _ = isolated
    _touch_mnist(repo / "data" / "mnist")  # a valid place exists further down the order
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / f"{TRAIN_IMAGES}.gz").touch()
    with pytest.raises(DataError) as err:
        data.find_mnist_dir(empty)
    msg = str(err.value)
    assert str(empty) in msg and TRAIN_LABELS in msg and "t10k-images-idx3-ubyte" in msg
    assert f"{TRAIN_IMAGES}[.gz]" not in msg  # present, so not reported missing
    with pytest.raises(DataError, match="does not exist"):
        data.load_mnist("test", data_dir=tmp_path / "nowhere")


def test_env_var_without_files_is_an_error(isolated, tmp_path, monkeypatch):
    repo, _ = isolated
    _touch_mnist(repo / "data" / "mnist")
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "typo"))
    with pytest.raises(DataError, match=data.ENV_VAR) as err:
        data.find_mnist_dir()
    assert str(tmp_path / "typo") in str(err.value)


def test_search_order(isolated, tmp_path, monkeypatch):
    repo, cache = isolated
    in_cache = _touch_mnist(cache / "spikefa" / "mnist")
    assert data.find_mnist_dir() == in_cache
    in_repo = _touch_mnist(repo / "data" / "mnist", gz=False)
    assert data.find_mnist_dir() == in_repo
    in_env = _touch_mnist(tmp_path / "env")
    monkeypatch.setenv(data.ENV_VAR, str(in_env))
    assert data.find_mnist_dir() == in_env
    explicit = _touch_mnist(tmp_path / "explicit")
    assert data.find_mnist_dir(explicit) == explicit


def test_unknown_dataset_and_split():
    with pytest.raises(DataError) as err:
        data.load_dataset("fashion-mnist")
    msg = str(err.value)
    assert "'fashion-mnist'" in msg and "mnist, mnist-subset" in msg
    with pytest.raises(DataError, match="'validation'.*train, test"):
        data.load_dataset("mnist-subset", "validation")
    with pytest.raises(DataError, match="data_dir"):
        data.load_dataset("mnist-subset", "train", data_dir="/somewhere")


def test_bundled_dir_falls_back_to_sys_prefix(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_REPO_ROOT", tmp_path)
    monkeypatch.setattr(data.sys, "prefix", str(tmp_path / "env"))
    installed = tmp_path / "env" / "share" / "spikefa" / "data" / "mnist-subset"
    assert data.bundled_data_dir() == installed
    with pytest.raises(DataError, match="does not exist"):
        data.load_subset("train")


# --------------------------------------------------------------------------- download


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A file:// mirror holding the subset under the MNIST names; no network access allowed."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name in ALL_NAMES:
        shutil.copy(data.bundled_data_dir() / f"{name}{data.SUBSET_SUFFIX}.gz", folder / f"{name}.gz")
    fetched = []
    real_fetch = data._fetch

    def local_only(url, timeout):
        assert url.startswith("file://"), f"test tried the network: {url}"
        fetched.append(url)
        return real_fetch(url, timeout)

    monkeypatch.setattr(data, "_fetch", local_only)
    return folder, fetched


def test_download_from_good_mirror(mirror, tmp_path, monkeypatch):
    folder, fetched = mirror
    monkeypatch.setattr(data, "MNIST_MD5", dict(data.SUBSET_MD5))
    dest = tmp_path / "dest"
    broken = (tmp_path / "no-such-mirror").as_uri()
    assert data.download_mnist(dest, mirrors=[broken, folder.as_uri()]) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in ALL_NAMES)
    for name in ALL_NAMES:
        assert (dest / f"{name}.gz").read_bytes() == (folder / f"{name}.gz").read_bytes()
    assert len(fetched) == 8  # each file: the broken mirror, then the good one
    # Verified files already present are not fetched again.
    data.download_mnist(dest, mirrors=[broken])
    assert len(fetched) == 8


def test_download_default_dest_is_searched(mirror, isolated, monkeypatch):
    folder, _ = mirror
    _, cache = isolated
    monkeypatch.setattr(data, "MNIST_MD5", dict(data.SUBSET_MD5))
    dest = data.download_mnist(mirrors=[folder.as_uri() + "/"])
    assert dest == cache / "spikefa" / "mnist"
    assert data.find_mnist_dir() == dest


def test_download_bad_checksum_leaves_nothing(mirror, tmp_path):
    folder, _ = mirror
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="md5") as err:
        data.download_mnist(dest, mirrors=[folder.as_uri()])
    msg = str(err.value)
    assert data.MNIST_MD5[TRAIN_IMAGES] in msg and folder.as_uri() in msg
    assert list(dest.iterdir()) == []


def test_download_replaces_a_damaged_file(mirror, tmp_path, monkeypatch):
    folder, fetched = mirror
    monkeypatch.setattr(data, "MNIST_MD5", dict(data.SUBSET_MD5))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / TRAIN_LABELS).write_bytes(b"\x00\x00\x08\x01junk")  # raw copy would shadow the .gz
    data.download_mnist(dest, mirrors=[folder.as_uri()])
    assert not (dest / TRAIN_LABELS).exists()
    assert len(fetched) == 4
    assert data.read_idx(dest / f"{TRAIN_LABELS}.gz").shape == (2000,)


def test_download_interrupted_write_leaves_nothing(mirror, tmp_path, monkeypatch):
    folder, _ = mirror
    monkeypatch.setattr(data, "MNIST_MD5", dict(data.SUBSET_MD5))

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.os, "replace", disk_full)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="No space left") as err:
        data.download_mnist(dest, mirrors=[folder.as_uri()])
    assert str(dest) in str(err.value)
    assert list(dest.iterdir()) == []  # no temp file, no half file


def test_a_run_file_remembers_its_mnist_folder(full_dir, isolated, tmp_path):
    """A full-MNIST run stores the folder it read, and `spikefa test RUN.h5` uses it when
    no --data is given and nothing else would find the files (as here: no env var, empty
    repo and cache)."""
    from spikefa.config import load_config
    from spikefa.runfile import Run
    from spikefa.train import test_run, train

    cfg = load_config("tiny").replace(train={"dataset": "mnist", "epochs": 0.001, "n_train": 100, "test_every": 0},
                                      test={"n_test": 20})
    res = train(cfg, data_dir=full_dir, out=tmp_path / "r.h5", progress=False)
    assert Path(Run(res.path).attrs["data_dir"]) == Path(full_dir)
    with pytest.raises(data.DataError):
        data.find_mnist_dir()  # nothing to find without the run file's hint
    assert test_run(res.path)["n_test"] == 20


def test_a_subset_run_tested_on_the_full_mnist_test_set(full_dir, tmp_path, capsys):
    """spikefa test --dataset mnist: a run trained on the bundled subset, tested on the
    first images of the full MNIST test set."""
    from spikefa.cli import main
    from spikefa.train import evaluate, network_from_file, test_run, train

    out = train("tiny", epochs=0.05, out=tmp_path / "r.h5", progress=False).path
    res = test_run(out, dataset="mnist", data_dir=full_dir, n_test=300)
    assert (res["dataset"], res["trained_on"], res["n_test"]) == ("mnist", "mnist-subset", 300)
    images, labels = data.load_mnist("test", data_dir=full_dir)
    net = network_from_file(out)[0]
    assert res["test_error"] == evaluate(net, images[:300], labels[:300]).error
    own = test_run(out, n_test=300)
    assert own["dataset"] == own["trained_on"] == "mnist-subset"
    assert main(["test", str(out), "--dataset", "mnist", "--data", str(full_dir), "--n-test", "300"]) == 0
    assert "test error on mnist (trained on mnist-subset)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="dataset 'emnist' unknown"):
        test_run(out, dataset="emnist")
