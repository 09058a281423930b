"""Shared pieces of the ``edge-service`` CLI: the typer app, options, output helpers.

Heavy imports (torch, onnx, uvicorn) happen inside the verbs, so ``edge-service --help``
is instant and works without the ``train`` extra.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from edge_service.config import REPO_ROOT, Settings
from edge_service.errors import EdgeServiceError

if TYPE_CHECKING:
    from edge_service.buildstate import BuildProgress

app = typer.Typer(
    name="edge-service",
    help="Context-adaptive inference for NVIDIA Jetson boards (and any Linux box).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("edge_service.cli")

DEFAULT_WEIGHTS = REPO_ROOT / "models" / "fashion" / "base.pt"
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]


@app.callback()
def _root() -> None:
    """Context-adaptive inference for NVIDIA Jetson boards (and any Linux box)."""


def setup_logging(verbose: bool) -> None:
    """Rich logging to stderr; quiet the exporter's chatter unless ``verbose``."""
    import warnings

    # torch's exporter trips its own deprecation warning (LeafSpec) on every export
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, console=err_console())],
        force=True,
    )
    if not verbose:  # the exporter and quantizer narrate every pass at INFO
        for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # "torchvision is not installed" is expected: the models here need none of its ops
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def err_console() -> Console:

    return Console(stderr=True)


def fail(exc: EdgeServiceError) -> typer.Exit:
    from rich.markup import escape

    err_console().print(f"[red]error:[/red] {escape(exc.message)}")
    return typer.Exit(code=2)


def emit(payload: object, as_json: bool, human: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        from rich.console import Console

        Console().print(human)


def settings_from(**overrides: object) -> Settings:
    """Settings from the environment, with the CLI's explicit options on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


FamilyOpt = Annotated[
    str | None, typer.Option(help="engine family (default: EDGE_FAMILY or fashion)")
]
EnginesOpt = Annotated[Path | None, typer.Option(help="engine repository (default: ./engines)")]


@contextmanager
def progress_bar(quiet: bool) -> Iterator[Callable[[BuildProgress], None] | None]:
    """A progress bar on stderr over the build's stages (none under --json or off a
    terminal: the log lines say the same)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}", file=sys.stderr) as bar:

        def update(state: BuildProgress) -> None:
            bar.set_description(f"{state.stage} {state.current or ''}".strip())
            bar.n = int(state.fraction * 100)
            bar.refresh()

        yield update
