"""Build a family's engines: the whole family in stages, or only what was damaged.

The entry point of the compiler (`build_family`): it decides between nothing to do, a
repair of damaged artifacts (`edge_service.compile.repair`) and a staged build
(`edge_service.compile.staged`), which share the request, the key and the measurement of
`edge_service.compile.ort_builder`.
"""

from __future__ import annotations

import logging

from edge_service.compile.ort_builder import BuildReport, BuildRequest, Progress, build_key
from edge_service.compile.repair import repair_family, stale_variants
from edge_service.compile.staged import OnProgress, build_staged

log = logging.getLogger(__name__)


def build_family(
    req: BuildRequest, progress: Progress = log.info, on_progress: OnProgress | None = None
) -> BuildReport:
    """Export, quantize, measure, gate and catalogue every network's engines, in stages
    that each land in the catalog (see :mod:`edge_service.compile.staged`); nothing when
    the catalog is complete and current, only the damaged files when some fail."""
    key = build_key(req)
    if not req.force:
        repaired = _up_to_date_or_repaired(req, key, progress)
        if repaired is not None:
            return repaired
    return build_staged(req, progress, on_progress)


def _up_to_date_or_repaired(req: BuildRequest, key: str, progress: Progress) -> BuildReport | None:
    """Nothing to do, or only damaged artifacts rebuilt (see compile/repair.py); None when
    the whole family must be built."""
    found = stale_variants(req.family_dir, key)
    if found is None:
        return None
    catalog, stale = found
    if not stale:
        progress(f"{req.family_dir}: up to date (build key {key[:12]}), nothing to build")
        return BuildReport(req.family_dir / "catalog.json", (), True, {})
    return repair_family(req, catalog, stale, progress)
