"""The "Try it by hand" steps of docs/quickstart.md, run as written (in a fresh directory, the
server on a free port instead of 8765, which the chat finds through ``$TRIO_REALTIME_URL``)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from trio_realtime.server import HmacAuthenticator, load_or_create_secret

from .terminal import CLI, Terminal, free_port

QUICKSTART = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"


def steps() -> list[str]:
    """The commands of the first shell block under "## Try it by hand", comments dropped."""
    section = QUICKSTART.read_text(encoding="utf-8").split("## Try it by hand", 1)
    assert len(section) == 2, "docs/quickstart.md has no 'Try it by hand' section"
    block = re.search(r"```(?:sh|bash|console)\n(.*?)```", section[1], re.S)
    assert block is not None, "no shell block under 'Try it by hand'"
    commands = [line.split(" #", 1)[0].strip() for line in block[1].splitlines()]
    return [command for command in commands if command and not command.startswith("#")]


def test_the_quickstart_steps_run_as_written(tmp_path: Path) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/realtime"
    ran: list[str] = []
    servers: list[subprocess.Popen[str]] = []
    try:
        for step in steps():
            background = step.endswith("&")
            words = shlex.split(step.rstrip("&"))
            assert words[0] == "trio-realtime", f"not a trio-realtime command: {step!r}"
            command, args = words[1], words[2:]
            if command == "serve":
                assert background, f"the server must run in the background: {step!r}"
                server = subprocess.Popen(
                    [*CLI, *words[1:], "--port", str(port)],
                    cwd=tmp_path,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                servers.append(server)
                assert server.stdout is not None
                banner = server.stdout.readline()
                assert f"trio-realtime server on {url}" in banner, (step, banner)
            elif command == "token":
                out = subprocess.run(
                    [*CLI, *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=60
                )
                assert out.returncode == 0, (step, out.stderr)
                data = args[args.index("--data") + 1] if "--data" in args else None
                assert data is not None, f"the token needs the server's --data: {step!r}"
                secret = load_or_create_secret(os.fspath(tmp_path / data))
                identity = HmacAuthenticator(secret).verify(out.stdout.strip())
                assert identity is not None, "the server would refuse this token"
                assert identity.user == args[args.index("--user") + 1]
            elif command == "chat":
                with Terminal(
                    words[1:], cwd=tmp_path, env={"TRIO_REALTIME_URL": url}, label=step
                ) as chat:
                    chat.expect("you are ")
                    chat.line("hello from the quickstart")
                    chat.expect(": hello from the quickstart")
                    chat.line("/quit")
                    assert chat.wait() == 0, chat.text
                    if servers:  # it used the server started above, with its token secret
                        assert "runs the server" not in chat.text
            else:
                raise AssertionError(f"the test does not know how to check {step!r}")
            ran.append(command)
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
            assert server.stdout is not None
            server.stdout.close()
    assert "chat" in ran, ran
