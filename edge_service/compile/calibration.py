"""INT8 calibration data and static Q/DQ quantization with ONNX Runtime.

The reader takes any image folder (JPEG/PNG) through the shared decode + preprocess path,
so the activations calibrated on are the ones served. Quantization is static Q/DQ with
INT8 weights per channel, and one of two activation schemes:

- ``s8``: symmetric signed INT8 activations, the only form TensorRT's explicit
  quantization takes (zero point 0), so every TensorRT build uses it;
- ``u8``: asymmetric unsigned activations, which ONNX Runtime's x86 kernels run
  20-27% faster than ``s8`` (U8S8 integer dot products; measured on this repo's
  networks, bench/RESULTS.md), so an ONNX-Runtime-only build defaults to it.

``reduce_range`` quantizes the weights to 7 bits ([-64, 64]) for x86 CPUs without VNNI,
whose ``vpmaddubsw`` sums pairs of u8 x s8 products in saturating int16;
:func:`edge_service.compile.int8_scheme.choose_int8_scheme` decides both from the device.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge_service.data.pipeline import Preprocess
from edge_service.data.preprocess import InputSpec
from edge_service.errors import BuildError
from edge_service.fsutil import atomic_write_with, sha256_file
from edge_service.onnx_tools.quantize import ACTIVATIONS, FeedReader, head_nodes, static_qdq

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def calibration_images(folder: Path) -> list[Path]:
    """The JPEG/PNG files in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise BuildError(f"calibration folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BuildError(f"no .png/.jpg images in calibration folder {folder}")
    return files


def calibration_hash(files: list[Path]) -> str:
    """One hash over the names and bytes of the calibration images."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def calibration_batches(
    files: list[Path], spec: InputSpec | Preprocess, batch: int = 32
) -> Iterator[dict[str, np.ndarray]]:
    """``{input_name: batch}`` dicts over the images, preprocessed as served."""
    prep = spec if isinstance(spec, Preprocess) else Preprocess.from_spec(spec)
    for start in range(0, len(files), batch):
        arrays = [prep.from_bytes(p.read_bytes()) for p in files[start : start + batch]]
        yield {prep.name: np.concatenate(arrays)}


METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
PERCENTILE = 99.999
HISTOGRAM_BINS = 2048  # percentile
ENTROPY_BINS = 512  # KL search over (bins/2 - 64) thresholds: 2048 costs ~8 s per network here
CACHE_TAG = f"b{HISTOGRAM_BINS}-e{ENTROPY_BINS}-p{PERCENTILE}"  # part of the cache key


def calibration_cache_path(
    cache_dir: Path,
    fp32: Path,
    data_hash: str,
    method: str,
    activations: str = "s8",
    reduce_range: bool = False,
) -> Path:
    """Where the tensor ranges of (model, calibration data, method, scheme) are cached."""
    scheme = "" if activations == "s8" else f"-{activations}"  # s8 keeps its old names
    scheme += "-rr" if reduce_range else ""  # full-range weights keep theirs too
    name = f"{sha256_file(fp32)[:16]}-{data_hash[:16]}-{method}{scheme}-{CACHE_TAG}.json"
    return cache_dir / name


def quantize_int8(
    fp32: Path,
    out: Path,
    files: list[Path],
    spec: InputSpec | Preprocess,
    method: str = "minmax",
    cache_dir: Path | None = None,
    activations: str = "s8",
    reduce_range: bool = False,
    fp32_head: bool = False,
) -> Path:
    """Static INT8 Q/DQ quantization of ``fp32`` calibrated on ``files``.

    ``method`` is ``minmax``, ``entropy`` (KL divergence) or ``percentile``
    (99.999th); ``activations`` is ``s8`` (symmetric, TensorRT's form) or ``u8``
    (asymmetric, faster on ONNX Runtime x86); ``reduce_range`` gives the weights 7 bits
    (x86 without VNNI). With ``cache_dir`` the tensor ranges are cached under a key of
    model hash + calibration data hash + method + scheme (activations and reduce_range),
    and a later build with the same key reads them instead of running calibration again.
    With ``fp32_head`` the nodes after the last weighted layers stay FP32
    (`onnx_tools.quantize.head_nodes`: a detector's decode).
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ort_method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }.get(method)
    if ort_method is None:
        raise BuildError(f"calibration method {method!r} is not one of {METHODS}")
    if activations not in ACTIVATIONS:
        raise BuildError(f"INT8 activation scheme {activations!r} is not one of {ACTIVATIONS}")
    symmetric = activations == "s8"
    cache = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = calibration_cache_path(
            cache_dir, fp32, calibration_hash(files), method, activations, reduce_range
        )
    def write(tmp: Path) -> None:
        prepped = tmp.with_suffix(".pre.onnx")
        ranges = cache if cache is not None else tmp.with_suffix(".ranges.json")
        try:
            quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
            if not ranges.exists():
                _calibrate(prepped, files, spec, ort_method, ranges, symmetric)
            static_qdq(
                prepped, tmp, None, ort_method, symmetric, reduce_range,
                calibration_cache_path=ranges,
                nodes_to_exclude=head_nodes(prepped) if fp32_head else None,
            )
        finally:
            prepped.unlink(missing_ok=True)
            if ranges != cache:
                ranges.unlink(missing_ok=True)

    try:
        with contextlib.redirect_stdout(io.StringIO()) as chatter:  # ORT's calibrators print
            atomic_write_with(out, write)
    except Exception as exc:
        raise BuildError(f"INT8 quantization ({method}) of {fp32} failed: {exc}") from exc
    log.debug("calibrator said: %s", chatter.getvalue().strip())
    log.debug("quantized %s -> %s (%s) on %d images", fp32.name, out.name, method, len(files))
    return out


def _calibrate(
    model: Path,
    files: list[Path],
    spec: InputSpec | Preprocess,
    method: Any,
    out: Path,
    symmetric: bool = True,
) -> None:
    """Run ONNX Runtime's calibrator ourselves and save the tensor ranges to ``out``.

    quantize_static would run it too, but cannot pass the histogram size, and ORT's
    entropy default (128 bins for 128 quantized bins) leaves the KL search a single
    candidate, the full range, i.e. min-max, so entropy gets ENTROPY_BINS. The ranges
    are written as a partial file, then renamed, so a killed build never leaves a cache
    that a later build would trust.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    with tempfile.TemporaryDirectory() as work:
        calibrator = create_calibrator(
            model,
            None,
            augmented_model_path=str(Path(work) / "augmented.onnx"),
            calibrate_method=method,
            extra_options={
                "symmetric": symmetric,
                "num_bins": ENTROPY_BINS if method == CalibrationMethod.Entropy else HISTOGRAM_BINS,
                "percentile": PERCENTILE,
            },
        )
        # one image per feed: the histogram calibrators need equal-shaped batches
        calibrator.collect_data(FeedReader(calibration_batches(files, spec, batch=1)))  # type: ignore[arg-type]
        ranges = calibrator.compute_data()
    partial = out.with_name(out.name + ".partial")
    save_tensors_data(ranges, partial)
    partial.replace(out)


def write_calibration_sample(
    images: np.ndarray, labels: np.ndarray, out: Path, per_class: int, seed: int = 0
) -> list[Path]:
    """Write a class-balanced sample of (N, H, W) uint8 images as PNG files into ``out``."""

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for cls in np.unique(labels):
        idx = rng.choice(np.flatnonzero(labels == cls), size=per_class, replace=False)
        for i in sorted(idx):
            path = out / f"c{int(cls)}_{int(i):05d}.png"
            atomic_write_with(path, _png_writer(images[i]))
            written.append(path)
    return written


def _png_writer(image: np.ndarray) -> Callable[[Path], None]:
    from PIL import Image

    def write(tmp: Path) -> None:
        Image.fromarray(image).save(tmp, "PNG")

    return write


def main() -> None:
    """``python -m edge_service.compile.calibration``: write the committed calibration sample."""
    from edge_service.config import Settings
    from edge_service.data.fashion import load_split

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=Path("calibration/fashion"))
    parser.add_argument("--per-class", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    split = load_split(Settings().data_dir, "train")
    files = write_calibration_sample(
        split.images, split.labels, args.out, args.per_class, args.seed
    )
    logging.basicConfig(level=logging.INFO)
    log.info("wrote %d calibration images to %s", len(files), args.out)


if __name__ == "__main__":
    main()
