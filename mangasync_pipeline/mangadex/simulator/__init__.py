"""A seeded, in-process MangaDex: the MangaDex of every test, benchmark and demo.

`Simulator(seed=42, manga_count=5000, rate_limit=5.0, host="127.0.0.1", port=0,
chapters_per_manga=20, start=None, end=None, publish_every=None)` builds a deterministic
catalogue and, after `.start()` (or `with`), serves the MangaDex read API on `.url`:
`GET /ping`, `/manga`, `/manga/{id}`, `/manga/{id}/feed`, `/chapter`, `/manga/tag`, with
MangaDex's shapes, defaults, validation (400 envelopes), 10 000 result window, and a
per-IP sliding 1-second rate limit answered with 429 + `X-RateLimit-*` / `Retry-After`.
`rate_limit=None` (or 0) lifts the limit. The catalogue is `sim.catalogue` in-process.

The simulator's clock is real UTC time plus an offset; every "now"-dependent filter
(the feed's default `publishAt <= now`, include* flags) uses it.

Admin API (`/_sim/`, not rate limited, not counted in stats; `SimulatorAdmin(url)` wraps
it, from any process):

- `GET /_sim/stats`: `{"requests": {"/manga": n, "/manga/{id}": n, "/manga/{id}/feed": n,
  "/chapter": n, "/manga/tag": n, "/ping": n}, "by_status": {"200": n, ...}, "total": n,
  "max_per_second": n, "rate_limited": n}`; `max_per_second` is the most MangaDex
  requests seen in any sliding second. `POST /_sim/stats/reset` zeroes it all.
- `POST /_sim/manga`: one manga from optional MangaDex-style fields (`id`, `title` (string
  or localized map), `status`, `lastChapter`, `lastVolume`, `contentRating`, `createdAt`,
  `updatedAt`, `tags` (names or ids), `description`, `altTitles`, `year`, `chapters`:
  count of generated chapters) -> `{"ids": [id], "manga": {...}}`; or `{"count": N,
  "day": "YYYY-MM-DD"}` (spread over that UTC day) / `{"count": N, "createdAt": ts}` ->
  `{"ids": [...]}`. Timestamps default to sim-now.
- `PATCH /_sim/manga/{id}`: change fields as above (not `createdAt`); bumps `updatedAt`
  to sim-now (or the given `updatedAt`) and `version`.
- `GET /_sim/manga/{id}`: `{"manga": <object with author/artist/cover_art/creator
  expanded>, "chapters": [<every chapter, future and external too>]}`.
- `DELETE /_sim/manga/{id}`: take a manga down (then 404, and an empty feed).
- `POST /_sim/chapters`: `[{manga, chapter, language="en", group (name or id) or
  groups (a joint release), publishAt?, createdAt?, updatedAt?, externalUrl?, pages?,
  title?, volume?, id?, attributes?, type?}]` -> `{"ids": [...]}`; `chapter: null` is a
  oneshot; `attributes` are served over the chapter's own as given, `type` replaces the
  item's `"chapter"` (a hostile item claiming to be something else).
- Requests without a `User-Agent` get MangaDex's `400 text/plain` answer.
- `GET|POST /_sim/clock`: `{"offset_seconds": N}` sets the absolute offset from real time.
- `POST /_sim/faults`: any of `error_rate` (0..1, seeded) + `error_status`, `burst_429`
  (next N answered 429 with `retry_after` seconds), `latency_ms`, `malformed` (next N
  bodies valid JSON of the wrong shape), `truncated` (next N bodies cut in half),
  `drop` (next N connections closed without a response), `bad_items` (next N non-empty
  list pages carry one item without `attributes`, or with unparsable dates when
  `bad_item_kind` is `"bad_date"`), `shuffle_ties` (next N chapter lists order chapters
  equal on every order key at random, as replicas of a search cluster may; otherwise they
  come in id order). `DELETE /_sim/faults` clears; `GET` shows them.

Live mode (`publish_every` seconds) keeps adding manga and chapters for demos. The CLI is
`cli.fake_mangadex` (click).
"""

from .admin import SimulatorAdmin, SimulatorError
from .catalogue import Catalogue
from .server import Simulator

__all__ = ["Catalogue", "Simulator", "SimulatorAdmin", "SimulatorError"]
