"""Which INT8 scheme to quantize for, from the device fingerprint and the target backend.

A scheme is the activation type (``s8`` symmetric or ``u8`` asymmetric; weights are always
per-channel symmetric s8) and whether the weights get 7 bits (ONNX Runtime's
``reduce_range``). The rules follow the kernels ONNX Runtime's MLAS picks on each ISA
(``onnxruntime/core/mlas/lib/platform.cpp``) and its quantization guide:

- TensorRT reads only symmetric s8 (explicit quantization, zero point 0): ``s8``.
- x86: ONNX Runtime runs QDQ INT8 as U8S8 (``QDQIsInt8Allowed()`` is false on x86; s8
  activations are rewritten to u8 by ``QDQS8ToU8Transformer``), so ``u8``. With VNNI
  (``avx512_vnni``, ``avx_vnni``) or AMX the u8 x s8 dot products accumulate in int32;
  without, AVX2/AVX-512 use ``vpmaddubsw``, which adds pairs of u8 x s8 products in
  *saturating* int16, so weights get 7 bits (``reduce_range``), whichever the activations;
  pre-AVX2 x86 gets them too (the SSE4.1 kernel of Windows builds saturates the same way).
- aarch64 with ``asimddp`` / ``i8mm``: SDOT/SMMLA kernels take s8 natively and accumulate in
  int32 (u8 runs the same kernels after flipping its sign bit): ``s8``, 8-bit weights.
- aarch64 without (Cortex-A57 on Nano/TX1, A72): u8 and s8 both run the NEON
  ``smull``/``smlal``/``sadalp`` kernel, whose int16 pair sums cannot overflow with
  symmetric [-127, 127] weights: ``u8`` (all 8 bits for one-signed, post-ReLU activations),
  8-bit weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from edge_service.device import Fingerprint
from edge_service.device_names import ARM_ARCHES, X86_ARCHES
from edge_service.errors import BuildError

Activations = Literal["s8", "u8"]
CHOICES: tuple[str, ...] = ("s8", "u8")


@dataclass(frozen=True)
class Int8Scheme:
    """How to quantize: activation type, 7-bit weights or not, and why (one sentence)."""

    activations: Activations
    reduce_range: bool
    reason: str


@dataclass(frozen=True)
class _IsaRule:
    activations: Activations
    why_activations: str
    reduce_range: bool
    why_range: str


def choose_int8_scheme(
    fp: Fingerprint, tensorrt: bool, asked_activations: str | None = None
) -> Int8Scheme:
    """The INT8 scheme for a build on ``fp``, for TensorRT (``tensorrt``) or ONNX Runtime.

    ``asked_activations`` (``--int8-activations``: ``s8``, ``u8``, or None / ``auto``)
    overrides the activation type; ``reduce_range`` is still the ISA's. TensorRT takes only
    ``s8``: asking it for ``u8`` is a BuildError.
    """
    asked = None if asked_activations in (None, "auto") else asked_activations
    if asked is not None and asked not in CHOICES:
        raise BuildError(
            f"INT8 activation scheme {asked!r} is not one of {CHOICES}; use s8, u8 or auto"
        )
    if tensorrt:
        if asked == "u8":
            raise BuildError(
                "TensorRT reads only symmetric s8 INT8 (zero point 0), not u8 activations: "
                "use --int8-activations s8 (or auto), or build with --backend onnxruntime"
            )
        how = "s8 activations as asked" if asked else "s8 activations"
        return Int8Scheme(
            "s8",
            False,
            f"TensorRT target: {how}, symmetric (the only INT8 form its explicit "
            "quantization reads), and 8-bit weights.",
        )
    rule = _isa_rule(fp)
    if asked is None:
        activations, why = rule.activations, rule.why_activations
    else:
        activations = cast(Activations, asked)
        why = f"{asked} activations as asked (--int8-activations)"
        if asked == "s8" and fp.arch.lower() in X86_ARCHES:
            why += ", which ONNX Runtime rewrites to u8 on x86"
    return Int8Scheme(activations, rule.reduce_range, f"{why}; {rule.why_range}.")


def _isa_rule(fp: Fingerprint) -> _IsaRule:
    arch = fp.arch.lower()
    if arch in X86_ARCHES:
        return _x86_rule(set(fp.features))
    if arch in ARM_ARCHES:
        return _arm_rule(fp)
    return _IsaRule(
        "u8",
        f"u8 activations (no ISA rule for {fp.arch})",
        False,
        "ONNX Runtime's portable kernels sum in int32, so weights keep 8 bits",
    )


def _x86_rule(features: set[str]) -> _IsaRule:
    u8 = "u8 activations (ONNX Runtime's x86 INT8 kernels are u8 x s8, measured 20-27% faster)"
    exact: list[str] = [f for f in ("avx512_vnni", "avx_vnni") if f in features]
    if {"amx_int8", "amx_tile"} <= features:
        exact += ["amx_int8", "amx_tile"]
    if exact:
        found = " ".join(exact)
        return _IsaRule(
            "u8", u8, False, f"{found}: u8 x s8 dot products sum in int32, so weights keep 8 bits"
        )
    if "avx2" in features:
        found = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512bw") if f in features)
        return _IsaRule(
            "u8",
            u8,
            True,
            f"{found} without VNNI: vpmaddubsw sums u8 x s8 pairs in saturating int16, "
            "so weights get 7 bits (reduce_range)",
        )
    return _IsaRule(
        "u8",
        u8,
        True,
        "no avx2: 7-bit weights (reduce_range) are safe on both ONNX Runtime's saturating "
        "SSE4.1 kernel (Windows builds) and its exact SSE2 one (Linux)",
    )


def _arm_rule(fp: Fingerprint) -> _IsaRule:
    dot = [f for f in ("asimddp", "i8mm") if f in fp.features]
    if dot:
        return _IsaRule(
            "s8",
            f"s8 activations ({' '.join(dot)}: ONNX Runtime's SDOT/SMMLA kernels take s8 natively)",
            False,
            "the dot products sum in int32, so weights keep 8 bits",
        )
    core = fp.cpu_core or "this core"
    return _IsaRule(
        "u8",
        f"u8 activations ({core}, no asimddp: ONNX Runtime's NEON kernel runs u8 and s8 alike, "
        "and u8 spends all 8 bits on post-ReLU values)",
        False,
        "its smull/smlal int16 pair sums cannot overflow with symmetric weights, "
        "so weights keep 8 bits",
    )


class OnDevice:
    """What a build request derives from the device it runs on: the INT8 scheme and the
    device id its profiles are keyed by. Mixed into frozen request dataclasses that hold
    ``fingerprint``, ``tensorrt`` and ``int8_activations``."""

    fingerprint: Fingerprint
    tensorrt: str | None
    int8_activations: str | None

    @property
    def int8_scheme(self) -> Int8Scheme:
        """The INT8 scheme for this device and backend (the override wins)."""
        return choose_int8_scheme(self.fingerprint, bool(self.tensorrt), self.int8_activations)

    @property
    def activations(self) -> str:
        """The INT8 activation type this build uses."""
        return self.int8_scheme.activations

    @property
    def device_id(self) -> str:
        """The device the profiles are measured on (what they are keyed by)."""
        return self.fingerprint.id

    @property
    def device(self) -> dict[str, Any]:
        """The fingerprint as the catalog's ``build.device`` records it."""
        return {
            "id": self.fingerprint.id,
            "name": self.fingerprint.name,
            **self.fingerprint.to_dict(),
        }
