"""The production stack's times: `docker compose up -d --build --wait` cold (no mangasync image,
no build cache) and warm (after a code change; and with nothing changed), and runs of
`initial_sync_job` (100 manga from the demo profile's simulator) from launch through GraphQL
to success, each in a container of its own.

Needs a running Docker engine and the two base images (as the live test: see
mangasync_pipeline_tests/test_ops_compose_live.py). Works on a clean copy of the tracked files
in a temporary folder, as README's steps; removes the stack (`down -v`) at the end.

    .venv/bin/python bench/bench_compose.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from _common import command  # noqa: E402

# The live test's stack: the same clean copy, .env and Compose as README's steps.
from mangasync_pipeline_tests.test_ops_compose_live import (  # noqa: E402
    LAUNCH,
    new_stack,
    run,
    stack_in_use,
    wait_for_run,
)

UP = ("up", "-d", "--build", "--wait", "--wait-timeout", "600")


def timed(step: str, action: object) -> float:
    started = time.monotonic()
    action()  # type: ignore[operator]
    took = time.monotonic() - started
    print(f"  {step}: {took:.1f} s", flush=True)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if stack_in_use():
        sys.exit("a mangasync stack runs on this engine: `docker compose down` it first")
    with tempfile.TemporaryDirectory() as tmp:
        stack = new_stack(Path(tmp))
        try:
            run(["docker", "image", "rm", "-f", "mangasync:latest"])
            run(["docker", "builder", "prune", "-af"], timeout=300)
            cold = timed("up -d --build, cold", lambda: stack.compose(*UP, timeout=1200))
            runs = []
            for _ in range(args.runs):
                launched = time.monotonic()
                launch = stack.graphql(LAUNCH, {
                    "job": "initial_sync_job",
                    "config": {"ops": {"import_newest_manga": {"config": {"force": True}}}},
                })["launchRun"]
                found = wait_for_run(stack, launch["run"]["runId"], 600)
                assert found["status"] == "SUCCESS", found
                runs.append(time.monotonic() - launched)
                print(f"  run launch to success: {runs[-1]:.1f} s", flush=True)
            unchanged = timed("up -d --build, nothing changed",
                              lambda: stack.compose(*UP, timeout=1200))
            health = stack.folder / "mangasync_pipeline" / "ops" / "health.py"
            health.write_text(health.read_text() + "\n# a code change\n")
            warm = timed("up -d --build, after a code change",
                         lambda: stack.compose(*UP, timeout=1200))
        finally:
            stack.compose("down", "-v", check=False, timeout=300)
    print(f"\n`{command()}`\n")
    print("| step | time |\n| --- | --- |")
    print(f"| `up -d --build --wait`, cold (no image, no build cache) | {cold:.0f} s |")
    print(f"| `up -d --build --wait`, warm: after a code change | {warm:.0f} s |")
    print(f"| `up -d --build --wait`, warm: nothing changed | {unchanged:.0f} s |")
    print(f"| `initial_sync_job` launch to success in its container (median of {len(runs)}) "
          f"| {statistics.median(runs):.1f} s (min {min(runs):.1f}, max {max(runs):.1f}) |")


if __name__ == "__main__":
    main()
