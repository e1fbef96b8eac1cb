"""A service with a new meta kind, defined outside the package (examples/custom_service.py, the
docs' example, loaded here): its frames (declared to the protocol), its server half (a handler
registered by kind) and its client half (a Service). It works end to end with no edit to any
module of the package, and with public names only (the client half talks to the connection
through the public ``ServiceHost``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import trio

from trio_realtime import RealtimeConfig, open_realtime
from trio_realtime.server import MemoryStore
from trio_realtime.services import STANDARD_SERVICES
from trio_realtime.testing import open_memory_server

from ._raw import connect, open_front

CONFIG = RealtimeConfig(durability="memory", network_monitor=False)


def _load_example() -> Any:
    """The example's frames, handler and service (examples/custom_service.py and the
    server_handler.py it builds on), loaded once."""
    name = "examples_custom_service"
    if name not in sys.modules:
        examples = Path(__file__).parents[2] / "examples"
        spec = importlib.util.spec_from_file_location(name, examples / "custom_service.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(examples))  # it imports examples/server_handler.py, as a script does
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(examples))
    return sys.modules[name]


example = _load_example()
React, Reacted, Reactions = example.React, example.Reacted, example.Reactions


async def test_a_service_of_a_new_kind_works_end_to_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    services = (*STANDARD_SERVICES, Reactions)
    async with open_memory_server() as server:
        connect = server.connector()
        async with (
            open_realtime(
                server.url, token="bob", config=CONFIG, connector=connect, services=services
            ) as bob,
            open_realtime(
                server.url, token="alice", config=CONFIG, connector=connect, services=services
            ) as alice,
        ):
            await bob.subscribe("room")
            mine = alice.service(Reactions)
            theirs = bob.service(Reactions)
            assert isinstance(mine, Reactions)
            assert isinstance(theirs, Reactions)
            async with theirs.reactions() as heard:
                await mine.react("room", "🎉")
                assert await heard.__anext__() == Reacted("room", "🎉", "alice")
            assert theirs.seen == {"room": [Reacted("room", "🎉", "alice")]}


async def test_the_engine_checks_a_new_kind_before_its_handler() -> None:
    """The channel name of a frame of a new kind is checked by the engine (so is the sender's
    right to subscribe), before any handler sees it."""
    async with open_front("memory", MemoryStore()) as server, connect(server, "alice") as alice:
        await alice.send(React("x" * 300, "🎉").to_wire(), React("room", "👍").to_wire())
        await alice.ping()
        assert [(f["code"], f.get("fatal", False)) for f in alice.errors()] == [
            ("invalid_name", False)
        ]
