"""Settings refuse unsafe exposure: control without a token off loopback, weak tokens."""

from __future__ import annotations

import pytest

from edge_service.config import Settings
from edge_service.errors import ConfigError


def test_remote_bind_with_control_on_and_no_token_is_refused():
    with pytest.raises(ConfigError, match="EDGE_CONTROL_TOKEN"):
        Settings(host="0.0.0.0", allow_remote=True)


def test_remote_bind_is_allowed_with_a_token_or_with_control_off():
    Settings(host="0.0.0.0", allow_remote=True, control_token="s" * 24)
    Settings(host="0.0.0.0", allow_remote=True, control_enabled=False)


def test_loopback_needs_no_token():
    assert Settings().control_token is None


@pytest.mark.parametrize("field", ["control_token", "inference_token"])
def test_short_tokens_are_refused(field):
    with pytest.raises(ConfigError, match="too short"):
        Settings(**{field: "short"})


def test_tokens_never_show_in_the_settings_repr():
    s = Settings(control_token="topsecret-topsecret")
    assert "topsecret" not in repr(s)
