"""Live mode: keeps publishing new manga and chapters so a demo has something to notice."""

from __future__ import annotations

import logging
import random
import threading

from .catalogue import Catalogue
from .records import Manga

log = logging.getLogger(__name__)


def next_label(m: Manga) -> str:
    """The number after the highest numeric chapter of `m` (1 for a manga without any)."""
    best = 0.0
    for c in m.chapters:
        try:
            best = max(best, float(c.chapter)) if c.chapter is not None else best
        except ValueError:
            continue
    return str(int(best) + 1)


class LivePublisher:
    """Every `every` seconds: one new manga, and new chapters for recently added ones."""

    def __init__(self, catalogue: Catalogue, every: float, seed: int = 7) -> None:
        self.catalogue = catalogue
        self.every = every
        self.rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mangadex-live", daemon=True)
        self._recent: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.tick()
            except Exception:  # a demo must keep going; the traceback is for the operator
                log.exception("live publisher tick failed")

    def tick(self) -> None:
        cat = self.catalogue
        made = cat.add_manga({"count": 1})[0]
        self._recent = (self._recent + [made.id])[-20:]
        specs = []
        with cat.lock:
            targets = {made.id}
            targets.update(self.rng.sample(self._recent, min(len(self._recent),
                                                             self.rng.randint(1, 3))))
            for mid in sorted(targets):
                m = cat.manga.get(mid)
                if m is None:
                    continue
                label = next_label(m)
                specs.append({"manga": mid, "chapter": label, "language": "en",
                              "group": "Live Scans"})
                if self.rng.random() < 0.3:
                    specs.append({"manga": mid, "chapter": label, "language": "es",
                                  "group": "Traducciones en Vivo"})
        if specs:
            cat.add_chapters(specs)
