"""Which artifacts a build must redo: only the damaged ones of a family built the same way."""

from __future__ import annotations

from pathlib import Path

from support import PROFILED

from edge_service.compile.repair import stale_variants
from edge_service.repository import Catalog, make_artifact, save_catalog


def _family(tmp_path: Path, key: str = "k1") -> tuple[Path, Catalog]:
    """PROFILED's two variants with real artifact files, built under ``key``."""
    family = tmp_path / "fashion"
    variants = []
    for v in PROFILED.variants:
        path = family / v.artifact.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(v.id.encode() * 100)
        variants.append(v.model_copy(update={"artifact": make_artifact(family, path)}))
    catalog = PROFILED.model_copy(update={"variants": variants, "build": {"key": key}})
    save_catalog(family, catalog)
    return family, catalog


def test_nothing_is_stale_when_every_artifact_verifies(tmp_path: Path) -> None:
    family, catalog = _family(tmp_path)
    assert stale_variants(family, "k1") == (catalog, [])


def test_only_the_damaged_and_the_missing_artifacts_are_stale_when_the_key_matches(
    tmp_path: Path,
) -> None:
    family, catalog = _family(tmp_path)
    first, second = catalog.variants
    (family / first.artifact.path).write_bytes(b"half-writ")
    assert stale_variants(family, "k1") == (catalog, [first])
    (family / second.artifact.path).unlink()
    assert stale_variants(family, "k1") == (catalog, [first, second])


def test_the_whole_family_is_built_when_there_is_no_catalog_or_other_inputs(
    tmp_path: Path,
) -> None:
    assert stale_variants(tmp_path / "none", "k1") is None
    family, _ = _family(tmp_path)
    assert stale_variants(family, "k2") is None  # other weights, data or settings
    (family / "catalog.json").write_text("{")
    assert stale_variants(family, "k1") is None
