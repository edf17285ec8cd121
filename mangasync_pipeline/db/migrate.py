"""Alembic migrations, run from code: `mangasync migrate` and the start-up schema check."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from mangasync_pipeline.db.engine import describe, make_engine


class SchemaError(RuntimeError):
    """The database is not at the schema this code knows."""


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("mangasync_pipeline.db") / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {rev.revision for rev in script.walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the database to the newest schema; returns (revision before, revision after)."""
    engine = make_engine(url)
    try:
        before = current_revision(engine)
        if before is not None and before not in known_revisions():
            raise SchemaError(_newer_message(url, before))
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return before, head_revision()
    finally:
        engine.dispose()


def check_schema(engine: Engine) -> None:
    """Raise `SchemaError` with a one-line message unless the database is at head."""
    url = engine.url.render_as_string(hide_password=False)
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaError(
            f"database {describe(url)} has no MangaHub schema: run `mangasync migrate` first"
        )
    if current not in known_revisions():
        raise SchemaError(_newer_message(url, current))
    raise SchemaError(
        f"database {describe(url)} is at schema {current}, older than {head}: "
        "run `mangasync migrate`"
    )


def _newer_message(url: str, revision: str) -> str:
    return (
        f"database {describe(url)} has schema revision {revision}, newer than this mangasync "
        f"knows (head {head_revision()}): upgrade mangasync before using it"
    )
