"""Fashion-MNIST from its idx files (Debian's ``dataset-fashion-mnist`` by default).

The idx format: a big-endian header (magic, then one uint32 per dimension), then uint8 data.
Files may be gzip-compressed (``.gz``) or plain.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_service.errors import DataError

LABELS: tuple[str, ...] = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
SELECTION_SIZE = 2000  # the train tail where INT8 calibration methods are compared


def selection_split(train: Split) -> Split:
    """Held-out images for choosing among build options, never the reported test split."""
    return train.tail(SELECTION_SIZE)


_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_IDX_UBYTE = 0x08


@dataclass(frozen=True)
class Split:
    """One split of the data set: ``images`` (N, 28, 28) uint8 and ``labels`` (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def tail(self, n: int) -> Split:
        """The last ``n`` examples (held-out splits are taken from the end of train)."""
        return Split(self.images[-n:], self.labels[-n:])

    def subset(self, n: int, seed: int = 0) -> Split:
        """A reproducible random subset of ``n`` examples (all of them if ``n`` >= len)."""
        if n >= len(self):
            return self
        idx = np.random.default_rng(seed).choice(len(self), size=n, replace=False)
        idx.sort()
        return Split(self.images[idx], self.labels[idx])


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file of unsigned bytes into an array of its declared shape."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path} is not valid gzip: {exc}") from exc
    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an idx file")
    zero, dtype, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or dtype != _IDX_UBYTE:
        raise DataError(f"{path} is not an idx file of unsigned bytes")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {data.size} values, its header says {dims}")
    return data.reshape(dims)


def _find(data_dir: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (data_dir / name).exists():
            return data_dir / name
    raise DataError(
        f"{data_dir / stem}(.gz) not found; install Debian's dataset-fashion-mnist "
        "(sudo apt-get install dataset-fashion-mnist) or set EDGE_DATA_DIR to a folder "
        "with the Fashion-MNIST idx files"
    )


def load_split(data_dir: Path, split: str) -> Split:
    """Load the ``train`` or ``test`` split from ``data_dir``."""
    if split not in _SPLIT_PREFIX:
        raise DataError(f"unknown split {split!r}; use one of {sorted(_SPLIT_PREFIX)}")
    prefix = _SPLIT_PREFIX[split]
    images = read_idx(_find(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(data_dir, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{split} split in {data_dir}: images {images.shape} do not match labels {labels.shape}"
        )
    return Split(images, labels.astype(np.int64))
