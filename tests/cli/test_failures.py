"""Each expected failure of the CLI: exactly one line on stderr, the exit status, no traceback
(``--debug`` adds it)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .terminal import CLI, Server, free_port, run


def one_error(out: subprocess.CompletedProcess[str], status: int = 1) -> str:
    """The one line a failed command wrote on stderr (and nothing else there)."""
    assert out.returncode == status, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("served") / "data") as running:
        yield running


@pytest.fixture
def listener() -> Iterator[int]:
    """A port where something listens that is no realtime server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_serve_on_a_port_in_use(tmp_path: Path, listener: int) -> None:
    out = run("serve", "--port", str(listener), "--data", os.fspath(tmp_path))
    assert one_error(out) == (
        f"trio-realtime serve: error: port {listener} on 127.0.0.1 is already in use (another "
        "server is running there?): stop it, or choose another --port"
    )
    assert out.stdout == ""


def test_debug_adds_the_traceback(tmp_path: Path, listener: int) -> None:
    out = run("serve", "--port", str(listener), "--data", os.fspath(tmp_path), "--debug")
    assert out.returncode == 1
    assert out.stderr.startswith("Traceback")
    assert out.stderr.splitlines()[-1].startswith("trio-realtime serve: error: port ")


def test_serve_on_an_unknown_host(tmp_path: Path) -> None:
    out = run("serve", "--host", "no-such-host.invalid", "--data", os.fspath(tmp_path))
    assert one_error(out).startswith(
        "trio-realtime serve: error: cannot listen on no-such-host.invalid: unknown host ("
    )


def test_a_data_directory_that_cannot_be_one(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    bad = os.fspath(tmp_path / "file" / "data")
    for command in (["serve", "--port", "0"], ["token", "--user", "alice"]):
        out = run(*command, "--data", bad)
        assert one_error(out) == (
            f"trio-realtime {command[0]}: error: cannot use --data {bad}: Not a directory"
        )


def test_token_says_when_it_made_a_new_secret(tmp_path: Path) -> None:
    data = os.fspath(tmp_path / "new")
    out = run("token", "--user", "alice", "--data", data)
    assert out.returncode == 0
    assert out.stderr == (
        f"trio-realtime token: note: made a new token secret in {data}: only a server started "
        f"with --data {data} accepts this token\n"
    )
    again = run("token", "--user", "alice", "--data", data)
    assert (again.returncode, again.stderr) == (0, "")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--name",
            "bob smith/../x",
            "argument --name: 'bob smith/../x' is not a usable name: use 1 to 32 letters, "
            "digits, '.', '_' or '-', starting and ending with a letter or digit",
        ),
        (
            "--room",
            "lobby\x1b[2J",
            "argument --room: 'lobby\\x1b[2J' is not a usable room: use 1 to 64 letters, digits, "
            "'.', '_', ':' or '-', starting and ending with a letter or digit",
        ),
        (
            "--url",
            "http://127.0.0.1:1/realtime",
            "'http://127.0.0.1:1/realtime' is not a usable URL: use ws://HOST:PORT/realtime",
        ),
    ],
)
def test_chat_refuses_a_bad_argument(tmp_path: Path, option: str, value: str, message: str) -> None:
    args = {"--name": "alice", "--room": "lobby", "--url": "ws://127.0.0.1:1/realtime"}
    args[option] = value
    flat = [item for pair in args.items() for item in pair]
    out = run("chat", *flat, "--data", os.fspath(tmp_path))
    status = 1 if option == "--url" else 2  # a URL is checked when used
    suffix = "" if status == 1 else " (see trio-realtime chat --help)"
    assert one_error(out, status) == f"trio-realtime chat: error: {message}{suffix}"
    assert not (tmp_path / "chat").exists()  # nothing made of the bad name


def test_chat_to_an_unknown_host(tmp_path: Path) -> None:
    url = "ws://no-such-host.invalid:8765/realtime"
    out = run("chat", "--name", "alice", "--url", url, "--data", os.fspath(tmp_path))
    assert one_error(out).startswith(
        f"trio-realtime chat: error: cannot reach {url}: unknown host 'no-such-host.invalid' ("
    )


def test_chat_where_nothing_listens_and_no_server_may_start(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/realtime"
    data = os.fspath(tmp_path)
    out = run("chat", "--name", "alice", "--url", url, "--no-embedded-server", "--data", data)
    assert one_error(out) == f"trio-realtime chat: error: cannot reach {url}: connection refused"


def test_chat_to_something_that_is_no_realtime_server(tmp_path: Path, listener: int) -> None:
    url = f"ws://127.0.0.1:{listener}/realtime"
    out = run("chat", "--name", "alice", "--url", url, "--connect-timeout", "0.5", "--token", "t")
    assert one_error(out).startswith(
        f"trio-realtime chat: error: cannot connect to {url} within 0.5 s: "
    )


def test_chat_with_a_refused_token(server: Server) -> None:
    out = run("chat", "--name", "alice", "--url", server.url, "--token", "not-a-token")
    assert one_error(out) == (
        f"trio-realtime chat: error: the server at {server.url} refused the --token (4001): it "
        "expired, or was made for another server"
    )
    assert "refused a token" in server.log_text()  # and the server said so


def test_chat_with_the_data_of_another_server(server: Server, tmp_path: Path) -> None:
    other = os.fspath(tmp_path / "other")
    assert run("token", "--user", "x", "--data", other).returncode == 0  # another secret
    out = run("chat", "--name", "alice", "--url", server.url, "--data", other)
    assert one_error(out) == (
        f"trio-realtime chat: error: the server at {server.url} refused the token made from the "
        f"secret in {other} (4001): give the --data the server was started with, or a --token it "
        "accepts"
    )


def test_chat_with_a_data_directory_holding_no_secret(server: Server, tmp_path: Path) -> None:
    empty = os.fspath(tmp_path / "empty")
    out = run("chat", "--name", "alice", "--url", server.url, "--data", empty)
    assert one_error(out) == (
        f"trio-realtime chat: error: no token secret in {empty} (server.secret is missing): give "
        "the --data the server was started with, or a --token"
    )
    assert not os.path.exists(os.path.join(empty, "server.secret"))  # no second secret made


def test_a_second_chat_with_the_same_name(server: Server) -> None:
    args = ["chat", "--name", "alice", "--url", server.url, "--data", server.data]
    first = subprocess.Popen(
        [*CLI, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout is not None
        for line in first.stdout:  # (its journal is open once it says where you are)
            if "you are alice" in line:
                break
        out = run(*args)
        journal = os.path.join(server.data, "chat", "alice")
        assert one_error(out) == (
            f"trio-realtime chat: error: alice is already chatting here (process {first.pid} "
            f"holds the journal {journal}): close that chat, or choose another --name"
        )
    finally:
        assert first.stdin is not None
        first.stdin.close()  # the end of its input: it leaves
        assert first.wait(30) == 0
        assert first.stdout is not None
        first.stdout.close()


def test_help_shows_the_defaults() -> None:
    serve = run("serve", "--help").stdout
    assert "(default: 8765)" in serve
    assert "(default: INFO)" in serve
    chat = run("chat", "--help").stdout
    assert "(default: lobby)" in chat
    assert "(default: 20)" in chat
    assert "(default: ws://127.0.0.1:8765/realtime)" in chat


def test_a_second_server_on_the_same_data(server: Server) -> None:
    """Two servers on one store would each number the channels' events: refused."""
    out = run("serve", "--port", str(free_port()), "--data", server.data)
    assert one_error(out).startswith("trio-realtime serve: error: another server (process ")
    assert one_error(out).endswith(
        f") already uses --data {server.data}: stop it, or choose another --data"
    )


def test_a_chat_with_a_wrong_port_does_not_start_a_second_server(server: Server) -> None:
    url = f"ws://127.0.0.1:{free_port()}/realtime"
    out = run("chat", "--name", "alice", "--url", url, "--data", server.data)
    line = one_error(out)
    assert line.startswith("trio-realtime chat: error: a server (process ")
    assert line.endswith("check --url (it must be that server's)")


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_on_a_port_that_is_none(tmp_path: Path, port: str) -> None:
    out = run("serve", "--port", port, "--data", os.fspath(tmp_path))
    assert out.returncode == 2
    assert "argument --port" in out.stderr
    assert "Traceback" not in out.stderr
