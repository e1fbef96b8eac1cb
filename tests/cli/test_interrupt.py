"""Ctrl-C typed in a terminal ends ``chat`` and ``serve`` within a second, with status 130, no
traceback, and the terminal as it was."""

from __future__ import annotations

import os
import termios
import time
from pathlib import Path

from .terminal import Server, Terminal, free_port


def interrupt(terminal: Terminal) -> float:
    """Type Ctrl-C; the seconds until the process exited with 130."""
    started = time.monotonic()
    terminal.interrupt()
    status = terminal.wait(within=10)
    elapsed = time.monotonic() - started
    assert status == 130, terminal.text
    assert "Traceback" not in terminal.text
    assert "KeyboardInterrupt" not in terminal.text
    return elapsed


def test_ctrl_c_ends_a_chat_hosting_the_server_and_one_typing(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/realtime"
    data = os.fspath(tmp_path / "data")
    chat = ["chat", "--url", url, "--data", data]
    with Terminal([*chat, "--name", "alice"], label="alice") as alice:
        alice.expect("this chat runs the server")
        bob = Terminal([*chat, "--name", "bob"], label="bob")
        bob.expect("alice is here")
        alice.expect("bob is here")
        bob.type("half a line")
        alice.wait_until(lambda: "bob is typing" in alice.input_line(), "bob typing")
        # alice's chat runs the server bob is connected to: it still ends at once.
        assert interrupt(alice) < 1.0
        assert interrupt(bob) < 1.0
        for terminal in (alice, bob):
            mode = termios.tcgetattr(terminal._master)  # the pty's settings, as the chat left them
            assert mode[3] & termios.ICANON
            assert mode[3] & termios.ECHO
        bob.close()
    assert "half a line" not in alice.text  # never sent


def test_ctrl_c_ends_serve_with_a_client_connected(tmp_path: Path) -> None:
    data = os.fspath(tmp_path / "data")
    with Terminal(["serve", "--data", data, "--port", "0"], label="serve") as serve:
        serve.expect("trio-realtime server on ws://127.0.0.1:")
        port = serve.text.split("ws://127.0.0.1:", 1)[1].split("/", 1)[0]
        url = f"ws://127.0.0.1:{port}/realtime"
        with Terminal(["chat", "--name", "alice", "--url", url, "--data", data]) as alice:
            alice.expect("you are alice")
            serve.expect("alice connected")
            assert interrupt(serve) < 1.0
            alice.expect("lost the connection")
    assert "stopped (Ctrl-C)" in serve.text


def test_serve_logs_connections_and_refused_tokens(tmp_path: Path) -> None:
    with Server(tmp_path / "data") as server:
        assert "serving ws://127.0.0.1:" in server.log_text()  # the banner
        with Terminal(
            ["chat", "--name", "bob", "--url", server.url, "--token", "forged"], label="bob"
        ) as bob:
            assert bob.wait() == 1
        with Terminal(["chat", "--name", "alice", "--url", server.url, "--data", server.data]) as a:
            a.expect("you are alice")
            a.line("/quit")
            assert a.wait() == 0
    log = server.log_text()
    assert "WARNING refused a token (client " in log
    assert "INFO alice connected (client " in log
    assert "INFO alice disconnected (client " in log
