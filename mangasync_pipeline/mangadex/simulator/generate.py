"""Seeded generation of manga and chapters with the variety real MangaDex data has.

Every draw comes from one `random.Random`, so the same seed and the same sequence of
calls give the same catalogue, ids included.
"""

from __future__ import annotations

import calendar
import math
import random
from collections.abc import Sequence
from typing import Any, TypeVar

from . import names
from .records import Chapter, Cover, Group, Manga, Person, Uploader
from .tags import TAGS

EXTERNAL_PUBLISH_AT = calendar.timegm((2037, 12, 31, 0, 0, 0, 0, 0, 0))
RATINGS = ("safe", "suggestive", "erotica", "pornographic")
STATUSES = ("ongoing", "completed", "hiatus", "cancelled")
EXTRA_LANGUAGES = ("es", "fr", "pt-br")
RELATIONS = (
    "sequel", "prequel", "side_story", "spin_off", "main_story", "colored", "monochrome",
    "adapted_from", "based_on", "doujinshi", "same_franchise", "alternate_version",
)
_TAGS_BY_GROUP: dict[str, list[str]] = {}
for _tid, _name, _grp in TAGS:
    _TAGS_BY_GROUP.setdefault(_grp, []).append(_tid)
_TAG_ORDER = {t[0]: i for i, t in enumerate(TAGS)}
T = TypeVar("T")
ONESHOT_TAG = next(t[0] for t in TAGS if t[1] == "Oneshot")


def _ri(rng: random.Random, lo: int, hi: int) -> int:
    """randint without its per-call overhead (it dominates catalogue build time)."""
    return lo + int(rng.random() * (hi - lo + 1))


def _pick(rng: random.Random, seq: Sequence[T]) -> T:
    return seq[int(rng.random() * len(seq))]


def rng_uuid(rng: random.Random) -> str:
    """Same value as `str(uuid.UUID(int=rng.getrandbits(128), version=4))`, 3x faster."""
    n = rng.getrandbits(128)
    n = (n & ~(0xC000 << 48)) | (0x8000 << 48)
    n = (n & ~(0xF000 << 64)) | (4 << 76)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _weighted(rng: random.Random, table: tuple[tuple[Any, float], ...]) -> Any:
    r = rng.random()
    for value, weight in table:
        r -= weight
        if r < 0:
            return value
    return table[-1][0]


class Generator:
    """Draws records; holds the shared pools of people, groups and uploaders."""

    def __init__(self, rng: random.Random, manga_count: int, start: int) -> None:
        self.rng = rng
        self.people = [self._person(start) for _ in range(max(50, manga_count // 3))]
        self.groups: list[Group] = [self._group(start) for _ in range(max(40, manga_count // 20))]
        self.uploaders = [
            Uploader(self.uuid(), names.person_name(rng).replace(" ", "_").lower())
            for _ in range(max(50, manga_count // 10))
        ]
        self.groups_by_name: dict[str, Group] = {g.name.lower(): g for g in self.groups}

    def uuid(self) -> str:
        return rng_uuid(self.rng)

    def _person(self, start: int) -> Person:
        rng = self.rng
        name = names.person_name(rng)
        twitter = f"https://twitter.com/{name.replace(' ', '')}" if rng.random() < 0.3 else None
        return Person(self.uuid(), name, start + _ri(rng, 0, 86400 * 365), twitter)

    def _group(self, start: int, name: str | None = None, language: str | None = None) -> Group:
        rng = self.rng
        lang = language or _weighted(rng, (("en", 0.7), ("es", 0.1), ("fr", 0.1), ("pt-br", 0.1)))
        return Group(
            self.uuid(), name or names.group_name(rng), start + _ri(rng, 0, 86400 * 900),
            lang, rng.random() < 0.05,
        )

    def group_named(self, name: str, now: int) -> Group:
        """The group with that name (or uuid), created on first use."""
        for g in self.groups:
            if g.id == name:
                return g
        found = self.groups_by_name.get(name.lower())
        if found is None:
            found = self._group(now, name=name)
            self.groups.append(found)
            self.groups_by_name[name.lower()] = found
        return found

    # -- manga -------------------------------------------------------------------------------
    def manga(self, created_at: int, end: int, earlier: list[Manga] | None = None) -> Manga:
        rng = self.rng
        mid = self.uuid()
        orig = _weighted(rng, (("ja", 0.6), ("ko", 0.2), ("zh", 0.1), ("en", 0.05), ("id", 0.05)))
        title, alt_titles = self._titles(orig)
        description = self._description()
        status = _weighted(rng, (
            ("ongoing", 0.55), ("completed", 0.30), ("hiatus", 0.08), ("cancelled", 0.07)))
        last_chapter, last_volume = self._last(status)
        tags = self._tags()
        authors = [_pick(rng, self.people)]
        if rng.random() < 0.1:
            authors.append(_pick(rng, self.people))
        artists = list(authors) if rng.random() < 0.7 else [_pick(rng, self.people)]
        updated_at = created_at if rng.random() < 0.3 else _ri(rng, created_at, max(created_at,
                                                                                      end))
        cover = Cover(
            self.uuid(),
            f"{self.uuid()}.{'png' if rng.random() < 0.2 else 'jpg'}",
            None if rng.random() < 0.4 else str(_ri(rng, 1, 12)),
            orig,
            min(created_at + _ri(rng, 0, 600), max(created_at, end)),
        )
        related: list[tuple[str, str]] = []
        if earlier and rng.random() < 0.15:
            related.append((_pick(rng, earlier).id, _pick(rng, RELATIONS)))
        links: dict[str, str] | None = {}
        if rng.random() < 0.6:
            links["mu"] = f"{rng.getrandbits(35):07x}"
        if rng.random() < 0.5:
            links["al"] = str(_ri(rng, 1000, 190000))
            links["mal"] = str(_ri(rng, 1, 160000))
        if not links and rng.random() < 0.3:
            links = None  # real bodies carry `links: null` too
        made = Manga(
            id=mid,
            title=title,
            alt_titles=alt_titles,
            description=description,
            original_language=orig,
            last_volume=last_volume,
            last_chapter=last_chapter,
            demographic=_weighted(rng, (
                (None, 0.35), ("shounen", 0.3), ("seinen", 0.15), ("shoujo", 0.12),
                ("josei", 0.08))),
            status=status,
            year=None if rng.random() < 0.2 else _ri(rng, 1985, 2026),
            content_rating=_weighted(rng, (
                ("safe", 0.70), ("suggestive", 0.18), ("erotica", 0.09), ("pornographic", 0.03))),
            tag_ids=tags,
            links=links,
            created_at=created_at,
            updated_at=updated_at,
            version=1 if updated_at == created_at else _ri(rng, 2, 40),
            authors=authors,
            artists=artists,
            cover=cover,
            creator_id=_pick(rng, self.uploaders).id if rng.random() < 0.4 else None,
            related=related,
        )
        made.null_language = rng.random() < 0.02
        return made

    def _titles(self, orig: str) -> tuple[dict[str, str], list[dict[str, str]]]:
        rng = self.rng
        romaji_lang = {"ja": "ja-ro", "ko": "ko-ro", "zh": "zh-ro"}.get(orig, "en")
        romaji = (names.korean_romaji_title(rng) if orig == "ko"
                  else names.japanese_romaji_title(rng))
        native = {"ja": names.kana_title, "ko": names.hangul_title}.get(orig, names.kana_title)(rng)
        en = names.english_title(rng)
        alts: list[dict[str, str]] = []
        kind = rng.random()
        if kind < 0.5 or romaji_lang == "en":
            title = {"en": en}
            if romaji_lang != "en":
                alts.append({romaji_lang: romaji})
        elif kind < 0.72:
            # No English title, but an English alternative: clients must look in altTitles.
            title = {romaji_lang: romaji}
            alts.append({"en": en})
        elif kind < 0.85:
            title = {romaji_lang: romaji}  # only a romanized title anywhere
        elif kind < 0.93:
            title = {orig: native}
        else:
            title = {romaji_lang: romaji}
            alts.append({"en": en})
            alts.append({"en": names.english_title(rng)})
        if orig in ("ja", "ko") and rng.random() < 0.7:
            alts.append({orig: native})
        if rng.random() < 0.2:
            alts.append({"es": names.spanish_title(rng)})
        if rng.random() < 0.15:
            alts.append({"fr": names.french_title(rng)})
        return title, alts

    def _description(self) -> dict[str, str] | list[Any]:
        rng = self.rng
        r = rng.random()
        if r < 0.02:
            return []  # MangaDex's serialization quirk for an empty map
        if r < 0.12:
            return {}
        desc = {"en": names.blurb(rng, "en")}
        for lang in ("es", "fr", "pt-br"):
            if rng.random() < 0.15:
                desc[lang] = names.blurb(rng, lang)
        return desc

    def _last(self, status: str) -> tuple[str | None, str | None]:
        rng = self.rng
        r = rng.random()
        if r < 0.02:
            return None, None
        if status in ("completed", "cancelled") and r < 0.8:
            n = _ri(rng, 1, 300)
            ch = f"{n}.5" if rng.random() < 0.1 else str(n)
            return ch, str(max(1, n // 9))
        if r < 0.1:
            return str(_ri(rng, 5, 120)), ""
        return "", ""

    def _tags(self) -> list[str]:
        rng = self.rng
        genres, themes = _TAGS_BY_GROUP["genre"], _TAGS_BY_GROUP["theme"]
        picked = [_pick(rng, genres) for _ in range(_ri(rng, 1, 3))]
        picked += [_pick(rng, themes) for _ in range(_ri(rng, 0, 3))]
        if rng.random() < 0.3:
            picked.append(_pick(rng, _TAGS_BY_GROUP["format"]))
        if rng.random() < 0.05:
            picked.append(_pick(rng, _TAGS_BY_GROUP["content"]))
        return sorted(set(picked), key=_TAG_ORDER.__getitem__)

    # -- chapters ----------------------------------------------------------------------------
    def chapter_count(self, mean: float) -> int:
        if mean <= 0:
            return 0
        sigma = 1.1
        mu = math.log(mean) - sigma * sigma / 2
        return min(2500, int(self.rng.lognormvariate(mu, sigma)))

    def chapters(self, m: Manga, count: int, end: int) -> list[Chapter]:
        """`count` chapters for `m`, uploaded between its creation and `end`."""
        rng = self.rng
        if count <= 0:
            return []
        primary = "en" if rng.random() < 0.85 else _pick(rng, EXTRA_LANGUAGES)
        langs = [primary] + [lg for lg in EXTRA_LANGUAGES if lg != primary and rng.random() < 0.2]
        lang_groups = {
            lg: list(dict.fromkeys(_pick(rng, self.groups) for _ in range(_ri(rng, 1, 3))))
            for lg in langs
        }
        # `count` is chapter records; translations and double releases multiply labels.
        wanted_labels = max(1, round(count / (1.1 + 0.6 * (len(langs) - 1))))
        external = rng.random() < 0.04
        # Real link chapters are readable at once (publishAt within seconds of createdAt);
        # parking one at a far-future publishAt is the rare case (0 of 7 captured).
        parked = external and rng.random() < 0.1
        scheduled = 0 if external or rng.random() >= 0.04 else _ri(rng, 1, 3)
        per_volume = 0 if rng.random() < 0.3 else _ri(rng, 4, 10)
        span = max(0, end - m.created_at)
        oneshot = ONESHOT_TAG in m.tag_ids or rng.random() < 0.02

        labels: list[str | None] = []
        if oneshot:
            labels.append(None)
        else:
            n = 1
            while len(labels) < wanted_labels:
                labels.append(str(n))
                r = rng.random()
                if r < 0.05:
                    labels.append(f"{n}.5")
                elif r < 0.06:
                    labels.append("EXTRA")
                n += 1
        labels = labels[:wanted_labels]
        times = sorted(m.created_at + int(span * rng.random() ** 0.7) for _ in labels)

        out: list[Chapter] = []
        for idx, (label, t) in enumerate(zip(labels, times, strict=True)):
            volume = None if per_volume == 0 or label is None else str(1 + idx // per_volume)
            if label is None:
                title: str | None = "Oneshot"
            else:
                r = rng.random()
                title = "" if r < 0.5 else (None if r < 0.6 else names.chapter_title(rng))
            is_last = idx >= len(labels) - scheduled
            for lang in langs:
                if lang != primary and rng.random() < 0.4:
                    continue
                groups = lang_groups[lang]
                releases = 2 if rng.random() < 0.1 and len(groups) > 1 else 1
                # A joint release: one chapter credited to 2 or 3 groups (3 of 219 real ones).
                joint: list[Group] = []
                if releases == 1 and len(groups) > 1 and rng.random() < 0.015:
                    joint = rng.sample(groups, min(len(groups), _ri(rng, 2, 3)))
                for group in (rng.sample(groups, 2) if releases > 1
                              else (joint[0] if joint else _pick(rng, groups),)):
                    created = t if lang == primary else min(end, t + _ri(rng, 600, 86400 * 5))
                    if releases > 1:
                        created = min(end, created + _ri(rng, 0, 7200))
                    url: str | None = None
                    publish = created
                    if external and lang == primary:
                        url = f"https://mangaplus.example.com/viewer/{_ri(rng, 10**6, 10**7)}"
                        publish = (EXTERNAL_PUBLISH_AT + _ri(rng, 0, 86400 * 30) if parked
                                   else created + _ri(rng, 0, 3))
                    elif is_last and lang == primary:
                        publish = end + _ri(rng, 3600, 86400 * 10)
                    out.append(self.chapter(
                        m, label, volume, title, lang, group, created, publish, url, end,
                        co_groups=joint[1:]))
        return out

    def chapter(
        self, m: Manga, label: str | None, volume: str | None, title: str | None, lang: str,
        group: Group, created: int, publish: int, url: str | None, now: int,
        pages: int | None = None, chapter_id: str | None = None,
        co_groups: Sequence[Group] = (),
    ) -> Chapter:
        rng = self.rng
        updated = created if rng.random() < 0.8 else min(max(now, created),
                                                           created + _ri(rng, 1, 86400 * 60))
        readable = created if url is not None and publish > now else publish
        return Chapter(
            id=chapter_id or self.uuid(),
            manga=m,
            chapter=label,
            volume=volume,
            title=title,
            language=lang,
            external_url=url,
            publish_at=publish,
            readable_at=readable,
            created_at=created,
            updated_at=updated,
            pages=(0 if url else _ri(rng, 8, 45)) if pages is None else pages,
            version=1 if updated == created else _ri(rng, 2, 4),
            groups=[group, *co_groups],
            uploader=_pick(rng, self.uploaders),
        )
