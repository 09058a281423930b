"""The idx reader: real files, and clear errors for bad ones."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from edge_service.data.fashion import LABELS, load_split, read_idx
from edge_service.errors import DataError


def _idx(dims: tuple[int, ...], payload: bytes) -> bytes:
    return b"\x00\x00\x08" + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


def test_read_idx_returns_declared_shape_when_file_is_gzipped(tmp_path: Path) -> None:
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx((2, 3, 4), bytes(range(24)))))
    arr = read_idx(path)
    assert arr.shape == (2, 3, 4)
    assert arr[1, 2, 3] == 23


def test_read_idx_refuses_file_when_size_disagrees_with_header(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(_idx((10,), bytes(5)))
    with pytest.raises(DataError, match="header says"):
        read_idx(path)


def test_read_idx_refuses_file_when_magic_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x02\x03\x04" + bytes(8))
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(path)


def test_load_split_says_how_to_install_when_folder_is_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_split(tmp_path, "test")


def test_load_split_reads_real_test_split_when_debian_package_installed(test_split) -> None:
    assert len(test_split) == 10_000
    assert test_split.images.shape == (10_000, 28, 28)
    assert test_split.images.dtype == np.uint8
    assert set(np.unique(test_split.labels)) == set(range(len(LABELS)))


def test_subset_is_reproducible_when_seed_is_fixed(test_split) -> None:
    a, b = test_split.subset(50, seed=3), test_split.subset(50, seed=3)
    assert np.array_equal(a.labels, b.labels) and len(a) == 50
