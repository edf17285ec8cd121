"""Failed runs say why in one line. An outage of MangaDex is not retried: the client has
spent its retry budget (or the breaker is open), and a step retry would hold a run slot only to
meet the same breaker. Database hiccups are retried by the RetryPolicy."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from dagster import AssetExecutionContext, Failure, MetadataValue
from sqlalchemy.exc import OperationalError

from mangasync_pipeline.db.migrate import SchemaError
from mangasync_pipeline.mangadex.errors import (
    CircuitOpenError,
    MangaDexError,
    MangaDexUnavailableError,
)

# The network to something other than MangaDex, or the database restarting: worth another try.
TRANSIENT: tuple[type[BaseException], ...] = (httpx.TransportError, OperationalError)


def partition_label(context: AssetExecutionContext) -> str:
    """`2026-12-01`, or `2026-12-01..2026-12-03` for a range run."""
    keys = context.partition_key_range
    return keys.start if keys.start == keys.end else f"{keys.start}..{keys.end}"


def _one_line(exc: BaseException) -> str:
    # SQLAlchemy appends the statement and a help link on further lines.
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def one_line_failures(what: str) -> Iterator[None]:
    # `from None` everywhere: the description is the whole story, a chained traceback under an
    # expected outage only buries it.
    try:
        yield
    except Failure:
        raise  # already one line (a nested step part, or the resource's own)
    except MangaDexUnavailableError as exc:
        metadata: dict[str, Any] = {"kind": "mangadex_unavailable"}
        if isinstance(exc, CircuitOpenError) and exc.probe_at is not None:
            metadata["next_probe_at"] = MetadataValue.timestamp(exc.probe_at)
        raise Failure(description=f"{what}: {exc}", metadata=metadata,
                      allow_retries=False) from None
    except TRANSIENT as exc:
        raise Failure(description=f"{what}: {_one_line(exc)}", metadata={"kind": "transient"},
                      allow_retries=True) from None
    except (MangaDexError, SchemaError) as exc:
        kind = "schema" if isinstance(exc, SchemaError) else "mangadex_error"
        raise Failure(description=f"{what}: {exc}", metadata={"kind": kind},
                      allow_retries=False) from None
    except Exception as exc:
        # Not an outage but a bug: keep its traceback.
        raise Failure(description=f"{what}: {type(exc).__name__}: {_one_line(exc)}",
                      metadata={"kind": "unexpected"}, allow_retries=False) from exc
