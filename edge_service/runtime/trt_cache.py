"""TensorRT engine identity: targets, build plans, cache keys, the engine cache and sidecars.

Deciding whether a cached engine may be loaded on this device is plain file and string
logic; ``tensorrt`` and ``pycuda`` are imported lazily, only to read this machine's target
(`detect_target`). The runtime loads engines by these rules and the compiler
(``edge_service.compile.trt_builder``) builds them by the same ones, so both import this
module and neither imports the other. An engine is
stored under a key of (TensorRT version, device, compute capability, ONNX hash, precision,
calibration hash, profile shapes), with a JSON sidecar that says what it was built for
and the engine file's SHA-256, so a cached engine that was damaged on disk is rebuilt
rather than reused (and blessed with a new checksum in the catalog).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from edge_service.errors import BuildError, CatalogError
from edge_service.fsutil import atomic_write_text, sha256_file

log = logging.getLogger(__name__)

SIDECAR_SCHEMA = 2  # 2: the engine file's sha256 is kept
REBUILD = "rebuild it on this machine with `edge-service build --backend tensorrt`"


@dataclass(frozen=True)
class TrtTarget:
    """The TensorRT version and GPU an engine is built for (engines run only there)."""

    trt_version: str
    device_name: str
    compute_capability: str  # "major.minor", e.g. "8.7" for Jetson Orin

    def describe(self) -> str:
        """One line for messages: ``TensorRT 10.3.0 on Orin (compute capability 8.7)``."""
        return (
            f"TensorRT {self.trt_version} on {self.device_name} "
            f"(compute capability {self.compute_capability})"
        )


@dataclass(frozen=True)
class TrtBuildPlan:
    """Everything one engine build needs, decided before TensorRT is touched."""

    precision: str
    flags: tuple[str, ...]
    input_name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    workspace_bytes: int
    cache_key: str
    timing_cache: Path
    target: TrtTarget
    onnx_sha256: str
    calibration_hash: str | None = None


def engine_cache_key(
    target: TrtTarget,
    onnx_sha256: str,
    precision: str,
    calibration_hash: str | None,
    *,
    profile: tuple[tuple[int, ...], ...] | None = None,
) -> str:
    """SHA-256 over a sorted JSON of everything an engine's validity depends on."""
    parts = {
        **asdict(target),
        "onnx_sha256": onnx_sha256,
        "precision": precision,
        "calibration_hash": calibration_hash,
        "profile": [list(shape) for shape in profile] if profile is not None else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def target_slug(target: TrtTarget) -> str:
    """A short stable name per target, so timing caches of two GPUs never mix."""
    return hashlib.sha256(json.dumps(asdict(target), sort_keys=True).encode()).hexdigest()[:16]


class EngineCache:
    """A folder of ``<key>.engine`` files, each with a ``<key>.engine.json`` sidecar."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def engine_path(self, key: str) -> Path:
        """Where the engine for ``key`` lives (whether or not it exists yet)."""
        return self.folder / f"{key}.engine"

    def lookup(self, key: str) -> Path | None:
        """The engine for ``key`` if it and its sidecar exist, the sidecar says ``key`` and
        the file still has the checksum the sidecar recorded (else it is built again)."""
        path = self.engine_path(key)
        if not path.is_file():
            return None
        try:
            sidecar = read_sidecar(path)
        except CatalogError as exc:
            log.warning("ignoring cached engine %s: %s", path, exc.message)
            return None
        if sidecar.get("key") != key:
            return None
        if sidecar.get("engine_sha256") != sha256_file(path):
            log.warning(
                "ignoring cached engine %s: it does not match the checksum in its sidecar "
                "(damaged, or built before checksums were kept); building it again",
                path,
            )
            return None
        return path

    @staticmethod
    def check(engine_path: Path, target: TrtTarget) -> None:
        """Refuse an engine whose sidecar says it was built for another TensorRT or GPU."""
        sidecar = read_sidecar(engine_path)
        try:
            built_for = TrtTarget(**sidecar["target"])
            key = engine_cache_key(
                built_for,
                sidecar["onnx_sha256"],
                sidecar["precision"],
                sidecar.get("calibration_hash"),
                profile=tuple(tuple(s) for s in sidecar["profile"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(
                f"sidecar of {engine_path} is malformed ({exc!r}); {REBUILD}"
            ) from exc
        if key != sidecar.get("key"):
            raise CatalogError(
                f"sidecar of {engine_path} does not match its own key (edited or corrupt); "
                f"{REBUILD}"
            )
        differences = target_differences(built_for, target)
        if differences:
            raise CatalogError(
                f"engine {engine_path} was built for {built_for.describe()}, this machine has "
                f"{target.describe()} ({'; '.join(differences)}); TensorRT engines are not "
                f"portable across TensorRT versions or GPUs: {REBUILD}"
            )


def target_differences(built_for: TrtTarget, here: TrtTarget) -> list[str]:
    """What differs between two targets, each as ``what built vs here``."""
    out = []
    if not _same_version(built_for.trt_version, here.trt_version):
        out.append(f"TensorRT version {built_for.trt_version} vs {here.trt_version}")
    if built_for.device_name != here.device_name:
        out.append(f"device {built_for.device_name} vs {here.device_name}")
    if built_for.compute_capability != here.compute_capability:
        out.append(
            f"compute capability {built_for.compute_capability} vs {here.compute_capability}"
        )
    return out


def _same_version(a: str, b: str) -> bool:
    """Version equality with ``packaging`` (``10.3`` == ``10.3.0``); exact text otherwise."""
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def sidecar_path(engine_path: Path) -> Path:
    """``x.engine`` -> ``x.engine.json``."""
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: Path) -> dict[str, Any]:
    """The sidecar JSON of an engine; CatalogError if it is missing or unreadable."""
    path = sidecar_path(engine_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CatalogError(
            f"engine {engine_path} has no sidecar {path.name}, so what it was built for is "
            f"unknown; {REBUILD}"
        ) from exc
    except (OSError, ValueError) as exc:
        raise CatalogError(f"cannot read sidecar {path}: {exc}; {REBUILD}") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"sidecar {path} is not a JSON object; {REBUILD}")
    return data


def write_sidecar(plan: TrtBuildPlan, engine_path: Path) -> Path:
    """Record beside ``engine_path`` its key and everything the key was made from."""
    data = {
        "schema": SIDECAR_SCHEMA,
        "key": plan.cache_key,
        "target": asdict(plan.target),
        "onnx_sha256": plan.onnx_sha256,
        "precision": plan.precision,
        "calibration_hash": plan.calibration_hash,
        "flags": list(plan.flags),
        "input_name": plan.input_name,
        "profile": [list(plan.min_shape), list(plan.opt_shape), list(plan.max_shape)],
        "workspace_bytes": plan.workspace_bytes,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "engine_sha256": sha256_file(engine_path),
    }
    path = sidecar_path(engine_path)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


NO_TENSORRT = (
    "TensorRT is not available on this machine ({why}); `edge-service build` falls back to "
    "ONNX Runtime engines here. On a Jetson, TensorRT comes with JetPack "
    "(apt-get install python3-libnvinfer; make the venv with --system-site-packages to see "
    "it), then run: pip install -e '.[jetson]'"
)


def tensorrt_available() -> bool:
    """True when both ``tensorrt`` and ``pycuda.driver`` import here."""
    try:
        import_lazily("tensorrt")
        import_lazily("pycuda.driver")
    except BuildError:
        return False
    return True


def detect_target() -> TrtTarget:
    """This machine's TensorRT version and GPU 0; BuildError with advice when absent."""
    trt = import_lazily("tensorrt")
    cuda = import_lazily("pycuda.driver")
    try:
        cuda.init()
        device = cuda.Device(0)
        major, minor = device.compute_capability()
        name = str(device.name())
    except Exception as exc:  # pycuda raises its own Error types for a missing GPU/driver
        raise BuildError(NO_TENSORRT.format(why=f"no usable CUDA device: {exc}")) from exc
    return TrtTarget(str(trt.__version__), name, f"{major}.{minor}")


def import_lazily(name: str) -> Any:
    """Import ``name`` lazily; a missing library becomes a BuildError with the fallback."""
    try:
        return importlib.import_module(name)
    except (ImportError, OSError) as exc:  # OSError: the wheel is there, libcuda is not
        raise BuildError(NO_TENSORRT.format(why=f"cannot import {name}: {exc}")) from exc
