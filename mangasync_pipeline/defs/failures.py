"""Failed runs say why in one line; only transient failures are retried by the RetryPolicy."""

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from dagster import Failure
from sqlalchemy.exc import OperationalError

from mangasync_pipeline.db.migrate import SchemaError
from mangasync_pipeline.mangadex.errors import MangaDexError, MangaDexUnavailableError

# MangaDex down or limiting us, the network, the database restarting: worth another try.
TRANSIENT: tuple[type[BaseException], ...] = (MangaDexUnavailableError, httpx.TransportError,
                                              OperationalError)


@contextmanager
def one_line_failures(what: str) -> Iterator[None]:
    try:
        yield
    except TRANSIENT as exc:
        raise Failure(description=f"{what}: {exc}", allow_retries=True) from exc
    except (MangaDexError, SchemaError) as exc:
        raise Failure(description=f"{what}: {exc}", allow_retries=False) from exc
    except Exception as exc:
        raise Failure(description=f"{what}: {type(exc).__name__}: {exc}",
                      allow_retries=False) from exc
