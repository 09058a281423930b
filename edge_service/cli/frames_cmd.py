"""``edge-service frames``: extract still frames from a video file (the ``video`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_service.cli._common import JsonOpt, VerboseOpt, app, emit, fail, setup_logging
from edge_service.errors import BadInputError, EdgeServiceError

FORMATS = ("png", "jpg")


@app.command()
def frames(
    video: Annotated[Path, typer.Argument(help="the video file to read (AVI, MP4, ...)")],
    out: Annotated[Path, typer.Option("--out", help="folder to write the frames into")],
    every: Annotated[int, typer.Option(min=1, help="keep every Nth frame")] = 1,
    limit: Annotated[
        int | None, typer.Option(min=1, help="write at most N frames (default: all)")
    ] = None,
    start: Annotated[int, typer.Option(min=0, help="first frame to keep (0-based)")] = 0,
    fmt: Annotated[
        str, typer.Option("--format", help="image format: png (lossless) or jpg")
    ] = "png",
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write frames of VIDEO as frame_000123.png (RGB) into --out, decoded by OpenCV.

    Needs OpenCV (the package's video extra, or pip install opencv-python-headless).
    Frames are named by their index in the video, so --start 100 --every 5 writes
    frame_000100, frame_000105, ...
    """
    setup_logging(verbose)
    try:
        fmt_lower = fmt.lower().replace("jpeg", "jpg")
        if fmt_lower not in FORMATS:
            raise BadInputError(f"--format takes png or jpg, got {fmt!r}")
        from edge_service.data.video import extract_frames

        paths = extract_frames(
            video,
            out,
            every=every,
            limit=limit,
            start=start,
            fmt="png" if fmt_lower == "png" else "jpg",
        )
    except EdgeServiceError as exc:
        raise fail(exc) from exc
    payload = {
        "video": str(video),
        "out": str(out),
        "count": len(paths),
        "first": paths[0].name,
        "last": paths[-1].name,
    }
    from rich.markup import escape

    human = f"wrote {len(paths)} frames to {out} ({paths[0].name} .. {paths[-1].name})"
    emit(payload, as_json, escape(human))
