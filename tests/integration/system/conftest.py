from tests.integration.sdk.conftest import Sessions, sessions

__all__ = ["Sessions", "sessions"]
