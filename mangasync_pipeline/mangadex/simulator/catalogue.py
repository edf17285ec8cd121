"""The simulated MangaDex catalogue: records, sorted indexes, queries and admin mutations.

Indexes are sorted lists of `(timestamp, id)` so `*Since` filters are a bisect and the
matching order is free; full match lists are cached per query (without offset/limit) so
paging through a window costs O(limit) per page.
"""

from __future__ import annotations

import bisect
import calendar
import itertools
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from .generate import Generator
from .params import ChapterQuery, MangaQuery
from .records import Chapter, Manga, parse_iso
from .tags import TAG_BY_ID, TAG_BY_NAME

Key = tuple[int, str]
CHAPTER_TIME_FIELDS = {
    "createdAt": "created_at",
    "updatedAt": "updated_at",
    "publishAt": "publish_at",
    "readableAt": "readable_at",
}
DEFAULT_START = calendar.timegm((2018, 1, 15, 0, 0, 0, 0, 0, 0))
_CACHE_ENTRIES = 48


def _label_key(value: str | None) -> tuple[int, float, str]:
    """Numeric labels sort numerically, then text labels, then nulls (asc)."""
    if value is None:
        return (2, 0.0, "")
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


_CHAPTER_SORT: dict[str, Callable[[Chapter], Any]] = {
    "createdAt": lambda c: c.created_at,
    "updatedAt": lambda c: c.updated_at,
    "publishAt": lambda c: c.publish_at,
    "readableAt": lambda c: c.readable_at,
    "volume": lambda c: _label_key(c.volume),
    "chapter": lambda c: _label_key(c.chapter),
}


def _title_key(m: Manga) -> str:
    return next(iter(m.title.values()), "").lower()


_MANGA_SORT: dict[str, Callable[[Manga], Any]] = {
    "createdAt": lambda m: m.created_at,
    "updatedAt": lambda m: m.updated_at,
    "title": _title_key,
    "year": lambda m: m.year if m.year is not None else -1,
    "latestUploadedChapter": lambda m: m.latest.created_at if m.latest else -1,
    # Popularity is not simulated: a stable pseudo-random order stands in.
    "followedCount": lambda m: m.id[9:],
    "rating": lambda m: m.id[14:],
    "relevance": lambda m: m.id,
}


def _shuffle_ties(items: list[Chapter], order: list[tuple[str, bool]],
                  rng: random.Random) -> list[Chapter]:
    """`items` (sorted by `order`) with each run of ties in a random order."""
    def key(c: Chapter) -> tuple[Any, ...]:
        return tuple(_CHAPTER_SORT[name](c) for name, _ in order)

    out: list[Chapter] = []
    for _, run in itertools.groupby(items, key=key):
        tied = list(run)
        rng.shuffle(tied)
        out += tied
    return out


class SortedIndex:
    """`(timestamp, id)` keys in ascending order."""

    __slots__ = ("keys",)

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        self.keys: list[Key] = sorted(keys)

    def add(self, key: Key) -> None:
        bisect.insort(self.keys, key)

    def extend(self, keys: list[Key]) -> None:
        if keys and (not self.keys or min(keys) >= self.keys[-1]):
            self.keys.extend(sorted(keys))
        else:
            self.keys.extend(keys)
            self.keys.sort()

    def remove(self, key: Key) -> None:
        i = bisect.bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            del self.keys[i]

    def since(self, ts: int | None) -> list[Key]:
        if ts is None:
            return self.keys
        return self.keys[bisect.bisect_left(self.keys, (ts, "")):]

    def count_since(self, ts: int | None) -> int:
        if ts is None:
            return len(self.keys)
        return len(self.keys) - bisect.bisect_left(self.keys, (ts, ""))


class Catalogue:
    """All simulated data. Every public method takes `lock`; the server calls them freely."""

    def __init__(
        self,
        seed: int = 42,
        manga_count: int = 5000,
        chapters_per_manga: float = 20.0,
        start: int | None = None,
        end: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self.clock = clock
        self.chapters_per_manga = chapters_per_manga
        now = int(clock())
        # The default end is the start of the current hour, so two simulators started
        # with one seed within the same hour serve identical data.
        self.end = end if end is not None else now - now % 3600
        self.start = start if start is not None else min(DEFAULT_START, self.end - 86400)
        self.rng = random.Random(seed)
        self.gen = Generator(self.rng, manga_count, self.start)
        self.manga: dict[str, Manga] = {}
        self.chapters: dict[str, Chapter] = {}
        self.m_created = SortedIndex()
        self.m_updated = SortedIndex()
        self.c_index = {name: SortedIndex() for name in CHAPTER_TIME_FIELDS}
        self.mutations = 0
        self._results: OrderedDict[tuple[object, ...], list[Any]] = OrderedDict()
        self._populate(manga_count)

    def now(self) -> int:
        return int(self.clock())

    # -- building ----------------------------------------------------------------------------
    def _creation_times(self, count: int) -> list[int]:
        """A few manga per day, more in recent years, with occasional very busy days."""
        rng = self.rng
        days = max(1, (self.end - self.start) // 86400)
        cum: list[float] = []
        total = 0.0
        for d in range(days):
            weight = 1.0 + 2.0 * d / days
            if rng.random() < 0.03:
                weight *= rng.uniform(5, 15)
            total += weight
            cum.append(total)
        out = []
        for _ in range(count):
            day = bisect.bisect_left(cum, rng.random() * total)
            ts = self.start + day * 86400 + rng.randint(0, 86399)
            out.append(min(ts, self.end - 1))
        out.sort()
        return out

    def _populate(self, count: int) -> None:
        new: list[Manga] = []
        for created in self._creation_times(count):
            m = self.gen.manga(created, self.end, new[-200:] if new else None)
            new.append(m)
        chapters: list[Chapter] = []
        for m in new:
            for ch in self.gen.chapters(m, self.gen.chapter_count(self.chapters_per_manga),
                                        self.end):
                m.note_chapter(ch)
                chapters.append(ch)
        self._index_manga(new)
        self._index_chapters(chapters)

    def _index_manga(self, items: list[Manga]) -> None:
        for m in items:
            self.manga[m.id] = m
        self.m_created.extend([(m.created_at, m.id) for m in items])
        self.m_updated.extend([(m.updated_at, m.id) for m in items])
        self._touch()

    def _index_chapters(self, items: list[Chapter]) -> None:
        for c in items:
            self.chapters[c.id] = c
        for name, attr in CHAPTER_TIME_FIELDS.items():
            self.c_index[name].extend([(getattr(c, attr), c.id) for c in items])
        self._touch()

    def _touch(self) -> None:
        self.mutations += 1
        self._results.clear()

    # -- queries -----------------------------------------------------------------------------
    def _cached(self, key: tuple[object, ...], build: Callable[[], list[Any]]) -> list[Any]:
        hit = self._results.get(key)
        if hit is not None:
            self._results.move_to_end(key)
            return hit
        value = build()
        self._results[key] = value
        if len(self._results) > _CACHE_ENTRIES:
            self._results.popitem(last=False)
        return value

    def query_manga(self, q: MangaQuery) -> tuple[list[Manga], int]:
        with self.lock:
            matches = self._cached(q.cache_key(), lambda: self._match_manga(q))
            return matches[q.offset:q.offset + q.limit], len(matches)

    def _match_manga(self, q: MangaQuery) -> list[Manga]:
        ratings = q.ratings
        needle = q.title.lower() if q.title else None
        order_key, desc = q.order[0]
        presorted = False
        if q.ids is not None:
            cands = [self.manga[i] for i in dict.fromkeys(q.ids) if i in self.manga]
        else:
            # Walk the narrower `*Since` range; it is already in order when the order key
            # is the same field.
            c_range = self.m_created.since(q.created_since)
            u_range = self.m_updated.since(q.updated_since)
            use_updated = (len(u_range) < len(c_range) if q.updated_since is not None
                           and q.created_since is not None
                           else q.updated_since is not None or order_key == "updatedAt")
            keys = u_range if use_updated else c_range
            presorted = order_key == ("updatedAt" if use_updated else "createdAt")
            cands = [self.manga[k[1]] for k in keys]
        out = []
        cs, us = q.created_since, q.updated_since
        for m in cands:
            if m.content_rating not in ratings:
                continue
            if cs is not None and m.created_at < cs:
                continue
            if us is not None and m.updated_at < us:
                continue
            if needle is not None and not _title_matches(m, needle):
                continue
            out.append(m)
        if presorted:
            if desc:
                out.reverse()
            return out
        keyf = _MANGA_SORT[order_key]
        out.sort(key=lambda m: (keyf(m), m.id), reverse=desc)
        return out

    def query_chapters(self, q: ChapterQuery, manga_id: str | None = None,
                       shuffle: random.Random | None = None) -> tuple[list[Chapter], int]:
        """`/chapter` (manga_id None) or `/manga/{id}/feed` (manga_id set). With `shuffle`,
        chapters equal on every order key come in a random order (the `shuffle_ties` fault);
        otherwise in id order, the same on every request."""
        with self.lock:
            now = self.now()
            # Results depend on `now` only through which chapters have publishAt <= now, and
            # that set is fixed by how many of them there are: key on the count, so cached
            # pages survive the clock ticking.
            published = bisect.bisect_right(self.c_index["publishAt"].keys, (now, "\uffff"))
            key = (q.cache_key(), manga_id, published)
            matches = self._cached(key, lambda: self._match_chapters(q, manga_id, now))
            if shuffle is not None:
                matches = _shuffle_ties(matches, q.order, shuffle)
            return matches[q.offset:q.offset + q.limit], len(matches)

    def _match_chapters(self, q: ChapterQuery, manga_id: str | None, now: int) -> list[Chapter]:
        presorted_by: str | None = None
        scope = manga_id or q.manga
        if scope is not None:
            m = self.manga.get(scope)
            cands: list[Chapter] = list(m.chapters) if m else []
            if q.ids is not None:
                wanted = set(q.ids)
                cands = [c for c in cands if c.id in wanted]
        elif q.ids is not None:
            cands = [self.chapters[i] for i in dict.fromkeys(q.ids) if i in self.chapters]
        else:
            ranges = {
                name: self.c_index[name].since(ts)
                for name, ts in (("createdAt", q.created_since), ("updatedAt", q.updated_since),
                                 ("publishAt", q.publish_since))
                if ts is not None
            }
            first = q.order[0][0] if q.order else None
            if ranges:
                name = min(ranges, key=lambda n: len(ranges[n]))
                keys = ranges[name]
            else:
                name = first if first in CHAPTER_TIME_FIELDS else "createdAt"
                keys = self.c_index[name].keys
            presorted_by = name
            cands = [self.chapters[k[1]] for k in keys]
        pred = _chapter_filter(q, now)
        out = [c for c in cands if pred(c)]
        if len(q.order) == 1 and q.order[0][0] == presorted_by:
            if q.order[0][1]:
                out.reverse()
            return out
        # Without an order MangaDex returns no particular chapter order; id order is
        # deterministic and just as unhelpful, so clients must ask for one.
        out.sort(key=lambda c: c.id)
        for name, desc in reversed(q.order):
            out.sort(key=_CHAPTER_SORT[name], reverse=desc)
        return out

    def get_manga(self, manga_id: str) -> Manga | None:
        with self.lock:
            return self.manga.get(manga_id.lower())

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {"manga": len(self.manga), "chapters": len(self.chapters)}

    # -- admin mutations ---------------------------------------------------------------------
    def add_manga(self, spec: dict[str, Any]) -> list[Manga]:
        """One manga from explicit fields, or `count` generated ones on a day / instant."""
        with self.lock:
            now = self.now()
            count = int(spec.get("count", 1))
            if count < 1:
                raise ValueError("count must be at least 1")
            if "day" in spec:
                day = parse_iso(str(spec["day"]))
                times = sorted(day + self.rng.randint(0, 86399) for _ in range(count))
            else:
                at = parse_iso(spec["createdAt"]) if "createdAt" in spec else now
                times = [at] * count
            recent = list(self.manga.values())[-200:]
            made = [self.gen.manga(t, max(t, now), recent) for t in times]
            for m in made:
                m.updated_at = m.created_at
                m.version = 1
            if count == 1:
                _apply_fields(made[0], spec, keep_id=False)
                if "updatedAt" in spec:
                    made[0].updated_at = parse_iso(spec["updatedAt"])
                if made[0].id in self.manga:
                    raise ValueError(f"manga {made[0].id} already exists")
            per = spec.get("chapters")
            self._index_manga(made)
            if per:
                chapters = []
                for m in made:
                    for ch in self.gen.chapters(m, int(per), max(now, m.created_at)):
                        m.note_chapter(ch)
                        chapters.append(ch)
                self._index_chapters(chapters)
            return made

    def update_manga(self, manga_id: str, fields: dict[str, Any]) -> Manga:
        with self.lock:
            m = self.manga.get(manga_id.lower())
            if m is None:
                raise KeyError(manga_id)
            self.m_updated.remove((m.updated_at, m.id))
            _apply_fields(m, fields, keep_id=True)
            m.updated_at = parse_iso(fields["updatedAt"]) if "updatedAt" in fields else self.now()
            m.version += 1
            m.json_cache = None
            self.m_updated.add((m.updated_at, m.id))
            self._touch()
            return m

    def remove_manga(self, manga_id: str) -> None:
        """Take a manga down, as MangaDex does for DMCA removals (404, empty feed)."""
        with self.lock:
            m = self.manga.pop(manga_id.lower(), None)
            if m is None:
                raise KeyError(manga_id)
            self.m_created.remove((m.created_at, m.id))
            self.m_updated.remove((m.updated_at, m.id))
            for c in m.chapters:
                del self.chapters[c.id]
                for name, attr in CHAPTER_TIME_FIELDS.items():
                    self.c_index[name].remove((getattr(c, attr), c.id))
            self._touch()

    def add_chapters(self, specs: list[dict[str, Any]]) -> list[Chapter]:
        with self.lock:
            now = self.now()
            made: list[Chapter] = []
            for i, s in enumerate(specs):
                mid = str(s.get("manga", "")).lower()
                m = self.manga.get(mid)
                if m is None:
                    raise KeyError(f"chapters[{i}].manga {mid or '(missing)'} is not a known manga")
                created = parse_iso(s["createdAt"]) if "createdAt" in s else now
                publish = parse_iso(s["publishAt"]) if "publishAt" in s else created
                url = s.get("externalUrl")
                label = s.get("chapter")
                names = s.get("groups") or [s.get("group", "Simulated Scans")]
                groups = [self.gen.group_named(str(name), now) for name in names]
                ch = self.gen.chapter(
                    m,
                    None if label is None else str(label),
                    None if s.get("volume") is None else str(s["volume"]),
                    s.get("title", "Oneshot" if label is None else ""),
                    s.get("language", "en"),
                    groups[0],
                    created, publish, url, now,
                    pages=s.get("pages"),
                    chapter_id=s.get("id"),
                    co_groups=groups[1:],
                )
                ch.updated_at = parse_iso(s["updatedAt"]) if "updatedAt" in s else created
                ch.version = 1
                ch.raw = _raw(s, f"chapters[{i}]")
                ch.kind = str(s.get("type", "chapter"))
                if ch.id in self.chapters or any(c.id == ch.id for c in made):
                    raise ValueError(f"chapter {ch.id} already exists")
                made.append(ch)
            for ch in made:
                ch.manga.note_chapter(ch)
            self._index_chapters(made)
            return made


def _title_matches(m: Manga, needle: str) -> bool:
    if any(needle in t.lower() for t in m.title.values()):
        return True
    return any(needle in t.lower() for alt in m.alt_titles for t in alt.values())


def _chapter_filter(q: ChapterQuery, now: int) -> Callable[[Chapter], bool]:
    langs, ratings = q.languages, q.ratings
    cs, us, ps = q.created_since, q.updated_since, q.publish_since
    default = q.default_filter
    fut, empty, ext = q.include_future, q.include_empty, q.include_external

    def ok(c: Chapter) -> bool:
        if langs is not None and c.language not in langs:
            return False
        if c.manga.content_rating not in ratings:
            return False
        if cs is not None and c.created_at < cs:
            return False
        if us is not None and c.updated_at < us:
            return False
        if ps is not None and c.publish_at < ps:
            return False
        if default:
            return c.publish_at <= now
        if fut is not None and (c.publish_at > now) is not fut:
            return False
        if empty is not None and (c.pages == 0) is not empty:
            return False
        return ext is None or (c.external_url is not None) is ext

    return ok


_SIMPLE_FIELDS = {
    "status": "status",
    "lastChapter": "last_chapter",
    "lastVolume": "last_volume",
    "contentRating": "content_rating",
    "year": "year",
    "originalLanguage": "original_language",
    "publicationDemographic": "demographic",
    "altTitles": "alt_titles",
    "links": "links",
}


def _raw(spec: dict[str, Any], where: str) -> dict[str, Any] | None:
    """`attributes`: MangaDex attributes served exactly as given, over the record's own."""
    raw = spec.get("attributes")
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"{where}.attributes must be an object")
    return raw or None


def _apply_fields(m: Manga, fields: dict[str, Any], keep_id: bool) -> None:
    """Admin-supplied MangaDex-style fields onto a record."""
    if "attributes" in fields:
        m.raw = _raw(fields, "manga")
    if "createdAt" in fields and keep_id:
        raise ValueError("createdAt cannot change on an existing manga")
    if "id" in fields and not keep_id:
        m.id = str(fields["id"]).lower()
    if "title" in fields:
        t = fields["title"]
        m.title = dict(t) if isinstance(t, dict) else {"en": str(t)}
    if "description" in fields:
        d = fields["description"]
        m.description = d if isinstance(d, dict | list) else {"en": str(d)}
    for src, attr in _SIMPLE_FIELDS.items():
        if src in fields:
            setattr(m, attr, fields[src])
    if "tags" in fields:
        ids = []
        for t in fields["tags"]:
            tag = TAG_BY_ID.get(str(t)) or TAG_BY_NAME.get(str(t).lower())
            if tag is None:
                raise ValueError(f"unknown tag {t!r}")
            ids.append(tag[0])
        m.tag_ids = ids
    if "createdAt" in fields:
        m.created_at = parse_iso(fields["createdAt"])
        m.updated_at = m.created_at
        m.cover.created_at = m.created_at
    m.json_cache = None
