"""The MangaDex API client: polite (one shared rate limit, honest User-Agent), patient
(retries with backoff, obeys Retry-After) and careful (shared circuit breaker, typed parsing).

Plain Python; the Dagster resource wraps it.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import httpx

from mangasync_pipeline import __version__
from mangasync_pipeline.config import ClientPolicy, Settings
from mangasync_pipeline.ids import is_uuid
from mangasync_pipeline.mangadex.breaker import CircuitBreaker, store_for
from mangasync_pipeline.mangadex.dates import as_utc, format_since, to_second
from mangasync_pipeline.mangadex.errors import (
    CircuitOpenError,
    MalformedResponseError,
    MangaDexError,
    MangaDexHTTPError,
    MangaDexUnavailableError,
    MangaNotFoundError,
)
from mangasync_pipeline.mangadex.models import (
    Chapter,
    Manga,
    Page,
    Rejection,
    Tag,
    parse_chapter,
    parse_collection,
    parse_entity,
    parse_manga,
    parse_tag,
)
from mangasync_pipeline.mangadex.ratelimit import DEFAULT_MARGIN, RateLimiter
from mangasync_pipeline.mangadex.sanitize import clean_text
from mangasync_pipeline.mangadex.stats import ClientStats
from mangasync_pipeline.tls import tls_context

T = TypeVar("T", Manga, Chapter)

DEFAULT_POLICY = ClientPolicy()

DEFAULT_API_URL = "https://api.mangadex.org"
DEFAULT_UPLOADS_URL = "https://uploads.mangadex.org"
DEFAULT_INCLUDES: tuple[str, ...] = ("author", "artist", "cover_art")
ALL_CONTENT_RATINGS: tuple[str, ...] = ("safe", "suggestive", "erotica", "pornographic")
RESULT_WINDOW = 10_000  # MangaDex refuses offset + limit beyond this
MANGA_PAGE = 100
CHAPTER_PAGE = 100
FEED_PAGE = 500
MALFORMED_RETRIES = 2

# Endpoint templates: the keys of `stats.requests`.
EP_PING = "/ping"
EP_TAGS = "/manga/tag"
EP_MANGA_LIST = "/manga"
EP_MANGA = "/manga/{id}"
EP_FEED = "/manga/{id}/feed"
EP_CHAPTERS = "/chapter"

MangaKey = Literal["createdAt", "updatedAt"]
ChapterKey = Literal["publishAt", "createdAt", "updatedAt"]
_ATTR = {"createdAt": "created_at", "updatedAt": "updated_at", "publishAt": "publish_at"}

Params = list[tuple[str, str]]


class _Retry(Exception):
    """One failed attempt that may be retried."""

    def __init__(
        self, reason: str, *, status: int | None = None, delay: float | None = None, rid: str = "-"
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.delay = delay  # what the server asked for, if it did
        self.rid = rid


class MangaDexClient:
    """Thread-safe; one `httpx.Client` (connection reuse) for its whole life."""

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        *,
        uploads_url: str = DEFAULT_UPLOADS_URL,
        title_language: str | None = None,
        api_key: str | None = None,
        rate_limit: float | None = 5.0,
        state_url: str | None = None,
        rate_margin: float = DEFAULT_MARGIN,
        policy: ClientPolicy = DEFAULT_POLICY,
        max_retry_after: float = 900.0,
        breaker_close_after: int = 3,
        logger: logging.Logger | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.uploads_url = uploads_url.rstrip("/")
        # How this client's records become MangaHub rows (mapping.manga_row): cover URLs and
        # the title shown (MANGASYNC_TITLE_LANGUAGE), the same for every caller that maps them.
        self.title_language = title_language
        self.policy = policy
        self.max_retries = policy.max_retries
        self.backoff_base = policy.backoff_base
        self.backoff_max = policy.backoff_max
        self.max_retry_after = max_retry_after
        self.log = logger or logging.getLogger("mangasync.mangadex")
        self.stats = ClientStats()
        self.ping_error: str | None = None  # why the last ping() was False
        # Only the encodings `_read_bounded` inflates itself, within the body cap.
        headers = {"User-Agent": f"mangasync/{__version__}", "Accept": "application/json",
                   "Accept-Encoding": "gzip, deflate"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
            follow_redirects=False,
            verify=tls_context(),
        )
        self.limiter = RateLimiter(rate_limit, state_url, margin=rate_margin)
        self.breaker = CircuitBreaker(
            store_for(state_url),
            threshold=policy.breaker_threshold,
            open_seconds=policy.breaker_open_seconds,
            close_after=breaker_close_after,
            logger=self.log,
        )
        # After a 429 every thread of this process waits, not just the one that got it.
        self._pause_until = 0.0
        self._pause_lock = threading.Lock()
        # A sensor tick's deadline, per thread: ticks of different sensors share this client.
        self._deadline = threading.local()
        # Items the boundary checks refused, per thread, until the sync that read them takes
        # them (`take_rejections`) to quarantine.
        self._rejected = threading.local()
        self._garbage_retry_after_logged = False

    def _note(self, page: Page[Any]) -> None:
        if page.rejected:
            found = getattr(self._rejected, "items", None)
            if found is None:
                found = self._rejected.items = {}
            for rejection in page.rejected:
                found[(rejection.source, rejection.mangadex_id)] = rejection

    def take_rejections(self) -> list[Rejection]:
        """The records this thread's reads skipped since the last call, one per record."""
        found = getattr(self._rejected, "items", None) or {}
        self._rejected.items = {}
        return list(found.values())

    def start_deadline(self, seconds: float | None) -> None:
        """Every request this thread makes from now on must finish within `seconds` in all
        (None lifts it). Timeouts shrink to what is left; past it, requests fail at once."""
        self._deadline.at = None if seconds is None else time.monotonic() + seconds
        self._deadline.seconds = seconds

    def _remaining(self) -> float | None:
        at = getattr(self._deadline, "at", None)
        return None if at is None else at - time.monotonic()

    def _deadline_error(self, path: str, reason: str) -> MangaDexUnavailableError:
        return MangaDexUnavailableError(
            f"MangaDex GET {path}: no answer within the {self._deadline.seconds:.0f} s deadline "
            f"of a sensor tick ({reason}); the next tick tries again"
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()
        self.limiter.close()
        self.breaker.close()

    def __enter__(self) -> MangaDexClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- endpoints ----------------------------------------------------------------------------

    def ping(self) -> bool:
        """One attempt, no retries: is MangaDex answering right now? When not, `ping_error`
        says why (callers polling it log the outage once, not this per attempt)."""
        try:
            body = self._request(EP_PING, "/ping", None, json=False, retries=0)
        except MangaDexError as exc:
            self.ping_error = f"{type(exc).__name__}: {exc}"
            return False
        ok = isinstance(body, str) and body.strip() == "pong"
        self.ping_error = None if ok else f"unexpected answer {str(body)[:80]!r}"
        return ok

    def list_tags(self) -> list[Tag]:
        payload = self._request(EP_TAGS, "/manga/tag", None)
        page = parse_collection(payload, EP_TAGS, parse_tag, logger=self.log)
        self.stats.add_skipped(page.skipped)
        self._note(page)
        return page.items

    def get_manga(self, manga_id: str, includes: Sequence[str] = DEFAULT_INCLUDES) -> Manga:
        """Raises `MangaNotFoundError` for a removed or unknown manga."""
        path = f"/manga/{_manga_id(manga_id)}"
        payload = self._request(EP_MANGA, path, _includes(includes))
        return parse_entity(payload, path, parse_manga)

    def get_manga_by_ids(
        self, ids: Iterable[str], includes: Sequence[str] = DEFAULT_INCLUDES
    ) -> list[Manga]:
        """Manga for the ids MangaDex still has (unknown ids are simply absent), 100 a request."""
        unique = list(dict.fromkeys(_manga_id(i) for i in ids))
        found: list[Manga] = []
        for start in range(0, len(unique), MANGA_PAGE):
            chunk = unique[start : start + MANGA_PAGE]
            params: Params = [("ids[]", i) for i in chunk]
            params += [("limit", str(MANGA_PAGE))]
            params += [("contentRating[]", r) for r in ALL_CONTENT_RATINGS]
            params += _includes(includes)
            found.extend(self._manga_list(params).items)
        return found

    def get_chapters_by_ids(self, ids: Iterable[str], languages: Sequence[str] | None = None,
                            flags: dict[str, int] | None = None) -> list[Chapter]:
        """Chapters MangaDex still shows for the ids in the view `flags` select (absent ones
        are simply missing), 100 a request: how quarantined chapters are read again."""
        unique = list(dict.fromkeys(_manga_id(i) for i in ids))
        found: list[Chapter] = []
        for start in range(0, len(unique), CHAPTER_PAGE):
            params: Params = [("ids[]", i) for i in unique[start : start + CHAPTER_PAGE]]
            params += [("limit", str(CHAPTER_PAGE))] + _languages(languages) + _flags(flags)
            params += _ratings(ALL_CONTENT_RATINGS)
            payload = self._request(EP_CHAPTERS, "/chapter", params)
            page = parse_collection(payload, EP_CHAPTERS, parse_chapter, logger=self.log)
            self.stats.add_skipped(page.skipped)
            self._note(page)
            found.extend(page.items)
        return found

    def newest_manga(
        self,
        limit: int,
        includes: Sequence[str] = DEFAULT_INCLUDES,
        content_ratings: Sequence[str] | None = None,
    ) -> list[Manga]:
        """The `limit` most recently created manga, newest first, 100 per request."""
        if limit > RESULT_WINDOW:
            raise ValueError(f"newest_manga: limit {limit} exceeds MangaDex's {RESULT_WINDOW}")
        out: list[Manga] = []
        offset = 0
        while offset < limit:
            size = min(MANGA_PAGE, limit - offset)
            params: Params = [
                ("order[createdAt]", "desc"),
                ("limit", str(size)),
                ("offset", str(offset)),
            ]
            params += _ratings(content_ratings) + _includes(includes)
            page = self._manga_list(params)
            out.extend(page.items)
            offset += size
            if len(page.items) + page.skipped < size or offset >= page.total:
                break
        return out[:limit]

    def iter_manga_pages(
        self,
        key: MangaKey,
        since: datetime | None,
        until: datetime | None = None,
        includes: Sequence[str] = DEFAULT_INCLUDES,
        content_ratings: Sequence[str] | None = None,
    ) -> Iterator[Page[Manga]]:
        """Every manga whose `key` is in [since, until), ascending, one Page per request."""
        if key not in ("createdAt", "updatedAt"):
            raise ValueError(f"iter_manga_pages: key must be createdAt or updatedAt, not {key!r}")
        base = _ratings(content_ratings) + _includes(includes)
        return self._keyset(
            EP_MANGA_LIST, "/manga", base, key, since, until, MANGA_PAGE, parse_manga
        )

    def iter_chapter_pages(
        self,
        key: ChapterKey,
        since: datetime | None,
        until: datetime | None = None,
        languages: Sequence[str] | None = ("en",),
        flags: dict[str, int] | None = None,
        manga_id: str | None = None,
        content_ratings: Sequence[str] | None = None,
    ) -> Iterator[Page[Chapter]]:
        """Chapters across all manga (or one) by `key` in [since, until), ascending.

        Any of `flags` (includeFuturePublishAt / includeEmptyPages / includeExternalUrl)
        disables MangaDex's default `publishAt <= now` filter.
        """
        if key not in ("publishAt", "createdAt", "updatedAt"):
            raise ValueError(
                f"iter_chapter_pages: key must be publishAt/createdAt/updatedAt: {key!r}"
            )
        base = _languages(languages) + _flags(flags) + _ratings(content_ratings)
        if manga_id is not None:
            base.append(("manga", _manga_id(manga_id)))
        return self._keyset(
            EP_CHAPTERS,
            "/chapter",
            base,
            key,
            since,
            until,
            CHAPTER_PAGE,
            lambda obj: parse_chapter(obj, manga_id=manga_id),
        )

    def iter_feed_pages(
        self,
        manga_id: str,
        languages: Sequence[str] | None = ("en",),
        limit: int = FEED_PAGE,
        since: datetime | None = None,
        flags: dict[str, int] | None = None,
    ) -> Iterator[Page[Chapter]]:
        """A manga's whole chapter feed by `createdAt` ascending, however long it is."""
        path = f"/manga/{_manga_id(manga_id)}/feed"
        base = _languages(languages) + _flags(flags)
        return self._keyset(
            EP_FEED,
            path,
            base,
            "createdAt",
            since,
            None,
            min(limit, FEED_PAGE),
            lambda obj: parse_chapter(obj, manga_id=manga_id),
        )

    def feed_page(
        self,
        manga_id: str,
        languages: Sequence[str] | None,
        order: dict[str, str],
        limit: int,
        offset: int = 0,
        flags: dict[str, int] | None = None,
    ) -> Page[Chapter]:
        """One request to a manga's feed (e.g. its newest chapters for a baseline)."""
        if offset + limit > RESULT_WINDOW:
            raise ValueError(f"feed_page: offset + limit beyond MangaDex's {RESULT_WINDOW}")
        path = f"/manga/{_manga_id(manga_id)}/feed"
        params: Params = [(f"order[{k}]", v) for k, v in order.items()]
        params += [("limit", str(limit)), ("offset", str(offset))]
        params += _languages(languages) + _flags(flags)
        payload = self._request(EP_FEED, path, params)
        page = parse_collection(
            payload, path, lambda obj: parse_chapter(obj, manga_id=manga_id), logger=self.log
        )
        self.stats.add_skipped(page.skipped)
        self._note(page)
        return page

    def cover_url(self, manga: Manga) -> str | None:
        from mangasync_pipeline.mangadex.mapping import cover_url

        return cover_url(manga, self.uploads_url)

    # -- paging -------------------------------------------------------------------------------

    def _manga_list(self, params: Params) -> Page[Manga]:
        payload = self._request(EP_MANGA_LIST, "/manga", params)
        page = parse_collection(payload, EP_MANGA_LIST, parse_manga, logger=self.log)
        self.stats.add_skipped(page.skipped)
        self._note(page)
        return page

    def _keyset(
        self,
        template: str,
        path: str,
        base: Params,
        key: str,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        parse: Callable[[object], T],
    ) -> Iterator[Page[T]]:
        """Every item with `key` in [since, until), ascending, one Page per request.

        Keyset pages: each request starts at the last second read (the `*Since` filters are
        inclusive, to the second) with an offset past the items of that second already
        read, so N items cost ceil(N / limit) requests, `total` says when the list ends, and
        no query passes MangaDex's 10,000-result window. Being anchored on a timestamp, not
        on a position in the whole list, a chapter taken down or a manga updated (moved to
        the end) before the cursor's second shifts nothing that is still to be read. Within
        the cursor's second only the offset tells items apart, and MangaDex does not
        document the order of one second's items: a page that brings an id of that second
        again shows they came back in another order, and the second is read again from its
        start, dropping what was returned. An id is yielded once per second it is seen at.
        """
        attr = _ATTR[key]
        since = as_utc(since) if since is not None else None
        cursor = to_second(since) if since is not None else None
        until = as_utc(until) if until is not None else None
        offset = 0  # items of the cursor's second read already
        returned: dict[str, datetime] = {}  # ids yielded at or after the cursor -> their second
        skipped_seen: set[str] = set()
        reread = False  # this page re-reads the cursor's second from its start
        while True:
            if offset + limit > RESULT_WINDOW:
                raise MangaDexError(
                    f"GET {template}: more than {RESULT_WINDOW} items share {key} "
                    f"{format_since(cursor) if cursor else '?'}; cannot page further",
                    endpoint=template,
                )
            params = list(base) + [
                (f"order[{key}]", "asc"),
                ("limit", str(limit)),
                ("offset", str(offset)),
            ]
            if cursor is not None:
                params.append((f"{key}Since", format_since(cursor)))
            payload = self._request(template, path, params)
            page = parse_collection(payload, path, parse, logger=self.log)
            self._note(page)
            fetched = len(page.items) + page.skipped
            fresh_skips = tuple(i for i in page.skipped_ids if i not in skipped_seen)
            skipped_seen.update(page.skipped_ids)
            self.stats.add_skipped(len(fresh_skips))
            seconds = [to_second(getattr(i, attr)) for i in page.items]
            shuffled = not reread and offset > 0 and any(
                returned.get(i.id) == k for i, k in zip(page.items, seconds, strict=True))
            items: list[T] = []
            reached_until = False
            for item, second in zip(page.items, seconds, strict=True):
                when = getattr(item, attr)
                if returned.get(item.id) == second or (since is not None and when < since):
                    continue  # returned already, or in the part of a second before `since`
                if until is not None and when >= until:
                    reached_until = True
                    break
                items.append(item)
                returned[item.id] = second
            yield Page(
                items=items,
                total=page.total,
                limit=page.limit,
                offset=page.offset,
                skipped=len(fresh_skips),
                skipped_ids=fresh_skips,
            )
            if shuffled:  # the last page too: its offset skipped some of the second
                self.log.debug("GET %s: the items of %s came back in another order; "
                               "reading that second again", path, format_since(cursor))
                offset, reread = 0, True
                continue
            reread = False
            if reached_until or fetched < limit or offset + fetched >= page.total:
                return
            last = max(seconds) if seconds else None
            if last is None or (cursor is not None and last <= cursor):
                offset += fetched  # the whole page shares the cursor's second
            else:
                cursor = last
                offset = seconds.count(last)
                returned = {i: k for i, k in returned.items() if k >= cursor}

    # -- one request, with retries --------------------------------------------------------------

    def _request(
        self,
        template: str,
        path: str,
        params: Params | None,
        *,
        json: bool = True,
        retries: int | None = None,
    ) -> Any:
        max_retries = self.max_retries if retries is None else retries
        attempt = 0
        malformed = 0
        while True:
            try:
                return self._attempt(template, path, params, json=json)
            except _Retry as failure:
                is_malformed = failure.status == -1
                malformed += is_malformed
                out_of_tries = attempt >= max_retries or (
                    is_malformed and malformed > MALFORMED_RETRIES
                )
                if out_of_tries:
                    if is_malformed:
                        raise MalformedResponseError(
                            f"malformed response from GET {path}: {failure.reason} "
                            f"(x-request-id {failure.rid})",
                            endpoint=template,
                        ) from None
                    raise MangaDexUnavailableError(
                        f"MangaDex GET {path} failed after {attempt + 1} attempts: "
                        f"{failure.reason} (x-request-id {failure.rid}); "
                        f"{self.breaker.describe()}",
                        endpoint=template,
                    ) from None
                # This failure may have opened the breaker (or another process's did): waiting
                # out a backoff would only meet it again.
                self.breaker.check()
                delay = self._delay(attempt, failure)
                remaining = self._remaining()
                if remaining is not None and delay >= remaining:
                    raise self._deadline_error(path, failure.reason) from None
                # One line per outage comes from the breaker; single retries are detail.
                self.log.debug(
                    "retrying GET %s in %.2fs (attempt %d of %d): %s, x-request-id %s",
                    path,
                    delay,
                    attempt + 2,
                    max_retries + 1,
                    failure.reason,
                    failure.rid,
                )
                self.stats.add_retry(delay)
                time.sleep(delay)
                attempt += 1

    def _delay(self, attempt: int, failure: _Retry) -> float:
        if failure.delay is not None:
            if failure.delay > self.max_retry_after:
                raise MangaDexUnavailableError(
                    f"MangaDex asked to wait {failure.delay:.0f}s (more than "
                    f"{self.max_retry_after:.0f}s) after {failure.reason}; giving up for now"
                )
            with self._pause_lock:
                self._pause_until = max(self._pause_until, time.monotonic() + failure.delay)
            return failure.delay
        raw = self.backoff_base * (2**attempt)
        return min(self.backoff_max, raw * random.uniform(1.0, 1.25))

    def _wait_for_pause(self, path: str) -> None:
        with self._pause_lock:
            remaining = self._pause_until - time.monotonic()
        left = self._remaining()
        if remaining > 0 and left is not None and remaining >= left:
            # Another thread's 429 asked for longer than this tick has left.
            raise self._deadline_error(path, f"MangaDex asked to wait {remaining:.0f} s")
        if remaining > 0:
            self.stats.add_retry_wait(remaining)
            time.sleep(remaining)

    def _attempt(self, template: str, path: str, params: Params | None, *, json: bool) -> Any:
        try:
            self.breaker.before_request()
        except CircuitOpenError:
            self.stats.add_circuit_rejection()
            raise
        self._wait_for_pause(path)
        self.stats.add_rate_wait(self.limiter.acquire())
        remaining = self._remaining()
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        if remaining is not None:
            if remaining <= 0:
                raise self._deadline_error(path, "time used up")
            timeout = httpx.Timeout(
                min(self.policy.read_timeout, remaining),
                connect=min(self.policy.connect_timeout, remaining),
            )
        # The whole attempt is bounded, not only each wait between bytes: a body dripped a
        # byte at a time ends at MANGADEX_CONNECT_TIMEOUT + MANGADEX_READ_TIMEOUT, the figure
        # the failure bound of docs/CONTRACTS.md counts per attempt (or at the tick's end).
        budget = self.policy.connect_timeout + self.policy.read_timeout
        if remaining is not None:
            budget = min(budget, remaining)
        try:
            response = self._fetch(path, params, timeout, time.monotonic() + budget)
        except _BodyTooLarge as exc:
            self.stats.add_request(template, "too_large")
            reason = str(exc)
            self.breaker.record_failure(f"{reason} on GET {path}")
            raise _Retry(reason, status=-1) from None
        except httpx.TimeoutException as exc:
            self.stats.add_request(template, "timeout")
            reason = (f"timeout ({exc}: {budget:.1f} s)" if isinstance(exc, _AttemptDeadline)
                      else f"timeout ({type(exc).__name__})")
            self.breaker.record_failure(f"{reason} on GET {path}")
            raise _Retry(reason) from None
        except httpx.TransportError as exc:
            self.stats.add_request(template, "error")
            reason = f"connection error ({type(exc).__name__}: {_one_line(str(exc))})"
            self.breaker.record_failure(f"{reason} on GET {path}")
            raise _Retry(reason) from None
        status = response.status_code
        rid = response.headers.get("x-request-id", "-")
        self.stats.add_request(template, str(status))
        if status == 429 or 500 <= status <= 504:
            reason = f"HTTP {status}"
            self.breaker.record_failure(f"{reason} on GET {path} (x-request-id {rid})")
            delay = self._retry_after(response) if status == 429 else None
            raise _Retry(reason, status=status, delay=delay, rid=rid)
        if status >= 300:
            if status >= 500:
                self.breaker.record_failure(f"HTTP {status} on GET {path} (x-request-id {rid})")
            else:
                self.breaker.record_success()  # MangaDex is up; the request is what's wrong
            raise self._http_error(template, path, response)
        if not json:
            self.breaker.record_success()
            return response.text
        try:
            payload = response.json()
        except ValueError as exc:
            reason = f"body is not JSON ({_one_line(str(exc))})"
            self.breaker.record_failure(f"{reason} on GET {path} (x-request-id {rid})")
            raise _Retry(reason, status=-1, rid=rid) from None
        self.breaker.record_success()
        return payload

    def _fetch(self, path: str, params: Params | None, timeout: Any,
               deadline: float) -> httpx.Response:
        """GET with the body read in full, but never past `deadline` nor past
        `policy.max_body_bytes` once inflated; the response comes back detached."""
        request = self._http.build_request("GET", path, params=params, timeout=timeout)
        response = self._http.send(request, stream=True)
        watchdog = _Watchdog(response, deadline)
        try:
            body = _read_bounded(response, self.policy.max_body_bytes, deadline, watchdog)
        finally:
            watchdog.cancel()
            response.close()
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-encoding", "content-length",
                                        "transfer-encoding")]
        return httpx.Response(response.status_code, headers=headers, content=body,
                              request=request)

    def _retry_after(self, response: httpx.Response) -> float | None:
        delay, garbage = _retry_after(response)
        if garbage is not None and not self._garbage_retry_after_logged:
            self._garbage_retry_after_logged = True  # once: a proxy that sends it sends it always
            self.log.warning("ignoring unreadable %s from MangaDex; backing off instead", garbage)
        return delay

    def _http_error(self, template: str, path: str, response: httpx.Response) -> MangaDexHTTPError:
        status = response.status_code
        rid = response.headers.get("x-request-id", "-")
        detail = _error_detail(response)
        message = f"MangaDex GET {path} failed: HTTP {status}: {detail} (x-request-id {rid})"
        cls = MangaNotFoundError if status == 404 and template == EP_MANGA else MangaDexHTTPError
        return cls(message, endpoint=template, status=status, detail=detail, request_id=rid)


# -- bounded bodies -------------------------------------------------------------------------


class _AttemptDeadline(httpx.ReadTimeout):
    """The whole answer took longer than its attempt may (a body dripped a byte at a time)."""


class _BodyTooLarge(Exception):
    """The body inflates past the cap (a huge answer, a gzip bomb) or cannot be inflated."""


class _Watchdog:
    """Shuts the response's socket down at `deadline`, so a read blocked on a drip returns."""

    def __init__(self, response: httpx.Response, deadline: float) -> None:
        self.fired = False
        stream = response.extensions.get("network_stream")
        self._sock = stream.get_extra_info("socket") if stream is not None else None
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _inflater(encoding: str) -> Any:
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise _BodyTooLarge(f"body in an encoding not asked for ({_one_line(encoding, 40)})")


def _read_bounded(response: httpx.Response, limit: int, deadline: float,
                  watchdog: _Watchdog) -> bytes:
    """The body, inflated here (never by httpx, which would inflate a bomb whole), in at most
    `limit` bytes; a timeout once `deadline` passes."""
    inflater = _inflater(response.headers.get("content-encoding", "").strip().lower())
    declared = response.headers.get("content-length", "")
    if inflater is None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge(f"body of {int(declared):,} bytes, over the {limit:,}-byte cap")
    out = bytearray()
    try:
        for chunk in response.iter_raw(64 * 1024):
            if time.monotonic() >= deadline:
                break
            if inflater is not None:
                chunk = inflater.decompress(chunk, limit + 1 - len(out))
                if inflater.unconsumed_tail:
                    raise _BodyTooLarge(f"body inflates past the {limit:,}-byte cap")
            out += chunk
            if len(out) > limit:
                raise _BodyTooLarge(f"body past the {limit:,}-byte cap")
        if inflater is not None:
            out += inflater.flush()
    except zlib.error as exc:
        raise _BodyTooLarge(f"body does not inflate ({exc})") from None
    except httpx.TransportError:
        if not watchdog.fired:
            raise
    if watchdog.fired or time.monotonic() >= deadline:
        raise _AttemptDeadline("the whole answer took longer than its attempt's deadline")
    if len(out) > limit:
        raise _BodyTooLarge(f"body inflates past the {limit:,}-byte cap")
    return bytes(out)


# -- helpers --------------------------------------------------------------------------------


def open_client(settings: Settings, *, rate_margin: float = DEFAULT_MARGIN) -> MangaDexClient:
    """The client the settings describe (the CLI, tests and benchmarks; the Dagster resource
    passes its own fields the same way)."""
    return MangaDexClient(
        settings.mangadex_api_url,
        uploads_url=settings.mangadex_uploads_url,
        title_language=settings.title_language,
        api_key=settings.mangadex_api_key,
        rate_limit=settings.mangadex_rate_limit,
        state_url=settings.database_url,
        rate_margin=rate_margin,
        policy=settings.mangadex_policy,
    )


def _manga_id(value: str) -> str:
    """Ids go into URL paths: only a UUID may."""
    if not isinstance(value, str) or not is_uuid(value):
        raise ValueError(f"not a MangaDex manga id (a UUID): {str(value)[:80]!r}")
    return value.lower()


def _includes(includes: Sequence[str]) -> Params:
    return [("includes[]", i) for i in includes]


def _ratings(ratings: Sequence[str] | None) -> Params:
    return [("contentRating[]", r) for r in ratings or ()]


def _languages(languages: Sequence[str] | None) -> Params:
    return [("translatedLanguage[]", lang) for lang in languages or ()]


def _flags(flags: dict[str, int] | None) -> Params:
    return [(name, str(int(value))) for name, value in (flags or {}).items()]


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(clean_text(text, limit).split()) or "no detail"


def _error_detail(response: httpx.Response) -> str:
    """MangaDex's error envelope detail (or title), else the text body (the UA rejection is
    text/plain)."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text)
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        parts = [p for p in (first.get("title"), first.get("detail")) if isinstance(p, str) and p]
        if parts:
            return _one_line(": ".join(parts))
    return _one_line(response.text)


def _retry_after(response: httpx.Response) -> tuple[float | None, str | None]:
    """Seconds to wait from `Retry-After` (seconds or HTTP date) and MangaDex's
    `X-RateLimit-Retry-After` (a UNIX timestamp); the later of the two. A header we cannot
    read counts as absent and comes back second, for the caller to report."""
    waits: list[float] = []
    garbage: str | None = None
    now = time.time()
    raw = response.headers.get("retry-after")
    if raw:
        try:
            waits.append(float(raw))
        except ValueError:
            try:
                waits.append(email.utils.parsedate_to_datetime(raw).timestamp() - now)
            except (TypeError, ValueError, IndexError, OverflowError):
                garbage = f"Retry-After {_one_line(raw, 80)!r}"
    raw_ts = response.headers.get("x-ratelimit-retry-after")
    if raw_ts:
        try:
            waits.append(float(raw_ts) - now)
        except ValueError:
            garbage = f"X-RateLimit-Retry-After {_one_line(raw_ts, 80)!r}"
    if not waits:
        return None, garbage
    # A hair over what was asked: "retry after" means strictly after, never earlier.
    return max(0.0, max(waits)) + 0.05, garbage
