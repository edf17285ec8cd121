"""Start the processes of the whole system and stop every one of them, whatever happens.

Each service runs in its own session (process group), so that stopping it reaches everything
it spawned too: Dagster's webserver, daemon, code servers and run workers. A stop sends the
service's stop signal to the group (SIGINT for Dagster, as a terminal's Ctrl-C would), waits,
then kills what is left. Ctrl-C, SIGTERM and SIGHUP on the launcher all lead to that stop.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import click

# Every process we start (and everything it starts) carries this in its environment, so
# that tests can prove none outlived a stop.
LAUNCH_MARKER = "MANGASYNC_LAUNCH_ID"


# ANSI colour and style sequences (ESC [ ... m), as coloured log formatters write them.
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def without_colours(line: str) -> str:
    return _COLOUR.sub("", line)


def _pump(stream: IO[bytes], write: Callable[[str], None], keep_colours: bool) -> None:
    """Each line a service prints, to the terminal or its log file as it comes."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        write(line if keep_colours else without_colours(line))


def _file_writer(log_file: IO[bytes]) -> Callable[[str], None]:
    def write(line: str) -> None:
        log_file.write(f"{line}\n".encode())
        log_file.flush()
    return write


class LaunchError(RuntimeError):
    """A service did not start, or stopped on its own; the message says which and why."""


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """The launcher was asked to stop (Ctrl-C, SIGTERM, SIGHUP)."""


@dataclass
class Service:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)  # added to the launcher's environment
    cwd: Path | None = None
    # Where its output goes: a file (kept for the operator), "terminal" (each line prefixed
    # with the service name), or "inherit" (straight through, for a foreground client).
    output: Path | str = "terminal"
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0


@dataclass
class Running:
    service: Service
    process: subprocess.Popen[bytes]
    log_file: IO[bytes] | None = None
    pump: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


def python_command(*args: str) -> list[str]:
    """`mangasync ...` run by this interpreter, so it uses the same environment."""
    return [sys.executable, "-m", "mangasync_pipeline.cli", *args]


def venv_script(name: str) -> str:
    """A console script installed beside this interpreter (dg, dagster), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise LaunchError(f"`{name}` is not installed: run `bash scripts/bootstrap.sh`")
    return found


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


class Launcher:
    """Starts services in order and stops them in reverse order; a context manager."""

    def __init__(self, launch_id: str | None = None, echo: Callable[[str], None] | None = None):
        self.launch_id = launch_id or f"{os.getpid()}-{time.time_ns()}"
        self.running: list[Running] = []
        self.echo = echo or (lambda line: click.echo(line, err=True))
        self._terminal_lock = threading.Lock()

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()

    def start(self, service: Service) -> Running:
        env = {**os.environ, **service.env, LAUNCH_MARKER: self.launch_id,
               "PYTHONUNBUFFERED": "1"}
        log_file: IO[bytes] | None = None
        stdout: int | None
        if service.output == "inherit":
            stdout = None
        else:
            # Read line by line, for the terminal's prefixes and to keep colour codes out of
            # log files (Dagster colours its lines whatever its output is).
            stdout = subprocess.PIPE
            if service.output != "terminal":
                path = Path(service.output)
                path.parent.mkdir(parents=True, exist_ok=True)
                log_file = path.open("ab")
        try:
            process = subprocess.Popen(
                list(service.argv), env=env, cwd=service.cwd, stdin=subprocess.DEVNULL,
                stdout=stdout, stderr=subprocess.STDOUT if stdout is not None else None,
                start_new_session=True,
            )
        except OSError as exc:
            if log_file is not None:
                log_file.close()
            raise LaunchError(f"cannot start {service.name} ({service.argv[0]}): {exc}") from None
        running = Running(service, process, log_file)
        if process.stdout is not None:
            if log_file is not None:
                write, keep_colours = _file_writer(log_file), False
            else:
                write, keep_colours = self._terminal_writer(service.name), sys.stderr.isatty()
            running.pump = threading.Thread(
                target=_pump, args=(process.stdout, write, keep_colours), daemon=True)
            running.pump.start()
        self.running.append(running)
        return running

    def _terminal_writer(self, name: str) -> Callable[[str], None]:
        def write(line: str) -> None:
            with self._terminal_lock:
                print(f"{name:>9} | {line.rstrip()}", file=sys.stderr, flush=True)
        return write

    def wait_until(self, running: Running, ready: Callable[[], bool], timeout: float,
                   what: str) -> None:
        """Wait for `ready()`; fail with the service's last output if it dies or times out."""
        deadline = time.monotonic() + timeout
        while not ready():
            code = running.process.poll()
            if code is not None:
                raise LaunchError(f"{running.service.name} exited with code {code} before "
                                  f"{what}{self._tail(running)}")
            if time.monotonic() > deadline:
                raise LaunchError(f"{running.service.name}: no {what} after {timeout:.0f}s"
                                  f"{self._tail(running)}")
            time.sleep(0.25)

    def _tail(self, running: Running, lines: int = 8) -> str:
        output = running.service.output
        if isinstance(output, Path) and output.exists():
            text = output.read_text(errors="replace").splitlines()[-lines:]
            return f" (log: {output}):\n  " + "\n  ".join(text)
        return ""

    def run_to_end(self, service: Service, timeout: float) -> int:
        """Run a one-off command (it is stopped like the rest if we are); its exit code."""
        running = self.start(service)
        self.wait_until(running, lambda: running.process.poll() is not None, timeout,
                        "its end")
        self.running.remove(running)
        self._stop(running)  # anything it left behind in its group
        return running.process.returncode

    def first_exited(self) -> Running | None:
        return next((r for r in self.running if r.process.poll() is not None), None)

    def supervise(self, foreground: Running | None = None) -> None:
        """Block until asked to stop or until a service ends; a service ending is an error,
        except the foreground one, whose end is a normal end of the session."""
        while True:
            exited = self.first_exited()
            if exited is not None:
                if exited is foreground and exited.process.returncode == 0:
                    return
                raise LaunchError(f"{exited.service.name} stopped unexpectedly (exit code "
                                  f"{exited.process.returncode}){self._tail(exited)}")
            time.sleep(0.5)

    def stop_all(self) -> None:
        """Signal every service at once, then wait for each: stopping takes the slowest
        service's time, not the sum, and each one says when it is gone."""
        stopping, self.running = list(reversed(self.running)), []
        started = time.monotonic()
        alive = [running for running in stopping if self._alive(running)]
        for running in alive:
            _signal_group(running.pid, running.service.stop_signal)
        for running in stopping:
            self._wait_stopped(running, started, say=running in alive)

    def _stop(self, running: Running) -> None:
        started, alive = time.monotonic(), self._alive(running)
        if alive:
            _signal_group(running.pid, running.service.stop_signal)
        self._wait_stopped(running, started, say=alive)

    @staticmethod
    def _alive(running: Running) -> bool:
        # The pid leads its own session: the group outlives the leader in a grandchild.
        return running.process.poll() is None or _group_alive(running.pid)

    def _wait_stopped(self, running: Running, started: float, *, say: bool) -> None:
        service = running.service
        deadline = started + service.stop_timeout
        while time.monotonic() < deadline and self._alive(running):
            time.sleep(0.1)
        if self._alive(running):
            self.echo(f"{service.name} did not stop within {service.stop_timeout:.0f}s: "
                      "killing it")
            _signal_group(running.pid, signal.SIGKILL)
        elif say:
            self.echo(f"{service.name} stopped ({time.monotonic() - started:.1f}s)")
        with suppress(subprocess.TimeoutExpired):
            running.process.wait(timeout=5)
        if running.pump is not None:
            running.pump.join(timeout=2)
        if running.log_file is not None:
            running.log_file.close()


def _signal_group(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (its leader is reaped by `poll()` first)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into `Stopped`, so `with Launcher()` cleans up."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM,
                                                       signal.SIGHUP)}
    for sig in previous:
        signal.signal(sig, _raise_stopped)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ignore_signals_while_stopping() -> None:
    """A second Ctrl-C must not interrupt the clean-up of the first."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def run_session(body: Callable[[Launcher], None], echo: Callable[[str], None] | None = None,
                launch_id: str | None = None) -> None:
    """Run `body` with a launcher; on its end, an error, Ctrl-C, SIGTERM or SIGHUP, stop every
    process it started. A start-up failure becomes a one-line `click.ClickException`."""
    say = echo or (lambda line: click.echo(line, err=True))
    launcher = Launcher(launch_id=launch_id, echo=say)
    failure: LaunchError | None = None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM,
                                                       signal.SIGHUP)}
    try:
        with stop_on_signals():
            body(launcher)
    except Stopped as stop:
        say(f"{stop}: stopping {len(launcher.running)} processes...")
    except LaunchError as exc:
        failure = exc
    finally:
        ignore_signals_while_stopping()
        try:
            launcher.stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if failure is not None:
        raise click.ClickException(str(failure))
    say("all stopped")


def processes_with_env(name: str, value: str) -> list[int]:
    """Live processes whose environment has `name=value` (Linux): how a test proves that
    nothing a launcher started outlived it."""
    needle = f"{name}={value}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0"):
                stat = (environ.parent / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(environ.parent.name))
        except OSError:
            continue
    return found
