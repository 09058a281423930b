"""One exception hierarchy for the whole service.

Every error carries a message that says what went wrong and what to do about it, and an
HTTP status so that the server maps it in one handler.
"""

from __future__ import annotations


class EdgeServiceError(Exception):
    """Base of every error edge-service raises on purpose."""

    http_status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def error_reason(exc: BaseException) -> str:
    """What went wrong, for a log line or an event: an EdgeServiceError's own message,
    else the exception's type and text (a backend's own error)."""
    return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"


class ConfigError(EdgeServiceError):
    """A setting is missing or unsafe."""

    code = "config_error"


class DataError(EdgeServiceError):
    """A data set file is missing or malformed."""

    code = "data_error"


class BadInputError(EdgeServiceError):
    """The request's payload cannot be used (empty, undecodable, wrong shape)."""

    http_status = 400
    code = "bad_input"


class PayloadTooLargeError(BadInputError):
    """The request body is larger than the configured limit."""

    http_status = 413
    code = "payload_too_large"


class UnsupportedMediaError(BadInputError):
    """The request's content type is not one the endpoint takes."""

    http_status = 415
    code = "unsupported_media_type"


class CatalogError(EdgeServiceError):
    """A catalog or engine artifact is missing, malformed or fails its checksum."""

    code = "catalog_error"


class NotFoundError(EdgeServiceError):
    """A named family, model or variant does not exist."""

    http_status = 404
    code = "not_found"


class EngineError(EdgeServiceError):
    """An engine failed to load or to run."""

    code = "engine_error"


class NotReadyError(EdgeServiceError):
    """The service has no engine loaded yet."""

    http_status = 503
    code = "not_ready"


class BuildError(EdgeServiceError):
    """Exporting, calibrating or building an engine failed."""

    code = "build_error"


class MonitorError(EdgeServiceError):
    """A monitor source cannot read the board's state."""

    code = "monitor_error"


class HostCommandError(MonitorError):
    """A command on the host (``nvpmodel``) failed or could not be run.

    The request was fine and the server is up, but what it depends on on the board did
    not do its part: a gateway failure (502), not a crash of the server.
    """

    http_status = 502
    code = "host_command_failed"


class UnauthorizedError(EdgeServiceError):
    """No bearer token, or the wrong one, for an endpoint that needs one."""

    http_status = 401
    code = "unauthorized"


class ForbiddenError(EdgeServiceError):
    """The endpoint is turned off on this server."""

    http_status = 403
    code = "forbidden"


class ConflictError(EdgeServiceError):
    """The request is well formed but cannot apply in the server's current state."""

    http_status = 409
    code = "conflict"


class RejectedVariantError(ConflictError):
    """A pin names a variant the build's accuracy gate rejected (it is in the catalog,
    but too inaccurate on this device to serve)."""

    code = "variant_rejected"


class OverloadedError(EdgeServiceError):
    """The request queue is full: retry after ``retry_after_s`` seconds."""

    http_status = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
