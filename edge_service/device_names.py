"""The ISA features a fingerprint records, and the readable names of CPUs and Jetson SoCs
that :mod:`edge_service.device` makes of cpuinfo's numbers and the device tree's
``compatible``."""

from __future__ import annotations

# The flags ONNX Runtime's CPU kernels (MLAS) are chosen by, in the order `name` lists
# them: the INT8 dot products (VNNI, AMX, ASIMD dot, I8MM) and the FP32/FP16/BF16 paths.
X86_FEATURES: tuple[str, ...] = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
)
ARM_FEATURES: tuple[str, ...] = ("asimddp", "i8mm", "sve", "sve2", "sme", "asimdhp", "fphp", "bf16")
ARM_ARCHES = frozenset({"aarch64", "arm64"})
X86_ARCHES = frozenset({"x86_64", "amd64", "i386", "i686"})

X86_VENDORS = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel", "HygonGenuine": "Hygon"}
ARM_IMPLEMENTERS = {
    "0x41": "ARM", "0x42": "Broadcom", "0x43": "Cavium", "0x46": "Fujitsu", "0x48": "HiSilicon",
    "0x4e": "NVIDIA", "0x51": "Qualcomm", "0x61": "Apple", "0xc0": "Ampere",
}
ARM_CORES = {
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57", ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd09"): "Cortex-A73", ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1", ("0x41", "0xd0d"): "Cortex-A77",
    ("0x41", "0xd40"): "Neoverse-V1", ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd42"): "Cortex-A78AE", ("0x41", "0xd44"): "Cortex-X1",
    ("0x41", "0xd46"): "Cortex-A510", ("0x41", "0xd47"): "Cortex-A710",
    ("0x41", "0xd49"): "Neoverse-N2", ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x4e", "0x000"): "Denver", ("0x4e", "0x003"): "Denver 2", ("0x4e", "0x004"): "Carmel",
    ("0xc0", "0xac3"): "Ampere-1",
}
INTEL_CORES = {  # family 6 model -> microarchitecture (0x55 is split by stepping below)
    0x3C: "Haswell", 0x3F: "Haswell", 0x45: "Haswell", 0x46: "Haswell",
    0x3D: "Broadwell", 0x47: "Broadwell", 0x4F: "Broadwell", 0x56: "Broadwell",
    0x4E: "Skylake", 0x5E: "Skylake", 0x8E: "Kaby Lake", 0x9E: "Kaby Lake",
    0x7D: "Ice Lake", 0x7E: "Ice Lake", 0x6A: "Ice Lake-SP", 0x6C: "Ice Lake-SP",
    0x8C: "Tiger Lake", 0x8D: "Tiger Lake", 0xA7: "Rocket Lake",
    0x97: "Alder Lake", 0x9A: "Alder Lake", 0xB7: "Raptor Lake", 0xBA: "Raptor Lake",
    0xBF: "Raptor Lake", 0xAA: "Meteor Lake", 0x8F: "Sapphire Rapids",
    0xCF: "Emerald Rapids", 0xAD: "Granite Rapids", 0xAE: "Granite Rapids",
}
# Jetson SoCs by device-tree `compatible` (and the words of the model as a fallback):
# the integrated GPU and its CUDA compute capability.
TEGRA_GPUS = {
    "tegra264": ("Thor (Blackwell iGPU)", None),
    "tegra234": ("Orin (Ampere iGPU)", "8.7"),
    "tegra194": ("Xavier (Volta iGPU)", "7.2"),
    "tegra186": ("TX2 (Pascal iGPU)", "6.2"),
    "tegra210": ("Tegra X1 (Maxwell iGPU)", "5.3"),
}
MODEL_SOCS = (("thor", "tegra264"), ("orin", "tegra234"), ("xavier", "tegra194"),
               ("tx2", "tegra186"), ("nano", "tegra210"), ("tx1", "tegra210"))
