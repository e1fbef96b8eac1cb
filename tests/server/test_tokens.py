"""Tokens and channel authorization: make_token/verify in both formats, claims, expiry, tampering,
malformed input, and the two authenticators."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import orjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from trio_realtime.server._auth import (
    MAX_TOKEN_CHARS,
    SECRET_NAME,
    Action,
    AllowAll,
    HmacAuthenticator,
    Identity,
    load_or_create_secret,
    make_token,
)

SECRET = b"k" * 32
NOW = 1_700_000_000.0
AUTH = HmacAuthenticator(SECRET)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def resign(body: str, secret: bytes = SECRET) -> str:
    """A token for ``body`` with a correct signature (to reach the checks after it)."""
    import hashlib
    import hmac

    return f"{body}.{b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}"


def test_a_token_without_claims_keeps_the_original_format_and_allows_every_channel() -> None:
    token = make_token(SECRET, "alice", ttl=60, now=NOW)
    user, expiry, _ = token.split(".")
    assert base64.urlsafe_b64decode(user + "==") == b"alice"
    assert expiry == str(int(NOW + 60))
    assert AUTH.verify(token, now=NOW) == Identity("alice", NOW + 60)


def test_a_token_made_by_the_previous_release_still_verifies() -> None:
    # What make_token produced before claims existed: b64(user).expiry.b64(hmac(body)).
    token = resign(f"{b64('bøb'.encode())}.{int(NOW) + 10}")
    identity = AUTH.verify(token, now=NOW)
    assert identity == Identity("bøb", NOW + 10, None, None)
    assert identity is not None
    assert identity.allows(Action.PUBLISH, "anything")
    assert identity.allows(Action.SUBSCRIBE, "anything")


def test_a_token_with_claims_round_trips() -> None:
    token = make_token(
        SECRET, "alice", ttl=3600, now=NOW, subscribe=["room:*", "lobby"], publish=["room:1"]
    )
    head, payload, _ = token.split(".")
    assert head == "v2"
    assert orjson.loads(base64.urlsafe_b64decode(payload + "==")) == {
        "u": "alice",
        "exp": int(NOW) + 3600,
        "sub": ["room:*", "lobby"],
        "pub": ["room:1"],
    }
    assert AUTH.verify(token, now=NOW) == Identity(
        "alice", NOW + 3600, ("room:*", "lobby"), ("room:1",)
    )


def test_a_claim_left_out_allows_every_channel_and_an_empty_one_none() -> None:
    identity = AUTH.verify(make_token(SECRET, "a", now=NOW, subscribe=["room:*"]), now=NOW)
    assert identity is not None
    assert identity.publish is None
    assert identity.allows(Action.PUBLISH, "lobby")
    identity = AUTH.verify(make_token(SECRET, "a", now=NOW, subscribe=[], publish=[]), now=NOW)
    assert identity is not None
    assert (identity.subscribe, identity.publish) == ((), ())
    assert not identity.allows(Action.SUBSCRIBE, "lobby")
    assert not identity.allows(Action.PUBLISH, "")


def test_glob_patterns_match_whole_channel_names_case_sensitively() -> None:
    identity = Identity("a", subscribe=("room:*", "dm:alice:?"), publish=())
    assert identity.allows(Action.SUBSCRIBE, "room:1")
    assert identity.allows(Action.SUBSCRIBE, "room:")
    assert identity.allows(Action.SUBSCRIBE, "dm:alice:x")
    assert not identity.allows(Action.SUBSCRIBE, "lobby")
    assert not identity.allows(Action.SUBSCRIBE, "ROOM:1")
    assert not identity.allows(Action.SUBSCRIBE, "xroom:1")
    assert not identity.allows(Action.SUBSCRIBE, "dm:alice:xy")


def test_a_subscribe_only_token_cannot_publish() -> None:
    token = make_token(SECRET, "reader", now=NOW, subscribe=["room:*"], publish=[])
    identity = AUTH.verify(token, now=NOW)
    assert identity is not None
    assert identity.allows(Action.SUBSCRIBE, "room:1")
    assert not identity.allows(Action.PUBLISH, "room:1")


def test_identity_patterns_are_tuples_and_a_lone_string_is_refused() -> None:
    assert Identity("a", subscribe=["x"]).subscribe == ("x",)
    with pytest.raises(TypeError):
        Identity("a", publish="room:*")
    with pytest.raises(TypeError):
        make_token(SECRET, "a", subscribe="room:*")
    with pytest.raises(ValueError):
        make_token(SECRET, "")


def test_the_expiry_is_enforced() -> None:
    for token in (
        make_token(SECRET, "alice", ttl=60, now=NOW),
        make_token(SECRET, "alice", ttl=60, now=NOW, publish=["x"]),
    ):
        assert AUTH.verify(token, now=NOW + 59) is not None
        assert AUTH.verify(token, now=NOW + 60) is None
        assert AUTH.verify(token, now=NOW + 3600) is None
    assert AUTH.verify(make_token(SECRET, "alice", ttl=-1)) is None
    assert AUTH.verify(make_token(SECRET, "alice", ttl=60)) is not None  # against the clock


def test_another_secret_is_refused() -> None:
    for token in (make_token(SECRET, "a"), make_token(SECRET, "a", subscribe=["x"])):
        assert HmacAuthenticator(b"another secret").verify(token) is None


def test_a_tampered_payload_or_signature_is_refused() -> None:
    token = make_token(SECRET, "alice", now=NOW, subscribe=["room:1"], publish=[])
    head, payload, signature = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["pub"] = ["*"]
    assert AUTH.verify(f"{head}.{b64(orjson.dumps(claims))}.{signature}", now=NOW) is None
    del claims["pub"]
    assert AUTH.verify(f"{head}.{b64(orjson.dumps(claims))}.{signature}", now=NOW) is None
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert AUTH.verify(f"{head}.{payload}.{flipped}", now=NOW) is None
    assert AUTH.verify(f"{head}.{payload}.{signature}A", now=NOW) is None  # not canonical
    assert AUTH.verify(f"{head}.{payload}.{signature}=", now=NOW) is None
    assert AUTH.verify(f"{head}.{payload}.", now=NOW) is None
    # The old format: another user or a later expiry under the same signature.
    user, expiry, signature = make_token(SECRET, "alice", now=NOW).split(".")
    assert AUTH.verify(f"{b64(b'mallory')}.{expiry}.{signature}", now=NOW) is None
    assert AUTH.verify(f"{user}.{int(expiry) + 1}.{signature}", now=NOW) is None
    assert AUTH.verify(f"{user}.+{expiry}.{signature}", now=NOW) is None


@pytest.mark.parametrize(
    "claims",
    [
        [],
        "alice",
        {"exp": int(NOW) + 60},
        {"u": "", "exp": int(NOW) + 60},
        {"u": 7, "exp": int(NOW) + 60},
        {"u": "a"},
        {"u": "a", "exp": "9999999999"},
        {"u": "a", "exp": NOW + 60.5},
        {"u": "a", "exp": True},
        {"u": "a", "exp": 10**30},
        {"u": "a", "exp": int(NOW) + 60, "sub": "room:*"},
        {"u": "a", "exp": int(NOW) + 60, "sub": None},
        {"u": "a", "exp": int(NOW) + 60, "pub": [1]},
        {"u": "a", "exp": int(NOW) + 60, "pub": [["x"]]},
        {"u": "a", "exp": int(NOW) + 60, "sub": {"room:*": True}},
        {"u": "a", "exp": int(NOW) + 60, "admin": True},  # an unknown claim: refused
    ],
)
def test_signed_but_malformed_claims_are_refused(claims: object) -> None:
    payload = json.dumps(claims).encode()  # json: orjson refuses integers beyond 64 bits
    assert AUTH.verify(resign(f"v2.{b64(payload)}"), now=NOW) is None


@pytest.mark.parametrize(
    "body",
    [
        "v2.",
        f"v2.{b64(b'not json')}",
        f"v2.{b64(b'{}')}garbage!",
        f"v2.{b64(bytes([0xFF, 0xFE]))}",
        f"v2.{b64(b'[' * 5000)}",
        f"{b64(bytes([0xFF]))}.{int(NOW) + 60}",  # user not UTF-8
        f".{int(NOW) + 60}",  # empty user
        f"{b64(b'a')}.",
        f"{b64(b'a')}.1e12",
        f"{b64(b'a')}.{'9' * 40}",
        f"{b64(b'a')}.\u0661\u0662\u0663",  # digits, but not ASCII ones
        f"{b64(b'a')}. 1999999999",
        f"{b64(b'a')}=.1999999999",
    ],
)
def test_signed_but_malformed_bodies_are_refused(body: str) -> None:
    token = resign(body) if body.isascii() else f"{body}.{b64(b'x' * 32)}"
    assert AUTH.verify(token, now=NOW) is None


def test_oversize_tokens_are_refused_unread() -> None:
    many = [f"room:{i}" for i in range(1000)]
    with pytest.raises(ValueError):
        make_token(SECRET, "a", subscribe=many)
    big = resign(f"v2.{b64(orjson.dumps({'u': 'a', 'exp': 2**40, 'sub': many}))}")
    assert len(big) > MAX_TOKEN_CHARS
    assert AUTH.verify(big, now=NOW) is None
    fits = make_token(SECRET, "a", subscribe=many[:100])
    assert len(fits) <= MAX_TOKEN_CHARS
    assert AUTH.verify(fits) is not None


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()


TOKEN_CHARS = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_.=+/ v2\x00é")


@given(st.one_of(st.text(), st.text(TOKEN_CHARS), st.none()))
def test_any_text_is_refused_without_raising(token: str | None) -> None:
    assert AUTH.verify(token, now=NOW) is None


@given(
    payload=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda inner: st.lists(inner) | st.dictionaries(st.text(max_size=4), inner),
            max_leaves=20,
        ).map(dumps),
        st.fixed_dictionaries(
            {},
            optional={
                "u": st.one_of(st.text(max_size=3), st.integers(), st.none()),
                "exp": st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=3)),
                "sub": st.one_of(st.lists(st.text(max_size=3)), st.text(), st.none()),
                "pub": st.one_of(st.lists(st.one_of(st.text(max_size=3), st.integers()))),
            },
        ).map(dumps),
    ),
)
def test_any_signed_payload_verifies_or_is_refused_without_raising(payload: bytes) -> None:
    identity = AUTH.verify(resign(f"v2.{b64(payload)}"), now=NOW)
    if identity is not None:  # then it was a valid claims object
        claims = orjson.loads(payload)
        assert identity.user == claims["u"]
        assert identity.expires_at == claims["exp"] > NOW
        assert identity.subscribe == (tuple(claims["sub"]) if "sub" in claims else None)


@given(
    claims=st.booleans(),
    data=st.data(),
)
def test_any_change_to_a_valid_token_is_refused(claims: bool, data: st.DataObject) -> None:
    token = make_token(SECRET, "alice", now=NOW, subscribe=["room:*"] if claims else None)
    at = data.draw(st.integers(0, len(token) - 1))
    change = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    char = data.draw(st.sampled_from("AQgw_-.019v=é"))
    if change == "replace":
        assume(token[at] != char)
        mutated = token[:at] + char + token[at + 1 :]
    elif change == "insert":
        mutated = token[:at] + char + token[at:]
    else:
        mutated = token[:at] + token[at + 1 :]
    assert AUTH.verify(mutated, now=NOW) is None


@given(
    user=st.text(min_size=1),
    sub=st.none() | st.lists(st.text(max_size=10), max_size=5),
    pub=st.none() | st.lists(st.text(max_size=10), max_size=5),
    ttl=st.integers(1, 10**9),
)
def test_every_token_made_verifies_as_made(
    user: str, sub: list[str] | None, pub: list[str] | None, ttl: int
) -> None:
    token = make_token(SECRET, user, ttl=ttl, now=NOW, subscribe=sub, publish=pub)
    assert AUTH.verify(token, now=NOW) == Identity(
        user,
        float(int(NOW + ttl)),
        None if sub is None else tuple(sub),
        None if pub is None else tuple(pub),
    )


async def test_hmac_authenticator_authenticates_and_authorizes_by_the_claims() -> None:
    auth = HmacAuthenticator(SECRET, forbidden={"alice": ("room:secret",)})
    assert await auth.authenticate(None) is None
    assert await auth.authenticate("") is None
    assert await auth.authenticate("nonsense") is None
    alice = await auth.authenticate(
        make_token(SECRET, "alice", subscribe=["*"], publish=["room:*"])
    )
    assert alice is not None
    assert alice.user == "alice"
    assert await auth.authorize(alice, Action.SUBSCRIBE, "lobby")
    assert await auth.authorize(alice, Action.PUBLISH, "room:1")
    assert not await auth.authorize(alice, Action.PUBLISH, "lobby")
    # forbidden prefixes win over the claims, for both actions, and only for their user
    assert not await auth.authorize(alice, Action.SUBSCRIBE, "room:secret-plans")
    assert not await auth.authorize(alice, Action.PUBLISH, "room:secret-plans")
    assert not await auth.authorize(Identity("alice"), Action.PUBLISH, "room:secret")
    assert await auth.authorize(Identity("bob"), Action.PUBLISH, "room:secret")
    # Expiry is the server's to enforce (it closes 4001); authorize answers for the claims only.
    assert await auth.authorize(Identity("bob", expires_at=0.0), Action.PUBLISH, "x")


async def test_allow_all_takes_the_token_as_the_user_and_allows_everything() -> None:
    auth = AllowAll()
    assert await auth.authenticate("carol") == Identity("carol")
    assert await auth.authenticate(None) == Identity("anonymous")
    assert await auth.authenticate("") == Identity("anonymous")
    nobody = Identity("carol", subscribe=(), publish=())
    assert await auth.authorize(nobody, Action.SUBSCRIBE, "any")
    assert await auth.authorize(nobody, Action.PUBLISH, "any")


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        HmacAuthenticator(b"")


def test_the_secret_is_created_once_private_and_kept(tmp_path: Path) -> None:
    directory = os.fspath(tmp_path / "data")
    secret = load_or_create_secret(directory)
    assert len(secret) == 32
    path = tmp_path / "data" / SECRET_NAME
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(directory) == secret
    assert os.listdir(directory) == [SECRET_NAME]  # no temporary file left behind


def test_an_empty_secret_file_is_refused_not_used(tmp_path: Path) -> None:
    # An HMAC key of no bytes would let anyone make tokens.
    (tmp_path / SECRET_NAME).write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_or_create_secret(os.fspath(tmp_path))
