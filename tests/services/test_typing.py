"""Typing indicators, timed exactly under trio's MockClock against the reference server in memory."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_realtime import ConfigError, open_realtime
from trio_realtime._protocol import Typing
from trio_realtime.services import TypingService

from .conftest import MEMORY, URL, MemoryServer, memory_server, next_item


def typing_frames(ms: MemoryServer, user: str, t0: float) -> list[tuple[float, bool]]:
    return [(round(t - t0, 6), f.typing) for t, f in ms.frames(user, Typing)]  # type: ignore[union-attr]


async def test_repeated_true_within_the_refresh_interval_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        memory_server() as ms,
        ms.client("alice") as alice,
    ):
        t0 = trio.current_time()
        for at in (0.0, 1.0, 2.9, 3.0, 3.5, 5.99, 6.0):  # typing_refresh_interval is 3 s
            await trio.sleep_until(t0 + at)
            await alice.typing.set("room", True)
        await alice.typing.set("room", False)
        await alice.typing.set("room", False)  # already stopped: nothing
        await ms.wait_frames("alice", Typing, 4)
        await trio.sleep(1)
        assert typing_frames(ms, "alice", t0) == [
            (0.0, True),
            (3.0, True),
            (6.0, True),
            (6.0, False),
        ]


async def test_flag_expires_on_the_receiver_after_typing_timeout_unless_refreshed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        memory_server() as ms,
        ms.client("alice") as alice,
        ms.client("bob") as bob,
    ):
        await bob.subscribe("room")
        changes = bob.typing.changes("room")
        assert await next_item(changes) == frozenset()
        t0 = trio.current_time()
        await alice.typing.set("room", True)
        assert await next_item(changes) == {"alice"}
        seen_at = trio.current_time()
        assert seen_at == t0  # in memory: relayed without delay
        # Not refreshed: gone exactly typing_timeout (6 s) later.
        assert await next_item(changes) == frozenset()
        assert trio.current_time() - seen_at == 6.0
        # Refreshed after 4 s (past the 3 s refresh interval): expires 6 s after the refresh.
        await alice.typing.set("room", True)
        assert await next_item(changes) == {"alice"}
        first = trio.current_time()
        await trio.sleep(4)
        await alice.typing.set("room", True)
        assert await next_item(changes) == frozenset()
        assert trio.current_time() - first == 10.0
        assert bob.typing.users("room") == frozenset()


async def test_flag_cleared_by_a_message_from_the_typist_and_by_its_disconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        memory_server() as ms,
        ms.client("bob") as bob,
    ):
        await bob.subscribe("room")
        changes = bob.typing.changes("room")
        assert await next_item(changes) == frozenset()
        async with open_realtime(
            URL, config=MEMORY, token="alice", connector=ms.connector("alice")
        ) as alice:
            await alice.typing.set("room", True)
            assert await next_item(changes) == {"alice"}
            t0 = trio.current_time()
            await alice.send("room", "chat", {"text": "hi"})
            assert await next_item(changes) == frozenset()
            assert trio.current_time() == t0  # with the message, not at the timeout
            # The send ended alice's flag on her side too: the next True goes out at once.
            await alice.typing.set("room", True)
            assert await next_item(changes) == {"alice"}
            t1 = trio.current_time()
        # alice's connection closed: the server relays that she stopped.
        assert await next_item(changes) == frozenset()
        assert trio.current_time() - t1 < 6.0
        assert [f.typing for _, f in ms.frames("alice", Typing)] == [True, True]  # type: ignore[union-attr]


async def test_typist_never_sees_itself_and_other_channels_are_apart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        memory_server() as ms,
        ms.client("alice") as alice,
        ms.client("bob") as bob,
    ):
        for conn in (alice, bob):
            await conn.subscribe("room")
            await conn.subscribe("other")
        bob_room = bob.typing.changes("room")
        assert await next_item(bob_room) == frozenset()
        await alice.typing.set("room", True)
        assert await next_item(bob_room) == {"alice"}
        assert bob.typing.users("other") == frozenset()
        assert alice.typing.users("room") == frozenset()


async def test_bad_arguments_raise_typed_errors() -> None:
    async with (
        memory_server() as ms,
        ms.client("a") as conn,
    ):
        with pytest.raises(ValueError, match="channel"):
            await conn.typing.set("", True)
        with pytest.raises(TypeError, match="bool"):
            await conn.typing.set("room", "yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        TypingService(timeout=2.0, refresh_interval=2.0)
    assert info.value.option == "refresh_interval"
    with pytest.raises(ConfigError) as info:
        TypingService(timeout=0)
    assert info.value.option == "timeout"
