"""Records to MangaDex JSON, key for key as in the captured responses.

Objects are rendered to JSON text once and cached on the record (per includes set), so a
100-item page is mostly string joins.
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


def _tag_obj(tag_id: str) -> dict[str, Any]:
    tid, name, group = TAG_BY_ID[tag_id]
    return {
        "id": tid,
        "type": "tag",
        "attributes": {"name": {"en": name}, "description": {}, "group": group, "version": 1},
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
        "tags": [_tag_obj(t) for t in m.tag_ids],
        "state": "published",
        "chapterNumbersResetOnNewVolume": False,
        "createdAt": iso(m.created_at),
        "updatedAt": iso(m.updated_at),
        "version": m.version,
        "availableTranslatedLanguages": list(m.languages),
        "latestUploadedChapter": latest.id if latest else None,
    }


def manga_attributes_json(m: Manga) -> str:
    cache = m.json_cache
    if cache is None:
        cache = m.json_cache = {}
    hit = cache.get("attrs")
    if hit is None:
        hit = cache["attrs"] = dumps(manga_attributes(m))
    return hit


def manga_json(m: Manga, includes: frozenset[str], lookup: dict[str, Manga]) -> str:
    """One manga object; `lookup` resolves related manga for `includes[]=manga`."""
    key = includes & {"author", "artist", "cover_art", "creator", "manga"}
    cache = m.json_cache
    if cache is None:
        cache = m.json_cache = {}
    # Related-manga attributes can change under us, so that variant is never cached.
    cacheable = "manga" not in key
    if cacheable:
        hit = cache.get(frozenset(key))
        if hit is not None:
            return hit
    rels: list[str] = []
    for kind, people in (("author", m.authors), ("artist", m.artists)):
        for p in people:
            if kind in key:
                rels.append(dumps({"id": p.id, "type": kind, "attributes": person_attributes(p)}))
            else:
                rels.append(f'{{"id":"{p.id}","type":"{kind}"}}')
    c = m.cover
    if "cover_art" in key:
        rels.append(dumps({"id": c.id, "type": "cover_art", "attributes": {
            "description": "", "volume": c.volume, "fileName": c.file_name, "locale": c.locale,
            "createdAt": iso(c.created_at), "updatedAt": iso(c.created_at), "version": 1,
        }}))
    else:
        rels.append(f'{{"id":"{c.id}","type":"cover_art"}}')
    for rid, related in m.related:
        other = lookup.get(rid) if "manga" in key else None
        if other is not None:
            rels.append(f'{{"id":"{rid}","type":"manga","related":"{related}",'
                        f'"attributes":{manga_attributes_json(other)}}}')
        else:
            rels.append(f'{{"id":"{rid}","type":"manga","related":"{related}"}}')
    if m.creator_id is not None:
        if "creator" in key:
            rels.append(dumps({"id": m.creator_id, "type": "creator", "attributes": {
                "username": "uploader", "roles": ["ROLE_MEMBER"], "version": 1}}))
        else:
            rels.append(f'{{"id":"{m.creator_id}","type":"creator"}}')
    text = (f'{{"id":"{m.id}","type":"manga","attributes":{manga_attributes_json(m)},'
            f'"relationships":[{",".join(rels)}]}}')
    if cacheable:
        cache[frozenset(key)] = text
    return text


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
    }


def chapter_json(c: Chapter, includes: frozenset[str]) -> str:
    key = includes & {"scanlation_group", "user", "manga"}
    cacheable = "manga" not in key  # the manga's attributes may change
    fkey = frozenset(key)
    if cacheable and c.json_cache is not None:
        hit = c.json_cache.get(fkey)
        if hit is not None:
            return hit
    rels: list[str] = []
    for g in c.groups:
        if "scanlation_group" in key:
            rels.append(dumps({"id": g.id, "type": "scanlation_group",
                               "attributes": group_attributes(g)}))
        else:
            rels.append(f'{{"id":"{g.id}","type":"scanlation_group"}}')
    if "manga" in key:
        rels.append(f'{{"id":"{c.manga.id}","type":"manga",'
                    f'"attributes":{manga_attributes_json(c.manga)}}}')
    else:
        rels.append(f'{{"id":"{c.manga.id}","type":"manga"}}')
    u = c.uploader
    if "user" in key:
        rels.append(dumps({"id": u.id, "type": "user", "attributes": user_attributes(u)}))
    else:
        rels.append(f'{{"id":"{u.id}","type":"user"}}')
    text = (f'{{"id":"{c.id}","type":"chapter","attributes":{dumps(chapter_attributes(c))},'
            f'"relationships":[{",".join(rels)}]}}')
    if cacheable:
        if c.json_cache is None:
            c.json_cache = {}
        c.json_cache[fkey] = text
    return text


def broken_item(item_json: str, kind: str) -> str:
    """A list item a lenient client must survive: no attributes, or an unparsable date."""
    obj = json.loads(item_json)
    if kind == "bad_date":
        obj["attributes"]["createdAt"] = "not-a-date"
        if "publishAt" in obj["attributes"]:
            obj["attributes"]["publishAt"] = "not-a-date"
            obj["attributes"]["readableAt"] = "not-a-date"
    else:
        del obj["attributes"]
    return dumps(obj)


def collection_body(items: list[str], limit: int, offset: int, total: int) -> bytes:
    return (f'{{"result":"ok","response":"collection","data":[{",".join(items)}],'
            f'"limit":{limit},"offset":{offset},"total":{total}}}').encode()


def entity_body(item: str) -> bytes:
    return f'{{"result":"ok","response":"entity","data":{item}}}'.encode()


def error_body(status: int, title: str, detail: str | None) -> bytes:
    return dumps({"result": "error", "errors": [{
        "id": error_id(title), "status": status, "title": title, "detail": detail,
        "context": None,
    }]}).encode()
