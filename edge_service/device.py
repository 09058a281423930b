"""This machine as one value: the device fingerprint that everything reads.

A :class:`Fingerprint` records what decides how a model is built and how fast it runs
here: the CPU (vendor, model name, x86 family/model/stepping or ARM implementer/part/
revision, core count and the ISA features the INT8 and FP kernels use), the board and its
GPU, and the TensorRT / CUDA / ONNX Runtime versions. Its :attr:`~Fingerprint.id` is a
short stable key (readable slug + hash) for engines, profiles and caches: two machines
that both call themselves "AMD EPYC" but differ in family, model or flags get different
ids.

Everything is read from files under a root folder (``/proc/cpuinfo``,
``/proc/device-tree``, ``/proc/driver/nvidia``, ``/usr/local/cuda``, TensorRT's version
header), so tests pass a fixture folder. Nothing spawns a process or imports TensorRT,
pycuda or ONNX Runtime.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import platform
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edge_service.device_names import (
    ARM_ARCHES,
    ARM_CORES,
    ARM_FEATURES,
    ARM_IMPLEMENTERS,
    INTEL_CORES,
    TEGRA_GPUS,
    X86_FEATURES,
    X86_VENDORS,
)
from edge_service.device_names import (
    MODEL_SOCS as _MODEL_SOCS,
)
from edge_service.errors import CatalogError

_FEATURE_ORDER = {name: i for i, name in enumerate(X86_FEATURES + ARM_FEATURES)}

# Words a slug leaves out: trademarks, filler, and the vendor the slug already names.
_NOISE = {"r", "tm", "cpu", "processor", "nvidia", "developer", "kit", "with", "core"}
_SLUG_MAX = 48
_DIGEST_CHARS = 10


@dataclass(frozen=True)
class Fingerprint:
    """The hardware and runtimes of one machine; see the module docstring.

    ``cpu_family`` / ``cpu_model`` / ``cpu_stepping`` are the x86 ``cpu family`` /
    ``model`` / ``stepping`` (decimal), or on ARM the ``CPU implementer`` / ``CPU part``
    (hex; comma-joined on mixed-core SoCs) and ``r<variant>p<revision>``. ``cpu_core`` is
    the readable core or microarchitecture ("Zen 4", "Cortex-A78AE"), derived from those.
    """

    arch: str
    cpu_vendor: str | None = None
    cpu_name: str | None = None
    cpu_family: str | None = None
    cpu_model: str | None = None
    cpu_stepping: str | None = None
    cpu_core: str | None = None
    cores: int = 0
    features: tuple[str, ...] = ()
    board: str | None = None
    gpu: str | None = None
    gpu_cc: str | None = None
    tensorrt: str | None = None
    cuda: str | None = None
    onnxruntime: str | None = None

    def __post_init__(self) -> None:
        # sorted and unique, so equal machines compare and hash equal
        object.__setattr__(self, "features", tuple(sorted(set(self.features))))

    @property
    def id(self) -> str:
        """``<slug>-<10 hex of sha256>``, [a-z0-9-], at most 48 characters.

        The hash covers every field but the derived ``cpu_core``, so a new name in the
        core tables changes only the readable part.
        """
        hashed = {k: v for k, v in self.to_dict().items() if k != "cpu_core"}
        payload = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(payload.encode()).hexdigest()[:_DIGEST_CHARS]
        return f"{self._slug(_SLUG_MAX - _DIGEST_CHARS - 1)}-{digest}"

    @property
    def name(self) -> str:
        """One readable line, e.g. ``AMD EPYC (Zen 4, family 25 model 17), 2 cores, avx2 ...``."""
        detail = self._numbers()
        cpu = self.cpu_name or self.cpu_core or self.arch
        text = f"{cpu} ({detail})" if detail else cpu
        text += f", {self.cores} cores"
        if self.features:
            order = sorted(self.features, key=lambda f: _FEATURE_ORDER.get(f, len(_FEATURE_ORDER)))
            text += ", " + " ".join(order)
        if self.board:
            text = f"{self.board}: {text}"
        if self.gpu:
            text += f"; GPU {self.gpu}" + (f" (sm {self.gpu_cc})" if self.gpu_cc else "")
        return text

    def _numbers(self) -> str:
        """``Zen 4, family 25 model 17`` (x86) or ``implementer 0x41 part 0xd42 r0p1`` (ARM)."""
        if self.arch in ARM_ARCHES:
            named = [("implementer ", self.cpu_family), ("part ", self.cpu_model)]
            named.append(("", self.cpu_stepping))
            return " ".join(label + value for label, value in named if value)
        numbers = f"family {self.cpu_family} model {self.cpu_model}" if self.cpu_family else None
        return ", ".join(v for v in (self.cpu_core, numbers) if v)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (``features`` as a list)."""
        data = asdict(self)
        data["features"] = list(self.features)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fingerprint:
        """The inverse of :meth:`to_dict`; refuses unknown keys and a missing ``arch``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or not isinstance(data.get("arch"), str):
            raise CatalogError(
                f"device fingerprint {dict(data)!r} is malformed (unknown keys {unknown} or "
                "no 'arch'); rebuild the engines on the device to record it again"
            )
        values = dict(data)
        values["features"] = tuple(str(f) for f in values.get("features") or ())
        values["cores"] = int(values.get("cores") or 0)
        return cls(**values)

    def _slug(self, limit: int) -> str:
        """arch, board words (else vendor and model name), then the core; cut to ``limit``."""
        core = _core_slug(self.cpu_core)
        if self.board:
            middle = _words(self.board)
        else:
            vendor = _words(self.cpu_vendor or "")
            middle = vendor + [w for w in _words(_model_text(self.cpu_name)) if w not in vendor]
        middle = [w for w in middle if w not in core.split("-")]
        tail = f"-{core}" if core else ""
        slug = "-".join(_words(self.arch)) or "unknown"
        for word in middle:  # in order, while the core still fits after them
            if len(slug) + 1 + len(word) + len(tail) > limit:
                break
            slug += f"-{word}"
        return (slug + tail)[:limit].strip("-")


def fingerprint(root: Path = Path("/")) -> Fingerprint:
    """The fingerprint of the machine whose files are under ``root``.

    ``root`` other than ``/`` is a fixture folder (``proc/cpuinfo``, ``proc/device-tree``,
    ...): its arch is read from ``proc/sys/kernel/arch`` and its Python package versions
    (TensorRT, ONNX Runtime) are not this interpreter's, so they stay None unless a
    TensorRT version header is under it.
    """
    real = root == Path("/")
    arch = platform.machine() if real else (_read(root / "proc/sys/kernel/arch") or "").strip()
    blocks = _cpu_blocks(_read(root / "proc/cpuinfo") or "")
    cpu = _arm_cpu(blocks) if arch in ARM_ARCHES else _x86_cpu(blocks)
    board = _clean(_read(root / "proc/device-tree/model"))
    gpu, cc = _gpu(root, board)
    return Fingerprint(
        arch=arch or "unknown",
        **cpu,
        cores=_core_count(root, blocks),
        board=board,
        gpu=gpu,
        gpu_cc=cc,
        tensorrt=_tensorrt_version(root, real),
        cuda=_cuda_version(root),
        onnxruntime=_onnxruntime_version() if real else None,
    )


@functools.cache
def current() -> Fingerprint:
    """This machine's fingerprint, read once per process (``current.cache_clear()`` rereads)."""
    return fingerprint(Path("/"))


def _cpu_blocks(text: str) -> list[dict[str, str]]:
    """One ``{lowercase key: value}`` per ``processor`` entry of /proc/cpuinfo."""
    blocks: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not line.strip():
            blocks.append({})
        elif sep:
            blocks[-1][key.strip().lower()] = value.strip()
    # arm32's "Processor : ARMv7 ..." and the trailing Hardware/Serial block are not CPUs
    return [b for b in blocks if b.get("processor", "").isdigit()]


def _common_features(blocks: list[dict[str, str]], key: str, tracked: tuple[str, ...]) -> list[str]:
    """The tracked flags every CPU has (a hybrid part can only use what all its cores do)."""
    sets = [set(b[key].split()) for b in blocks if key in b]
    common = set.intersection(*sets) if sets else set()
    return [f for f in tracked if f in common]


def _x86_cpu(blocks: list[dict[str, str]]) -> dict[str, Any]:
    first = blocks[0] if blocks else {}
    vendor_id = first.get("vendor_id")
    vendor = X86_VENDORS.get(vendor_id or "", vendor_id)
    family, model, stepping = (first.get(k) for k in ("cpu family", "model", "stepping"))
    return {
        "cpu_vendor": vendor,
        "cpu_name": first.get("model name"),
        "cpu_family": family,
        "cpu_model": model,
        "cpu_stepping": stepping,
        "cpu_core": _x86_core(vendor, family, model, stepping),
        "features": _common_features(blocks, "flags", X86_FEATURES),
    }


def _x86_core(
    vendor: str | None, family: str | None, model: str | None, stepping: str | None
) -> str | None:
    """The microarchitecture of an AMD or Intel part, from family/model(/stepping)."""
    if not (family and model and family.isdigit() and model.isdigit()):
        return None
    fam, mod = int(family), int(model)
    step = int(stepping) if stepping and stepping.isdigit() else 0
    if vendor == "AMD" and fam == 0x17:
        return "Zen 2" if mod >= 0x30 else "Zen+" if mod in (0x08, 0x18) else "Zen"
    if vendor == "AMD" and fam == 0x19:
        zen4 = 0x10 <= mod <= 0x1F or 0x60 <= mod <= 0x7F or 0xA0 <= mod <= 0xAF
        return "Zen 4" if zen4 else "Zen 3"
    if vendor == "AMD" and fam == 0x1A:
        return "Zen 5"
    if vendor == "Intel" and fam == 6 and mod == 0x55:
        return "Cooper Lake" if step >= 10 else "Cascade Lake" if step >= 5 else "Skylake-SP"
    return INTEL_CORES.get(mod) if vendor == "Intel" and fam == 6 else None


def _arm_cpu(blocks: list[dict[str, str]]) -> dict[str, Any]:
    seen = ((b.get("cpu implementer", "").lower(), b.get("cpu part", "").lower()) for b in blocks)
    pairs = [pair for pair in dict.fromkeys(seen) if all(pair)]  # one per core type, in order
    first = blocks[0] if blocks else {}
    implementers = list(dict.fromkeys(i for i, _ in pairs))
    vendor = ", ".join(ARM_IMPLEMENTERS.get(i, i) for i in implementers) or None
    names = [ARM_CORES[p] for p in pairs if p in ARM_CORES]
    core = " + ".join(names) if len(names) == len(pairs) and names else None
    variant, revision = _hex(first.get("cpu variant")), first.get("cpu revision", "")
    stepping = f"r{variant}p{revision}" if variant is not None and revision.isdigit() else None
    return {
        "cpu_vendor": vendor,
        "cpu_name": f"{vendor} {core}" if vendor and core else first.get("model name"),
        "cpu_family": ",".join(implementers) or None,
        "cpu_model": ",".join(part for _, part in pairs) or None,
        "cpu_stepping": stepping,
        "cpu_core": core,
        "features": _common_features(blocks, "features", ARM_FEATURES),
    }


def _core_count(root: Path, blocks: list[dict[str, str]]) -> int:
    """The CPUs present, online or not, else the processor entries of /proc/cpuinfo.

    Neither changes when the server pins its threads (affinity) to emulate a power mode,
    and ``present`` does not change either when nvpmodel takes cores offline (cpuinfo
    lists only online ones), so the id stays the board's across power modes.
    """
    present = _read(root / "sys/devices/system/cpu/present")
    count = 0
    for span in (present or "").strip().split(","):
        low, _, high = span.partition("-")
        if low.isdigit() and (high or low).isdigit():
            count += int(high or low) - int(low) + 1
    return count or len(blocks)


def _gpu(root: Path, board: str | None) -> tuple[str | None, str | None]:
    """A Jetson's integrated GPU (from the device tree), else the NVIDIA driver's GPUs."""
    compatible = (_read(root / "proc/device-tree/compatible") or "").lower()
    socs = [s.split(",")[-1] for s in compatible.split("\x00")]
    soc = next((s for s in socs if s in TEGRA_GPUS), None)
    if soc is None and board and "jetson" in board.lower():
        soc = next((s for word, s in _MODEL_SOCS if word in board.lower()), None)
    if soc is not None:
        return TEGRA_GPUS[soc]
    models = []
    for info in sorted((root / "proc/driver/nvidia/gpus").glob("*/information")):
        for line in (_read(info) or "").splitlines():
            if line.startswith("Model:"):
                models.append(line.partition(":")[2].strip())
    if not models:
        return None, None
    if len(set(models)) == 1:
        return (models[0] if len(models) == 1 else f"{len(models)}x {models[0]}"), None
    return ", ".join(models), None


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _onnxruntime_version() -> str | None:
    version = _dist_version("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")
    module = sys.modules.get("onnxruntime")  # already imported: asking it costs nothing
    return version or (getattr(module, "__version__", None) if module else None)


def _tensorrt_version(root: Path, real: bool) -> str | None:
    """The tensorrt wheel's version, else NvInferVersion.h's (JetPack's apt packages)."""
    names = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")
    version = _dist_version(*names) if real else None
    if version:
        return version
    for folder in ("usr/include", "usr/include/aarch64-linux-gnu", "usr/include/x86_64-linux-gnu"):
        header = _read(root / folder / "NvInferVersion.h")
        if header and (version := _header_version(header)):
            return version
    return None


def _header_version(text: str) -> str | None:
    """``major.minor.patch`` from NvInferVersion.h's ``#define NV_TENSORRT_MAJOR 8`` lines."""
    defines: dict[str, str] = dict(re.findall(r"^#define\s+(\w+)\s+(\w+)", text, re.M))
    parts: list[str] = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        value = defines.get(f"NV_TENSORRT_{part}", "")
        parts.append(defines.get(value, value))  # TensorRT 10: NV_TENSORRT_MAJOR TRT_MAJOR_...
    return ".".join(parts) if all(p.isdigit() for p in parts) else None


def _cuda_version(root: Path) -> str | None:
    """The CUDA toolkit under /usr/local/cuda: version.json, version.txt, else cuda.h."""
    cuda = root / "usr/local/cuda"
    try:
        return str(json.loads(_read(cuda / "version.json") or "")["cuda"]["version"])
    except (ValueError, KeyError, TypeError):
        pass
    match = re.search(r"CUDA Version\s+([\d.]+)", _read(cuda / "version.txt") or "")
    if match:
        return match.group(1)
    header = _read(cuda / "include/cuda.h", 65536) or ""  # the define is near the top
    match = re.search(r"#define\s+CUDA_VERSION\s+(\d+)", header)
    if match:
        number = int(match.group(1))
        return f"{number // 1000}.{number % 1000 // 10}"
    return None


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _NOISE]


def _model_text(name: str | None) -> str:
    """The model name without the clock ("@ 2.30GHz") and core count ("64-Core")."""
    text = (name or "").split("@")[0]
    return re.sub(r"\b\d+-core\b", " ", text, flags=re.I)


def _core_slug(core: str | None) -> str:
    """"Zen 4" -> "zen4", "Cortex-A78AE" -> "cortex-a78ae": a lone number joins its word."""
    slug = ""
    for word in re.findall(r"[a-z0-9]+", (core or "").lower()):
        slug += word if word.isdigit() and slug else f"-{word}"
    return slug.strip("-")


def _hex(text: str | None) -> int | None:
    try:
        return int(text or "", 16)
    except ValueError:
        return None


def _clean(text: str | None) -> str | None:
    """A device-tree string without its NUL terminator, or None when empty."""
    value = (text or "").strip("\x00 \n")
    return value or None


def _read(path: Path, limit: int = -1) -> str | None:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            return f.read(limit)
    except OSError:
        return None
