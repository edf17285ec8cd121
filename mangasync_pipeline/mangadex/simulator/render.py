"""Records to MangaDex JSON, key for key as in the captured responses.

Attributes are rendered to UTF-8 JSON once and cached on the record, and so are the
expanded forms of shared people, groups and users, so a 100-item page is mostly byte joins.
"""

from __future__ import annotations

import json
from typing import Any

from .params import error_id
from .records import Chapter, Group, Manga, Person, Uploader, iso
from .tags import TAG_BY_ID, TAGS

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> str:
    return _dumps(value)


# Tags whose empty description a manga body serialises as `[]`, not `{}` (seen in real
# manga bodies; the captured `/manga/tag` list has `{}` throughout).
_LIST_DESCRIPTION = frozenset(t[0] for i, t in enumerate(TAGS) if i % 10 == 3)


def _tag_obj(tag_id: str, *, quirks: bool = False) -> dict[str, Any]:
    tid, name, group = TAG_BY_ID[tag_id]
    description: dict[str, str] | list[Any] = [] if quirks and tid in _LIST_DESCRIPTION else {}
    return {
        "id": tid,
        "type": "tag",
        "attributes": {"name": {"en": name}, "description": description, "group": group,
                       "version": 1},
        "relationships": [],
    }


_TAG_JSON = {t[0]: dumps(_tag_obj(t[0])) for t in TAGS}


def tag_list_body() -> bytes:
    data = ",".join(_TAG_JSON[t[0]] for t in TAGS)
    return (f'{{"result":"ok","response":"collection","data":[{data}],'
            f'"limit":{len(TAGS)},"offset":0,"total":{len(TAGS)}}}').encode()


def person_attributes(p: Person) -> dict[str, Any]:
    return {
        "name": p.name, "imageUrl": None, "biography": {}, "twitter": p.twitter, "pixiv": None,
        "melonBook": None, "fanBox": None, "booth": None, "namicomi": None, "nicoVideo": None,
        "skeb": None, "fantia": None, "tumblr": None, "youtube": None, "weibo": None,
        "naver": None, "website": None, "createdAt": iso(p.created_at),
        "updatedAt": iso(p.created_at), "version": 1,
    }


def group_attributes(g: Group) -> dict[str, Any]:
    return {
        "name": g.name, "altNames": [], "locked": True, "website": None, "ircServer": None,
        "ircChannel": None, "discord": None, "contactEmail": None, "description": None,
        "twitter": None, "mangaUpdates": None, "focusedLanguages": [g.focused_language],
        "official": g.official, "verified": False, "inactive": False, "exLicensed": False,
        "publishDelay": None, "createdAt": iso(g.created_at), "updatedAt": iso(g.created_at),
        "version": 1,
    }


def user_attributes(u: Uploader) -> dict[str, Any]:
    return {"username": u.username, "roles": ["ROLE_MEMBER"], "version": 1}


def manga_attributes(m: Manga) -> dict[str, Any]:
    latest = m.latest
    return {
        "title": m.title,
        "altTitles": m.alt_titles,
        "description": m.description,
        "isLocked": False,
        "links": m.links,
        "officialLinks": None,
        "originalLanguage": m.original_language,
        "lastVolume": m.last_volume,
        "lastChapter": m.last_chapter,
        "publicationDemographic": m.demographic,
        "status": m.status,
        "year": m.year,
        "contentRating": m.content_rating,
        "tags": [_tag_obj(t, quirks=True) for t in m.tag_ids],
        "state": "published",
        "chapterNumbersResetOnNewVolume": False,
        "createdAt": iso(m.created_at),
        "updatedAt": iso(m.updated_at),
        "version": m.version,
        # Real bodies sometimes hold a null among the codes.
        "availableTranslatedLanguages": list(m.languages) + ([None] if m.null_language else []),
        "latestUploadedChapter": latest.id if latest else None,
        **(m.raw or {}),
    }


def _person_json(p: Person, kind: str) -> bytes:
    cache = p.json_cache
    if cache is None:
        cache = p.json_cache = {}
    hit = cache.get(kind)
    if hit is None:
        hit = cache[kind] = dumps(
            {"id": p.id, "type": kind, "attributes": person_attributes(p)}).encode()
    return hit


def _group_json(g: Group) -> bytes:
    if g.json_cache is None:
        g.json_cache = dumps({"id": g.id, "type": "scanlation_group",
                              "attributes": group_attributes(g)}).encode()
    return g.json_cache


def _user_json(u: Uploader) -> bytes:
    if u.json_cache is None:
        u.json_cache = dumps({"id": u.id, "type": "user",
                              "attributes": user_attributes(u)}).encode()
    return u.json_cache


def manga_attributes_json(m: Manga) -> bytes:
    cache = m.json_cache
    if cache is None:
        cache = m.json_cache = {}
    hit = cache.get("attrs")
    if hit is None:
        hit = cache["attrs"] = dumps(manga_attributes(m)).encode()
    return hit


def _cover_json(m: Manga) -> bytes:
    cache = m.json_cache
    if cache is None:
        cache = m.json_cache = {}
    hit = cache.get("cover")
    if hit is None:
        c = m.cover
        hit = cache["cover"] = dumps({"id": c.id, "type": "cover_art", "attributes": {
            "description": "", "volume": c.volume, "fileName": c.file_name, "locale": c.locale,
            "createdAt": iso(c.created_at), "updatedAt": iso(c.created_at), "version": 1,
        }}).encode()
    return hit


def _bare(rid: str, kind: str) -> bytes:
    return b'{"id":"%s","type":"%s"}' % (rid.encode(), kind.encode())


def manga_json(m: Manga, includes: frozenset[str], lookup: dict[str, Manga]) -> bytes:
    """One manga object; `lookup` resolves related manga for `includes[]=manga`.

    Only parts are cached (as UTF-8), never whole objects per includes combination, so
    memory stays flat however clients combine includes.
    """
    rels: list[bytes] = []
    for kind, people in (("author", m.authors), ("artist", m.artists)):
        expand = kind in includes
        for p in people:
            if expand:
                rels.append(_person_json(p, kind))
            else:
                rels.append(_bare(p.id, kind))
    rels.append(_cover_json(m) if "cover_art" in includes else _bare(m.cover.id, "cover_art"))
    for rid, related in m.related:
        other = lookup.get(rid) if "manga" in includes else None
        head = b'{"id":"%s","type":"manga","related":"%s"' % (rid.encode(), related.encode())
        if other is not None:
            rels.append(head + b',"attributes":' + manga_attributes_json(other) + b"}")
        else:
            rels.append(head + b"}")
    if m.creator_id is not None:
        if "creator" in includes:
            rels.append(b'{"id":"%s","type":"creator","attributes":{"username":"uploader",'
                        b'"roles":["ROLE_MEMBER"],"version":1}}' % m.creator_id.encode())
        else:
            rels.append(_bare(m.creator_id, "creator"))
    return b'{"id":"%s","type":"manga","attributes":%s,"relationships":[%s]}' % (
        m.id.encode(), manga_attributes_json(m), b",".join(rels))


def chapter_attributes(c: Chapter) -> dict[str, Any]:
    return {
        "volume": c.volume,
        "chapter": c.chapter,
        "title": c.title,
        "translatedLanguage": c.language,
        "externalUrl": c.external_url,
        "isUnavailable": False,
        "publishAt": iso(c.publish_at),
        "readableAt": iso(c.readable_at),
        "createdAt": iso(c.created_at),
        "updatedAt": iso(c.updated_at),
        "version": c.version,
        "pages": c.pages,
        **(c.raw or {}),
    }


def chapter_json(c: Chapter, includes: frozenset[str]) -> bytes:
    attrs = c.json_cache
    if attrs is None:
        attrs = c.json_cache = dumps(chapter_attributes(c)).encode()
    rels: list[bytes] = []
    for g in c.groups:
        if "scanlation_group" in includes:
            rels.append(_group_json(g))
        else:
            rels.append(_bare(g.id, "scanlation_group"))
    if "manga" in includes:
        rels.append(b'{"id":"%s","type":"manga","attributes":%s}' % (
            c.manga.id.encode(), manga_attributes_json(c.manga)))
    else:
        rels.append(_bare(c.manga.id, "manga"))
    u = c.uploader
    if "user" in includes:
        rels.append(_user_json(u))
    else:
        rels.append(_bare(u.id, "user"))
    return b'{"id":"%s","type":"%s","attributes":%s,"relationships":[%s]}' % (
        c.id.encode(), c.kind.encode(), attrs, b",".join(rels))


def broken_item(item_json: bytes, kind: str) -> bytes:
    """A list item a lenient client must survive: no attributes, or an unparsable date."""
    obj = json.loads(item_json)
    if kind == "bad_date":
        obj["attributes"]["createdAt"] = "not-a-date"
        if "publishAt" in obj["attributes"]:
            obj["attributes"]["publishAt"] = "not-a-date"
            obj["attributes"]["readableAt"] = "not-a-date"
    else:
        del obj["attributes"]
    return dumps(obj).encode()


def collection_body(items: list[bytes], limit: int, offset: int, total: int) -> bytes:
    return b'{"result":"ok","response":"collection","data":[%s],"limit":%d,"offset":%d,' \
        b'"total":%d}' % (b",".join(items), limit, offset, total)


def entity_body(item: bytes) -> bytes:
    return b'{"result":"ok","response":"entity","data":%s}' % item


def error_body(status: int, title: str, detail: str | None) -> bytes:
    return dumps({"result": "error", "errors": [{
        "id": error_id(title), "status": status, "title": title, "detail": detail,
        "context": None,
    }]}).encode()


_BOMBS: dict[int, bytes] = {}


def gzip_bomb(inflated_mb: int) -> bytes:
    """A gzip body of about 1 KB per MB that inflates to `inflated_mb` MB of zeros (built once
    per size, in 1 MB steps, never whole in memory)."""
    if inflated_mb not in _BOMBS:
        import zlib

        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        zeros = bytes(1024 * 1024)
        parts = [packer.compress(zeros) for _ in range(inflated_mb)]
        _BOMBS[inflated_mb] = b"".join(parts) + packer.flush()
    return _BOMBS[inflated_mb]
