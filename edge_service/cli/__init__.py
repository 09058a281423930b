"""The ``edge-service`` command line (typer).

Heavy imports (torch, onnx, uvicorn) happen inside the verbs, so ``edge-service --help``
is instant and works without the ``train`` extra.
"""

from __future__ import annotations

import edge_service.cli.profile_cmd  # noqa: F401  (registers ``profile``)
from edge_service.cli import build_cmd, frames_cmd, offline, online  # noqa: F401  (registers the verbs)
from edge_service.cli._common import app


def main() -> None:
    """Entry point for ``python -m edge_service``."""
    app()


__all__ = ["app", "main"]
