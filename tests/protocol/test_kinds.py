"""Frame kinds are declared once (``_protocol/_kinds.py``): the codec's tables and the state
table come from the declarations, and the static frame unions (which type checkers need written
out) are pinned to them here."""

from __future__ import annotations

import typing

import pytest

from trio_realtime._protocol import ClientFrame, ServerFrame, _codec
from trio_realtime._protocol._kinds import DECLARATIONS, FrameKind, register_frame_kind
from trio_realtime._protocol._state import TABLE, Role, State


def declared(role: Role) -> set[type]:
    return {kind.frame for kind in DECLARATIONS if kind.sender is role}


def test_the_static_unions_name_exactly_the_declared_frames() -> None:
    assert set(typing.get_args(ClientFrame)) == declared(Role.CLIENT)
    assert set(typing.get_args(ServerFrame)) == declared(Role.SERVER)


def test_the_tables_hold_exactly_the_declarations() -> None:
    for role in Role:
        kinds = [k for k in DECLARATIONS if k.sender is role]
        for state in State:
            row = {k.frame: k.transitions[state] for k in kinds if state in k.transitions}
            extra = {f for f in TABLE[role, state] if f not in declared(role)}  # other kinds
            assert {f: s for f, s in TABLE[role, state].items() if f not in extra} == row
    types = {**_codec._CLIENT_TYPES, **{f"meta:{k}": d for k, d in _codec._CLIENT_META.items()}}
    assert types["event"] is _codec._upstream_event
    assert types["meta:presence"] is _codec._presence_update


def test_a_kind_is_declared_once_per_sender() -> None:
    class Imposter:
        TYPE = "meta"
        KIND = "presence"

    with pytest.raises(ValueError, match="declared already"):
        register_frame_kind(FrameKind(Imposter, Role.CLIENT, lambda f: Imposter()))
