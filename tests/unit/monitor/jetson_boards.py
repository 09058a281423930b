"""Jetson board fixtures: sysfs / procfs trees and recorded command outputs per board.

Each folder under fixtures/ is one board and JetPack release (fixtures/README.md says
where each shape comes from). Its ``tree.txt`` lists the files a source reads, one per
line, relative to the root the source is pointed at:

    path = content          a file ("\\0" is a NUL byte; a newline is appended otherwise)
    path -> target          a symbolic link (sysfs is full of them)
    path < name             a copy of the fixture file ``name`` (e.g. proc/meminfo)
"""

from __future__ import annotations

import shutil
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
NANO, XAVIER_NX, ORIN_NANO, AGX_ORIN = (
    "nano-jp4.6",
    "xavier-nx-jp5.1",
    "orin-nano-jp6.0",
    "agx-orin-jp6.0",
)
BOARDS = (NANO, XAVIER_NX, ORIN_NANO, AGX_ORIN)


def fixture_text(board: str, name: str) -> str:
    """The recorded file `name` of `board` (a command's output, a config file)."""
    return (FIXTURES / board / name).read_text(encoding="utf-8")


def build_tree(board: str, root: Path) -> Path:
    """Write `board`'s tree.txt under `root` and return `root`."""
    for line in fixture_text(board, "tree.txt").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if " -> " in line:
            path, target = line.split(" -> ", 1)
            link = root / path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
        elif " < " in line:
            path, name = line.split(" < ", 1)
            write_file(root, path, fixture_text(board, name))
        else:
            path, value = line.split(" = ", 1)
            text = value.replace("\\0", "\0")
            write_file(root, path, text if text.endswith("\0") else text + "\n")
    return root


def write_file(root: Path, path: str, text: str) -> Path:
    """Write (or overwrite) one file of a tree, making its folders."""
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def copy_board_file(board: str, name: str, dest: Path) -> Path:
    """Copy one fixture file of `board` to `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / board / name, dest)
    return dest
