"""Offline verbs: ``train``, ``build``, ``bench`` (training and export need the train extra)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edge_service.cli._common import (
    DEFAULT_WEIGHTS,
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
from edge_service.config import REPO_ROOT, Settings
from edge_service.errors import EdgeServiceError


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
    hold_out: Annotated[
        int,
        typer.Option(
            min=0,
            help="leave the last N train images out (evolve's validation "
            "split is the last 5,000: --hold-out 5000 keeps it unseen)",
        ),
    ] = 0,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0 = default)")] = 0,
    tiny: Annotated[bool, typer.Option(help="a tiny model, for smoke tests")] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train the base staged CNN on Fashion-MNIST (needs the ``train`` extra)."""
    setup_logging(verbose)
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
        if hold_out:
            from edge_service.evolve.run import split_train_val

            train_split, _ = split_train_val(train_split, hold_out, 0, seed)
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
            "held_out": hold_out,
            "command": "edge-service " + " ".join(sys.argv[1:]),
            "torch": str(__import__("torch").__version__),
        }
        save_weights(out, model, spec, meta)
        _write_sidecar(out, {**meta, "history": result.history})
    except EdgeServiceError as exc:
        raise fail(exc) from exc
    summary = {"weights": str(out), **meta, "history": result.history}
    emit(
        summary,
        as_json,
        f"wrote {out}: test top-1 {result.test_top1:.4f} "
        f"({result.params} params, {result.seconds:.0f} s)",
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
    setup_logging(verbose)
    try:
        from edge_service.profile.compare import compare_variants
        from edge_service.repository import load_catalog

        settings = settings_from(family=family, engines_dir=engines_dir)
        catalog = load_catalog(settings.family_dir)
        result = compare_variants(
            catalog, settings.family_dir, batch=batch, threads=threads, rounds=rounds, runs=runs
        )
    except EdgeServiceError as exc:
        raise fail(exc) from exc
    ref = catalog.variants[0].id
    rows = [
        {
            "variant": v.id,
            "accuracy": v.accuracy.value if v.accuracy else None,
            "p50_ms": result.p50_ms[v.id],
            "p99_ms": result.p99_ms[v.id],
            f"p50_vs_{ref}": result.ratio(v.id, ref),
        }
        for v in catalog.variants
    ]
    if as_json:
        emit(
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

    Console().print(table)


def _write_sidecar(weights: Path, summary: dict[str, Any]) -> None:
    """A human-readable JSON summary beside a weights file (``base.pt`` -> ``base.json``)."""
    import json

    from edge_service.fsutil import atomic_write_text, sha256_file

    summary = {**summary, "sha256": sha256_file(weights)}
    atomic_write_text(weights.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")


DEFAULT_EVOLVED = REPO_ROOT / "models" / "fashion" / "evolved.pt"


def _device_int8() -> tuple[str, bool]:
    """The INT8 scheme ONNX Runtime gets on this device (what the evolve probes use)."""
    from edge_service.compile.int8_scheme import choose_int8_scheme
    from edge_service.device import current

    scheme = choose_int8_scheme(current(), tensorrt=False)
    return scheme.activations, scheme.reduce_range


def _csv(value: str, cast: type = str) -> tuple[Any, ...]:
    return tuple(cast(v.strip()) for v in value.split(",") if v.strip())


def _tqdm_progress() -> Callable[[str, int, int], None]:
    """A per-phase progress bar (shown on a terminal only)."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(phase: str, step: int, total: int) -> None:
        if step == 1 or phase not in bars:
            if phase in bars:
                bars[phase].close()
            bars[phase] = tqdm(total=total, desc=phase, disable=None, leave=False)
        bars[phase].update(1)
        if step == total:
            bars.pop(phase).close()

    return update


@app.command()
def evolve(
    base_weights: Annotated[Path, typer.Option(help="trained base model")] = DEFAULT_WEIGHTS,
    out: Annotated[Path, typer.Option(help="multi-branch weights to write")] = DEFAULT_EVOLVED,
    branches: Annotated[
        str | None,
        typer.Option(help="comma list of branch operators (default: every one, id first)"),
    ] = None,
    resolutions: Annotated[str, typer.Option(help="comma list of input sizes")] = "28,24,20",
    distill_epochs: Annotated[int, typer.Option(min=0)] = 2,
    finetune_epochs: Annotated[int, typer.Option(min=0)] = 1,
    train_limit: Annotated[int, typer.Option(min=0, help="train on N images (0 = all)")] = 0,
    val_size: Annotated[int, typer.Option(min=10, help="held-out validation images")] = 5000,
    max_kept: Annotated[int, typer.Option(min=2, max=64)] = 12,
    max_loss: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="keep paths within this top-1 of the base")
    ] = 0.04,
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=0, help="torch threads (0 = default)")] = 0,
    profile_runs: Annotated[int, typer.Option(min=5)] = 200,
    precision: Annotated[
        list[str] | None,
        typer.Option(help="precisions searched jointly: fp32 and/or int8 (default both)"),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="resume from / save to (default: runs/evolve.ckpt)")
    ] = None,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Grow compressed branches from the base model, train them, keep the Pareto front."""
    setup_logging(verbose)
    try:
        from edge_service.data.fashion import load_split
        from edge_service.errors import ConfigError
        from edge_service.evolve.distill import EvolveConfig
        from edge_service.evolve.operators import BRANCHES, cheapest
        from edge_service.evolve.run import EvolveRequest, run_evolve

        names = _csv(branches) if branches is not None else tuple(BRANCHES)
        unknown = sorted(set(names) - set(BRANCHES))
        if unknown or "id" not in names:
            raise ConfigError(
                f"--branches must include id and come from {sorted(BRANCHES)}; unknown: {unknown}"
            )
        cfg = EvolveConfig(
            branches=names,
            resolutions=_csv(resolutions, int),
            distill_epochs=distill_epochs,
            finetune_epochs=finetune_epochs,
            seed=seed,
            train_limit=train_limit,
            threads=threads,
            smallest=cheapest(names),
        )
        precisions = tuple(dict.fromkeys(precision or ("fp32", "int8")))
        if set(precisions) - {"fp32", "int8"}:
            raise ConfigError(f"--precision takes fp32 and/or int8, not {list(precisions)}")
        if not base_weights.is_file():
            raise ConfigError(f"no base weights at {base_weights}; train them: edge-service train")
        req = EvolveRequest(
            base_weights=base_weights,
            out=out,
            train=load_split(Settings().data_dir, "train"),
            cfg=cfg,
            val_size=val_size,
            max_kept=max_kept,
            max_loss=max_loss,
            checkpoint=checkpoint or REPO_ROOT / "runs" / "evolve.ckpt",
            profile_threads=1,
            profile_runs=profile_runs,
            precisions=precisions,
            int8=_device_int8(),
        )
        report = run_evolve(req, progress=_tqdm_progress(), say=lambda m: log.info(m))
        _write_sidecar(
            out, {"command": "edge-service " + " ".join(sys.argv[1:]), **report.to_dict()}
        )
    except EdgeServiceError as exc:
        raise fail(exc) from exc
    lines = [
        f"{k.id:28s} {k.measured_ms:7.4f} ms (pred {k.predicted_ms:7.4f})  "
        f"val top-1 {k.measured_top1:.4f} (pred {k.predicted_top1:.4f})"
        for k in report.kept
    ]
    emit(
        report.to_dict(),
        as_json,
        "\n".join(
            [
                f"wrote {out}: {len(report.kept)} kept of {report.combinations} combinations "
                f"(front {report.front})",
                *lines,
                f"training {report.distill_s + report.finetune_s:.0f} s, "
                f"search {report.search_s:.0f} s; "
                f"prediction error: latency {report.latency_error_pct:.1f}%, "
                f"accuracy {report.accuracy_error_pts:.2f} pts",
            ]
        ),
    )
