"""Online verbs: ``serve``, ``monitor``, ``simulate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from edge_service.cli._common import (
    EnginesOpt,
    FamilyOpt,
    JsonOpt,
    VerboseOpt,
    app,
    emit,
    fail,
    log,
    settings_from,
    setup_logging,
)
from edge_service.config import NOT_IN_FILE, SECRET_FIELDS, Settings
from edge_service.errors import BuildError, ConfigError, EdgeServiceError
from edge_service.source_names import SOURCE_NAMES

if TYPE_CHECKING:
    from rich.table import Table

    from edge_service.monitor.context import Context
    from edge_service.monitor.replay import TraceRecorder
    from edge_service.monitor.source import MonitorSource
    from edge_service.sim.report import SimulationReport, StrategyResult


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (EDGE_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (EDGE_PORT)")] = None,
    family: FamilyOpt = None,
    engines_dir: EnginesOpt = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file of settings (EDGE_CONFIG_FILE); the environment and options win",
        ),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config", help="print the effective settings (tokens masked) and exit"
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="with --print-config: JSON instead of TOML")
    ] = False,
    build: Annotated[
        bool | None,
        typer.Option(
            "--build/--no-build",
            help="build what is missing (EDGE_BACKGROUND_BUILD): the first engine before "
            "serving, the device's front and power-mode profiles in the background",
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Serve the family over HTTP (needs its engines: edge-service build, or --build)."""
    setup_logging(verbose)
    try:
        settings = _serve_settings(
            host=host,
            port=port,
            family=family,
            engines_dir=engines_dir,
            config_file=config,
            background_build=build,
        )
        if print_config:
            masked = settings.masked()
            sys.stdout.write(json.dumps(masked, indent=2) + "\n" if as_json else to_toml(masked))
            return
        from edge_service.monitor.select import open_source
        from edge_service.repository import load_catalog
        from edge_service.server.app import create_app
        from edge_service.server.priority import set_serving_priority
        from edge_service.server.runner import run

        # before any thread starts: every serving thread takes this priority
        log.info("%s", set_serving_priority(settings.serve_nice))
        if settings.background_build:
            first_engine(settings)
        load_catalog(settings.family_dir)  # fail fast, before binding the port
        open_source(settings.monitor_source, settings.monitor_trace).close()
    except EdgeServiceError as exc:
        raise fail(exc) from exc
    run(create_app(settings), settings, access_log=verbose)


def first_engine(settings: Settings) -> None:
    """``edge-service build --first-only`` in a child process (the server never imports
    torch): nothing when the family is built, else its first servable engine."""
    import subprocess

    from edge_service.server.background import build_command

    cmd = build_command(settings, "--first-only")
    log.info("building the first engine if missing: %s", " ".join(cmd[2:]))
    code = subprocess.run(cmd, stdin=subprocess.DEVNULL, check=False).returncode
    if code != 0:
        raise BuildError(
            f"the first engine could not be built (edge-service build exited {code}; "
            "its message is above): fix that, or serve a family you built with "
            "edge-service build"
        )


def _serve_settings(**overrides: object) -> Settings:
    """Settings as ``settings_from`` makes them, a bad value told as a ConfigError."""
    from pydantic import ValidationError

    try:
        return settings_from(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(
            f"invalid settings ({problems}); each is set by an option, EDGE_<NAME> or a key "
            "of the config file"
        ) from exc


def to_toml(values: dict[str, object]) -> str:
    """Settings as a TOML file ``--config`` reads back; unset ones and tokens commented."""
    lines = ["# edge-service: effective settings (edge-service serve --print-config)"]
    for key, value in values.items():
        if value is None:
            lines.append(f"# {key} = (unset)")
        elif key in SECRET_FIELDS:
            lines.append(f"# {key} = {json.dumps(value)}  (masked)")
        elif key in NOT_IN_FILE:
            lines.append(
                f"# {key} = {json.dumps(value)}  (this file: EDGE_CONFIG_FILE or --config)"
            )
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@app.command()
def monitor(
    once: Annotated[bool, typer.Option(help="print one sample and exit")] = False,
    record: Annotated[Path | None, typer.Option(help="append samples to a JSONL trace")] = None,
    period: Annotated[float, typer.Option(min=0.05, help="seconds between samples")] = 0.5,
    count: Annotated[int, typer.Option(min=0, help="stop after N samples (0 = never)")] = 0,
    source_kind: Annotated[
        str | None,
        typer.Option(
            "--source",
            help=f"{', '.join(SOURCE_NAMES)} (default: EDGE_MONITOR_SOURCE or auto)",
        ),
    ] = None,
    trace: Annotated[Path | None, typer.Option(help="trace to replay (--source replay)")] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Show the board's state (the Context the controller sees); record it with --record."""
    import time

    from edge_service.monitor.replay import TraceRecorder
    from edge_service.monitor.select import open_source

    setup_logging(verbose)
    try:
        settings = settings_from()
        kind = source_kind or settings.monitor_source
        if kind not in SOURCE_NAMES:
            raise ConfigError(f"--source {kind!r} is not one of {', '.join(SOURCE_NAMES)}")
        source = open_source(kind, trace or settings.monitor_trace)
    except EdgeServiceError as exc:
        raise fail(exc) from exc
    time.sleep(min(period, 0.2))  # let the CPU-load window fill
    if once:
        ctx = source.sample()
        if record:
            with TraceRecorder(record) as rec:
                rec.write(ctx)
        emit(ctx.to_dict(), as_json, ctx.summary())
        return
    recorder = TraceRecorder(record) if record else None
    try:
        _monitor_loop(source, recorder, period, count, as_json)
    except KeyboardInterrupt:
        pass
    finally:
        if recorder:
            recorder.close()


def _monitor_loop(
    source: MonitorSource,
    recorder: TraceRecorder | None,
    period: float,
    count: int,
    as_json: bool,
) -> None:
    import time
    from contextlib import nullcontext

    from rich.live import Live

    seen = 0
    live = nullcontext() if as_json else Live(console=Console(), auto_refresh=False)
    with live as view:
        while count == 0 or seen < count:
            ctx = source.sample()
            seen += 1
            if recorder:
                recorder.write(ctx)
            if view is None:
                sys.stdout.write(json.dumps(ctx.to_dict()) + "\n")
                sys.stdout.flush()
            else:
                view.update(_context_table(ctx), refresh=True)
            time.sleep(period)


def _context_table(ctx: Context) -> Table:
    from rich.table import Table

    table = Table(title=f"{ctx.device or 'device'} ({ctx.source})", show_header=False)
    mode = ctx.power_mode
    rows = {
        "power mode": f"{mode.id} {mode.name}" if mode else "-",
        "cpu": f"{ctx.cpu_load:.0%} of {ctx.cpu_online} cores",
        "memory": f"{ctx.mem_available_mb:.0f} / {ctx.mem_total_mb:.0f} MB available "
        f"({ctx.mem_pressure:.0%} used)",
        "gpu": f"{ctx.gpu_freq_hz / 1e6:.0f} MHz" if ctx.gpu_freq_hz else "-",
        "temps": ", ".join(f"{k} {v:.0f}C" for k, v in ctx.temps_c.items()) or "-",
        "power": f"{ctx.power_total_mw:.0f} mW" if ctx.power_total_mw else "-",
    }
    for key, value in rows.items():
        table.add_row(key, value)
    return table


@app.command()
def simulate(
    trace: Annotated[
        Path, typer.Option(help="JSONL Context trace (edge-service monitor --record)")
    ],
    latency_budget: Annotated[float | None, typer.Option(help="p99 budget, ms")] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="0..1")] = None,
    memory_budget: Annotated[float | None, typer.Option(help="MB")] = None,
    max_power: Annotated[float | None, typer.Option(help="mW")] = None,
    objective: Annotated[str, typer.Option(help="accuracy, latency or energy")] = "accuracy",
    cooldown: Annotated[float, typer.Option(help="seconds before a voluntary switch")] = 5.0,
    profiles_device: Annotated[
        str | None,
        typer.Option(
            help="replay against the profiles recorded on this device id (the board the "
            "trace was recorded on); default: this machine's"
        ),
    ] = None,
    family: FamilyOpt = None,
    engines_dir: EnginesOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Replay a Context trace against the profiles (no inference): the budget policy vs
    static-largest, static-smallest and an oracle: SLO violations, accuracy, energy, switches.

    Contexts where a strategy's choice has no profile on the device in that power mode are
    unpredictable: counted, and left out of that strategy's scores.
    """
    setup_logging(verbose)
    try:
        from edge_service.control.limits import Policy
        from edge_service.control.predictor import Predictor
        from edge_service.hostinfo import device_id
        from edge_service.monitor.replay import read_trace
        from edge_service.repository import load_catalog
        from edge_service.sim.coverage import require_profiles
        from edge_service.sim.replay import simulate as run

        settings = settings_from(family=family, engines_dir=engines_dir)
        catalog = load_catalog(settings.family_dir)
        device = profiles_device or device_id()
        require_profiles(catalog, device)
        contexts = read_trace(trace)
        policy = Policy(
            latency_budget_ms=latency_budget,
            min_accuracy=min_accuracy,
            memory_budget_mb=memory_budget,
            max_power_mw=max_power,
            objective=objective,  # type: ignore[arg-type]
            cooldown_s=cooldown,
        )
        report = run(contexts, Predictor(catalog, device), policy, catalog=catalog)
    except EdgeServiceError as exc:
        raise fail(exc) from exc
    if as_json:
        emit({"policy": policy.to_dict(), **report.to_dict()}, True, "")
        return
    _print_simulation(report, trace.name)


def _print_simulation(report: SimulationReport, trace_name: str) -> None:
    """The strategies as a table, then a line per reason some contexts were unpredictable."""
    from rich.table import Table

    from edge_service.sim.report import notes

    table = Table(
        title=f"{report.contexts} contexts from {trace_name}, profiles of {report.device}"
    )
    # two-line headers, so that the table fits 80 columns with no word cut
    table.add_column("strategy", no_wrap=True)
    for col in ("SLO\nviolations", "mean\ntop-1", "energy\nmJ"):
        table.add_column(col)
    table.add_column("switches", no_wrap=True)
    table.add_column("unpredictable", no_wrap=True)
    for r in report.strategies:
        table.add_row(*_simulation_row(r))
    console = Console()
    console.print(table)
    for line in notes(report):
        console.print(line, markup=False, highlight=False)


def _simulation_row(r: StrategyResult) -> tuple[str, ...]:
    """One strategy's table cells; "-" for a score with no predictable context."""
    return r.cells()
