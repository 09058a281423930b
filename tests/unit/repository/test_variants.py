"""Variant specs: self-describing ids and a JSON round-trip."""

from __future__ import annotations

import json

import pytest

from edge_service.errors import CatalogError
from edge_service.variants import VariantSpec


def test_id_reads_base_when_every_stage_is_identity() -> None:
    assert VariantSpec(("id", "id", "id"), "int8").id == "base@int8"


def test_id_names_stages_and_resolution_when_variant_is_compressed() -> None:
    spec = VariantSpec(("p50", "lr25", "id"), "fp16", input_size=24)
    assert spec.id == "p50-lr25-id-r24@fp16"
    assert spec.family_key == "p50-lr25-id-r24"


def test_spec_survives_json_round_trip_when_serialised() -> None:
    spec = VariantSpec(("dw", "id", "m2"), "int8", input_size=20, source="evolve")
    assert VariantSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_from_dict_refuses_spec_when_stored_id_disagrees() -> None:
    data = VariantSpec(("id",), "fp32").to_dict() | {"id": "base@int8"}
    with pytest.raises(CatalogError, match="does not match"):
        VariantSpec.from_dict(data)


@pytest.mark.parametrize("kwargs", [{"precision": "fp8"}, {"stages": ()}, {"input_size": 2}])
def test_spec_refused_when_field_is_invalid(kwargs: dict) -> None:
    args = {"stages": ("id",), "precision": "fp32"} | kwargs
    with pytest.raises(CatalogError):
        VariantSpec(**args)
