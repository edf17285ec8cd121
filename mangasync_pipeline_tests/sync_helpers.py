"""Wiring for sync tests: settings, a client and Dagster definitions pointed at test parts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dagster import DagsterInstance, Definitions, RunRequest, build_sensor_context
from sqlalchemy import Engine, func, select

from mangasync_pipeline.config import ClientPolicy, Settings
from mangasync_pipeline.db.tables import notification_outbox
from mangasync_pipeline.definitions import build_definitions
from mangasync_pipeline.mangadex.client import open_client

# Retries as in production, with waits short enough for a test.
FAST_POLICY = ClientPolicy(backoff_base=0.05, backoff_max=0.2)


def settings_for(db_url: str, mangadex_url: str, server_url: str = "http://127.0.0.1:9",
                 **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": db_url, "mangadex_api_url": mangadex_url,
                              "udp_server_url": server_url, "mangadex_rate_limit": 1000.0,
                              "chapter_lookback": timedelta(hours=1),
                              "mangadex_policy": FAST_POLICY}
    return Settings(**{**values, **overrides})


# The tests build their clients the way the CLI does.
client_for = open_client


class Pipeline:
    """The Dagster definitions for one test: evaluate sensors, run what they request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.defs: Definitions = build_definitions(settings)
        self.instance = DagsterInstance.ephemeral()
        self.sensor_cursor: str | None = None
        self.used_run_keys: set[str] = set()

    def resources(self) -> dict[str, Any]:
        return dict(self.defs.resources or {})

    def evaluate_sensor(self, name: str) -> list[RunRequest]:
        sensor = self.defs.resolve_sensor_def(name)
        context = build_sensor_context(instance=self.instance, cursor=self.sensor_cursor,
                                       resources=self.resources(), definitions=self.defs)
        result = sensor.evaluate_tick(context)
        if name == "new_manga_sensor":
            self.sensor_cursor = result.cursor
        return list(result.run_requests or [])

    def run(self, job_name: str, *, partition_key: str | None = None,
            run_config: Any = None, raise_on_error: bool = True,
            tags: dict[str, str] | None = None) -> Any:
        job = self.defs.resolve_job_def(job_name)
        return job.execute_in_process(
            instance=self.instance, partition_key=partition_key,
            run_config=run_config or {}, raise_on_error=raise_on_error, tags=tags)

    def run_requests(self, requests: list[RunRequest], job_name: str | None = None,
                     *, raise_on_error: bool = True) -> list[Any]:
        """Run what a sensor requested, skipping run keys already used, as the daemon does."""
        results = []
        for r in requests:
            if r.run_key is not None:
                if r.run_key in self.used_run_keys:
                    continue
                self.used_run_keys.add(r.run_key)
            tags = {**r.tags, **({"dagster/run_key": r.run_key} if r.run_key else {})}
            results.append(self.run(r.job_name or job_name or "", partition_key=r.partition_key,
                                    run_config=r.run_config, tags=tags,
                                    raise_on_error=raise_on_error))
        return results


def outbox_rows(engine: Engine, kind: str | None = None) -> list[Any]:
    stmt = select(notification_outbox).order_by(notification_outbox.c.id)
    if kind:
        stmt = stmt.where(notification_outbox.c.kind == kind)
    with engine.connect() as conn:
        return list(conn.execute(stmt).all())


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def settings_variables() -> set[str]:
    """Every variable `Settings.from_env` reads: each field's name in the environment."""
    names = set(Settings.variables())
    assert len(names) > 20, names
    return names
