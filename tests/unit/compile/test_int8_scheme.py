"""The ISA-aware INT8 scheme: activations and reduce_range per recorded machine and target."""

from __future__ import annotations

from pathlib import Path

import pytest
from machines import MACHINES, machine_root

from edge_service.compile.int8_scheme import Int8Scheme, choose_int8_scheme
from edge_service.device import Fingerprint, fingerprint
from edge_service.errors import BuildError

# machine -> (activations, reduce_range, words the reason must name) for ONNX Runtime
ORT_SCHEMES = {
    "zen1": ("u8", True, ("avx2", "fma", "without VNNI", "reduce_range")),
    "zen4": ("u8", False, ("avx512_vnni", "int32")),
    "icelake": ("u8", False, ("avx512_vnni",)),
    "sapphirerapids": ("u8", False, ("amx_int8", "amx_tile")),
    "orin": ("s8", False, ("asimddp", "SDOT")),
    "neoverse_v1": ("s8", False, ("asimddp i8mm",)),
    "neoverse_n2": ("s8", False, ("asimddp i8mm",)),
    "nano": ("u8", False, ("Cortex-A57", "no asimddp")),
}


def _fp(tmp_path: Path, name: str) -> Fingerprint:
    return fingerprint(machine_root(tmp_path, name))


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_onnxruntime_scheme_follows_the_isa_when_no_activations_are_asked(
    tmp_path: Path, name: str
) -> None:
    activations, reduce_range, words = ORT_SCHEMES[name]
    scheme = choose_int8_scheme(_fp(tmp_path, name), tensorrt=False)
    assert (scheme.activations, scheme.reduce_range) == (activations, reduce_range)
    assert scheme.reason.startswith(f"{activations} activations")
    for word in words:
        assert word in scheme.reason


@pytest.mark.parametrize("name", sorted(MACHINES))
@pytest.mark.parametrize("asked", [None, "auto", "s8"])
def test_tensorrt_scheme_is_symmetric_s8_with_full_weights_on_every_machine(
    tmp_path: Path, name: str, asked: str | None
) -> None:
    scheme = choose_int8_scheme(_fp(tmp_path, name), tensorrt=True, asked_activations=asked)
    assert (scheme.activations, scheme.reduce_range) == ("s8", False)
    assert "TensorRT" in scheme.reason


@pytest.mark.parametrize(
    ("name", "asked", "expected"),
    [
        ("zen1", "s8", ("s8", True)),  # s8 is rewritten to u8 on x86: it saturates the same
        ("zen4", "s8", ("s8", False)),
        ("orin", "u8", ("u8", False)),
        ("nano", "s8", ("s8", False)),
        ("sapphirerapids", "u8", ("u8", False)),
    ],
)
def test_asked_activations_win_but_reduce_range_stays_the_isas_when_overridden(
    tmp_path: Path, name: str, asked: str, expected: tuple[str, bool]
) -> None:
    scheme = choose_int8_scheme(_fp(tmp_path, name), tensorrt=False, asked_activations=asked)
    assert (scheme.activations, scheme.reduce_range) == expected
    assert "as asked (--int8-activations)" in scheme.reason


def test_auto_is_the_isas_choice_when_asked_for() -> None:
    fp = Fingerprint(arch="aarch64", features=("asimddp",))
    assert choose_int8_scheme(fp, False, "auto") == choose_int8_scheme(fp, False)


def test_tensorrt_refuses_u8_with_what_to_do_when_asked(tmp_path: Path) -> None:
    what_to_do = r"--int8-activations s8 \(or auto\).*--backend onnxruntime"
    with pytest.raises(BuildError, match=what_to_do):
        choose_int8_scheme(_fp(tmp_path, "orin"), tensorrt=True, asked_activations="u8")


def test_unknown_activations_are_refused_with_the_choices_when_asked() -> None:
    with pytest.raises(BuildError, match="s8, u8 or auto"):
        choose_int8_scheme(Fingerprint(arch="x86_64"), tensorrt=False, asked_activations="u4")


@pytest.mark.parametrize(
    ("fp", "expected"),
    [
        # AVX-512F without VNNI (Skylake-SP): vpmaddubsw on zmm, saturates like AVX2
        (Fingerprint(arch="x86_64", features=("avx2", "fma", "avx512f", "avx512bw")), ("u8", True)),
        # Alder Lake: AVX-VNNI on ymm, no AVX-512
        (Fingerprint(arch="x86_64", features=("avx_vnni", "avx2", "fma")), ("u8", False)),
        (Fingerprint(arch="x86_64"), ("u8", True)),  # no AVX2 at all (or cpuinfo unreadable)
        (Fingerprint(arch="x86_64", features=("avx2", "amx_tile")), ("u8", True)),  # AMX needs both
        (Fingerprint(arch="riscv64"), ("u8", False)),  # no rule: portable int32 kernels
    ],
)
def test_scheme_covers_the_edges_of_the_x86_rules_when_flags_are_partial(
    fp: Fingerprint, expected: tuple[str, bool]
) -> None:
    scheme = choose_int8_scheme(fp, tensorrt=False)
    assert (scheme.activations, scheme.reduce_range) == expected
    assert isinstance(scheme, Int8Scheme) and scheme.reason.endswith(".")
