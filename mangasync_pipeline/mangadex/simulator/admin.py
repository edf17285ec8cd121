"""`SimulatorAdmin`: a small client for the simulator's `/_sim/` admin endpoints."""

from __future__ import annotations

from typing import Any

import httpx

from mangasync_pipeline.tls import tls_context


class SimulatorError(RuntimeError):
    """The simulator refused an admin call; the message is its one-line reason."""


class SimulatorAdmin:
    """Talks to a running simulator (this process or another one) by URL."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout,
                                    verify=tls_context())

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SimulatorAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        resp = self._client.request(method, f"/_sim{path}", json=body)
        if resp.status_code >= 400:
            try:
                reason = resp.json().get("error", resp.text)
            except ValueError:
                reason = resp.text
            raise SimulatorError(f"{method} /_sim{path}: {resp.status_code} {reason}")
        return resp.json()

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def reset_stats(self) -> dict[str, Any]:
        return self._call("POST", "/stats/reset")

    def add_manga(self, **fields: Any) -> dict[str, Any]:
        """One manga (`title=`, `status=`, `createdAt=`, `tags=`, `id=`...) or, with
        `count=N` and `day="YYYY-MM-DD"` or `createdAt=`, N generated ones.
        Returns `{"ids": [...]}` plus `"manga"` (the MangaDex object) for a single one."""
        return self._call("POST", "/manga", fields)

    def add_chapters(self, chapters: list[dict[str, Any]]) -> list[str]:
        """Chapters as `{manga, chapter, language, group, publishAt?, createdAt?, ...}`."""
        return self._call("POST", "/chapters", chapters)["ids"]

    def update_manga(self, manga_id: str, **fields: Any) -> dict[str, Any]:
        return self._call("PATCH", f"/manga/{manga_id}", fields)

    def remove_manga(self, manga_id: str) -> None:
        self._call("DELETE", f"/manga/{manga_id}")

    def get_manga(self, manga_id: str) -> dict[str, Any]:
        """`{"manga": <MangaDex object, all includes>, "chapters": [<every chapter>]}`."""
        return self._call("GET", f"/manga/{manga_id}")

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        return self._call("POST", "/faults", faults)

    def clear_faults(self) -> dict[str, Any]:
        return self._call("DELETE", "/faults")

    def set_clock_offset(self, seconds: float) -> dict[str, Any]:
        return self._call("POST", "/clock", {"offset_seconds": seconds})

    def clock(self) -> dict[str, Any]:
        return self._call("GET", "/clock")
