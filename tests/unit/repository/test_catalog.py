"""The catalog: validated on load, bad fields named, artifacts checksummed."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_service.errors import CatalogError, NotFoundError, RejectedVariantError
from edge_service.fsutil import waiting_lock
from edge_service.repository import (
    load_catalog,
    make_artifact,
    parse_catalog,
    remove_family_temp_files,
    save_catalog,
    verified_artifact_path,
)
from edge_service.variants import VariantSpec


def _catalog_dict(family_dir: Path) -> dict[str, Any]:
    art = family_dir / "base" / "fp32.onnx"
    art.parent.mkdir(parents=True, exist_ok=True)
    art.write_bytes(b"onnx bytes")
    spec = VariantSpec(("id", "id"), "fp32")
    return {
        "schema_version": 1,
        "family": family_dir.name,
        "task": "classification",
        "labels": ["a", "b"],
        "input": {"name": "input", "shape": ["batch", 1, 28, 28], "mean": 0.5, "std": 0.5},
        "variants": [
            {
                "id": spec.id,
                "spec": spec.to_dict(),
                "backend": "onnxruntime",
                "artifact": make_artifact(family_dir, art).model_dump(),
                "accuracy": {"top1": 0.9, "examples": 100},
            }
        ],
    }


def test_catalog_round_trips_when_saved_and_loaded(tmp_path: Path) -> None:
    fam = tmp_path / "fashion"
    catalog = parse_catalog(_catalog_dict(fam))
    save_catalog(fam, catalog)
    assert load_catalog(fam) == catalog
    assert not list(fam.glob(".catalog.json.*"))  # no temp file left behind


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(schema_version=99), "schema_version"),
        (lambda d: d.update(labels=[]), "labels"),
        (lambda d: d["variants"][0].update(backend="tflite"), "variants[0].backend"),
        (
            lambda d: d["variants"][0]["artifact"].update(path="../x.onnx"),
            "variants[0].artifact.path",
        ),
        (lambda d: d["variants"][0]["accuracy"].update(top1=1.5), "variants[0].accuracy.value"),
        (lambda d: d["variants"][0].update(id="base@int8"), "variants[0]"),
        (lambda d: d["input"].pop("mean"), "input.mean"),
    ],
)
def test_bad_catalog_refused_naming_field_when_a_field_is_wrong(tmp_path, mutate, field) -> None:
    data = _catalog_dict(tmp_path / "fashion")
    mutate(data)
    with pytest.raises(CatalogError, match="field " + re.escape(field)):
        parse_catalog(data)


def test_duplicate_variant_ids_refused_when_catalog_repeats_one(tmp_path: Path) -> None:
    data = _catalog_dict(tmp_path / "fashion")
    data["variants"].append(data["variants"][0])
    with pytest.raises(CatalogError, match="unique"):
        parse_catalog(data)


def test_load_says_how_to_build_when_catalog_missing(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="edge-service build --family fashion"):
        load_catalog(tmp_path / "fashion")


def test_load_refuses_catalog_when_json_is_truncated(tmp_path: Path) -> None:
    fam = tmp_path / "fashion"
    fam.mkdir()
    (fam / "catalog.json").write_text('{"schema_version": 1, "fam')
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(fam)


def test_artifact_refused_when_file_changed_after_build(tmp_path: Path) -> None:
    fam = tmp_path / "fashion"
    catalog = parse_catalog(_catalog_dict(fam))
    artifact = catalog.variants[0].artifact
    assert verified_artifact_path(fam, artifact).is_file()
    (fam / artifact.path).write_bytes(b"tampered")
    with pytest.raises(CatalogError, match="fails its checksum"):
        verified_artifact_path(fam, artifact)


def test_variant_lookup_lists_known_ids_when_id_unknown(tmp_path: Path) -> None:
    catalog = parse_catalog(_catalog_dict(tmp_path / "fashion"))
    with pytest.raises(NotFoundError, match="base@fp32"):
        catalog.variant("nope@int8")


def test_catalog_json_is_plain_json_when_written(tmp_path: Path) -> None:
    fam = tmp_path / "fashion"
    save_catalog(fam, parse_catalog(_catalog_dict(fam)))
    assert json.loads((fam / "catalog.json").read_text())["schema_version"] == 1


def test_catalog_without_gate_fields_loads_every_variant_as_servable(tmp_path: Path) -> None:
    v = parse_catalog(_catalog_dict(tmp_path / "fashion")).variants[0]
    assert v.status == "servable" and v.servable
    assert v.status_reason is None and v.precision_drop is None


def test_gate_fields_round_trip_and_a_bad_status_is_refused_by_name(tmp_path: Path) -> None:
    fam = tmp_path / "fashion"
    d = _catalog_dict(fam)
    d["variants"][0].update(status="dominated", status_reason="slower", precision_drop=None)
    save_catalog(fam, parse_catalog(d))
    loaded = load_catalog(fam).variants[0]
    assert (loaded.status, loaded.status_reason, loaded.servable) == ("dominated", "slower", False)
    d["variants"][0]["status"] = "maybe"
    with pytest.raises(CatalogError, match=re.escape("variants[0].status")):
        parse_catalog(d)


def test_pinnable_refuses_a_rejected_variant_naming_the_reason(tmp_path: Path) -> None:
    d = _catalog_dict(tmp_path / "fashion")
    d["variants"][0].update(status="rejected", status_reason="8.09 points below fp32")
    catalog = parse_catalog(d)
    with pytest.raises(RejectedVariantError, match=re.escape("8.09 points below fp32")) as err:
        catalog.pinnable("base@fp32")
    assert err.value.http_status == 409 and err.value.code == "variant_rejected"
    with pytest.raises(NotFoundError):
        catalog.pinnable("nope@fp32")
    d["variants"][0]["status"] = "dominated"
    assert parse_catalog(d).pinnable("base@fp32").id == "base@fp32"


def test_family_sweep_takes_catalog_temps_too_but_waits_for_a_catalog_write(
    tmp_path: Path,
) -> None:
    family = tmp_path / "fam"
    left = [family / ".catalog.json.abcdefgh.tmp", family / "base" / ".fp32.onnx.12345678.tmp"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("cut short")
    writing, swept = threading.Event(), []

    def writer() -> None:  # a catalog write in progress holds the catalog lock
        with waiting_lock(family / ".catalog.lock"):
            writing.set()
            time.sleep(0.3)
            swept.append(left[0].exists())

    thread = threading.Thread(target=writer)
    thread.start()
    assert writing.wait(10)
    assert sorted(remove_family_temp_files(family)) == sorted(left)
    thread.join(10)
    assert swept == [True] and not any(p.exists() for p in left)
