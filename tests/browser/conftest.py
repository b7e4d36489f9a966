from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.browser.chromium import RAW_PAGES, browser_context, static_site


@pytest.fixture
async def page_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The test module's `PAGE` from a second local server, with the shared page module beside it."""
    async with static_site({"/": request.module.PAGE}, {"/shared/": RAW_PAGES}) as url:
        yield url + "/"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with browser_context() as context:
        yield context
