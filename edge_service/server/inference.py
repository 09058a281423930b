"""From decoded frames or tensors to engine outputs, through the micro-batcher.

Shared by the frame API (/v1/infer, /v1/infer/batch) and the KServe v2 API. The variant
is only known when the batcher leases an engine, so frames are resized for that variant
there (`FrameJob.prepare`), never earlier.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from fastapi.concurrency import run_in_threadpool
from PIL import Image

from edge_service.data.letterbox import Letterbox
from edge_service.data.pipeline import Preprocess
from edge_service.errors import BadInputError, NotFoundError
from edge_service.runtime.batcher import BatchResult
from edge_service.server.service import Service

INLINE_DECODE_BYTES = 256 * 1024  # smaller bodies decode on the event loop (no thread hop)


@dataclass
class FrameJob:
    """Decoded frames (uint8 images) to run as rows of one batched call; ``preprocess``
    gives each variant's input pipeline (its own resolution)."""

    preprocess: Callable[[str], Preprocess]
    images: list[np.ndarray]
    geometry: list[Letterbox | None] = field(default_factory=list)

    def prepare(self, variant_id: str) -> np.ndarray:
        pre = self.preprocess(variant_id)
        tensors, self.geometry = [], []
        for image in self.images:
            x, geo = pre.to_batch(image)
            tensors.append(x)
            self.geometry.append(geo)
        return tensors[0] if len(tensors) == 1 else np.concatenate(tensors)


@dataclass
class TensorJob:
    """A float tensor at the family's native input shape (already normalised)."""

    preprocess: Callable[[str], Preprocess]
    tensor: np.ndarray

    def prepare(self, variant_id: str) -> np.ndarray:
        size = self.preprocess(variant_id).size
        if self.tensor.shape[-1] == size and self.tensor.shape[-2] == size:
            return self.tensor
        return resize_tensor(self.tensor, size)


def resize_tensor(x: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) float32 to (N, C, size, size), bilinear per channel (what a smaller
    variant's input needs when a client sends the family's native shape)."""
    n, c = x.shape[:2]
    out = np.empty((n, c, size, size), dtype=np.float32)
    for i in range(n):
        for j in range(c):
            img = Image.fromarray(np.ascontiguousarray(x[i, j], dtype=np.float32), mode="F")
            out[i, j] = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))
    return out


def check_variant(service: Service, variant_id: str | None) -> str | None:
    """``variant_id`` if the catalog has it (NotFoundError listing the ids otherwise)."""
    if variant_id is not None:
        service.catalog.variant(variant_id)
    return variant_id


def check_pin(service: Service, variant_id: str | None) -> str | None:
    """``variant_id`` if a request may be pinned to it: NotFoundError (404) for an
    unknown id, RejectedVariantError (409, naming the gate's reason) for a rejected one."""
    if variant_id is not None:
        service.catalog.pinnable(variant_id)
    return variant_id


async def decode_frames(
    service: Service,
    bodies: list[bytes],
    *,
    width: int | None = None,
    height: int | None = None,
) -> list[np.ndarray]:
    """Decode payloads to images; big ones off the event loop. Errors name the frame."""
    pre = service.preprocess()
    limit = service.settings.max_image_pixels

    def decode_all() -> list[np.ndarray]:
        out = []
        for i, body in enumerate(bodies):
            try:
                out.append(pre.decode(body, width=width, height=height, max_pixels=limit))
            except BadInputError as exc:
                if len(bodies) == 1:
                    raise
                raise BadInputError(f"frame {i}: {exc.message}") from exc
        return out

    if sum(len(b) for b in bodies) <= INLINE_DECODE_BYTES:
        return decode_all()
    return await run_in_threadpool(decode_all)


async def run_job(
    service: Service, job: FrameJob | TensorJob, rows: int, target: str | None
) -> list[BatchResult]:
    """Run ``rows`` rows in chunks of the batcher's max batch; results in row order."""
    batcher = service.batcher
    if rows <= batcher.max_batch:
        return [await asyncio.wrap_future(batcher.submit(job.prepare, rows, target))]
    parts: list[FrameJob | TensorJob] = []
    for start in range(0, rows, batcher.max_batch):
        stop = min(rows, start + batcher.max_batch)
        if isinstance(job, FrameJob):
            parts.append(FrameJob(job.preprocess, job.images[start:stop]))
        else:
            parts.append(TensorJob(job.preprocess, job.tensor[start:stop]))
    futures = [asyncio.wrap_future(batcher.submit(p.prepare, _rows(p), target)) for p in parts]
    results = list(await asyncio.gather(*futures))
    if isinstance(job, FrameJob):
        job.geometry = [g for p in parts if isinstance(p, FrameJob) for g in p.geometry]
    return results


def _rows(job: FrameJob | TensorJob) -> int:
    return len(job.images) if isinstance(job, FrameJob) else int(job.tensor.shape[0])


def output_rows(results: list[BatchResult]) -> list[np.ndarray]:
    """Each frame's output, ``(1, ...)``, in row order across the chunks of a job (row by
    row: chunks run at different input sizes give detector outputs of different shapes)."""
    return [r.output[j : j + 1] for r in results for j in range(r.output.shape[0])]


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - started) * 1e3


def unknown_model(name: str, family: str) -> NotFoundError:
    return NotFoundError(f"model {name!r} is not served here; this server serves {family!r}")
