"""The docs stay true: every relative link resolves, every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


def test_every_setting_is_in_the_configuration_page() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [
        f"EDGE_{name.upper()}"
        for name in Settings.model_fields
        if f"EDGE_{name.upper()}" not in text
    ]
    assert not missing, f"document these in docs/configuration.md: {missing}"
