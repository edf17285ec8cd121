"""Peak memory and time of the MangaDex client against hostile bodies (all on loopback).

The simulator (its own process) answers every attempt of one request with a 300 MB JSON body,
a gzip bomb (about 1 MB that inflates to 1 GB) or the real body dripped one byte every 10 s.
Each case runs in a fresh Python process with the default request policy (16 MB body cap, 3
retries, connect 5 s + read 15 s per attempt) and reports that process's peak RSS and the time
until the request gave up. A sensor tick (its client and 40 s deadline) meets the drip too.

    .venv/bin/python bench/bench_hostile_bodies.py [--skip-drip]

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import httpx
from _common import command, simulator_process, table

from mangasync_pipeline.mangadex.simulator import SimulatorAdmin

CHILD = """
import json, sys, time
from mangasync_pipeline.config import ClientPolicy
from mangasync_pipeline.mangadex.client import MangaDexClient
url, sensor = sys.argv[1], sys.argv[2] == "sensor"
policy = ClientPolicy().for_sensor() if sensor else ClientPolicy()
client = MangaDexClient(url, rate_limit=None, policy=policy)
def kb(field):  # this process's own figures (ru_maxrss would carry the parent's over)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))
client.ping()  # connection and imports warm: the baseline
base = kb("VmRSS")
if sensor:
    client.start_deadline(policy.sensor_deadline)
started = time.monotonic()
try:
    client.newest_manga(10, includes=())
    outcome = "answered"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
took = time.monotonic() - started
peak = kb("VmHWM")
print(json.dumps({"base_kb": base, "peak_kb": peak, "seconds": took, "outcome": outcome}))
"""


def run_case(url: str, faults: dict[str, int], mode: str = "run") -> dict[str, object]:
    with SimulatorAdmin(url) as admin:
        admin.clear_faults()
        admin.set_faults(**faults)
    out = subprocess.run([sys.executable, "-c", CHILD, url, mode], capture_output=True,
                         text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-drip", action="store_true", help="memory cases only")
    args = parser.parse_args()
    cases = [("300 MB JSON body, no Content-Length", {"oversized": 10, "oversized_mb": 300}, "run"),
             ("gzip bomb (1 GB inflated)", {"gzip_bomb": 10, "bomb_mb": 1024}, "run")]
    if not args.skip_drip:
        cases += [("body dripped 1 byte / 10 s, a run", {"drip": 10, "drip_ms": 10_000}, "run"),
                  ("body dripped 1 byte / 10 s, a sensor tick",
                   {"drip": 10, "drip_ms": 10_000}, "sensor")]
    rows = []
    with simulator_process(rate_limit=None, manga=50) as url:
        with SimulatorAdmin(url) as admin:  # the bomb is built once, before any timing
            admin.set_faults(gzip_bomb=1, bomb_mb=1024)
        with httpx.stream("GET", f"{url}/manga?limit=1", timeout=120) as response:
            for _ in response.iter_raw():  # never inflated here
                pass
        for name, faults, mode in cases:
            started = time.monotonic()
            found = run_case(url, faults, mode)
            rows.append([name, f"{int(found['base_kb']) / 1024:.0f} MB",
                         f"**{int(found['peak_kb']) / 1024:.0f} MB**",
                         f"{float(found['seconds']):.2f} s",
                         str(found["outcome"])[:110].replace("|", "/")])
            print(f"{name}: done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(f"`{command()}`\n")
    print(table(["body", "RSS before", "peak RSS", "time to give up", "outcome"], rows))


if __name__ == "__main__":
    main()
