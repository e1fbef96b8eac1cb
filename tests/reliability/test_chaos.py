"""The short chaos run of the default test session (``nox -s chaos`` runs the full one)."""

from __future__ import annotations

import os

from reliability.chaos import chaos

MESSAGES = int(os.environ.get("TRIO_REALTIME_CHAOS_MESSAGES", "1000"))


async def test_short_chaos_run_loses_duplicates_and_reorders_nothing() -> None:
    result = await chaos(MESSAGES, client_kills=4, server_kills=1)
    run = result["chaos"]
    assert run["stored"] == 2 * MESSAGES
    assert run["lost"] == run["duplicated"] == run["reordered"] == 0
    assert run["returned_sends_missing"] == 0
    assert run["not_delivered"] == run["duplicated_within_a_process"] == 0
    assert run["reordered_at_receiver"] == run["gaps"] == 0
    # Alice commits each message: a kill repeats at most the one she was handling. (Bob does
    # not: what he handled in the last MARK_DELAY may come again, which the run only counts.)
    assert run["redelivered_after_receiver_kill"] <= run["client_kills"]["alice"]
    assert sum(run["client_kills"].values()) == 4
    assert run["server_kills"] == 1
    assert run["connection_resets"] > 0
    assert result["ok"]
