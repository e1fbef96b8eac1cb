"""Two people chatting, each in a terminal: history on joining, messages, /who, /me, typing shown
while a line is composed and cleared when it is sent or erased, presence, /quit; and a chat that
takes over the server when the chat that ran it leaves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trio_realtime._chat import LineEditor, chat_journal_dir, check_name, clean

from .terminal import Terminal, free_port


def test_two_people_chat_in_terminals(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/realtime"
    chat = ["chat", "--url", url, "--data", os.fspath(tmp_path / "data"), "--history", "2"]
    with Terminal([*chat, "--name", "alice"], label="alice") as alice:
        alice.expect("this chat runs the server")
        alice.expect("you are alice in lobby")
        for text in ("first, not shown to bob", "second", "third"):
            alice.line(text)
            alice.expect(f"alice: {text}")
        with Terminal([*chat, "--name", "bob"], label="bob") as bob:
            # History on joining: the room's last two messages, then bob is live.
            bob.expect("the last 2 messages of lobby:")
            bob.expect("alice: second")
            bob.expect("alice: third")
            bob.expect("you are bob in lobby")
            bob.expect("alice is here")
            assert "first, not shown" not in bob.text
            alice.expect("bob is here")

            # Typing is shown while bob composes a line, and cleared when he sends it.
            bob.type("hello al")
            alice.wait_until(lambda: "(bob is typing)" in alice.input_line(), "bob typing")
            bob.line("ice")
            alice.expect("bob: hello alice")
            alice.wait_until(lambda: "typing" not in alice.input_line(), "typing cleared")
            bob.expect("bob: hello alice")  # his own message, shown once it is in the room
            bob.expect("seen by alice")  # alice's chat marks what it showed as read

            # ... and when he erases it (Ctrl-U) instead.
            bob.type("never mind")
            alice.wait_until(lambda: "bob is typing" in alice.input_line(), "typing again")
            bob.type("\x15")
            alice.wait_until(lambda: "typing" not in alice.input_line(), "typing erased")

            bob.line("/who")
            bob.expect("in lobby: alice, bob (you)")
            bob.line("/me waves")
            alice.expect("* bob waves")
            bob.line("\x1b[31mred\x0c alert\x07")  # escape sequences and control keys dropped
            alice.expect("bob: red alert")
            alice.line("/away")
            bob.expect("alice is away")
            bob.line("/nope")
            bob.expect("unknown command /nope: /help lists them")
            bob.line("/quit")
            assert bob.wait() == 0
            alice.expect("bob left")
        for line in alice.text.splitlines():  # alice never sees herself come and go
            assert "alice is here" not in line
            assert "alice left" not in line
        alice.line("/quit")
        assert alice.wait() == 0
    assert alice.text.count("bob: hello alice") == 1  # each message shown once


def test_a_chat_takes_over_the_server_when_its_host_leaves(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/realtime"
    chat = ["chat", "--url", url, "--data", os.fspath(tmp_path / "data")]
    with Terminal([*chat, "--name", "alice"], label="alice") as alice:
        alice.expect("you are alice")
        with Terminal([*chat, "--name", "bob"], label="bob") as bob:
            bob.expect("alice is here")
            alice.line("bye, I run the server")
            bob.expect("alice: bye, I run the server")
            alice.line("/quit")
            alice.expect("one of their chats takes it over")
            assert alice.wait() == 0
            bob.expect("alice's chat, which ran the server, has ended: this chat runs it now")
            bob.expect("connected again")
            bob.line("still here")
            bob.expect("bob: still here")
            with Terminal([*chat, "--name", "carol"], label="carol") as carol:
                carol.expect("alice: bye, I run the server")  # the same data: the same history
                carol.expect("bob: still here")
                carol.expect("bob is here")
                carol.line("/quit")
                assert carol.wait() == 0
            bob.line("/quit")
            assert bob.wait() == 0


def test_names_are_checked_and_make_safe_journal_paths(tmp_path: Path) -> None:
    for good in ("alice", "Bob.Smith", "x", "a-b_c.9"):
        assert check_name(good) == good
        assert chat_journal_dir(os.fspath(tmp_path), good) == os.fspath(tmp_path / "chat" / good)
    for bad in ("", "bob smith", "../x", "a/b", ".hidden", "bob_", "-x", "a" * 33, "é"):
        with pytest.raises(ValueError, match="is not a usable name"):
            check_name(bad)


def test_control_characters_are_stripped() -> None:
    assert clean("a\x1b[2Jb\x0cc\x07") == "a[2Jbc"  # ESC, form feed, bell gone
    assert clean("tab\there\nnext") == "tab here next"
    assert clean("rtl\u202eoverride") == "rtloverride"
    assert clean("family 👨\u200d👩\u200d👧") == "family 👨\u200d👩\u200d👧"  # emoji kept whole
    assert len(clean("x" * 5000)) == 2000


def test_the_line_editor() -> None:
    editor = LineEditor()
    assert editor.feed("hel\x7flo") == []
    assert editor.buffer == "helo"
    assert editor.feed("\x1b[D\x1bOA world\x0c") == []  # arrows ignored, Ctrl-L not typed
    assert editor.buffer == "helo world"
    assert editor.feed("\x17") == []  # Ctrl-W
    assert editor.buffer == "helo "
    assert editor.feed("there\r") == ["helo there"]
    assert editor.buffer == ""
    assert editor.feed("x\x04") == []  # Ctrl-D ends only an empty line
    assert editor.feed("\x15\x04") == [None]
