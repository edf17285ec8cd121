"""The NEW_CHAPTER rule (docs/NOTIFICATION-RULES.md) as a pure function.

No database, no HTTP: `decide` gets what the database knows about one (manga, language) and
the chapters of a batch, and answers which chapters announce a label. Its answer does not
depend on the order of the batch, nor on how the chapters were split over polls, because it
never compares a chapter with another new chapter's number: only with the baseline (fixed at
first sight) and with the labels already stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from mangasync_pipeline.mangadex.models import Chapter

# A numbered label: the number, then an optional letter ("12a"); see models.parse_chapter_number.
_LABEL = re.compile(r"^(\d+(?:\.\d+)?)([a-z]?)$")


def number_text(number: Decimal) -> str:
    """45.50 -> "45.5", 12 -> "12": the number as readers see it."""
    return format(number.normalize(), "f")


def label_key(label: str | None) -> str | None:
    """The identity of a numbered label ("10.50" and "10.5" are one); None when unnumbered."""
    if label is None:
        return None
    match = _LABEL.match(label.strip().lower())
    if match is None:
        return None
    return number_text(Decimal(match.group(1))) + match.group(2)


@dataclass(frozen=True)
class PairState:
    """What is known about one (manga, language) before the batch."""

    catalogued_at: datetime
    # The highest number readable before the manga entered the catalogue (None: nothing was).
    baseline: Decimal | None = None
    # label_key of every chapter already stored for the pair (history included).
    stored_labels: frozenset[str] = frozenset()


@dataclass
class Decision:
    announce: list[Chapter] = field(default_factory=list)  # one per new label, oldest first
    history: int = 0  # readable before the manga was catalogued


def _order(c: Chapter) -> tuple[datetime, datetime, str]:
    return (c.readable_at, c.created_at, c.id)


def batch_baseline(state: PairState, batch: Iterable[Chapter]) -> Decimal | None:
    """The baseline, raised by any history in the batch (a whole feed read is its own
    baseline: the history is in it)."""
    values = [c.number for c in batch
              if c.number is not None and c.readable_at < state.catalogued_at]
    if state.baseline is not None:
        values.append(state.baseline)
    return max(values) if values else None


def decide(state: PairState, batch: Sequence[Chapter]) -> Decision:
    """Which chapters of `batch` (none of them stored before) announce something.

    - readable before the manga entered the catalogue: history, never announced;
    - no number (a oneshot, a text label such as "EXTRA"): announced;
    - a numbered label announces once, by its oldest upload, when the label was never stored
      for the pair and its number is above the baseline.
    """
    decision = Decision()
    baseline = batch_baseline(state, batch)
    first_of_label: dict[str, Chapter] = {}
    for c in batch:
        if c.readable_at < state.catalogued_at:
            decision.history += 1
            continue
        key = label_key(c.chapter) if c.number is not None else None
        if key is None:
            decision.announce.append(c)
            continue
        if key in state.stored_labels or (baseline is not None and c.number <= baseline):
            continue
        held = first_of_label.get(key)
        if held is None or _order(c) < _order(held):
            first_of_label[key] = c
    decision.announce += first_of_label.values()
    decision.announce.sort(key=_order)
    return decision
