"""Settings, read once at the entry point (CLI or app factory) and passed down.

Every field can be set by an ``EDGE_``-prefixed environment variable, e.g. ``EDGE_PORT=9000``.
There is no module-level instance: build one with ``Settings()`` where the process starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge_service.errors import ConfigError

DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class Settings(BaseSettings):
    """Service settings; see the README for what each one does."""

    model_config = SettingsConfigDict(env_prefix="EDGE_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    engines_dir: Path = REPO_ROOT / "engines"
    family: str = "fashion"
    data_dir: Path = DEFAULT_FASHION_DIR
    calibration_cache: Path = REPO_ROOT / "calibration" / "cache"
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(16_000_000, ge=1)
    top_k: int = Field(5, ge=1, le=100)
    intra_op_threads: int = Field(0, ge=0, description="0 lets ONNX Runtime choose")
    monitor_period_s: float = Field(0.5, gt=0.0, le=60.0)
    monitor_source: Literal["auto", "jtop", "tegra", "tegrastats", "linux", "replay"] = "auto"
    monitor_trace: Path | None = None
    power_mode: int | None = Field(
        None,
        ge=0,
        description="off-Jetson: emulated power mode to serve in (0 MAXN, 1 HALF, 2 MIN)",
    )
    monitor_replay_speed: float = Field(1.0, gt=0.0)
    latency_budget_ms: float | None = Field(None, gt=0, description="p99 budget (budget policy)")
    min_accuracy: float | None = Field(None, ge=0, le=1)
    memory_budget_mb: float | None = Field(None, gt=0)
    max_power_mw: float | None = Field(None, gt=0)
    preload_memory_mb: float = Field(
        64.0, ge=0, description="memory for engines kept on standby next to the active one"
    )
    cooldown_s: float = Field(5.0, ge=0, description="wait before a voluntary (upgrade) switch")
    cpu_pressure_high: float = Field(0.85, gt=0.0, le=1.0)
    mem_pressure_high: float = Field(0.90, gt=0.0, le=1.0)
    events_kept: int = Field(256, ge=1)
    allow_remote: bool = Field(False, description="must be true to bind anything but loopback")
    control_enabled: bool = Field(
        True, description="serve the control endpoints (policy, power mode, pin)"
    )
    control_token: SecretStr | None = Field(
        None, description="bearer token for the control endpoints (required off loopback)"
    )
    inference_token: SecretStr | None = Field(
        None, description="bearer token for inference endpoints (none: open)"
    )
    batch_max_size: int = Field(8, ge=1, le=64, description="micro-batch: most frames per call")
    batch_max_delay_ms: float = Field(
        0.0, ge=0.0, le=100.0, description="micro-batch: longest wait for more frames"
    )
    queue_max: int = Field(
        128, ge=1, description="requests waiting for the engine before 503 + Retry-After"
    )
    max_batch_frames: int = Field(64, ge=1, le=1024, description="frames per /v1/infer/batch")
    max_pinned_engines: int = Field(
        2, ge=0, description="engines kept loaded for requests pinned to a non-active variant"
    )
    streams_kept: int = Field(256, ge=1, description="camera streams with statistics kept")

    @model_validator(mode="after")
    def _refuse_unsafe_bind(self) -> Settings:
        if self.host not in LOOPBACK and not self.allow_remote:
            raise ConfigError(
                f"EDGE_HOST={self.host} would expose the service beyond this machine; "
                "set EDGE_ALLOW_REMOTE=true if that is intended"
            )
        if self.host not in LOOPBACK and self.control_enabled and self.control_token is None:
            raise ConfigError(
                f"EDGE_HOST={self.host} exposes the control endpoints (policy, power mode, "
                "pin) with no token: set EDGE_CONTROL_TOKEN to a secret, or "
                "EDGE_CONTROL_ENABLED=false to turn them off"
            )
        for name in ("control_token", "inference_token"):
            token = getattr(self, name)
            if token is not None and len(token.get_secret_value()) < 16:
                raise ConfigError(
                    f"EDGE_{name.upper()} is too short to be a secret: use at least 16 "
                    "characters (e.g. `openssl rand -hex 24`)"
                )
        return self

    @property
    def family_dir(self) -> Path:
        """Where the served family's catalog and artifacts live."""
        return self.engines_dir / self.family
