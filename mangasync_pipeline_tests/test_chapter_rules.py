"""The NEW_CHAPTER rule as a pure function: many cases, no database, no HTTP.

`chapter_rules.decide` is what `sync/chapters.py` applies inside its write transaction; the
integration tests in test_sync_chapters.py run the same rule through MangaDex's API and both
databases.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from mangasync_pipeline.mangadex.models import Chapter, parse_chapter_number
from mangasync_pipeline.sync.chapter_rules import PairState, decide, label_key

CATALOGUED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
MANGA = "5a1e37a4-6d35-4c5e-9f0f-2b8a8e2f6b11"


def chapter(label: str | None, minutes: float, *, n: int = 0, link: bool = False) -> Chapter:
    """A chapter readable `minutes` after the manga was catalogued (negative: history)."""
    when = CATALOGUED + timedelta(minutes=minutes)
    return Chapter(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{label}/{minutes}/{n}")),
        manga_id=MANGA, chapter=label, number=parse_chapter_number(label), volume=None,
        title=None, translated_language="en", pages=0 if link else 20,
        external_url="https://publisher.example/c" if link else None, is_unavailable=False,
        publish_at=when, readable_at=when, created_at=when, updated_at=when)


def announced(batch: Sequence[Chapter], *, baseline: str | None = "10",
              stored: Sequence[str] = ()) -> list[str | None]:
    state = PairState(CATALOGUED, Decimal(baseline) if baseline is not None else None,
                      frozenset(filter(None, map(label_key, stored))))
    return [c.chapter for c in decide(state, batch).announce]


CASES: list[tuple[str, list[Chapter], dict[str, object], list[str | None]]] = [
    ("a new number above the baseline", [chapter("11", 5)], {}, ["11"]),
    ("history is never new", [chapter("11", -5)], {}, []),
    ("at the baseline is not new", [chapter("10", 5)], {}, []),
    ("below the baseline is not new", [chapter("9.5", 5)], {}, []),
    ("a decimal above the baseline", [chapter("10.5", 5)], {}, ["10.5"]),
    ("a lettered label orders as its number", [chapter("12a", 5)], {}, ["12a"]),
    ("12a beside a stored 12", [chapter("12a", 5)], {"stored": ["12"]}, ["12a"]),
    ("a re-upload of a stored label", [chapter("12", 5)], {"stored": ["12"]}, []),
    ("10.50 is the stored 10.5", [chapter("10.50", 5)], {"stored": ["10.5"]}, []),
    ("several groups, one label: one", [chapter("11", 5), chapter("11", 9, n=1),
                                        chapter("11", 7, n=2)], {}, ["11"]),
    ("150.5 after 151, same batch", [chapter("151", 1), chapter("150.5", 2)],
     {"baseline": "150"}, ["151", "150.5"]),
    ("150.5 after a stored 151", [chapter("150.5", 2)],
     {"baseline": "150", "stored": ["151"]}, ["150.5"]),
    ("a oneshot", [chapter(None, 5)], {}, [None]),
    ("a text label", [chapter("EXTRA", 5)], {}, ["EXTRA"]),
    ("two oneshots are two", [chapter(None, 5), chapter(None, 6, n=1)], {}, [None, None]),
    ("a oneshot before cataloguing is history", [chapter(None, -1)], {}, []),
    ("no history at all: everything new is new", [chapter("1", 1), chapter("2", 2)],
     {"baseline": None}, ["1", "2"]),
    ("history in the batch is its own baseline", [chapter("30", -60), chapter("29", 5),
                                                   chapter("31", 6)], {"baseline": None},
     ["31"]),
    ("a link chapter is a chapter", [chapter("11", 5, link=True)], {}, ["11"]),
    ("readable in the catalogued second is new", [chapter("11", 0)], {}, ["11"]),
    ("oldest upload of a label announces", [chapter("11", 9, n=1), chapter("11", 3)], {},
     ["11"]),
]


@pytest.mark.parametrize(("batch", "context", "expected"),
                         [pytest.param(b, c, e, id=name) for name, b, c, e in CASES])
def test_rule(batch: list[Chapter], context: dict[str, object],
              expected: list[str | None]) -> None:
    assert announced(batch, **context) == expected  # type: ignore[arg-type]


def test_the_oldest_upload_of_a_label_is_the_one_announced() -> None:
    early, late = chapter("11", 3), chapter("11", 9, n=1)
    assert decide(PairState(CATALOGUED, Decimal(10)), [late, early]).announce == [early]


def test_history_is_counted() -> None:
    batch = [chapter("1", -30), chapter("2", -20), chapter("11", 5)]
    assert decide(PairState(CATALOGUED, Decimal(10)), batch).history == 2


def polls(batches: Sequence[Sequence[Chapter]], baseline: str | None) -> list[str | None]:
    """Consecutive polls: what one stores is known to the next (as the database does)."""
    stored: set[str] = set()
    out: list[str | None] = []
    for batch in batches:
        out += announced(batch, baseline=baseline, stored=sorted(stored))
        stored |= {c.chapter for c in batch if c.chapter is not None}
    return out


TRAFFIC = [chapter("151", 1), chapter("150.5", 1), chapter("150.5", 2, n=1),
           chapter("152", 1, link=True), chapter("149", 3), chapter("12a", 4),
           chapter("153", 5), chapter("153", 5, n=1), chapter(None, 6), chapter("148", -9),
           chapter("EXTRA", 7), chapter("154", 8), chapter("151", 9, n=2)]
EXPECTED = {"151", "150.5", "152", "153", "154", None, "EXTRA"}


def test_shuffled_batches_announce_the_same_labels() -> None:
    rng = random.Random(5)
    for _ in range(300):
        batch = rng.sample(TRAFFIC, len(TRAFFIC))
        result = announced(batch, baseline="150")
        assert len(result) == len(EXPECTED) and set(result) == EXPECTED


@pytest.mark.parametrize("polls_count", [1, 2, 3])
def test_the_same_chapters_over_one_two_or_three_polls_announce_the_same(
        polls_count: int) -> None:
    rng = random.Random(polls_count)
    for _ in range(200):
        order = rng.sample(TRAFFIC, len(TRAFFIC))
        cuts = sorted(rng.sample(range(1, len(order)), polls_count - 1))
        batches = [order[a:b] for a, b in itertools.pairwise([0, *cuts, len(order)])]
        result = polls(batches, "150")
        assert len(result) == len(EXPECTED) and set(result) == EXPECTED


@pytest.mark.parametrize(("label", "key"), [
    ("12", "12"), ("12a", "12a"), ("10.50", "10.5"), ("0", "0"), ("100.17", "100.17"),
    ("12A", "12a"), (" 7 ", "7"), ("EXTRA", None), ("", None), (None, None), ("1.2.3", None)])
def test_label_keys(label: str | None, key: str | None) -> None:
    assert label_key(label) == key
