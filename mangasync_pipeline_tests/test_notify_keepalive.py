"""Triggers over kept-alive connections at 50 concurrency: none is lost to the server closing
an idle connection just as the client reuses it.

uvicorn closed idle connections after 5 s, the same as httpx keeps them in its pool: a request
sent as the server closed got a reset (httpx.ReadError), and nothing was stored or logged. The
server now keeps idle connections longer than clients do (ServerOptions.http_keep_alive). The
race itself lasts microseconds on loopback, so the test makes it certain: each caller reuses its
connection after an idle time between the old timeout and the new one, as a pooled client with
a longer keep-alive (a proxy, a client whose FIN check lost the race) does.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

from sqlalchemy import Engine, func, select

from mangasync_pipeline.db import tables as t
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.notify.app import ServerHandle
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.testing import add_manga, fast_options, server_settings

CALLERS = 50
IDLE = 6.0  # more than the old 5 s keep-alive, well under the new one
# The loss reproduced with a keep-alive scaled down (the same race, 3.5 s sooner).
OLD_KEEP_ALIVE, OLD_IDLE = 1.0, 2.5


def _callers(url: str, manga_id: int, tag: str, idle: float = IDLE) -> list[str]:
    """Each caller posts a trigger, idles, then posts again on the same connection."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    errors: list[str] = []
    start = threading.Barrier(CALLERS)

    def caller(n: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            start.wait()
            for round_ in range(2):
                if round_:
                    time.sleep(idle)
                body = json.dumps({"manga_id": manga_id, "title": "T", "chapter": n,
                                   "dedup_key": f"{tag}:{n}:{round_}"})
                conn.request("POST", "/notify/new-chapter", body,
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 202:
                    errors.append(f"{n}: HTTP {response.status}")
        except OSError as exc:  # RemoteDisconnected, ConnectionResetError
            errors.append(f"{n}: {type(exc).__name__}")
        finally:
            conn.close()

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def test_kept_alive_connections_are_not_closed_under_a_caller(pg_url: str) -> None:
    engine: Engine = make_engine(pg_url)
    manga_id = add_manga(engine)
    try:
        # The old timeout reproduces the loss: every reuse after the idle time fails.
        old = fast_options(http_keep_alive=OLD_KEEP_ALIVE)
        with ServerHandle(server_settings(pg_url), old) as server:
            lost = _callers(server.http_url, manga_id, "old", OLD_IDLE)
        assert len(lost) == CALLERS

        assert ServerOptions().http_keep_alive > 5.0  # httpx's pool keeps idle 5 s
        with ServerHandle(server_settings(pg_url), fast_options()) as server:
            assert _callers(server.http_url, manga_id, "new") == []
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(t.notification_triggers)
                                  .where(t.notification_triggers.c.dedup_key.like("new:%"))
                                  ).scalar_one()
        assert stored == 2 * CALLERS
    finally:
        engine.dispose()
