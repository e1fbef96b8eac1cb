"""The trio-realtime command line."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import trio_realtime
from trio_realtime._cli import main
from trio_realtime._journal import open_journal


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_realtime", *args], capture_output=True, text=True, timeout=60
    )


def test_version_and_help() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"trio-realtime {trio_realtime.__version__}"
    out = run("--help")
    assert out.returncode == 0
    assert "journal" in out.stdout


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: trio-realtime" in capsys.readouterr().out


async def test_journal_inspect(tmp_path: Path) -> None:
    directory = os.fspath(tmp_path / "j")
    async with open_journal(directory) as journal:
        for seq in range(1, 6):
            await journal.append(seq, b"{}")
        await journal.ack(2)
        await journal.set_cursor("room:1", 17, "e1")
    out = run("journal", "inspect", directory)
    assert out.returncode == 0, out.stderr
    assert "last_seq:   5" in out.stdout
    assert "ack_seq:    2" in out.stdout
    assert "pending:    3" in out.stdout
    assert "room:1 offset=17 epoch=e1" in out.stdout


def test_journal_inspect_reports_errors(tmp_path: Path) -> None:
    out = run("journal", "inspect", os.fspath(tmp_path / "missing"))
    assert out.returncode == 1
    assert out.stderr.startswith("trio-realtime journal: error: ")
    assert len(out.stderr.splitlines()) == 1


def test_token_is_accepted_by_a_server_with_the_same_data(tmp_path: Path) -> None:
    from trio_realtime.server import HmacAuthenticator, load_or_create_secret

    data = os.fspath(tmp_path / "server")
    out = run("token", "--user", "alice", "--data", data)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    identity = HmacAuthenticator(load_or_create_secret(data)).verify(token)
    assert identity is not None
    assert (identity.user, identity.subscribe, identity.publish) == ("alice", None, None)
    assert identity.expires_at == pytest.approx(time.time() + 30 * 24 * 3600, abs=60)
    assert HmacAuthenticator(b"another secret").verify(token) is None


def test_token_carries_channel_claims_and_a_ttl(tmp_path: Path) -> None:
    from trio_realtime.server import Action, HmacAuthenticator, load_or_create_secret

    data = os.fspath(tmp_path / "server")
    out = run("token", "--user", "alice", "--data", data, "--channels", "room:*", "--ttl", "1h")
    assert out.returncode == 0, out.stderr
    identity = HmacAuthenticator(load_or_create_secret(data)).verify(out.stdout.strip())
    assert identity is not None
    assert identity.user == "alice"
    assert identity.subscribe == identity.publish == ("room:*",)
    assert identity.expires_at == pytest.approx(time.time() + 3600, abs=60)
    assert identity.allows(Action.PUBLISH, "room:1")
    assert not identity.allows(Action.SUBSCRIBE, "lobby")


def test_token_subscribe_and_publish_patterns_add_to_channels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trio_realtime.server import HmacAuthenticator, load_or_create_secret

    data = os.fspath(tmp_path / "server")
    args = ["token", "--user", "bob", "--data", data, "--channels", "room:*"]
    assert main([*args, "--subscribe", "lobby", "--publish", "bob:*", "--ttl", "90"]) == 0
    auth = HmacAuthenticator(load_or_create_secret(data))
    identity = auth.verify(capsys.readouterr().out.strip())
    assert identity is not None
    assert identity.subscribe == ("room:*", "lobby")
    assert identity.publish == ("room:*", "bob:*")
    assert identity.expires_at == pytest.approx(time.time() + 90, abs=30)
    # Only --subscribe: publishing is allowed nowhere.
    assert main(["token", "--user", "eve", "--data", data, "--subscribe", "news:*"]) == 0
    identity = auth.verify(capsys.readouterr().out.strip())
    assert identity is not None
    assert (identity.subscribe, identity.publish) == (("news:*",), ())


@pytest.mark.parametrize(
    ("ttl", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800)]
)
def test_token_ttl_units(ttl: str, seconds: int) -> None:
    from trio_realtime._cli import build_parser

    args = build_parser().parse_args(["token", "--user", "a", "--ttl", ttl])
    assert args.ttl == seconds


@pytest.mark.parametrize(
    "ttl", ["1x", "h", "1.5h", "-1h", "0", "0d", "3651d", " 1h", "1H", "\u0661h"]
)
def test_token_bad_ttl_exits_2_with_one_error_line(tmp_path: Path, ttl: str) -> None:
    out = run("token", "--user", "alice", "--data", os.fspath(tmp_path), "--ttl", ttl)
    assert out.returncode == 2
    assert out.stdout == ""
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, out.stderr
    assert errors[0].startswith("trio-realtime token: error: argument --ttl:")
    assert "Traceback" not in out.stderr


def test_demo_proves_nothing_lost_or_duplicated() -> None:
    out = run("demo", "--messages", "150")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lost:        0" in out.stdout
    assert "duplicated:  0" in out.stdout
    assert "OK: nothing lost, nothing duplicated" in out.stdout
    assert "SIGKILLed" in out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Chat:
    """A ``trio-realtime chat`` process, its output read line by line."""

    def __init__(self, name: str, url: str, data: Path) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trio_realtime",
                "chat",
                "--name",
                name,
                "--url",
                url,
                "--data",
                os.fspath(data),
                "--room",
                "lobby",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        stdout = self.proc.stdout
        assert stdout is not None
        self.reader = threading.Thread(
            target=lambda: [self.lines.put(x) for x in stdout], daemon=True
        )
        self.reader.start()

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} never appeared in {self.name}'s output: {self.seen}")

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> list[str]:
        """End the input, wait for a clean exit; everything it printed."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            assert self.proc.wait(30) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)  # it ends at the end of the output
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen


def test_chat_starts_an_embedded_server_and_shows_each_message_once(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{_free_port()}/realtime"
    alice = Chat("alice", url, tmp_path)
    try:
        alice.wait_for("this chat runs the server")
        alice.wait_for("you are alice in lobby")
        alice.type("hello there")
        alice.wait_for("alice: hello there")
    finally:
        seen = alice.finish()
    assert sum("alice: hello there" in line for line in seen) == 1  # shown once


def test_chat_without_a_terminal_writes_plain_lines(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{_free_port()}/realtime"
    alice = Chat("alice", url, tmp_path)
    try:
        alice.wait_for("you are alice")
        bob = Chat("bob", url, tmp_path)  # finds alice's embedded server running
        try:
            bob.wait_for("alice is here")
            alice.wait_for("bob is here")
            bob.type("hi alice")
            alice.wait_for("bob: hi alice")
            bob.wait_for("seen by alice")  # alice's chat marks what it shows as read
            bob.type("/away")
            alice.wait_for("bob is away")
            bob.type("/who")
            bob.wait_for("* in lobby: alice, bob (you) (away)")
        finally:
            seen = bob.finish()
        alice.wait_for("bob left")
    finally:
        seen += alice.finish()
    assert not [line for line in seen if "\x1b" in line]  # no colours, no cursor moves


def test_serve_refuses_a_bad_option_with_a_clear_message() -> None:
    out = run("serve", "--port", "0", "--presence-timeout", "-1")
    assert out.returncode == 2
    assert "presence_timeout: must be a positive number" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_rate_limit_and_send_queue_bytes_are_checked() -> None:
    out = run("serve", "--port", "0", "--rate-limit", "0")
    assert out.returncode == 2
    assert "rate_limit: must be a positive number" in out.stderr
    out = run("serve", "--port", "0", "--send-queue-bytes", "0")
    assert out.returncode == 2
    assert "send_queue_bytes: must be a positive integer" in out.stderr


def test_default_data_is_under_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trio_realtime._cli import build_parser

    monkeypatch.setenv("XDG_DATA_HOME", os.fspath(tmp_path))
    parser = build_parser()
    data = os.fspath(tmp_path / "trio-realtime")
    assert parser.parse_args(["serve"]).data == os.path.join(data, "server")
    assert parser.parse_args(["token", "--user", "a"]).data == os.path.join(data, "server")
    # chat, serve and token share one data directory.
    assert parser.parse_args(["chat", "--name", "a"]).data == os.path.join(data, "server")


def test_chat_journals_have_safe_names_and_old_ones_are_kept(tmp_path: Path) -> None:
    from trio_realtime._chat import chat_journal_dir

    data = os.fspath(tmp_path)
    assert chat_journal_dir(data, "alice") == os.path.join(data, "chat", "alice")
    assert chat_journal_dir(data, "Bob Smith") == os.path.join(data, "chat", "Bob_Smith")
    assert chat_journal_dir(data, "../x") == os.path.join(data, "chat", ".._x")
    (tmp_path / "chat" / "Bob Smith").mkdir(parents=True)  # an earlier version's journal
    assert chat_journal_dir(data, "Bob Smith") == os.path.join(data, "chat", "Bob Smith")


def test_serve_takes_the_node_lease_and_poll_interval() -> None:
    """``--node-lease`` and ``--node-poll-interval`` reach the server's config (by default the
    config's own); a bad one is refused like the other timings."""
    from trio_realtime._cli import _server_config, build_parser
    from trio_realtime.server import ServerConfig

    parser = build_parser()
    config = _server_config(parser.parse_args(["serve"]))
    assert (config.node_lease, config.node_poll_interval) == (
        ServerConfig().node_lease,
        ServerConfig().node_poll_interval,
    )
    args = parser.parse_args(["serve", "--node-lease", "3", "--node-poll-interval", "0.25"])
    config = _server_config(args)
    assert (config.node_lease, config.node_poll_interval) == (3.0, 0.25)
    for option in ("--node-lease", "--node-poll-interval"):
        out = run("serve", "--port", "0", option, "0")
        assert out.returncode == 2
        assert f"{option[2:].replace('-', '_')}: must be a positive number" in out.stderr
