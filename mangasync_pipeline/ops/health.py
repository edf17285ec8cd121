"""Container health checks of the production stack (docker-compose.yml) that read Dagster's storage.

`/server_info` and `dagster-daemon liveness-check` stay green while every page of the UI and
every run launch fail on a broken storage connection; these checks go through that storage:

    python -m mangasync_pipeline.ops.health webserver [URL]   the front page answers and
                                                              GraphQL reads the runs
    python -m mangasync_pipeline.ops.health daemon            runs, events, sensor state and
                                                              every daemon's last heartbeat

Exit status 0 when healthy; otherwise 1 and one line saying why.
"""

from __future__ import annotations

import json
import logging
import sys
import urllib.request

RUNS_QUERY = "{ runsOrError(limit: 1) { __typename ... on PythonError { message } } }"


def webserver(url: str = "http://localhost:3000") -> str | None:
    """Why the webserver is unhealthy (its front page or GraphQL fails to read the storage),
    or None."""
    try:
        with urllib.request.urlopen(f"{url}/", timeout=8) as response:
            response.read()
    except Exception as exc:  # any failure to answer is unhealthy, with its reason
        return f"the UI's front page failed: {exc}"
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": RUNS_QUERY}).encode(),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=8) as response:
            body = json.load(response)
    except Exception as exc:  # any failure to answer is unhealthy, with its reason
        return f"GraphQL did not answer: {exc}"
    runs = (body.get("data") or {}).get("runsOrError") or {}
    if runs.get("__typename") != "Runs":
        return f"GraphQL cannot read the runs: {runs.get('message') or body.get('errors')}"
    return None


def daemon() -> str | None:
    """Why the daemon is unhealthy (storage unreadable, a daemon silent or failing), or None."""
    from dagster import DagsterInstance
    from dagster._daemon.controller import all_daemons_healthy

    # dagster-postgres logs each retry of a refused connection; the reason line says it once.
    logging.disable(logging.WARNING)
    try:
        with DagsterInstance.get() as instance:
            instance.get_runs(limit=1)
            instance.event_log_storage.get_maximum_record_id()
            instance.all_instigator_state()
            if not all_daemons_healthy(instance):
                return "a Dagster daemon has no recent heartbeat or reported an error"
    except Exception as exc:  # a storage error is the unhealth this check exists to show
        return f"Dagster storage unreadable: {type(exc).__name__}: {exc}".splitlines()[0]
    return None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    checks = {"webserver": webserver, "daemon": daemon}
    if not args or args[0] not in checks:
        sys.exit(f"usage: python -m mangasync_pipeline.ops.health {'|'.join(checks)} [URL]")
    reason = checks[args[0]](*args[1:])
    if reason:
        sys.exit(f"unhealthy: {reason}")
    print("healthy")


if __name__ == "__main__":
    main()
