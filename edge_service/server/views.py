"""Narrow views of the service for the routers: `StatusView` builds every document the
read endpoints and the live stream show, `Operator` validates and applies the operator's
commands. The routers hold one of these, never the Service, so they cannot reach into the
pool, the loop or the strategy, and a change to those stays behind these two classes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

from prometheus_client import generate_latest

import edge_service
from edge_service.control.evidence import Verdict
from edge_service.control.limits import Policy
from edge_service.device import current as current_device
from edge_service.errors import BadInputError, ConfigError, OverloadedError
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.monitor.context import Context
from edge_service.server.background import build_state
from edge_service.server.broadcast import sse
from edge_service.server.power import ModeChange
from edge_service.server.schemas import (
    PinBody,
    PolicyBody,
    PolicyResponse,
    PowerModeResponse,
    StatusResponse,
    StreamsResponse,
    VariantDetail,
    VariantOut,
    VariantsResponse,
)
from edge_service.server.service import Service


class StatusView:
    """What the operator endpoints and the live stream read (module doc)."""

    def __init__(self, service: Service) -> None:
        self._s = service

    def status(self, events: int) -> StatusResponse:
        """The board's context, the active variant, the policy and recent events."""
        service = self._s
        state = service.loop.state()
        live = service.live_state()
        mode = state.context.power_mode if state.context else None
        mode_name = mode.name if mode else DEFAULT_POWER_MODE
        variants = []
        for v in service.catalog.variants:
            profile = v.profile_for(service.device, mode_name) or v.profile_for(
                service.device, DEFAULT_POWER_MODE
            )
            variants.append(
                VariantOut(
                    id=v.id,
                    precision=v.precision,
                    backend=v.backend,
                    accuracy=v.accuracy.value if v.accuracy else None,
                    accuracy_metric=v.accuracy.metric if v.accuracy else None,
                    latency_p50_ms=profile.latency_ms(1) if profile else None,
                    status=v.status,
                    status_reason=v.status_reason,
                    precision_drop=v.precision_drop,
                    prediction=self._prediction(v.id),
                )
            )
        return StatusResponse(
            family=service.catalog.family,
            task=service.catalog.task,
            version=edge_service.__version__,
            device=service.device,
            ready=service.pool.ready,
            active_variant=service.pool.active_id,
            uptime_s=time.time() - service.started_at,
            context=state.context.to_dict() if state.context else None,
            decision=state.decision.to_dict() if state.decision else None,
            ticks=state.ticks,
            source_errors=state.source_errors,
            variants=variants,
            events=[e.to_dict() for e in service.events.recent(events)],
            power_mode=live["power_mode"],  # type: ignore[arg-type]
            power_emulated=service.power.emulated,
            policy=service.policy.to_dict(),
            strategy=service.loop.strategy.name,
            standby=list(service.pool.standby),
            pinned_engines=list(service.pool.pinned),
            unhealthy=sorted(service.pool.unhealthy),
            queue_depth=service.batcher.depth,
            swaps=service.pool.swaps,
            last_swap_ms=service.pool.last_swap_ms,
            latency_ms=service.telemetry.window(),
            device_name=current_device().name,
            build=build_state(
                service.catalog, service.settings.family_dir, service.device, service.background
            ),
            shadow_runs=service.loop.probes,
            served_slo=_slo(service.loop.strategy.served_slo()),
        )

    def _prediction(self, variant_id: str) -> dict[str, object] | None:
        estimate = self._s.loop.strategy.estimate_of(variant_id)
        return estimate.to_dict() if estimate is not None else None

    def variants(self) -> VariantsResponse:
        """Every variant: profiles, accuracy, load state, health and gate status."""
        service, pool = self._s, self._s.pool
        roles = {
            **dict.fromkeys(pool.pinned, "pinned"),
            **dict.fromkeys(pool.standby, "standby"),
            **({pool.active_id: "active"} if pool.active_id else {}),
        }
        unhealthy = pool.unhealthy
        out = []
        for v in service.catalog.variants:
            out.append(
                VariantDetail(
                    id=v.id,
                    network=v.variant_spec.family_key,
                    precision=v.precision,
                    backend=v.backend,
                    resolution=v.variant_spec.input_size,
                    accuracy=v.accuracy.value if v.accuracy else None,
                    accuracy_metric=v.accuracy.metric if v.accuracy else None,
                    artifact_bytes=v.artifact.bytes,
                    loaded=roles.get(v.id),
                    healthy=v.id not in unhealthy,
                    predicted_latency_ms=service.loop.strategy.predicted_ms(v.id),
                    status=v.status,
                    status_reason=v.status_reason,
                    precision_drop=v.precision_drop,
                    profiles={
                        dev: {mode: p.model_dump(mode="json") for mode, p in modes.items()}
                        for dev, modes in v.profiles.items()
                    },
                )
            )
        return VariantsResponse(
            family=service.catalog.family,
            task=service.catalog.task,
            active_variant=pool.active_id,
            variants=out,
        )

    def policy(self) -> PolicyResponse:
        """The policy the controller follows now, and its last decision."""
        service = self._s
        decision = service.loop.state().decision
        return PolicyResponse(
            policy=service.policy.to_dict(),
            strategy=service.loop.strategy.name,
            active_variant=service.pool.active_id,
            decision=decision.to_dict() if decision else None,
        )

    def power(self, change: ModeChange | None = None) -> PowerModeResponse:
        """The power mode now (and the change just made), and the modes there are."""
        service = self._s
        current = service.power.current()
        return PowerModeResponse(
            previous=change.previous.to_dict() if change and change.previous else None,
            current=current.to_dict() if current else {},
            emulated=service.power.emulated,
            threads=service.engine_threads,
            cores=list(change.cores) if change and change.cores else None,
            active_variant=service.pool.active_id,
            modes=service.power.modes(),
        )

    def event_stream(self, history: int) -> AsyncIterator[str]:
        """The live SSE stream, the last ``history`` adaptation events first; an
        OverloadedError (503) when too many streams are open."""
        hub = self._s.broadcaster
        queue = hub.subscribe()
        if queue is None:
            raise OverloadedError(f"{hub.max_subscribers} event streams are open already", 10.0)
        first = [sse("adaptation", e.to_dict()) for e in self._s.events.recent(history)]
        return hub.stream(queue, first)

    def streams(self) -> StreamsResponse:
        """Per-stream statistics; a detection family's streams always carry their
        detection counts (empty for a stream with no answered frame yet)."""
        task = self._s.catalog.task
        streams = self._s.telemetry.streams()
        if task == "detection":
            for stats in streams.values():
                stats.setdefault("detections", {})
                stats.setdefault("frames_with_detections", 0)
        return StreamsResponse(task=task, streams=streams)

    def metrics(self) -> bytes:
        return generate_latest(self._s.telemetry.registry)


class Operator:
    """The operator's commands: each is validated first, and a bad one changes nothing."""

    def __init__(self, service: Service) -> None:
        self._s = service

    def put_policy(self, body: PolicyBody) -> None:
        """Replace the policy and decide with it now."""
        for mode, variant in body.model_dump().get("pins", {}).items():
            self._check_pin(mode, variant)
        with _request_error():
            policy = Policy.from_dict(body.model_dump())
        self._s.set_policy(policy)

    def pin(self, body: PinBody) -> None:
        """Pin a variant in one power mode (``"*"``: all); ``variant: None`` unpins."""
        self._check_pin(body.power_mode, body.variant)
        pins = dict(self._s.policy.pins)
        if body.variant is None:
            pins.pop(body.power_mode, None)
        else:
            pins[body.power_mode] = body.variant
        with _request_error():
            policy = Policy.from_dict(self._s.policy.to_dict() | {"pins": pins})
        self._s.set_policy(policy)

    def set_power_mode(self, mode: int | str) -> ModeChange:
        """Switch the power mode; engines reload at its thread count."""
        with _request_error():
            return self._s.set_power_mode(mode)

    def _check_pin(self, mode: str, variant: str | None) -> None:
        """400 for a power mode this board does not have, 404 for an unknown variant, 409
        for one the build's accuracy gate rejected (a dominated one may be pinned)."""
        known = {"*", DEFAULT_POWER_MODE, *(str(m["name"]) for m in self._s.power.modes())}
        if mode not in known:
            raise BadInputError(
                f"power mode {mode!r} is not known here; use one of {sorted(known)}"
            )
        if variant is not None:
            self._s.catalog.pinnable(variant)  # 404 / 409, nothing changed


@contextmanager
def _request_error() -> Iterator[None]:
    """A ConfigError raised by what a request asked for is the client's mistake (400)."""
    try:
        yield
    except ConfigError as exc:
        raise BadInputError(exc.message) from exc


def context_frame(service: Service, ctx: Context) -> dict[str, object]:
    """One ``context`` SSE event: the board, the served variant, latency against budget."""
    active = service.pool.active_id
    window = service.telemetry.window()
    return {
        "t": ctx.t,
        "power_mode": ctx.power_mode.to_dict() if ctx.power_mode else None,
        "active_variant": active,
        "precision": service.catalog.variant(active).precision if active else None,
        "context": ctx.to_dict(),
        "latency_ms": {k: window[k] for k in ("p50", "p99", "count")},
        "latency_budget_ms": service.policy.latency_budget_ms,
        "requests_per_s": window["requests_per_s"],
        "power_total_mw": ctx.power_total_mw,
        "served_slo": _slo(service.loop.strategy.served_slo()),
    }


def publish_live(service: Service) -> None:
    """Feed the live stream: every adaptation event, and one ``context`` frame a tick."""
    hub = service.broadcaster
    service.events.listen(lambda e: hub.publish("adaptation", e.to_dict()))
    service.loop.listen(lambda ctx, _decision: hub.publish("context", context_frame(service, ctx)))


def _slo(verdict: Verdict | None) -> dict[str, object] | None:
    return verdict.to_dict() if verdict is not None else None
