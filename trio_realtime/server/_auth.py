"""Authentication and authorization for the reference server.

An :class:`Authenticator` turns a connection's token into an :class:`Identity` (or refuses it) and
then answers, per channel and per :class:`Action`, whether that identity may act. The default,
:class:`HmacAuthenticator`, checks HMAC-SHA256 tokens made by :func:`make_token` with a secret kept
in the server's data directory (``trio-realtime token --user alice --data DIR`` prints one).

Two token formats verify:

- ``b64(user).expiry.b64(signature)``: the user and an expiry, no claims (every channel). This is
  what :func:`make_token` makes when given no channel claims, so older tokens keep working.
- ``v2.b64(claims).b64(signature)``: ``claims`` is a JSON object ``{"u": user, "exp": unix seconds,
  "sub": [patterns], "pub": [patterns]}``; a missing ``sub``/``pub`` means every channel, an empty
  list none. The signature covers ``v2.b64(claims)``.

Base64 is URL-safe without padding. Tokens are never logged.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import fnmatch
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any, Protocol

import attrs
import orjson
import trio

__all__ = [
    "SECRET_NAME",
    "Action",
    "AllowAll",
    "Authenticator",
    "HmacAuthenticator",
    "Identity",
    "load_or_create_secret",
    "make_token",
]

SECRET_NAME = "server.secret"

MAX_TOKEN_CHARS = 4096
"""Longer tokens are refused unread."""

logger = logging.getLogger("trio_realtime.server")

_V2 = "v2"
_B64 = re.compile(r"[A-Za-z0-9_-]*")
_EXPIRY = re.compile(r"-?[0-9]{1,19}")
_CLAIM_KEYS = frozenset({"u", "exp", "sub", "pub"})


class Action(enum.StrEnum):
    """What an identity asks to do with a channel. Presence, typing and receipts need SUBSCRIBE."""

    SUBSCRIBE = "subscribe"
    PUBLISH = "publish"


def _patterns(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        raise TypeError("channel patterns must be a list of strings, not one string")
    patterns = tuple(value)
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError("channel patterns must be strings")
    return patterns


@attrs.frozen
class Identity:
    """Who a connection is, until when, and which channels it may use.

    ``subscribe`` and ``publish`` are glob patterns (:func:`fnmatch.fnmatchcase`: ``*``, ``?``,
    ``[seq]``; case-sensitive) for the channels the identity may subscribe to (including presence,
    typing and receipts) and publish to. ``None`` allows every channel; an empty tuple none.
    """

    user: str
    expires_at: float | None = None
    """Unix seconds at which the identity ends (the server then closes 4001); ``None``: never."""
    subscribe: tuple[str, ...] | None = attrs.field(default=None, converter=_patterns)
    publish: tuple[str, ...] | None = attrs.field(default=None, converter=_patterns)

    def allows(self, action: Action, channel: str) -> bool:
        """Whether the identity's claims let it ``action`` on ``channel`` (expiry not considered)."""
        if action == Action.SUBSCRIBE:
            patterns = self.subscribe
        elif action == Action.PUBLISH:
            patterns = self.publish
        else:
            raise ValueError(f"unknown action {action!r}")
        if patterns is None:
            return True
        return any(fnmatch.fnmatchcase(channel, pattern) for pattern in patterns)


class Authenticator(Protocol):
    """Decides who a connection is and what it may do."""

    async def authenticate(self, token: str | None) -> Identity | None:
        """The identity the token stands for, or ``None`` to refuse the connection (close 4001)."""
        ...

    async def authorize(self, identity: Identity, action: Action, channel: str) -> bool:
        """Whether ``identity`` may ``action`` on ``channel``; ``False`` is answered ``forbidden``."""
        ...


class AllowAll:
    """Everyone may do everything; the token (if any) is taken as the user name. For tests and
    local experiments only."""

    async def authenticate(self, token: str | None) -> Identity | None:
        await trio.lowlevel.checkpoint()
        return Identity(token or "anonymous")

    async def authorize(self, identity: Identity, action: Action, channel: str) -> bool:
        await trio.lowlevel.checkpoint()
        return True


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Strict, canonical unpadded base64url; ``ValueError`` for anything else."""
    if not _B64.fullmatch(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # e.g. a length of 4n+1, or stray bits in the last character
        raise ValueError("not canonical base64url")
    return data


def _sign(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest()


def make_token(
    secret: bytes,
    user: str,
    *,
    ttl: float = 30 * 24 * 3600,
    now: float | None = None,
    subscribe: Iterable[str] | None = None,
    publish: Iterable[str] | None = None,
) -> str:
    """A token for ``user`` that expires ``ttl`` seconds after ``now`` (default: the current time).

    ``subscribe``/``publish`` are glob patterns of the channels the token allows; ``None`` (the
    default) allows every channel, an empty list none. Without claims the token has the original
    format ``b64(user).expiry.b64(signature)``; with any, ``v2.b64(claims).b64(signature)``.
    """
    if not isinstance(user, str) or not user:
        raise ValueError("user must be a non-empty string")
    sub = _patterns(subscribe)
    pub = _patterns(publish)
    expires = int((time.time() if now is None else now) + ttl)
    if sub is None and pub is None:
        body = f"{_b64(user.encode())}.{expires}"
    else:
        claims: dict[str, Any] = {"u": user, "exp": expires}
        if sub is not None:
            claims["sub"] = list(sub)
        if pub is not None:
            claims["pub"] = list(pub)
        body = f"{_V2}.{_b64(orjson.dumps(claims))}"
    token = f"{body}.{_b64(_sign(secret, body))}"
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"the token would be {len(token)} characters, over {MAX_TOKEN_CHARS}")
    return token


def _claim_patterns(claims: dict[str, Any], key: str) -> tuple[str, ...] | None:
    if key not in claims:
        return None
    value = claims[key]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"{key} is not a list of strings")
    return tuple(value)


def _parse(secret: bytes, token: str) -> Identity:
    """The identity a well-formed, correctly signed token carries (expiry not checked);
    ``ValueError`` (or ``UnicodeError``, a subclass) for anything else."""
    head, payload, signature_part = token.split(".")  # ValueError unless exactly three parts
    body = f"{head}.{payload}"
    if not body.isascii():
        raise ValueError("not ASCII")
    if not hmac.compare_digest(_unb64(signature_part), _sign(secret, body)):
        raise ValueError("bad signature")
    if head == _V2:
        claims = orjson.loads(_unb64(payload))
        if not isinstance(claims, dict) or not claims.keys() <= _CLAIM_KEYS:
            # Unknown claims may be restrictions this version would not enforce: refuse.
            raise ValueError("not a claims object")
        user = claims.get("u")
        expires = claims.get("exp")
        if not isinstance(user, str) or type(expires) is not int:
            raise ValueError("bad u or exp")
        return Identity(
            user,
            float(expires),
            _claim_patterns(claims, "sub"),
            _claim_patterns(claims, "pub"),
        )
    if not _EXPIRY.fullmatch(payload):
        raise ValueError("bad expiry")
    return Identity(_unb64(head).decode("utf-8"), float(int(payload)))


class HmacAuthenticator:
    """Accepts tokens made by :func:`make_token` with the same secret, until they expire, and
    authorizes by the token's channel claims.

    ``forbidden`` maps a user to channel-name prefixes they may neither publish to nor subscribe
    to, whatever their token's claims say.
    """

    def __init__(
        self, secret: bytes, *, forbidden: dict[str, tuple[str, ...]] | None = None
    ) -> None:
        if not secret:
            raise ValueError("the token secret is empty")
        self._secret = secret
        self._forbidden = forbidden or {}

    def verify(self, token: str | None, now: float | None = None) -> Identity | None:
        """The identity of a valid, unexpired token; ``None`` for any other input (never raises)."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            logger.debug("token refused: none, or over %d characters", MAX_TOKEN_CHARS)
            return None
        try:
            identity = _parse(self._secret, token)
        except ValueError as exc:  # also orjson.JSONDecodeError and UnicodeDecodeError
            logger.debug(
                "token refused: %s",
                "made with another secret" if str(exc) == "bad signature" else "malformed",
            )
            return None
        if not identity.user:
            logger.debug("token refused: no user")
            return None
        assert identity.expires_at is not None
        if identity.expires_at <= (time.time() if now is None else now):
            logger.debug("token refused: %.40r's token expired", identity.user)
            return None
        return identity

    async def authenticate(self, token: str | None) -> Identity | None:
        await trio.lowlevel.checkpoint()
        return self.verify(token)

    def _forbids(self, user: str, channel: str) -> bool:
        return any(channel.startswith(prefix) for prefix in self._forbidden.get(user, ()))

    async def authorize(self, identity: Identity, action: Action, channel: str) -> bool:
        await trio.lowlevel.checkpoint()
        return identity.allows(action, channel) and not self._forbids(identity.user, channel)


def load_or_create_secret(directory: str) -> bytes:
    """The server's token secret in ``directory``, created (mode 0600) on first use.

    The secret is written to a temporary file and linked into place, so a crash never leaves an
    empty or partial secret behind and concurrent first uses agree on one secret.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, SECRET_NAME)
    try:
        with open(path, "rb") as f:
            secret = f.read()
    except FileNotFoundError:
        secret = _create_secret(directory, path)
    if not secret:
        raise ValueError(f"the token secret {path} is empty")
    return secret


def _create_secret(directory: str, path: str) -> bytes:
    secret = secrets.token_bytes(32)
    temporary = os.path.join(directory, f".{SECRET_NAME}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:  # another process created it first: use theirs
            with open(path, "rb") as f:
                return f.read()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return secret
