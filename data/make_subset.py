"""Write the bundled MNIST subset from the full set.

Usage (from the repository root)::

    python data/make_subset.py --source /path/to/full/mnist --out data/mnist-subset

Picks, per class and without replacement, 200 of the 60,000 training images and 50 of
the 10,000 test images (2,000 and 500 in all), with ``numpy.random.default_rng(SEED)``:
the training draw first (classes 0..9 in order), then the test draw from the same
generator. Within a split the picked examples keep their original MNIST order, so the
classes stay interleaved as in the full set. The four files are written as standard
IDX, gzip-compressed with ``mtime=0`` and a fixed embedded name so that a rerun gives
the same bytes (with the same zlib), and the md5 of each decompressed file is printed:
those values are ``spikefa.data.SUBSET_MD5``.

The source is verified against ``spikefa.data.MNIST_MD5`` before anything is written.
"""

import argparse
import gzip
import hashlib
import struct
import sys
from pathlib import Path

import numpy as np

# Runnable from a checkout without installing spikefa.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spikefa.data import MNIST_FILES, load_mnist  # noqa: E402

# Fixed so the subset is reproducible; the paper's article number (Nat. Commun. 7:13276).
SEED = 13276
PER_CLASS = {"train": 200, "test": 50}
N_CLASSES = 10


def stratified_indices(labels, per_class, rng):
    """Indices of ``per_class`` examples of each class, drawn without replacement, sorted."""
    picked = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in range(N_CLASSES)
    ]
    return np.sort(np.concatenate(picked))


def idx_bytes(array):
    """IDX encoding of a uint8 array: magic 0x0000080<ndim>, big-endian uint32 dims, payload."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape)
    return header + array.tobytes()


def write_gz(path, content):
    # mtime=0 and an explicit embedded name keep the output independent of when and
    # where it was written.
    with open(path, "wb") as raw, gzip.GzipFile(
        filename=path.name.removesuffix(".gz"), mode="wb", fileobj=raw, compresslevel=9, mtime=0
    ) as f:
        f.write(content)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, type=Path, help="folder with the full MNIST")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the subset to")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        images, labels = load_mnist(split, data_dir=args.source, verify=True)
        keep = stratified_indices(labels, PER_CLASS[split], rng)
        images_name, labels_name = MNIST_FILES[split]
        for name, array in (
            (images_name, images[keep].reshape(-1, 28, 28)),
            (labels_name, labels[keep].astype(np.uint8)),
        ):
            content = idx_bytes(array)
            write_gz(args.out / f"{name}.subset.gz", content)
            print(f"{name}: {len(array)} examples, md5 {hashlib.md5(content).hexdigest()}")


if __name__ == "__main__":
    main()
