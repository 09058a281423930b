"""The device fingerprint: fields read from recorded /proc files, a stable id, round trip."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
from machines import MACHINES, machine_root

from edge_service.device import Fingerprint, current, fingerprint
from edge_service.errors import CatalogError

ID_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*-[0-9a-f]{10}$")

# name -> the fingerprint its recorded files must read as (no runtimes under a fixture)
EXPECTED = {
    "zen1": Fingerprint(
        arch="x86_64", cpu_vendor="AMD", cpu_name="AMD EPYC", cpu_family="23", cpu_model="1",
        cpu_stepping="2", cpu_core="Zen", cores=4, features=("avx2", "fma"),
        board=None, gpu=None, gpu_cc=None,
    ),
    "zen4": Fingerprint(
        arch="x86_64", cpu_vendor="AMD", cpu_name="AMD EPYC", cpu_family="25", cpu_model="17",
        cpu_stepping="1", cpu_core="Zen 4", cores=2,
        features=("avx2", "avx512_bf16", "avx512_vnni", "avx512bw", "avx512f", "fma"),
        board=None, gpu=None, gpu_cc=None,
    ),
    "icelake": Fingerprint(
        arch="x86_64", cpu_vendor="Intel",
        cpu_name="Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", cpu_family="6",
        cpu_model="106", cpu_stepping="6", cpu_core="Ice Lake-SP", cores=4,
        features=("avx2", "avx512_vnni", "avx512bw", "avx512f", "fma"),
        board=None, gpu=None, gpu_cc=None,
    ),
    "sapphirerapids": Fingerprint(
        arch="x86_64", cpu_vendor="Intel", cpu_name="Intel(R) Xeon(R) Platinum 8488C",
        cpu_family="6", cpu_model="143", cpu_stepping="8", cpu_core="Sapphire Rapids", cores=4,
        features=(
            "amx_bf16", "amx_int8", "amx_tile", "avx2", "avx512_bf16", "avx512_fp16",
            "avx512_vnni", "avx512bw", "avx512f", "avx_vnni", "fma",
        ),
        board=None, gpu=None, gpu_cc=None,
    ),
    "orin": Fingerprint(
        arch="aarch64", cpu_vendor="ARM", cpu_name="ARM Cortex-A78AE", cpu_family="0x41",
        cpu_model="0xd42", cpu_stepping="r0p1", cpu_core="Cortex-A78AE", cores=12,
        features=("asimddp", "asimdhp", "fphp"),
        board="NVIDIA Jetson AGX Orin Developer Kit", gpu="Orin (Ampere iGPU)", gpu_cc="8.7",
    ),
    "neoverse_v1": Fingerprint(
        arch="aarch64", cpu_vendor="ARM", cpu_name="ARM Neoverse-V1", cpu_family="0x41",
        cpu_model="0xd40", cpu_stepping="r1p1", cpu_core="Neoverse-V1", cores=2,
        features=("asimddp", "asimdhp", "bf16", "fphp", "i8mm", "sve"),
        board=None, gpu=None, gpu_cc=None,
    ),
    "neoverse_n2": Fingerprint(
        arch="aarch64", cpu_vendor="ARM", cpu_name="ARM Neoverse-N2", cpu_family="0x41",
        cpu_model="0xd49", cpu_stepping="r0p0", cpu_core="Neoverse-N2", cores=2,
        features=("asimddp", "asimdhp", "bf16", "fphp", "i8mm", "sve", "sve2"),
        board=None, gpu=None, gpu_cc=None,
    ),
    "nano": Fingerprint(
        arch="aarch64", cpu_vendor="ARM", cpu_name="ARM Cortex-A57", cpu_family="0x41",
        cpu_model="0xd07", cpu_stepping="r1p1", cpu_core="Cortex-A57", cores=4, features=(),
        board="NVIDIA Jetson Nano Developer Kit", gpu="Tegra X1 (Maxwell iGPU)", gpu_cc="5.3",
    ),
}


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_fingerprint_reads_cpu_board_and_gpu_when_given_a_recorded_machine(
    tmp_path: Path, name: str
) -> None:
    # a fixture folder is not this interpreter: no Python package versions leak in either
    assert fingerprint(machine_root(tmp_path, name)) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_id_is_a_short_slug_and_hash_and_stable_when_read_twice(tmp_path: Path, name: str) -> None:
    root = machine_root(tmp_path, name)
    first, second = fingerprint(root), fingerprint(root)
    assert ID_PATTERN.match(first.id), first.id
    assert len(first.id) <= 48
    assert first.id == second.id and first == second


def test_ids_differ_when_two_amd_epycs_differ_in_family_model_and_flags(tmp_path: Path) -> None:
    zen1 = fingerprint(machine_root(tmp_path, "zen1"))
    zen4 = fingerprint(machine_root(tmp_path, "zen4"))
    assert zen1.cpu_name == zen4.cpu_name == "AMD EPYC"  # what the cloud VM says, both times
    assert zen1.id != zen4.id
    assert zen1.id.startswith("x86-64-amd-epyc-zen-")
    assert zen4.id.startswith("x86-64-amd-epyc-zen4-")


@pytest.mark.parametrize(
    "change",
    [
        {"cpu_stepping": "3"},
        {"features": ("avx2",)},
        {"cores": 8},
        {"onnxruntime": "1.17.0"},
        {"tensorrt": "10.3.0"},
        {"cuda": "12.6"},
        {"board": "NVIDIA Jetson Orin NX"},
    ],
)
def test_id_changes_when_a_hardware_field_or_runtime_version_changes(
    tmp_path: Path, change: dict[str, object]
) -> None:
    fp = fingerprint(machine_root(tmp_path, "zen1"))
    assert dataclasses.replace(fp, **change).id != fp.id  # type: ignore[arg-type]


def test_slugs_read_as_the_machine_when_they_name_a_jetson_or_a_xeon(tmp_path: Path) -> None:
    orin = fingerprint(machine_root(tmp_path, "orin"))
    assert orin.id.startswith("aarch64-jetson-agx-orin-cortex-a78ae-")
    xeon = fingerprint(machine_root(tmp_path, "icelake"))
    assert xeon.id.startswith("x86-64-intel-xeon") and "ice-lake-sp-" in xeon.id
    neoverse = fingerprint(machine_root(tmp_path, "neoverse_v1"))
    assert neoverse.id.startswith("aarch64-arm-neoverse-v1-")


def test_name_is_one_readable_line_when_asked() -> None:
    fp = Fingerprint(
        arch="x86_64", cpu_vendor="AMD", cpu_name="AMD EPYC", cpu_family="25", cpu_model="17",
        cpu_core="Zen 4", cores=2, features=("fma", "avx512_vnni", "avx2", "avx512f"),
    )
    assert fp.name == "AMD EPYC (Zen 4, family 25 model 17), 2 cores, avx2 fma avx512f avx512_vnni"


def test_name_says_board_core_and_gpu_when_on_a_jetson(tmp_path: Path) -> None:
    name = fingerprint(machine_root(tmp_path, "orin")).name
    assert name == (
        "NVIDIA Jetson AGX Orin Developer Kit: ARM Cortex-A78AE (implementer 0x41 part 0xd42 "
        "r0p1), 12 cores, asimddp asimdhp fphp; GPU Orin (Ampere iGPU) (sm 8.7)"
    )


def test_cores_count_present_cpus_when_nvpmodel_took_some_offline(tmp_path: Path) -> None:
    root = machine_root(tmp_path, "orin")
    online = "\n\n".join((root / "proc/cpuinfo").read_text().split("\n\n")[:4]) + "\n"
    (root / "proc/cpuinfo").write_text(online)  # a 4-core power mode: cpuinfo lists 4
    assert fingerprint(root).cores == 4
    (root / "sys/devices/system/cpu").mkdir(parents=True)
    (root / "sys/devices/system/cpu/present").write_text("0-11\n")
    assert fingerprint(root).cores == 12


def test_round_trip_through_json_gives_the_same_fingerprint_and_id(tmp_path: Path) -> None:
    fp = dataclasses.replace(
        fingerprint(machine_root(tmp_path, "orin")), tensorrt="8.6.2", cuda="12.2"
    )
    back = Fingerprint.from_dict(json.loads(json.dumps(fp.to_dict())))
    assert back == fp and back.id == fp.id


@pytest.mark.parametrize("bad", [{"arch": "x86_64", "colour": "red"}, {"cores": 2}])
def test_from_dict_refuses_with_what_to_do_when_keys_are_wrong(bad: dict[str, object]) -> None:
    with pytest.raises(CatalogError, match="rebuild the engines"):
        Fingerprint.from_dict(bad)


def test_gpu_and_cuda_are_read_when_a_discrete_gpu_and_toolkit_are_installed(
    tmp_path: Path,
) -> None:
    root = machine_root(tmp_path, "zen4")
    for bus in ("0000:17:00.0", "0000:65:00.0"):
        info = root / "proc/driver/nvidia/gpus" / bus / "information"
        info.parent.mkdir(parents=True)
        info.write_text("Model: \t\t NVIDIA H200\nIRQ:   \t\t 42\nBus Type: \t PCIe\n")
    cuda = root / "usr/local/cuda"
    cuda.mkdir(parents=True)
    (cuda / "version.json").write_text(json.dumps({"cuda": {"version": "12.6.77"}}))
    fp = fingerprint(root)
    assert (fp.gpu, fp.gpu_cc, fp.cuda) == ("2x NVIDIA H200", None, "12.6.77")


def test_cuda_and_tensorrt_come_from_headers_when_there_is_no_version_file(tmp_path: Path) -> None:
    root = machine_root(tmp_path, "orin")
    (root / "usr/local/cuda/include").mkdir(parents=True)
    (root / "usr/local/cuda/include/cuda.h").write_text("#define CUDA_VERSION 12020\n")
    header = root / "usr/include/aarch64-linux-gnu/NvInferVersion.h"
    header.parent.mkdir(parents=True)
    header.write_text(  # TensorRT 10's header indirects through TRT_*_ENTERPRISE
        "#define TRT_MAJOR_ENTERPRISE 10\n#define TRT_MINOR_ENTERPRISE 3\n"
        "#define TRT_PATCH_ENTERPRISE 0\n#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE\n"
        "#define NV_TENSORRT_MINOR TRT_MINOR_ENTERPRISE\n"
        "#define NV_TENSORRT_PATCH TRT_PATCH_ENTERPRISE\n"
    )
    fp = fingerprint(root)
    assert (fp.cuda, fp.tensorrt) == ("12.2", "10.3.0")


def test_current_reads_this_machine_once_when_called_twice() -> None:
    fp = current()
    assert current() is fp
    assert ID_PATTERN.match(fp.id) and len(fp.id) <= 48
    assert fp.arch and fp.cores >= 1 and f"{fp.cores} cores" in fp.name


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_id_stays_the_same_when_the_process_is_pinned_to_one_cpu() -> None:
    before = fingerprint()
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})  # how the server emulates a power mode
        pinned = fingerprint()
    finally:
        os.sched_setaffinity(0, allowed)
    assert pinned.id == before.id and pinned.cores == before.cores
