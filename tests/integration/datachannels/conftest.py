"""Data-channel tests reuse the SDK tests' `sessions` fixture (every session closed at teardown)."""

from tests.integration.sdk.conftest import sessions

__all__ = ["sessions"]
