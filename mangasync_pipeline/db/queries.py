"""Small statements every part of the pipeline shares, written once for both backends."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")


def insert_ignore(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *,
    conflict: Sequence[str] | None = None,
) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: concurrent runs may race to insert the same row."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).on_conflict_do_nothing(index_elements=conflict)
    conn.execute(stmt, list(rows))


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
