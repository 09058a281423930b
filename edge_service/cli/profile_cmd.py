"""``edge-service profile``: latency, memory and energy of a family's engines per power mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edge_service.cli._common import (
    EnginesOpt,
    FamilyOpt,
    JsonOpt,
    VerboseOpt,
    app,
    emit,
    err_console,
    fail,
    log,
    settings_from,
    setup_logging,
)
from edge_service.errors import ConfigError, EdgeServiceError
from edge_service.hostinfo import device_id

if TYPE_CHECKING:
    from rich.table import Table

    from edge_service.config import Settings
    from edge_service.data.fashion import Split
    from edge_service.profile.profiler import ProfileEvent
    from edge_service.repository import Catalog, Profile

ModesOpt = Annotated[
    str | None, typer.Option(help="power mode ids to profile, e.g. 0,1,2 (default: all)")
]
BatchesOpt = Annotated[str, typer.Option(help="batch sizes to time, e.g. 1,8")]


def _ints(option: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ConfigError(f"{option} takes comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 0:
        raise ConfigError(f"{option} takes comma-separated non-negative integers, got {text!r}")
    return values


@app.command()
def profile(
    family: FamilyOpt = None,
    engines_dir: EnginesOpt = None,
    modes: ModesOpt = None,
    runs: Annotated[int, typer.Option(min=1, help="timed calls per batch size")] = 200,
    batches: BatchesOpt = "1,8",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="skip pairs this profiler measured after the artifact was built",
        ),
    ] = True,
    accuracy: Annotated[
        bool,
        typer.Option(
            help="also score TensorRT engines on the held-out selection split "
            "(last 2,000 Fashion-MNIST train images)"
        ),
    ] = False,
    energy_seconds: Annotated[
        float, typer.Option(min=0.0, help="meter each engine's energy for at least this long")
    ] = 1.0,
    core_watts: Annotated[
        float,
        typer.Option(min=0.01, help="assumed W per busy core, for the energy ESTIMATE only"),
    ] = 2.5,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Profile every engine in each power mode: latency p50/p99, memory, energy.

    On a Jetson the modes are nvpmodel's (setting them needs root) and energy is integrated
    from the power rails. Elsewhere the modes are emulated by CPU affinity (0 MAXN: every
    core, 1 HALF, 2 MIN: one core) and energy is measured by RAPL where readable, else
    ESTIMATED from CPU time x --core-watts, and marked so. Results go into the catalog,
    saved after every engine; an interrupted run resumes where it stopped.
    """
    setup_logging(verbose)
    events: list[ProfileEvent] = []
    try:
        settings = settings_from(family=family, engines_dir=engines_dir)
        opts = _Options(modes, runs, batches, resume, accuracy, energy_seconds, core_watts)
        catalog, estimated = _run(settings, opts, events)
    except KeyboardInterrupt:
        err_console().print("interrupted: what was measured is saved; run again to resume")
        raise typer.Exit(code=130) from None
    except EdgeServiceError as exc:
        raise fail(exc) from exc
    _report(catalog, events, estimated, core_watts, as_json)
    failed = [e for e in events if e.status == "failed"]
    if failed:
        first = failed[0]
        raise fail(
            EdgeServiceError(
                f"{len(failed)} of {len(events)} measurements failed; first: {first.variant_id} "
                f"in {first.mode}: {first.error}"
            )
        )


@dataclass(frozen=True)
class _Options:
    modes: str | None
    runs: int
    batches: str
    resume: bool
    accuracy: bool
    energy_seconds: float
    core_watts: float


def _run(settings: Settings, opts: _Options, events: list[ProfileEvent]) -> tuple[Catalog, bool]:
    """Profile the family; returns the updated catalog and whether energy is estimated."""
    from edge_service.profile.modes import default_nvpmodel, mode_ids
    from edge_service.profile.profiler import profile_family, profiling_meter
    from edge_service.repository import load_catalog

    sizes = _ints("--batches", opts.batches)
    catalog = load_catalog(settings.family_dir)
    nvp = default_nvpmodel()
    ids = mode_ids(nvp, _ints("--modes", opts.modes) if opts.modes else None)
    meter = profiling_meter(opts.core_watts)
    scored = _scores(catalog, opts.accuracy)
    from edge_service.buildstate import BuildProgress, ProgressFile

    # the profile run is the build's last stage, and says so in the progress file
    tracker = ProgressFile.resume(
        settings.family_dir, BuildProgress(stage="profile", device=device_id())
    )
    tracker.update(stage="profile", done=0, total=len(ids) * len(catalog.variants))
    with _progress_bar(len(ids) * len(catalog.variants)) as advance:

        def on_progress(event: ProfileEvent) -> None:
            events.append(event)
            advance(f"{event.variant_id} @ {event.mode}: {event.status}")
            tracker.update(done=len(events), current=f"{event.variant_id} @ {event.mode}")

        result = profile_family(
            catalog,
            settings.family_dir,
            device=device_id(),
            modes=ids,
            batches=sizes,
            runs=opts.runs,
            energy_seconds=opts.energy_seconds,
            accuracy_split=_selection_split(settings) if scored else None,
            resume=opts.resume,
            on_progress=on_progress,
            nvpmodel=nvp,
            meter=meter,
        )
    tracker.update(stage="complete", current=None)
    return result, meter.estimated


def _scores(catalog: Catalog, accuracy: bool) -> bool:
    """Whether --accuracy has anything to score: TensorRT engines only (see the profiler)."""
    if accuracy and not any(v.backend == "tensorrt" for v in catalog.variants):
        log.info("--accuracy: no TensorRT engines here; ONNX Runtime's is the catalog's figure")
        return False
    return accuracy


def _selection_split(settings: Settings) -> Split:
    """The held-out selection split: the last 2,000 images of the train split."""
    from edge_service.data.fashion import load_split, selection_split

    train = load_split(settings.data_dir, "train")
    return selection_split(train)


@contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on stderr; yields ``advance(description)``."""
    from rich.progress import Progress

    # no auto-refresh: a rendering thread would add its CPU time to the energy estimate
    with Progress(console=err_console(), transient=True, auto_refresh=False) as progress:
        task = progress.add_task("profiling", total=total)

        def advance(description: str) -> None:
            progress.update(task, advance=1, description=description, refresh=True)

        yield advance


def _rows(catalog: Catalog, events: list[ProfileEvent]) -> list[dict[str, Any]]:
    from edge_service.hostinfo import device_id

    device = device_id()
    rows = []
    for event in events:
        prof = catalog.variant(event.variant_id).profiles.get(device, {}).get(event.mode)
        row: dict[str, Any] = {"variant": event.variant_id, "mode": event.mode}
        row["status"] = event.status
        row.update(_profile_fields(prof) if event.status != "failed" and prof else {})
        row["accuracy"] = event.accuracy
        row["error"] = event.error
        rows.append(row)
    return rows


def _profile_fields(prof: Profile) -> dict[str, Any]:
    b1 = prof.latency.get("1") or next(iter(prof.latency.values()))
    return {
        "p50_ms": b1.p50_ms,
        "p99_ms": b1.p99_ms,
        "latency": {b: s.model_dump() for b, s in prof.latency.items()},
        "energy_mj": prof.energy_mj,
        "energy_estimated": prof.energy_estimated,
        "power_mw": prof.power_mw,
        "memory_mb": prof.memory_mb,
        "cores": prof.cores,
        "threads": prof.threads,
        "backend": prof.backend,
    }


def _report(
    catalog: Catalog,
    events: list[ProfileEvent],
    estimated: bool,
    core_watts: float,
    as_json: bool,
) -> None:
    rows = _rows(catalog, events)
    note = (
        f"energy est. = ESTIMATED: CPU time x {core_watts:g} W per busy core (no power rails "
        "or RAPL here); compare variants with it, not machines"
        if estimated
        else "energy measured (power rails or RAPL)"
    )
    if as_json:
        emit({"family": catalog.family, "energy": note, "results": rows}, True, "")
        return
    from rich.console import Console

    Console().print(_table(catalog.family, rows))
    Console().print(note)


def _table(family: str, rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title=f"{family}: batch 1 per power mode")
    scored = any(r["accuracy"] is not None for r in rows)
    columns = ["variant", "mode", "p50 ms", "p99 ms", "energy mJ", "power W", "mem MB", "cores"]
    for col in [*columns, "top-1"] if scored else columns:
        table.add_column(col, no_wrap=col == "variant", overflow="fold")
    for r in rows:
        cells = _cells(r) if "p50_ms" in r else [f"[red]{r['status']}[/red]", *[""] * 5]
        top1 = [f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"] if scored else []
        table.add_row(r["variant"], r["mode"], *cells, *top1)
    return table


def _cells(r: dict[str, Any]) -> list[str]:
    energy = f"{r['energy_mj']:.3f}" + (" est." if r["energy_estimated"] else "")
    return [
        f"{r['p50_ms']:.3f}",
        f"{r['p99_ms']:.3f}",
        energy,
        f"{r['power_mw'] / 1e3:.2f}" if r["power_mw"] is not None else "-",
        f"{r['memory_mb']:.1f}" if r["memory_mb"] is not None else "-",
        str(r["cores"] or "-"),
    ]
