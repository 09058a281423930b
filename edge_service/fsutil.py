"""Small file helpers: atomic writes and checksums, so nothing half-written is read back.

Every artifact is written to a hidden temp file beside its final path (``.name.XXXXXXXX.tmp``)
and renamed into place, so a process killed mid-write leaves the old file or the new one,
plus at worst a temp file that nothing reads; :func:`remove_temp_files` sweeps those up, under
:func:`exclusive_lock` so that it never takes a file another writer is still filling.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_service.errors import ConflictError

log = logging.getLogger(__name__)
# what atomic_write_with leaves (mkstemp adds 8 characters), and the files calibration
# derives from its temp file (``.pre.onnx``, ``.ranges.json``)
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|pre\.onnx|ranges\.json)$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, then rename."""
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Text variant of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: Path, writer: Callable[[Path], object]) -> None:
    """Let ``writer`` fill a temp file beside ``path``, fsync it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        writer(tmp)
        tmp.chmod(0o644)  # mkstemp makes 0600; artifacts are read by the service's user
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remove_temp_files(folder: Path, keep: Callable[[str], bool] = lambda _: False) -> list[Path]:
    """Delete the temp files killed writers left under ``folder``; returns them.

    Call it only while holding the lock of whatever writes there (see `exclusive_lock`).
    Names for which ``keep`` is true are left alone (files another lock guards).
    """
    if not folder.is_dir():
        return []
    stale = [
        p
        for p in folder.rglob(".*")
        if p.is_file() and TEMP_NAME.match(p.name) and not keep(p.name)
    ]
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed %s, left by a write that was cut short", path)
    return stale


@contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing), waiting for it.

    For short critical sections (a catalog write): the kernel drops it when its holder dies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for ``what``.

    ConflictError when another process holds it. The kernel drops the lock when its
    holder dies, even by kill -9, so a crashed run never blocks the next one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ConflictError(
                f"{what} is already running ({holder} holds {path}); wait for it to finish"
            ) from exc
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
