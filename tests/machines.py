"""Recorded machines for the device fingerprint and INT8 scheme tests.

Each one is a /proc/cpuinfo file under tests/unit/fixtures/cpuinfo/ (zen4-epyc.txt was
recorded on a 2-vCPU Zen 4 VM; the others follow the kernel's format and that CPU's
flags), its ``uname -m`` and, for the Jetsons, the device-tree ``model`` and ``compatible`` strings.
:func:`machine_root` lays one out as a folder that ``fingerprint(root)`` reads.
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path(__file__).parent / "unit" / "fixtures" / "cpuinfo"

MACHINES: dict[str, dict[str, str]] = {
    # Zen 1 (Naples) in a cloud VM that names it only "AMD EPYC": avx2 fma, no AVX-512
    "zen1": {"arch": "x86_64", "cpuinfo": "zen1-epyc.txt"},
    # Zen 4 (Genoa), also just "AMD EPYC": avx512f avx512_vnni
    "zen4": {"arch": "x86_64", "cpuinfo": "zen4-epyc.txt"},
    "icelake": {"arch": "x86_64", "cpuinfo": "icelake-xeon.txt"},
    "sapphirerapids": {"arch": "x86_64", "cpuinfo": "sapphirerapids-xeon.txt"},
    "orin": {
        "arch": "aarch64",
        "cpuinfo": "jetson-agx-orin.txt",
        "model": "NVIDIA Jetson AGX Orin Developer Kit\x00",
        "compatible": "nvidia,p3737-0000+p3701-0005\x00nvidia,p3701-0005\x00nvidia,tegra234\x00",
    },
    "neoverse_v1": {"arch": "aarch64", "cpuinfo": "neoverse-v1.txt"},
    "neoverse_n2": {"arch": "aarch64", "cpuinfo": "neoverse-n2.txt"},
    "nano": {
        "arch": "aarch64",
        "cpuinfo": "jetson-nano.txt",
        "model": "NVIDIA Jetson Nano Developer Kit\x00",
        "compatible": (
            "nvidia,p3449-0000-b00+p3448-0002-b00\x00nvidia,jetson-nano\x00nvidia,tegra210\x00"
        ),
    },
}


def machine_root(tmp: Path, name: str) -> Path:
    """A folder with ``name``'s proc/cpuinfo, proc/sys/kernel/arch and device tree."""
    spec = MACHINES[name]
    root = tmp / name
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/arch").write_text(spec["arch"] + "\n")
    (root / "proc/cpuinfo").write_text((CPUINFO / spec["cpuinfo"]).read_text())
    if "model" in spec:
        (root / "proc/device-tree").mkdir()
        (root / "proc/device-tree/model").write_text(spec["model"])
        (root / "proc/device-tree/compatible").write_text(spec["compatible"])
    return root
