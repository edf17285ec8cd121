"""`mangasync users|library|server|listen` as an operator runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from mangasync_pipeline.cli import cli
from mangasync_pipeline.db import tables as t
from mangasync_pipeline.notify.testing import add_manga
from mangasync_pipeline.ops.system import free_port
from mangasync_pipeline_tests import web


def _run(db_url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"DATABASE_URL": db_url})
    return result.exit_code, result.stdout, result.stderr


def test_users_add_shows_the_token_once_and_list_never(db_url: str, engine: Engine) -> None:
    code, out, err = _run(db_url, "users", "add", "alice")
    assert code == 0
    token = out.strip()
    assert len(token) >= 32 and "\n" not in token
    assert "shown only once" in err
    code, out, _ = _run(db_url, "users", "list")
    assert code == 0 and "alice" in out and token not in out
    code, _, err = _run(db_url, "users", "add", "alice")
    assert code == 1 and "already exists" in err and len(err.strip().splitlines()) == 1


def test_rotate_token_prints_a_new_token_and_the_old_one_stops_working(
        db_url: str, engine: Engine) -> None:
    from mangasync_pipeline.notify.app import ServerHandle
    from mangasync_pipeline.notify.client import AuthFailed, NotificationClient
    from mangasync_pipeline.notify.testing import fast_options, server_settings

    old = _run(db_url, "users", "add", "zoe")[1].strip()
    with ServerHandle(server_settings(db_url), fast_options()) as server:
        with NotificationClient(*server.udp_addr, "zoe", old) as client:
            assert client.register()["type"] == "REGISTERED"
        code, out, err = _run(db_url, "users", "rotate-token", "zoe")
        new = out.strip()
        assert code == 0 and "shown only once" in err and new != old and len(new) >= 32
        # The server re-reads the user when the new token does not match what it holds.
        with NotificationClient(*server.udp_addr, "zoe", new) as client:
            assert client.register()["type"] == "REGISTERED"
        with NotificationClient(*server.udp_addr, "zoe", old,
                                source="127.0.0.3") as client:
            try:
                client.register(timeout=3, attempts=1)
                raise AssertionError("the old token still works")
            except AuthFailed:
                pass
    code, _, err = _run(db_url, "users", "rotate-token", "nobody")
    assert code == 1 and "no user named 'nobody'" in err


def test_library_by_id_slug_or_uuid_with_clear_errors(db_url: str, engine: Engine) -> None:
    manga_id = add_manga(engine, "One Piece", slug="one-piece")
    with engine.connect() as conn:
        uuid = conn.execute(select(t.manga.c.mangadex_id)).scalar_one()
    _run(db_url, "users", "add", "bob")
    assert _run(db_url, "library", "add", "bob", str(manga_id))[0] == 0
    code, out, _ = _run(db_url, "library", "add", "bob", "one-piece")
    assert code == 0 and "already in" in out
    code, out, _ = _run(db_url, "library", "list", "bob")
    assert "one-piece" in out and "One Piece" in out
    assert "removed from" in _run(db_url, "library", "remove", "bob", uuid)[1]
    assert "empty" in _run(db_url, "library", "list", "bob")[1]
    code, _, err = _run(db_url, "library", "add", "nobody", "one-piece")
    assert code == 1 and "no user named 'nobody'" in err and "Traceback" not in err
    code, _, err = _run(db_url, "library", "add", "bob", "no-such-manga")
    assert code == 1 and "no manga 'no-such-manga'" in err


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            return line
        time.sleep(0.05)
    raise AssertionError("no line from listen in time")


def test_server_and_listen_commands_end_to_end(db_url: str, engine: Engine) -> None:
    manga_id = add_manga(engine, "Awesome Manga")
    token = _run(db_url, "users", "add", "reader")[1].strip()
    _run(db_url, "library", "add", "reader", str(manga_id))
    http_port, udp_port = free_port(), free_port(kind=socket.SOCK_DGRAM)
    env = {**os.environ, "DATABASE_URL": db_url, "MANGASYNC_HTTP_PORT": str(http_port),
           "MANGASYNC_UDP_PORT": str(udp_port), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "mangasync_pipeline.cli"]
    server = subprocess.Popen([*cmd, "server"], env=env, stderr=subprocess.PIPE, text=True)
    listen = None
    try:
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if web.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        listen = subprocess.Popen([*cmd, "listen", "--user", "reader"],
                                  env={**env, "MANGASYNC_READER_TOKEN": token},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # What `ps` shows every user of the machine holds no token.
        assert token not in Path(f"/proc/{listen.pid}/cmdline").read_text()
        deadline = time.monotonic() + 10
        while web.get(f"{base}/health").json()["udp"]["sessions"] == 0:
            assert time.monotonic() < deadline, "listen did not register"
            time.sleep(0.1)
        r = web.post(f"{base}/notify/new-chapter", json={
            "manga_id": manga_id, "title": "Awesome Manga", "chapter": "42.5"})
        assert r.json()["online"] == 1
        line = _read_line(listen, 10)
        assert "NEW_CHAPTER" in line and "Awesome Manga" in line and "42.5" in line
        listen.send_signal(signal.SIGINT)
        _, listen_err = listen.communicate(timeout=10)
        assert listen.returncode == 0 and "Traceback" not in listen_err
        server.send_signal(signal.SIGTERM)
        _, server_err = server.communicate(timeout=20)
        assert server.returncode == 0, server_err
        assert "Traceback" not in server_err and "stopped" in server_err
    finally:
        for proc in (listen, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    with engine.connect() as conn:
        assert conn.execute(select(t.notifications.c.read)).scalar_one() is True


@pytest.mark.process
def test_server_refuses_an_unmigrated_database_in_one_line(tmp_path: object) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/empty.sqlite",
           "MANGASYNC_HTTP_PORT": str(free_port()),
           "MANGASYNC_UDP_PORT": str(free_port(kind=socket.SOCK_DGRAM))}
    proc = subprocess.run([sys.executable, "-m", "mangasync_pipeline.cli", "server"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "mangasync migrate" in proc.stderr and "Traceback" not in proc.stderr


def _read_err_until(proc: subprocess.Popen[str], text: str, timeout: float,
                    stream: str = "stderr") -> list[str]:
    """Lines of the process's `stream` up to the first that holds `text`."""
    pipe = getattr(proc, stream)
    assert pipe is not None
    os.set_blocking(pipe.fileno(), False)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = pipe.readline()
        if line:
            lines.append(line)
            if text in line:
                return lines
        else:
            time.sleep(0.05)
    raise AssertionError(f"{text!r} not said within {timeout} s: {lines}")


def test_listen_says_when_no_server_answers_and_connects_once_one_does(
        db_url: str, engine: Engine, tmp_path: Path) -> None:
    from mangasync_pipeline.notify.app import ServerHandle
    from mangasync_pipeline.notify.testing import fast_options, server_settings

    token = _run(db_url, "users", "add", "reader")[1].strip()
    udp_port = free_port(kind=socket.SOCK_DGRAM)
    env = {**os.environ, "DATABASE_URL": db_url, "MANGASYNC_UDP_PORT": str(udp_port)}
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    listen = subprocess.Popen(
        [sys.executable, "-m", "mangasync_pipeline.cli", "listen", "--user", "reader",
         "--token-file", str(token_file)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        started = time.monotonic()
        lines = _read_err_until(listen, "does not answer", 15)
        # Interpreter start-up is not the command's doing: the clock starts at its first line.
        assert len(lines) == 1 and f"127.0.0.1:{udp_port}" in lines[0]
        assert time.monotonic() - started < 15
        time.sleep(3)  # still retrying, and saying nothing more meanwhile
        assert listen.poll() is None
        with ServerHandle(server_settings(db_url, udp_port=udp_port), fast_options()):
            lines = _read_err_until(listen, "listening as reader", 30)
            assert not any("does not answer" in line for line in lines)
    finally:
        listen.send_signal(signal.SIGINT)
        listen.communicate(timeout=10)


def test_master_key_file_is_created_private_and_a_bad_key_is_one_line(
        db_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "state" / "secret.key"
    env = {"DATABASE_URL": db_url, "MANGASYNC_SECRET_KEY_FILE": str(key_file)}
    result = CliRunner().invoke(cli, ["users", "add", "kim"], env=env)
    assert result.exit_code == 0
    assert key_file.stat().st_mode & 0o777 == 0o600
    first = key_file.read_text()
    assert CliRunner().invoke(cli, ["users", "add", "lee"], env=env).exit_code == 0
    assert key_file.read_text() == first  # created once, then reused
    result = CliRunner().invoke(cli, ["users", "add", "max"],
                                env={**env, "MANGASYNC_SECRET_KEY": "too-short"})
    assert result.exit_code == 1
    assert "MANGASYNC_SECRET_KEY" in result.stderr and "too-short" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


UNREACHABLE = "postgresql://postgres:hunter2secret@127.0.0.1:{port}/nope"


@pytest.mark.process
@pytest.mark.parametrize("args", [
    ["migrate"], ["users", "list"], ["initial-sync"], ["backfill", "--from", "2026-01-01"],
    ["server"],
])
def test_an_unreachable_database_is_one_line_without_the_password(args: list[str]) -> None:
    env = {**os.environ, "DATABASE_URL": UNREACHABLE.format(port=free_port()),
           "MANGASYNC_HTTP_PORT": str(free_port()),
           "MANGASYNC_UDP_PORT": str(free_port(kind=socket.SOCK_DGRAM))}
    proc = subprocess.run([sys.executable, "-m", "mangasync_pipeline.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot reach" in lines[0] and "127.0.0.1" in lines[0]
    assert "hunter2secret" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("url", [
    "postgresql://postgres:hunter2secret@127.0.0.1:notaport/db",
    "postgresql+foo://postgres:hunter2secret@127.0.0.1/db",
    "mysql://postgres:hunter2secret@127.0.0.1/db",
    "postgresql:/postgres:hunter2secret@127.0.0.1/db",
])
def test_a_bad_database_url_is_one_line_without_the_password(url: str) -> None:
    result = CliRunner().invoke(cli, ["migrate"], env={"DATABASE_URL": url})
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "DATABASE_URL" in result.stderr and "hunter2secret" not in result.stderr


def test_a_master_key_file_readable_by_others_is_refused_in_one_line(
        db_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "secret.key"
    env = {"DATABASE_URL": db_url, "MANGASYNC_SECRET_KEY_FILE": str(key_file)}
    assert CliRunner().invoke(cli, ["users", "add", "kim"], env=env).exit_code == 0
    key_file.chmod(0o644)
    result = CliRunner().invoke(cli, ["users", "add", "lee"], env=env)
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "0644" in result.stderr and "chmod 600" in result.stderr
    assert key_file.read_text() not in result.stderr


def test_listen_takes_its_token_from_a_private_file_or_the_environment(
        tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("the-readers-token\n")
    token_file.chmod(0o640)
    env = {"MANGASYNC_READER_TOKEN": ""}
    result = CliRunner().invoke(cli, ["listen", "--user", "u", "--token-file", str(token_file)],
                                env=env)
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "0640" in result.stderr and "the-readers-token" not in result.stderr
    result = CliRunner().invoke(cli, ["listen", "--user", "u"], env=env)
    assert result.exit_code == 1
    assert "MANGASYNC_READER_TOKEN" in result.stderr and "--token-file" in result.stderr


@pytest.mark.process
def test_listen_says_who_it_listens_as_before_printing_the_backlog(
        db_url: str, engine: Engine, tmp_path: Path) -> None:
    from mangasync_pipeline.notify.app import ServerHandle
    from mangasync_pipeline.notify.testing import add_manga, fast_options, server_settings

    token = _run(db_url, "users", "add", "reader")[1].strip()
    manga_id = add_manga(engine, "Waiting")
    with ServerHandle(server_settings(db_url), fast_options()) as server:
        # Two notifications wait for the reader, who is offline.
        for n in range(2):
            web.post(f"{server.http_url}/notify/new-manga",
                       json={"manga_id": manga_id, "title": f"Waiting {n}"}).raise_for_status()
        env = {**os.environ, "DATABASE_URL": db_url, "MANGASYNC_READER_TOKEN": token,
               "MANGASYNC_UDP_PORT": str(server.udp_addr[1])}
        listen = subprocess.Popen(
            [sys.executable, "-m", "mangasync_pipeline.cli", "listen", "--user", "reader"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            said = _read_err_until(listen, "Waiting 1", 30, stream="stdout")
        finally:
            listen.send_signal(signal.SIGINT)
            listen.communicate(timeout=10)
    header = next(i for i, line in enumerate(said) if "listening as reader" in line)
    first = next(i for i, line in enumerate(said) if "Waiting" in line)
    assert header < first, said

