"""pytest fixtures for the notification server (registered with `pytest_plugins`).

- `server`: a running server on the test's freshly migrated database (both backends), with
  the short timings of `fast_options()`. A module that needs other timings defines its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.testing import fast_options, server_settings


@pytest.fixture
def server(db_url: str) -> Iterator[ServerHandle]:
    with ServerHandle(server_settings(db_url), fast_options()) as handle:
        yield handle
