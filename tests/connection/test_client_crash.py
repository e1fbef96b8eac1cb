"""A client process SIGKILLed while sending and restarted on the same journal: every send that
returned is delivered exactly once, in order."""

from __future__ import annotations

import os
import random
import signal
import sys
from pathlib import Path

import pytest
import trio

from trio_realtime.server import load_or_create_secret, make_token

from .conftest import running_server, url

KILLS = int(os.environ.get("TRIO_REALTIME_CLIENT_KILLS", "5"))
TOTAL = 40 * (KILLS + 1)  # more than the lives before the last can send: none finishes early


@pytest.mark.slow
async def test_sigkilled_client_loses_and_duplicates_nothing(data: Path) -> None:
    rng = random.Random(4)
    secret = load_or_create_secret(os.fspath(data / "server"))
    from trio_realtime.server import HmacAuthenticator

    returned: set[int] = set()
    async with running_server(data, auth=HmacAuthenticator(secret)) as server:
        journal = os.fspath(data / "client")
        for life in range(KILLS + 1):
            read_fd, write_fd = os.pipe()
            proc = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "trio_realtime",
                    "_demo-sender",
                    url(server),
                    journal,
                    make_token(secret, "bob"),
                    str(TOTAL),
                    str(write_fd),
                ],
                pass_fds=[write_fd],
            )
            os.close(write_fd)
            stream = trio.lowlevel.FdStream(read_fd)
            buffer = b""
            target = rng.randrange(5, 30) if life < KILLS else None
            got = 0
            with trio.fail_after(60):
                async for chunk in stream:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    returned.update(int(x) for x in lines if x)
                    got += len(lines)
                    if target is not None and got >= target:
                        proc.send_signal(signal.SIGKILL)
                        break
            await proc.wait()
            # Drain what it wrote before dying: those sends returned too.
            async for chunk in stream:
                buffer += chunk
            returned.update(int(x) for x in buffer.split(b"\n") if x)
            await stream.aclose()
            if target is None:
                assert proc.returncode == 0
            else:
                assert proc.returncode == -signal.SIGKILL
        stored = await server.store.read("demo", 0, 10 * TOTAL)
    numbers = [e.payload["n"] for e in stored]
    assert numbers == list(range(TOTAL)), "lost, duplicated or reordered"
    assert returned <= set(range(1, TOTAL + 1))
    assert len(returned) > KILLS
