"""The ``edge-service`` command line (typer).

Heavy imports (torch, onnx, uvicorn) happen inside the verbs, so ``edge-service --help``
is instant and works without the ``train`` extra.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from edge_service.config import REPO_ROOT, Settings
from edge_service.errors import EdgeServiceError

if TYPE_CHECKING:
    from rich.table import Table

    from edge_service.monitor.context import Context
    from edge_service.monitor.replay import TraceRecorder
    from edge_service.monitor.source import MonitorSource

app = typer.Typer(
    name="edge-service",
    help="Context-adaptive inference for NVIDIA Jetson boards (and any Linux box).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("edge_service.cli")

DEFAULT_WEIGHTS = REPO_ROOT / "models" / "fashion" / "base.pt"
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]


@app.callback()
def _root() -> None:
    """Context-adaptive inference for NVIDIA Jetson boards (and any Linux box)."""


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, console=_err_console())],
        force=True,
    )
    if not verbose:  # the exporter and quantizer narrate every pass at INFO
        for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _err_console() -> Console:

    return Console(stderr=True)


def _fail(exc: EdgeServiceError) -> typer.Exit:
    _err_console().print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(code=2)


def _emit(payload: object, as_json: bool, human: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        from rich.console import Console

        Console().print(human)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="where to write the weights")] = DEFAULT_WEIGHTS,
    epochs: Annotated[int, typer.Option(min=1)] = 15,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    lr: Annotated[float, typer.Option(min=0.0)] = 3e-3,
    seed: int = 0,
    train_limit: Annotated[
        int, typer.Option(min=0, help="train on a seeded subset (0 = all 60k)")
    ] = 0,
    test_limit: Annotated[int, typer.Option(min=0, help="evaluate on a subset (0 = all)")] = 0,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0 = default)")] = 0,
    tiny: Annotated[bool, typer.Option(help="a tiny model, for smoke tests")] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train the base staged CNN on Fashion-MNIST (needs the ``train`` extra)."""
    _setup_logging(verbose)
    try:
        from edge_service.data.fashion import load_split
        from edge_service.data.preprocess import InputSpec
        from edge_service.evolve.model import ModelConfig
        from edge_service.evolve.train import TrainConfig, save_weights
        from edge_service.evolve.train import train as run_training

        settings = Settings()
        model_cfg = (
            ModelConfig(stem=4, widths=(8, 8, 16), blocks=(1, 1, 1)) if tiny else (ModelConfig())
        )
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            train_limit=train_limit,
            threads=threads,
            model=model_cfg,
        )
        train_split = load_split(settings.data_dir, "train")
        test_split = load_split(settings.data_dir, "test")
        if test_limit:
            test_split = test_split.subset(test_limit, seed)
        spec = InputSpec()
        model, result = run_training(cfg, train_split, test_split, spec)
        meta = {
            "test_top1": result.test_top1,
            "test_examples": len(test_split),
            "epochs": result.epochs,
            "train_seconds": round(result.seconds, 1),
            "params": result.params,
            "seed": seed,
            "command": "edge-service " + " ".join(sys.argv[1:]),
            "torch": str(__import__("torch").__version__),
        }
        save_weights(out, model, spec, meta)
    except EdgeServiceError as exc:
        raise _fail(exc) from exc
    summary = {"weights": str(out), **meta, "history": result.history}
    _emit(
        summary,
        as_json,
        f"wrote {out}: test top-1 {result.test_top1:.4f} "
        f"({result.params} params, {result.seconds:.0f} s)",
    )


def _settings(**overrides: object) -> Settings:
    """Settings from the environment, with the CLI's explicit options on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


FamilyOpt = Annotated[
    str | None, typer.Option(help="engine family (default: EDGE_FAMILY or fashion)")
]
EnginesOpt = Annotated[Path | None, typer.Option(help="engine repository (default: ./engines)")]


@app.command()
def build(
    family: FamilyOpt = None,
    engines_dir: EnginesOpt = None,
    weights: Annotated[Path, typer.Option(help="trained base weights")] = DEFAULT_WEIGHTS,
    calibration: Annotated[Path | None, typer.Option(help="INT8 calibration images")] = None,
    precision: Annotated[
        list[str] | None, typer.Option(help="fp32 and/or int8 (repeatable)")
    ] = None,
    eval_limit: Annotated[
        int, typer.Option(min=0, help="measure accuracy on N test images (0 = all 10k)")
    ] = 0,
    force: Annotated[bool, typer.Option(help="rebuild even if up to date")] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Export, calibrate and build the family's ONNX Runtime engines (FP32, INT8)."""
    _setup_logging(verbose)
    try:
        from edge_service.build.ort_builder import BuildRequest, build_family
        from edge_service.data.fashion import load_split
        from edge_service.errors import BuildError

        settings = _settings(family=family, engines_dir=engines_dir)
        precisions = tuple(precision or ("fp32", "int8"))
        bad = sorted(set(precisions) - {"fp32", "int8"})
        if bad:
            raise BuildError(f"precision {bad} cannot be built with ONNX Runtime; use fp32, int8")
        if not weights.is_file():
            raise BuildError(f"no weights at {weights}; train them: edge-service train")
        test = load_split(settings.data_dir, "test")
        req = BuildRequest(
            family_dir=settings.family_dir,
            weights=weights,
            calibration_dir=calibration or REPO_ROOT / "calibration" / settings.family,
            test_split=test.subset(eval_limit) if eval_limit else test,
            precisions=precisions,
            threads=settings.intra_op_threads,
            force=force,
        )
        report = build_family(req, progress=lambda msg: log.info(msg))
    except EdgeServiceError as exc:
        raise _fail(exc) from exc
    payload = {
        "catalog": str(report.catalog),
        "built": list(report.built),
        "up_to_date": report.up_to_date,
        "accuracy": report.accuracy,
    }
    human = (
        "nothing to build: engines are up to date"
        if report.up_to_date
        else f"built {', '.join(report.built)} into {report.catalog.parent}"
    )
    _emit(payload, as_json, human)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (EDGE_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (EDGE_PORT)")] = None,
    family: FamilyOpt = None,
    engines_dir: EnginesOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Serve the family over HTTP (needs its engines: edge-service build)."""
    _setup_logging(verbose)
    try:
        import uvicorn

        from edge_service.repository import load_catalog
        from edge_service.server.app import create_app

        settings = _settings(host=host, port=port, family=family, engines_dir=engines_dir)
        load_catalog(settings.family_dir)  # fail fast, before binding the port
    except EdgeServiceError as exc:
        raise _fail(exc) from exc
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=verbose,
    )


@app.command()
def bench(
    family: FamilyOpt = None,
    engines_dir: EnginesOpt = None,
    batch: Annotated[int, typer.Option(min=1, max=64)] = 1,
    threads: Annotated[int, typer.Option(min=0, help="ORT intra-op threads (0 = all)")] = 0,
    rounds: Annotated[int, typer.Option(min=1)] = 5,
    runs: Annotated[int, typer.Option(min=1, help="timed calls per round")] = 200,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Latency of every built variant, measured side by side (interleaved rounds)."""
    _setup_logging(verbose)
    try:
        from edge_service.profile.compare import compare_variants
        from edge_service.repository import load_catalog

        settings = _settings(family=family, engines_dir=engines_dir)
        catalog = load_catalog(settings.family_dir)
        result = compare_variants(
            catalog, settings.family_dir, batch=batch, threads=threads, rounds=rounds, runs=runs
        )
    except EdgeServiceError as exc:
        raise _fail(exc) from exc
    ref = catalog.variants[0].id
    rows = [
        {
            "variant": v.id,
            "accuracy": v.accuracy.top1 if v.accuracy else None,
            "p50_ms": result.p50_ms[v.id],
            "p99_ms": result.p99_ms[v.id],
            f"p50_vs_{ref}": result.ratio(v.id, ref),
        }
        for v in catalog.variants
    ]
    if as_json:
        _emit(
            {"batch": batch, "threads": threads, "rounds": rounds, "runs": runs, "variants": rows},
            True,
            "",
        )
        return
    from rich.table import Table

    table = Table(
        title=f"{catalog.family}: batch {batch}, threads {threads or 'all'}, {rounds}x{runs} runs"
    )
    for col in ("variant", "top-1", "p50 ms", "p99 ms", f"p50 / {ref}"):
        table.add_column(col)
    for r in rows:
        acc = r["accuracy"]
        table.add_row(
            str(r["variant"]),
            f"{acc:.4f}" if acc is not None else "-",
            f"{r['p50_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r[f'p50_vs_{ref}']:.2f}",
        )
    from rich.console import Console

    Console().print(table)


@app.command()
def monitor(
    once: Annotated[bool, typer.Option(help="print one sample and exit")] = False,
    record: Annotated[Path | None, typer.Option(help="append samples to a JSONL trace")] = None,
    period: Annotated[float, typer.Option(min=0.05, help="seconds between samples")] = 0.5,
    count: Annotated[int, typer.Option(min=0, help="stop after N samples (0 = never)")] = 0,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Show the board's state (the Context the controller sees); record it with --record."""
    import time

    from edge_service.monitor.linux_source import LinuxSource
    from edge_service.monitor.replay import TraceRecorder

    _setup_logging(verbose)
    source = LinuxSource()
    time.sleep(min(period, 0.2))  # let the CPU-load window fill
    if once:
        ctx = source.sample()
        if record:
            with TraceRecorder(record) as rec:
                rec.write(ctx)
        _emit(ctx.to_dict(), as_json, ctx.summary())
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
    family: FamilyOpt = None,
    engines_dir: EnginesOpt = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Replay a Context trace through the policy: which variant would serve when, and why."""
    _setup_logging(verbose)
    try:
        from edge_service.control.policy import SimpleRule, decide
        from edge_service.hostinfo import DEFAULT_POWER_MODE, device_name
        from edge_service.monitor.replay import read_trace
        from edge_service.repository import load_catalog
        from edge_service.server.service import candidates

        settings = _settings(family=family, engines_dir=engines_dir)
        catalog = load_catalog(settings.family_dir)
        contexts = read_trace(trace)
    except EdgeServiceError as exc:
        raise _fail(exc) from exc
    cands = candidates(catalog, device_name(), DEFAULT_POWER_MODE)
    rule = SimpleRule(cpu_high=settings.cpu_pressure_high, mem_high=settings.mem_pressure_high)
    current: str | None = None
    last_change: float | None = None
    rows: list[dict[str, Any]] = []
    for ctx in contexts:
        d = decide(ctx, cands, rule, current, last_change)
        if d.changed:
            current, last_change = d.variant_id, ctx.t
        rows.append({"t": ctx.t, "variant": d.variant_id, "changed": d.changed, "reason": d.reason})
    switches = sum(1 for r in rows if r["changed"])
    human = (
        "\n".join(f"t={r['t']:.1f} {r['variant']}: {r['reason']}" for r in rows if r["changed"])
        + f"\n{len(rows)} contexts, {switches} switches"
    )
    _emit({"decisions": rows, "switches": switches}, as_json, human)


def main() -> None:
    """Entry point for ``python -m edge_service``."""
    app()
