"""Settings, read once at the entry point (CLI or app factory) and passed down.

Every field can be set by an ``EDGE_``-prefixed environment variable, e.g. ``EDGE_PORT=9000``,
or by a key of the same name in a TOML file named by ``EDGE_CONFIG_FILE`` (``serve --config``):
``port = 9000``. Precedence: explicit CLI options, then the environment, then the file, then
the defaults. A key the file does not know is refused with its name. The tokens can also be
read from files (``EDGE_CONTROL_TOKEN_FILE``), the form Docker and Kubernetes secrets take.
There is no module-level instance: build one with ``Settings()`` where the process starts.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from edge_service.errors import ConfigError
from edge_service.source_names import MonitorSourceName

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class Settings(BaseSettings):
    """Service settings; see the README for what each one does."""

    model_config = SettingsConfigDict(env_prefix="EDGE_", frozen=True, extra="ignore")

    config_file: Path | None = Field(
        None, description="TOML file of settings; the environment and CLI options win over it"
    )
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
    monitor_source: MonitorSourceName = "auto"
    monitor_trace: Path | None = None
    power_mode: int | None = Field(
        None,
        ge=0,
        description="off-Jetson: emulated power mode to serve in (0 MAXN, 1 HALF, 2 MIN)",
    )
    monitor_replay_speed: float = Field(1.0, gt=0.0)
    nvpmodel_conf: Path = Field(
        Path("/etc/nvpmodel.conf"),
        description="nvpmodel's configuration; with nvpmodel on PATH it marks a Jetson",
    )
    latency_budget_ms: float | None = Field(None, gt=0, description="p99 budget (budget policy)")
    min_accuracy: float | None = Field(None, ge=0, le=1)
    memory_budget_mb: float | None = Field(None, gt=0)
    max_power_mw: float | None = Field(None, gt=0)
    preload_memory_mb: float = Field(
        256.0,
        ge=0,
        description="memory for engines kept on standby next to the active one (each counted "
        "at its profiled peak)",
    )
    preload_load_ms: float = Field(
        150.0,
        ge=0,
        description="time the preloader may spend loading standby engines after a switch "
        "(loads run on the cores the engines serve on and slow the served calls)",
    )
    cooldown_s: float = Field(5.0, ge=0, description="wait before a voluntary (upgrade) switch")
    explore: bool = Field(
        True,
        description="budget policy: measure a variant by shadow runs on a standby engine "
        "before a voluntary move to it (step-up)",
    )
    probe_runs: int = Field(24, ge=4, le=1000, description="engine calls per shadow run")
    thread_fallback: bool = Field(
        True,
        description="run CPU engines at fewer threads while other processes hold the cores "
        "(a preempted intra-op thread stalls every call)",
    )
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
    control_token_file: Path | None = Field(
        None, description="read the control token from this file (a Docker/Kubernetes secret)"
    )
    inference_token_file: Path | None = Field(
        None, description="read the inference token from this file"
    )
    batch_max_size: int = Field(8, ge=1, le=64, description="micro-batch: most frames per call")
    batch_max_delay_ms: float = Field(
        0.0, ge=0.0, le=100.0, description="micro-batch: longest wait for more frames"
    )
    queue_max: int = Field(
        128, ge=1, description="requests waiting for the engine before 503 + Retry-After"
    )
    max_inflight: int = Field(
        64,
        ge=1,
        description="inference requests in the server at once (read, decoded, queued or "
        "running); more get 503 + Retry-After before their body is kept",
    )
    max_batch_frames: int = Field(64, ge=1, le=1024, description="frames per /v1/infer/batch")
    max_pinned_engines: int = Field(
        2, ge=0, description="engines kept loaded for requests pinned to a non-active variant"
    )
    streams_kept: int = Field(256, ge=1, description="camera streams with statistics kept")
    drain_timeout_s: float = Field(
        20.0, ge=0.0, description="on SIGTERM: the longest wait for requests in flight"
    )
    serve_nice: int = Field(
        -10,
        ge=-20,
        le=19,
        description="CPU priority (nice) of `serve`, below 0 so other processes' work does "
        "not preempt engine calls (needs root, CAP_SYS_NICE or an RLIMIT_NICE that allows "
        "it; else it serves as started and logs why); 0: the default priority",
    )
    switch_interval_ms: float = Field(
        0.5,
        gt=0.0,
        le=100.0,
        description="the interpreter's thread switch interval: the longest an engine call "
        "that finished waits for a thread running Python (CPython's default is 5 ms)",
    )
    background_build: bool = Field(
        False,
        description="serve builds the family: the first engine before it binds, the "
        "device's front and per-power-mode profiles in the background while it serves",
    )
    build_args: str = Field(
        "",
        description="more options for the build that serve --build and the container run "
        '(e.g. "--eval-limit 2000"), split on spaces',
    )
    catalog_poll_s: float = Field(
        1.0, gt=0.0, description="how often the server looks for a new catalog"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The config file ranks below the CLI options and the environment."""
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            file_secret_settings,
            _ConfigFileSource(settings_cls),
        )

    @model_validator(mode="before")
    @classmethod
    def _read_token_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name in SECRET_FIELDS:
            path = data.get(f"{name}_file")
            if path is None or str(path) == "":
                continue
            if data.get(name) is not None:
                raise ConfigError(
                    f"both EDGE_{name.upper()} and EDGE_{name.upper()}_FILE are set: keep one"
                )
            data = {**data, name: read_secret_file(Path(path), name)}
        return data

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

    def masked(self) -> dict[str, Any]:
        """Every setting as JSON-able values, the tokens shown as ``**********``."""
        return self.model_dump(mode="json")


SECRET_FIELDS = ("control_token", "inference_token")
NOT_IN_FILE = frozenset({"config_file"})


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML file: top-level ``name = value`` keys named as the fields.

    ConfigError, naming the file, when it cannot be read or parsed, or has keys that are
    not settings (with the nearest setting name as a hint).
    """
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file {path} ({exc.strerror}); fix EDGE_CONFIG_FILE "
            "or serve --config"
        ) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
    known = set(Settings.model_fields) - NOT_IN_FILE
    unknown = sorted(set(data) - known)
    if unknown:
        hints = [
            f"{key} (did you mean {close[0]}?)" if close else key
            for key in unknown
            for close in [difflib.get_close_matches(key, known, n=1)]
        ]
        raise ConfigError(
            f"the config file {path} has unknown settings: {', '.join(hints)}; "
            "`edge-service serve --print-config` lists them all"
        )
    return data


def read_secret_file(path: Path, name: str) -> str:
    """A token kept in a file (trailing newline dropped); ConfigError if unreadable/empty."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read EDGE_{name.upper()}_FILE={path} ({exc.strerror}): mount the secret "
            "there or unset the variable"
        ) from exc
    if not value:
        raise ConfigError(f"EDGE_{name.upper()}_FILE={path} is empty")
    return value


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The TOML file named by ``config_file`` in a higher-ranked source (CLI or env)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("config_file")
        return read_config_file(Path(path)) if path else {}
