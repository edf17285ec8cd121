"""The notification server process: uvicorn (HTTP) and the UDP endpoint on one event loop.

`NotifyServer` is the async core, `run_server` the `mangasync server` entry point (graceful on
SIGTERM), and `ServerHandle` runs a whole server in a background thread for tests and tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import uvicorn
from sqlalchemy import Engine
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from mangasync_pipeline.config import Settings, check_public_bind
from mangasync_pipeline.db.engine import make_engine
from mangasync_pipeline.db.migrate import check_schema
from mangasync_pipeline.notify import pubsub
from mangasync_pipeline.notify.http_api import ServerContext, create_app
from mangasync_pipeline.notify.http_guard import guarded
from mangasync_pipeline.notify.metrics import NotifyMetrics
from mangasync_pipeline.notify.options import ServerOptions
from mangasync_pipeline.notify.store import NotifyStore
from mangasync_pipeline.notify.udp import UdpEndpoint

log = logging.getLogger("mangasync.notify")
T = TypeVar("T")


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The process owner handles signals; uvicorn would re-raise SIGTERM after shutdown.
        yield


class NotifyServer:
    def __init__(self, settings: Settings, options: ServerOptions | None = None) -> None:
        self.settings = settings
        self.options = options or ServerOptions()
        self.origin = secrets.token_hex(6)
        self.http_port = settings.http_port
        self.udp_port = settings.udp_port
        self.engine: Engine | None = None
        self.udp: UdpEndpoint | None = None
        self._executor = ThreadPoolExecutor(self.options.db_threads,
                                            thread_name_prefix="notify-db")
        self._uvicorn: _Uvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._pubsub_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ctx: ServerContext | None = None

    async def run_db(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, partial(fn, *args))

    async def start(self) -> None:
        check_public_bind(self.settings)
        self._loop = asyncio.get_running_loop()
        url = self.settings.database_url
        pool: dict[str, Any] = {} if url.startswith("sqlite") else {
            "pool_size": self.options.db_threads + 2}
        self.engine = make_engine(url, **pool)
        await self.run_db(check_schema, self.engine)
        store = NotifyStore(self.engine)
        metrics = NotifyMetrics()
        metrics.attach_database(store.metric_rows)
        bind = self.settings.bind
        _, udp = await self._loop.create_datagram_endpoint(
            lambda: UdpEndpoint(store, self.options, metrics, self.run_db),
            local_addr=(bind, self.udp_port))
        self.udp = udp
        assert udp.transport is not None
        udp_sock = udp.transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            # Thousands of clients ACK within milliseconds of a broadcast: buffer them.
            udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.udp_port = udp.transport.get_extra_info("sockname")[1]
        ctx = ServerContext(self.settings, store, metrics, self.origin, self.run_db, udp)
        # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that
        # say they are TCP. Without it, Nagle held every response's body behind the client's
        # delayed ACK of its headers: 40 ms per request, 15 triggers/s one at a time.
        sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET,
                             socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, self.http_port))
        self.http_port = sock.getsockname()[1]
        self._ctx = ctx
        config = uvicorn.Config(create_app(ctx), log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=5,
                                # No WebSocket route: an upgrade request stays plain HTTP
                                # (uvicorn's WebSocket protocol would take the connection
                                # out of the guard's count for good).
                                ws="none",
                                timeout_keep_alive=int(self.options.http_keep_alive),
                                http=guarded(AutoHTTPProtocol,
                                             per_client=self.options.http_connections_per_client,
                                             header_timeout=self.options.http_header_timeout,
                                             total=self.options.http_connections_total))
        self._uvicorn = _Uvicorn(config)
        self._http_task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]))
        while not self._uvicorn.started:
            if self._http_task.done():
                self._http_task.result()
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        if store.is_postgres:
            ready = asyncio.Event()
            self._pubsub_task = asyncio.create_task(pubsub.listen(
                pubsub.libpq_dsn(self.settings.database_url), self._remote_trigger,
                udp.remote_acks, self.origin, ready))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), 10)
        log.info("notification server %s: HTTP on %s:%d, UDP on %s:%d", self.origin, bind,
                 self.http_port, bind, self.udp_port)

    def _remote_trigger(self, trigger_id: int) -> None:
        udp = self.udp
        if udp is None:
            return
        online = udp.online_user_ids()
        if not online:
            return

        async def fetch() -> None:
            assert self.udp is not None
            notices = await self.run_db(udp.store.trigger_notices, trigger_id, online)
            log.info("trigger %s from another server: %d notifications for users online here",
                     trigger_id, len(notices))
            self.udp.deliver(notices)

        task = asyncio.ensure_future(fetch())
        task.add_done_callback(lambda t: t.cancelled() or t.exception() and log.warning(
            "trigger %s from another server not delivered: %s", trigger_id, t.exception()))

    async def stop(self) -> None:
        if self._uvicorn is not None and self._http_task is not None:
            self._uvicorn.should_exit = True
            with contextlib.suppress(Exception):
                await self._http_task
        if self._ctx is not None and self._ctx.database is not None:
            await self._ctx.database.close()
        if self._pubsub_task is not None:
            self._pubsub_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pubsub_task
        if self.udp is not None:
            await self.udp.close()
        self._executor.shutdown(wait=True)
        if self.engine is not None:
            self.engine.dispose()
        log.info("notification server %s stopped", self.origin)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed, as uvicorn picks it when it owns the loop: here the server
    owns it (HTTP and UDP on one loop), and uvloop carried about 10 % more triggers a second
    with a shorter tail."""
    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run(main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=_new_event_loop) as runner:
        runner.run(main)


def run_server(settings: Settings, options: ServerOptions | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully (unacknowledged stay unread)."""

    async def main() -> None:
        server = NotifyServer(settings, options)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        # Everything loaded so far (FastAPI, SQLAlchemy, pydantic, the routes) lives as long
        # as the process: out of the collector's sight, a full collection no longer walks it
        # in the middle of a burst of triggers, which showed as the slowest 1 % of requests.
        gc.collect()
        gc.freeze()
        try:
            await stop.wait()
            log.info("stopping on signal")
        finally:
            await server.stop()

    _run(main())


class ServerHandle:
    """A whole server on its own event loop in a background thread.

    `Settings(http_port=0, udp_port=0)` picks ephemeral ports; read them from `http_url` and
    `udp_addr` once started.
    """

    def __init__(self, settings: Settings, options: ServerOptions | None = None) -> None:
        self.server = NotifyServer(settings, options)
        self._thread = threading.Thread(target=self._run, name="notify-server", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def http_url(self) -> str:
        host = self.server.settings.bind
        return f"http://{f'[{host}]' if ':' in host else host}:{self.server.http_port}"

    @property
    def udp_addr(self) -> tuple[str, int]:
        return self.server.settings.bind, self.server.udp_port

    def start(self) -> ServerHandle:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise RuntimeError("notification server did not start within 60 s")
        return self

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                await self.server.start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                await self.server.stop()
                return
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.server.stop()

        _run(main())

    def call(self, fn: Callable[[NotifyServer], T]) -> T:
        """Run `fn(server)` on the server's loop (to read in-memory state safely)."""
        assert self._loop is not None

        async def run() -> T:
            return fn(self.server)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def __enter__(self) -> ServerHandle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
