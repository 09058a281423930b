"""``python -m edge_service.evolve.annotate``: add the branch accuracy table to weights
saved before evolve stored it.

The table (each branch's and resolution's top-1 drop alone, on evolve's held-out
validation split) depends on the weights only, not on the device, so it is measured once
and every device's on-device search (``edge-service build``) reuses it. The weights
themselves are not changed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edge_service.data.fashion import load_split
from edge_service.evolve.operators import RESOLUTIONS
from edge_service.evolve.run import split_train_val
from edge_service.evolve.search import accuracy_drops
from edge_service.evolve.supernet import load_supernet, save_supernet

log = logging.getLogger(__name__)


def annotate(path: Path, data_dir: Path, val_size: int = 5000) -> dict[str, object]:
    """Measure the branch accuracy table of ``path`` and store it in its metadata."""
    net, spec, kept, meta = load_supernet(path)
    _, val = split_train_val(load_split(data_dir, "train"), val_size, 0, 0)
    resolutions = tuple(meta.get("config", {}).get("resolutions", RESOLUTIONS))
    table = accuracy_drops(net, val, spec, resolutions)
    meta["branch_accuracy"] = table.to_dict()
    save_supernet(path, net, spec, kept, meta)
    return table.to_dict()


def main() -> None:
    """Annotate a multi-branch weights file in place."""
    from edge_service.config import Settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("weights", type=Path, nargs="?", default=Path("models/fashion/evolved.pt"))
    parser.add_argument("--val-size", type=int, default=5000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    table = annotate(args.weights, Settings().data_dir, args.val_size)
    log.info(
        "base top-1 %.4f on %d images; stored in %s", table["base"], table["examples"], args.weights
    )


if __name__ == "__main__":
    main()
