"""Authentication and authorization for the reference server.

The default authenticator checks HMAC-signed tokens made with a secret kept in the server's data
directory (``trio-realtime token --user alice --data DIR`` prints one). Tokens carry the user and an
expiry; they are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from typing import Protocol

import trio

__all__ = ["AllowAll", "Authenticator", "HmacAuthenticator", "load_or_create_secret", "make_token"]

SECRET_NAME = "server.secret"


class Authenticator(Protocol):
    """Decides who a connection is and what it may do."""

    async def authenticate(self, token: str | None) -> str | None:
        """The user the token belongs to, or ``None`` to refuse the connection (close 4001)."""

    async def can_publish(self, user: str, channel: str) -> bool: ...

    async def can_subscribe(self, user: str, channel: str) -> bool: ...


class AllowAll:
    """Everyone may do everything; the token (if any) is taken as the user name. For tests and
    local experiments only."""

    async def authenticate(self, token: str | None) -> str | None:
        await trio.lowlevel.checkpoint()
        return token or "anonymous"

    async def can_publish(self, user: str, channel: str) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    async def can_subscribe(self, user: str, channel: str) -> bool:
        await trio.lowlevel.checkpoint()
        return True


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(
    secret: bytes, user: str, *, ttl: float = 30 * 24 * 3600, now: float | None = None
) -> str:
    """A token for ``user`` valid for ``ttl`` seconds: ``user.expiry.signature`` (base64url)."""
    expires = int((time.time() if now is None else now) + ttl)
    body = f"{_b64(user.encode())}.{expires}"
    signature = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}"


class HmacAuthenticator:
    """Accepts tokens made by :func:`make_token` with the same secret, until they expire.

    ``forbidden`` maps a user to channel-name prefixes they may neither publish to nor read.
    """

    def __init__(
        self, secret: bytes, *, forbidden: dict[str, tuple[str, ...]] | None = None
    ) -> None:
        self._secret = secret
        self._forbidden = forbidden or {}

    def verify(self, token: str | None, *, now: float | None = None) -> str | None:
        if not token or token.count(".") != 2:
            return None
        user_part, expires_part, signature_part = token.split(".")
        body = f"{user_part}.{expires_part}"
        expected = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()
        try:
            signature = _unb64(signature_part)
            user = _unb64(user_part).decode()
            expires = int(expires_part)
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(signature, expected):
            return None
        if expires < (time.time() if now is None else now):
            return None
        return user or None

    async def authenticate(self, token: str | None) -> str | None:
        await trio.lowlevel.checkpoint()
        return self.verify(token)

    def _allowed(self, user: str, channel: str) -> bool:
        return not any(channel.startswith(prefix) for prefix in self._forbidden.get(user, ()))

    async def can_publish(self, user: str, channel: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._allowed(user, channel)

    async def can_subscribe(self, user: str, channel: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._allowed(user, channel)


def load_or_create_secret(directory: str) -> bytes:
    """The server's token secret in ``directory``, created (mode 0600) on first use."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, SECRET_NAME)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        secret = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
        return secret
