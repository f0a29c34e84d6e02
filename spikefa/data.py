"""MNIST data layer: find, download, read and verify the IDX files.

The network sees MNIST as ``images`` (uint8, shape ``(n, 784)``, C-contiguous) and
``labels`` (int64, shape ``(n,)``). Two datasets are known by name:

``"mnist"``
    The full set (60,000 training and 10,000 test images) as the four standard IDX
    files of the canonical distribution (LeCun, Cortes & Burges; CC BY-SA 3.0), found
    on disk by :func:`find_mnist_dir` or fetched by :func:`download_mnist`.
``"mnist-subset"``
    A small class-stratified subset (2,000 training and 500 test images) bundled with
    the package in ``data/mnist-subset`` (made by ``data/make_subset.py``), so that the
    examples and tests run without the full set.

Every file is verified against the md5 of its *decompressed* content, so the same
table serves the ``.gz`` files and raw ones a user unpacked by hand. Every problem
raises :class:`DataError`, whose message names the file and the bad value and says
how to fix it.

IDX format (big-endian): two zero bytes, a type code (``0x08`` = unsigned byte), the
number of dimensions ``d``; then ``d`` uint32 sizes; then the payload in C order.
Labels are ``0x00000801`` (``d = 1``), images ``0x00000803`` (``d = 3``, 28 x 28).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import struct
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "ENV_VAR",
    "MNIST_FILES",
    "MNIST_MD5",
    "MNIST_COUNTS",
    "SUBSET_MD5",
    "SUBSET_COUNTS",
    "DATASETS",
    "DEFAULT_MIRRORS",
    "read_idx",
    "find_mnist_dir",
    "load_mnist",
    "bundled_data_dir",
    "load_subset",
    "load_dataset",
    "download_mnist",
]

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file or folder is missing, malformed or fails its checksum."""


ENV_VAR = "SPIKEFA_MNIST_DIR"

#: split -> (images file name, labels file name); each may exist as ``name`` or ``name.gz``.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: md5 of the decompressed content of each canonical MNIST file.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

MNIST_COUNTS = {"train": 60000, "test": 10000}

#: md5 of the decompressed content of the bundled subset, as printed by
#: ``python data/make_subset.py --source DIR --out data/mnist-subset``.
SUBSET_MD5 = {
    "train-images-idx3-ubyte": "16b27002d19077ba02ed5ca0c84703a3",
    "train-labels-idx1-ubyte": "1bfa5fe5b7901d0926bec213d3f8a37b",
    "t10k-images-idx3-ubyte": "ab02193108668559ccc886cd88664979",
    "t10k-labels-idx1-ubyte": "2c3c568c7a92285ffdbec87c460dbafb",
}

SUBSET_COUNTS = {"train": 2000, "test": 500}
# The bundled subset's files carry this suffix (before .gz), so that no file of the (small) subset is
# ever mistaken for, or checked in as, the full set's file of the same name.
SUBSET_SUFFIX = ".subset"

DATASETS = ("mnist", "mnist-subset")

#: Mirrors of the canonical .gz files; the original site, yann.lecun.com, is often unavailable.
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

IMAGE_SHAPE = (28, 28)
N_CLASSES = 10

# Parent of the spikefa package folder; a module global so tests can point it elsewhere.
_REPO_ROOT = Path(__file__).resolve().parent.parent

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08

_HOW_TO_GET = (
    "To get the full MNIST set, run `spikefa download-mnist` (it fetches and verifies "
    "the files), or put the four standard files of the canonical MNIST distribution "
    "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte; .gz or unpacked) in one folder and give it with --data DIR "
    f"(data_dir in Python) or set {ENV_VAR} to it. To run without it, use the bundled subset with "
    "dataset 'mnist-subset'."
)


# --------------------------------------------------------------------------- reading


def _read_bytes(path):
    """Return the whole content of ``path``, gunzipped if it starts with the gzip magic."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file.") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err}).") from err
    # Detect compression from the content: users rename files, and some tools unpack
    # to a name that still ends in .gz.
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        # BadGzipFile is an OSError; a cut-off stream raises EOFError; a damaged
        # deflate stream raises zlib.error; a bad CRC or length raises BadGzipFile.
        raise DataError(
            f"{path}: corrupt or truncated gzip stream ({type(err).__name__}: {err}). "
            "Delete the file and fetch it again."
        ) from err


def _parse_idx(data, path, expect_dims=None, expect_count=None):
    """Parse IDX ``data`` (bytes) read from ``path``; see :func:`read_idx`."""
    n = len(data)
    if n < 4:
        raise DataError(
            f"{path}: {n} bytes, too short to be an IDX file (the header alone needs at "
            "least 8). The file is truncated or not MNIST; fetch it again."
        )
    magic = struct.unpack(">I", data[:4])[0]
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    expected_ndim = None if expect_dims is None else 1 + len(expect_dims)
    if expected_ndim is not None:
        expected_magic = f"0x{0x0800 | expected_ndim:08x}"
    else:
        expected_magic = "0x00000801 (labels) or 0x00000803 (images)"
    if zero != b"\x00\x00" or dtype_code != _IDX_UBYTE or ndim not in (1, 3):
        raise DataError(
            f"{path}: bad IDX magic number 0x{magic:08x}; expected {expected_magic} "
            "(unsigned-byte MNIST labels or images). The file is not an MNIST IDX file "
            "or is damaged; fetch it again."
        )
    if expected_ndim is not None and ndim != expected_ndim:
        kind = "labels" if ndim == 1 else "images"
        raise DataError(
            f"{path}: IDX magic number 0x{magic:08x} says {kind} ({ndim} dimensions), "
            f"expected {expected_magic}. Images and labels files may have been swapped."
        )
    header = 4 + 4 * ndim
    if n < header:
        raise DataError(
            f"{path}: {n} bytes, shorter than its own {header}-byte IDX header. "
            "The file is truncated; fetch it again."
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if expect_dims is not None and tuple(dims[1:]) != tuple(expect_dims):
        raise DataError(
            f"{path}: item shape {tuple(dims[1:])}, expected {tuple(expect_dims)}. "
            "The file is not MNIST."
        )
    if expect_count is not None and dims[0] != expect_count:
        raise DataError(
            f"{path}: holds {dims[0]} items, expected {expect_count}. "
            "The file belongs to another split or set; fetch it again."
        )
    expected_bytes = header + int(np.prod(dims, dtype=np.int64))
    if n != expected_bytes:
        what = "truncated" if n < expected_bytes else "over-long (trailing data)"
        raise DataError(
            f"{path}: {what}: the header {dims} needs {expected_bytes} bytes, the file "
            f"has {n} bytes. Fetch it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path, expect_dims=None, expect_count=None):
    """Read one unsigned-byte IDX file (gzip-compressed or raw).

    Parameters
    ----------
    path : str or os.PathLike
        The file. Compression is detected from the first two bytes, not the name.
    expect_dims : tuple of int, optional
        Expected shape of one item, i.e. every dimension after the first: ``(28, 28)``
        for MNIST images, ``()`` for labels. It also fixes the expected magic number.
    expect_count : int, optional
        Expected number of items (the first dimension).

    Returns
    -------
    numpy.ndarray
        uint8 array of the shape given in the header, e.g. ``(n, 28, 28)``. It is a
        read-only view of the file's bytes; copy it to modify.

    Raises
    ------
    DataError
        Missing file, corrupt gzip stream, magic number other than ``0x00000801`` /
        ``0x00000803``, unexpected dimensions or count, or a payload whose length
        differs from the product of the dimensions (truncated or over-long file).
    """
    return _parse_idx(_read_bytes(path), Path(path), expect_dims, expect_count)


def _md5(data):
    return hashlib.md5(data).hexdigest()


def _verify_md5(data, path, name, table, how_to_fix):
    expected = table.get(name)
    actual = _md5(data)
    if expected is not None and actual != expected:
        raise DataError(
            f"{path}: md5 of the decompressed content is {actual}, expected {expected} "
            f"for {name}. The file is damaged or not the canonical one. {how_to_fix}"
        )


# --------------------------------------------------------------------------- finding


def _cache_dir():
    """The user cache folder: ``$XDG_CACHE_HOME/spikefa/mnist`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spikefa" / "mnist"


def _file_in(folder, name):
    """Path of ``name`` in ``folder``: the raw file if present, else ``name.gz``, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _all_names():
    return [name for pair in MNIST_FILES.values() for name in pair]


def _missing(folder):
    """Why ``folder`` does not count as an MNIST folder, or None if it does."""
    if not folder.exists():
        return "does not exist"
    if not folder.is_dir():
        return "is not a folder"
    missing = [name for name in _all_names() if _file_in(folder, name) is None]
    if missing:
        return "lacks " + ", ".join(f"{name}[.gz]" for name in missing)
    return None


def find_mnist_dir(data_dir=None):
    """Return the folder that holds the four full-MNIST files.

    Search order, first match wins:

    1. ``data_dir``, if given;
    2. the folder named by the environment variable ``SPIKEFA_MNIST_DIR``, if set;
    3. ``<repo root>/data/mnist`` (repo root = the folder above the ``spikefa`` package);
    4. the user cache ``$XDG_CACHE_HOME/spikefa/mnist`` (default ``~/.cache/spikefa/mnist``),
       where :func:`download_mnist` puts the files.

    A folder counts if it holds all four files, each raw or ``.gz``.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Folder to use. If given it must hold the files: there is no fall-through.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DataError
        ``data_dir`` or ``SPIKEFA_MNIST_DIR`` names a folder without the files, or no
        place searched holds them; the message lists every place and what it lacked.

    Notes
    -----
    The environment variable is treated like an explicit argument: a typo in it is
    reported rather than silently replaced by some other copy of the data.
    """
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        why = _missing(folder)
        if why:
            raise DataError(f"data_dir {folder} {why}. {_HOW_TO_GET}")
        return folder
    env = os.environ.get(ENV_VAR)
    if env:
        folder = Path(env).expanduser()
        why = _missing(folder)
        if why:
            raise DataError(
                f"{ENV_VAR}={env}: {folder} {why}. Point {ENV_VAR} at the folder that "
                f"holds the files, or unset it to search the default places. {_HOW_TO_GET}"
            )
        return folder
    searched = []
    for folder in (_REPO_ROOT / "data" / "mnist", _cache_dir()):
        why = _missing(folder)
        if why is None:
            return folder
        searched.append(f"  - {folder} ({why})")
    raise DataError(
        "MNIST not found. Looked in:\n"
        "  - data_dir argument (not given)\n"
        f"  - ${ENV_VAR} (not set)\n" + "\n".join(searched) + "\n" + _HOW_TO_GET
    )


# --------------------------------------------------------------------------- loading


def _check_split(split):
    if split not in MNIST_FILES:
        raise DataError(f"unknown split {split!r}; valid splits: {', '.join(MNIST_FILES)}.")


def _stamp(path):
    # Part of the cache key so a file replaced on disk is read again.
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _load_pair(images_stamp, labels_stamp, split, count, md5_items, how_to_fix):
    """Read, check and cache one split; arguments are hashable so lru_cache can key on them."""
    md5_table = dict(md5_items) if md5_items is not None else None
    images_name, labels_name = MNIST_FILES[split]
    out = {}
    for stamp, name, item_shape in (
        (images_stamp, images_name, IMAGE_SHAPE),
        (labels_stamp, labels_name, ()),
    ):
        path = Path(stamp[0])
        data = _read_bytes(path)
        # Structure first: "truncated, N of M bytes" says more than a checksum mismatch.
        arr = _parse_idx(data, path, expect_dims=item_shape)
        if md5_table is not None:
            _verify_md5(data, path, name, md5_table, how_to_fix)
        out[name] = (path, arr)
    (images_path, images), (labels_path, labels) = out[images_name], out[labels_name]
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the two files must come from the same split. "
            "Fetch both again."
        )
    if len(images) != count:
        raise DataError(
            f"{images_path} and {labels_path} hold {len(images)} examples, expected "
            f"{count} for the {split!r} split. {how_to_fix}"
        )
    if labels.size and labels.max() >= N_CLASSES:
        bad = int(labels.max())
        raise DataError(
            f"{labels_path}: label value {bad} outside 0..{N_CLASSES - 1}. {how_to_fix}"
        )
    # frombuffer over immutable bytes is already read-only; reshape keeps it a view.
    images = images.reshape(len(images), -1)
    labels = labels.astype(np.int64)
    labels.flags.writeable = False
    images.flags.writeable = False
    return images, labels


def _load_from(folder, split, count, md5_table, how_to_fix, suffix=""):
    _check_split(split)
    stamps = []
    for name in MNIST_FILES[split]:
        path = _file_in(folder, name + suffix)
        if path is None:
            raise DataError(f"{folder}: lacks {name}{suffix}[.gz]. {how_to_fix}")
        stamps.append(_stamp(path))
    md5_items = tuple(sorted(md5_table.items())) if md5_table is not None else None
    return _load_pair(stamps[0], stamps[1], split, count, md5_items, how_to_fix)


def load_mnist(split="train", data_dir=None, verify=True):
    """Load one split of the full MNIST set.

    Parameters
    ----------
    split : {"train", "test"}
    data_dir : str or os.PathLike, optional
        Folder holding the four files; default: searched by :func:`find_mnist_dir`.
    verify : bool
        Check the md5 of each decompressed file against :data:`MNIST_MD5`. Counts,
        shapes and label range are checked either way.

    Returns
    -------
    images : numpy.ndarray
        uint8, shape ``(n, 784)``, C-contiguous, read-only; pixels 0..255.
    labels : numpy.ndarray
        int64, shape ``(n,)``, read-only; digits 0..9.

    Raises
    ------
    DataError
        Files not found, malformed, failing their checksum, or with counts other than
        60,000 (train) / 10,000 (test) or disagreeing between images and labels.

    Notes
    -----
    Results are cached in-process, keyed on the files' resolved paths, sizes and
    modification times, since the simulator and tests load the same split many times.
    The arrays are read-only so no caller can corrupt the cached copy; use
    ``images.copy()`` for a private writable one.
    """
    _check_split(split)
    folder = find_mnist_dir(data_dir)
    return _load_from(
        folder,
        split,
        MNIST_COUNTS[split],
        MNIST_MD5 if verify else None,
        "Fetch the files again (`spikefa download-mnist`, or the four files of the "
        "canonical MNIST distribution).",
    )


def bundled_data_dir():
    """Folder of the bundled MNIST subset.

    Returns
    -------
    pathlib.Path
        ``<repo root>/data/mnist-subset`` when running from a checkout or an editable
        install, else ``<sys.prefix>/share/spikefa/data/mnist-subset`` where a regular
        install puts the package's data files.
    """
    in_repo = _REPO_ROOT / "data" / "mnist-subset"
    if in_repo.is_dir():
        return in_repo
    return Path(sys.prefix) / "share" / "spikefa" / "data" / "mnist-subset"


def load_subset(split="train"):
    """Load one split of the bundled subset (2,000 train / 500 test, stratified).

    Parameters
    ----------
    split : {"train", "test"}

    Returns
    -------
    images, labels : numpy.ndarray
        Same formats as :func:`load_mnist`; md5 verified against :data:`SUBSET_MD5`.

    Raises
    ------
    DataError
        The bundled files are missing or fail their checks.
    """
    _check_split(split)
    folder = bundled_data_dir()
    how_to_fix = (
        "The bundled subset is damaged or missing: reinstall spikefa, or restore "
        "data/mnist-subset from git (or rebuild it with data/make_subset.py)."
    )
    if not folder.is_dir():
        raise DataError(f"bundled MNIST subset folder {folder} does not exist. {how_to_fix}")
    return _load_from(folder, split, SUBSET_COUNTS[split], SUBSET_MD5, how_to_fix, suffix=SUBSET_SUFFIX)


def load_dataset(name, split="train", data_dir=None):
    """Load a dataset by name.

    Parameters
    ----------
    name : {"mnist", "mnist-subset"}
    split : {"train", "test"}
    data_dir : str or os.PathLike, optional
        Only for ``"mnist"``; see :func:`find_mnist_dir`.

    Returns
    -------
    images, labels : numpy.ndarray
        See :func:`load_mnist`.

    Raises
    ------
    DataError
        Unknown name (the message lists the valid ones), a ``data_dir`` given with
        ``"mnist-subset"``, or any error of the loader.
    """
    if name == "mnist":
        return load_mnist(split, data_dir=data_dir)
    if name == "mnist-subset":
        if data_dir is not None:
            raise DataError(
                f"data_dir={data_dir} was given with dataset 'mnist-subset', which is "
                f"always read from the bundled folder {bundled_data_dir()}. Drop "
                "data_dir, or use dataset 'mnist' to read the full set from it."
            )
        return load_subset(split)
    raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}.")


# --------------------------------------------------------------------------- download


def _fetch(url, timeout):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _write_atomic(dest_path, payload):
    """Write ``payload`` to ``dest_path`` so that no half-written file can ever appear."""
    # The temp file sits in the target folder so os.replace is a same-filesystem rename.
    fd, tmp = tempfile.mkstemp(
        dir=dest_path.parent, prefix=f".{dest_path.name}.", suffix=".part"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest_path)
    except BaseException:
        # Also on KeyboardInterrupt: leave nothing behind but complete, verified files.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def download_mnist(dest=None, mirrors=None, timeout=60):
    """Download the four MNIST ``.gz`` files and verify them.

    Parameters
    ----------
    dest : str or os.PathLike, optional
        Target folder, created if needed. Default: the user cache
        ``$XDG_CACHE_HOME/spikefa/mnist`` (``~/.cache/spikefa/mnist``), which
        :func:`find_mnist_dir` searches.
    mirrors : sequence of str, optional
        Base URLs tried in order for each file (``file://`` works too). Default:
        :data:`DEFAULT_MIRRORS`.
    timeout : float
        Seconds to wait on each connection.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DataError
        A file could not be fetched from any mirror with the right md5; the message
        lists each mirror's failure. Nothing is written for that file.

    Notes
    -----
    A file already in ``dest`` (raw or ``.gz``) whose decompressed md5 matches is kept
    and not fetched again. Each download is checked in memory (md5 of the decompressed
    content, :data:`MNIST_MD5`) before it is written to a temporary file in ``dest``
    and renamed into place, so an interrupted or bad download never leaves a partial
    file that a later run would pick up.
    """
    dest = Path(dest).expanduser() if dest is not None else _cache_dir()
    mirrors = list(DEFAULT_MIRRORS if mirrors is None else mirrors)
    if not mirrors:
        raise DataError("download_mnist: no mirrors given; pass at least one base URL.")
    dest.mkdir(parents=True, exist_ok=True)
    for name in _all_names():
        expected = MNIST_MD5[name]
        existing = _file_in(dest, name)
        if existing is not None:
            try:
                if _md5(_read_bytes(existing)) == expected:
                    log.info("%s: present and verified", existing)
                    continue
            except DataError:
                pass
            log.warning("%s: present but fails its md5; fetching it again", existing)
        failures = []
        for base in mirrors:
            url = base.rstrip("/") + f"/{name}.gz"
            try:
                payload = _fetch(url, timeout)
            except (urllib.error.URLError, OSError, ValueError) as err:
                failures.append(f"  - {url}: {err}")
                continue
            try:
                content = gzip.decompress(payload)
            except (OSError, EOFError, zlib.error) as err:
                failures.append(f"  - {url}: not a valid gzip file ({err})")
                continue
            actual = _md5(content)
            if actual != expected:
                failures.append(
                    f"  - {url}: md5 of decompressed content {actual}, expected {expected}"
                )
                continue
            try:
                _write_atomic(dest / f"{name}.gz", payload)
            except OSError as err:
                raise DataError(
                    f"{dest / (name + '.gz')}: could not write the verified download "
                    f"({err}). Check free space and permissions in {dest}."
                ) from err
            if existing is not None and existing != dest / f"{name}.gz":
                # A bad raw copy would shadow the good .gz (raw files are preferred).
                existing.unlink()
            log.info("%s: downloaded from %s", dest / f"{name}.gz", url)
            break
        else:
            raise DataError(
                f"could not download {name}.gz into {dest}:\n" + "\n".join(failures) + "\n"
                "Check the network (or, in Python, pass mirrors= to download_mnist); or fetch the "
                "four files of the "
                "canonical MNIST distribution by hand and verify their md5 (see "
                f"spikefa.data.MNIST_MD5), then point {ENV_VAR} at their folder."
            )
    return dest
