"""Each HTTP client of a process verifies TLS with the same context.

A sensor tick, a run and a delivery each build their clients; loading the CA bundle into a
fresh context costs about 20 ms of CPU each time, more than the request it guards on loopback.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest

from mangasync_pipeline.config import ClientPolicy
from mangasync_pipeline.defs.resources import AlertWebhook
from mangasync_pipeline.mangadex.client import MangaDexClient
from mangasync_pipeline.mangadex.simulator import SimulatorAdmin
from mangasync_pipeline.sync.notifier import Notifier


@pytest.mark.process  # the alert's post opens a (refused) loopback connection
def test_clients_load_the_ca_bundle_at_most_once_per_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Any] = []
    real = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    clients = [MangaDexClient("https://api.mangadex.invalid", rate_limit=None,
                              policy=ClientPolicy()) for _ in range(3)]
    notifiers = [Notifier("https://notify.invalid") for _ in range(3)]
    admins = [SimulatorAdmin("https://simulator.invalid") for _ in range(2)]
    for each in (*clients, *notifiers, *admins):
        each.close()
    for _ in range(2):  # a failed-run alert builds its client per post; nothing listens here
        with pytest.raises(httpx.HTTPError):
            AlertWebhook("http://127.0.0.1:9/hook").post("run failed", attempts=1)
    assert len(loads) <= 1, f"the CA bundle was loaded {len(loads)} times for ten clients"
