"""`fake_mangadex`: run the simulator from the command line until Ctrl-C."""

from __future__ import annotations

import click


@click.command("fake-mangadex")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8089, show_default=True, type=int, help="Port to bind.")
@click.option("--seed", default=42, show_default=True, type=int, help="Catalogue seed.")
@click.option("--manga", "manga_count", default=5000, show_default=True,
              type=click.IntRange(min=0), help="Manga in the catalogue.")
@click.option("--rate-limit", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="Requests per second per client IP (0 = unlimited).")
@click.option("--chapters-per-manga", default=20.0, show_default=True,
              type=click.FloatRange(min=0), help="Average chapters per manga.")
@click.option("--publish-every", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between live publications (0 = off).")
def fake_mangadex(host: str, port: int, seed: int, manga_count: int, rate_limit: float,
                  chapters_per_manga: float, publish_every: float) -> None:
    """Serve a seeded MangaDex simulator (MangaDex API paths, plus /_sim/ admin)."""
    from .server import Simulator

    sim = Simulator(seed=seed, manga_count=manga_count, rate_limit=rate_limit or None,
                    host=host, port=port, chapters_per_manga=chapters_per_manga,
                    publish_every=publish_every or None)
    try:
        sim.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    counts = sim.catalogue.counts()
    click.echo(f"MangaDex simulator on {sim.url} ({counts['manga']} manga, "
               f"{counts['chapters']} chapters, seed {seed}); Ctrl-C to stop")
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
