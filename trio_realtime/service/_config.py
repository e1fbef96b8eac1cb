"""Named services: :class:`ServiceConfig`, the workload :data:`PROFILES`, and TOML files of them.

A services file holds one table per service::

    [services.chat]
    url = "ws://127.0.0.1:8765/realtime"
    profile = "chat"
    token_env = "CHAT_TOKEN"

    [services.sensors]
    url = "ws://127.0.0.1:8765/realtime"
    profile = "iot"
    heartbeat_interval = 120

Every field but ``url`` has a default; a profile supplies the connection settings a field leaves
unset. An error names the key as ``services.NAME.KEY`` and its line in the file.
"""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs

from .._config import RealtimeConfig
from .._errors import ConfigError
from ..transports import registered_schemes

__all__ = ["PROFILES", "ServiceConfig", "load_services"]

#: Connection settings per workload, applied under a service's own (field by field).
PROFILES: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        # Conversations: every message kept, journaled, ordinary timings.
        "chat": MappingProxyType({"delivery_strategy": "at_least_once", "durability": "always"}),
        # Game state: in order and fast, a lost update is replaced by the next; a dead link
        # is noticed within seconds.
        "gaming": MappingProxyType(
            {
                "delivery_strategy": "best_effort_ordered",
                "heartbeat_interval": 5.0,
                "heartbeat_timeout": 3.0,
                "initial_retry_delay": 0.2,
                "max_retry_delay": 5.0,
                "default_ttl": 10.0,
                "outbox_full": "drop_oldest",
            }
        ),
        # Devices: readings batched, journaled without an fsync each, long backoff (battery and
        # radio), a bounded backlog that keeps the newest.
        "iot": MappingProxyType(
            {
                "delivery_strategy": "at_least_once",
                "durability": "batch",
                "batch_interval": 1.0,
                "heartbeat_interval": 120.0,
                "heartbeat_timeout": 30.0,
                "initial_retry_delay": 5.0,
                "max_retry_delay": 600.0,
                "max_outbox_messages": 10_000,
                "outbox_full": "drop_oldest",
            }
        ),
        # Orders: never lost, never twice, fsynced, small batches, a dead link noticed fast.
        "trading": MappingProxyType(
            {
                "delivery_strategy": "at_least_once",
                "durability": "always",
                "batch_size": 10,
                "batch_interval": 0.0,
                "heartbeat_interval": 5.0,
                "heartbeat_timeout": 2.0,
                "initial_retry_delay": 0.1,
                "max_retry_delay": 2.0,
                "outbox_full": "raise",
            }
        ),
    }
)

#: Fields of a service that are connection settings (``RealtimeConfig`` fields, by their name
#: there: ``max_queue_size`` is ``max_outbox_messages``).
_SETTINGS = {
    "delivery_strategy": "delivery_strategy",
    "durability": "durability",
    "heartbeat_interval": "heartbeat_interval",
    "heartbeat_timeout": "heartbeat_timeout",
    "initial_retry_delay": "initial_retry_delay",
    "max_retry_delay": "max_retry_delay",
    "max_retries": "max_retries",
    "max_queue_size": "max_outbox_messages",
    "batch_size": "batch_size",
    "batch_interval": "batch_interval",
    "default_ttl": "default_ttl",
}


def _name(value: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value))


@attrs.frozen(kw_only=True)
class ServiceConfig:
    """One named, long-running realtime service: where it connects, as whom, and how (its
    profile, then its own settings)."""

    name: str
    url: str
    profile: str = "chat"
    tag: str | None = None
    """The tag its log records carry (default: its name)."""
    token: str | None = attrs.field(default=None, repr=False)
    token_env: str | None = None
    """The environment variable that holds its token (read when it starts), instead of
    ``token`` in the file."""
    journal_dir: str | None = None
    """Default: a directory of its own under the user's data directory."""
    channels: tuple[str, ...] = ()
    """Channels it subscribes to: their events go through its plugins and message handler."""
    notifications: bool = False
    """Notify (``notify-send`` where present, else a log record) of each message no plugin
    consumed, and when the connection is lost."""
    plugins: tuple[str, ...] = ()
    """Plugins by entry point name (group ``trio_realtime.plugins``) or
    ``package.module:attribute``, in the order they see messages."""
    plugin_failure: str = "restart"
    """What a plugin that raises gets: ``restart`` (``initialize`` again, up to
    ``plugin_max_restarts`` times, then disabled) or ``disable``."""
    plugin_max_restarts: int = 3
    plugin_inbox_size: int = 1000
    """Messages waiting for a plugin, at most: beyond, it misses them (logged)."""
    plugin_timeout: float = 1.0
    """How long a message waits for a plugin's answer before going on to the next plugin."""
    stop_timeout: float = 5.0
    """How long each plugin is given to initialize, and to finish when the service stops."""
    delivery_strategy: str | None = None
    durability: str | None = None
    heartbeat_interval: float | None = None
    heartbeat_timeout: float | None = None
    initial_retry_delay: float | None = None
    max_retry_delay: float | None = None
    max_retries: int | None = None
    max_queue_size: int | None = None
    batch_size: int | None = None
    batch_interval: float | None = None
    default_ttl: float | None = None

    def __attrs_post_init__(self) -> None:
        if not _name(self.name):
            raise ConfigError(
                "name", f"must be 1-64 letters, digits, '_', '.' or '-': {self.name!r}"
            )
        if self.profile not in PROFILES:
            choices = ", ".join(repr(p) for p in PROFILES)
            raise ConfigError("profile", f"must be one of {choices}, got {self.profile!r}")
        if self.plugin_failure not in ("restart", "disable"):
            raise ConfigError(
                "plugin_failure", f"must be 'restart' or 'disable', got {self.plugin_failure!r}"
            )
        for field in ("plugin_max_restarts", "plugin_inbox_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(field, f"must be a non-negative integer, got {value!r}")
        if self.plugin_inbox_size < 1:
            raise ConfigError("plugin_inbox_size", "must be at least 1")
        for field in ("plugin_timeout", "stop_timeout"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(field, f"must be a positive number of seconds, got {value!r}")
        for field in ("channels", "plugins"):
            if isinstance(getattr(self, field), str):
                raise ConfigError(field, "must be a list of strings, not one string")
        for channel in self.channels:
            if not isinstance(channel, str) or not channel:
                raise ConfigError("channels", f"a channel is a non-empty string, got {channel!r}")
        if self.token is not None and self.token_env is not None:
            raise ConfigError("token_env", "give token or token_env, not both")
        self.realtime_config()  # every value checked now, naming its field
        scheme, colon, _ = self.url.partition("://")
        if not colon or scheme.lower() not in registered_schemes():
            known = ", ".join(f"{k}://" for k in registered_schemes())
            raise ConfigError("url", f"no transport for {self.url!r} (known: {known})")

    @property
    def log_tag(self) -> str:
        return self.tag or self.name

    def realtime_config(self) -> RealtimeConfig:
        """The connection's configuration: the profile's settings under this service's own."""
        settings = dict(PROFILES[self.profile])
        for field, option in _SETTINGS.items():
            value = getattr(self, field)
            if value is not None:
                settings[option] = value
        try:
            return RealtimeConfig(**settings)
        except ConfigError as exc:
            field = next((f for f, o in _SETTINGS.items() if o == exc.option), exc.option)
            raise exc.renamed(field) from None

    def get_token(self) -> str | None:
        """Its token: ``token``, or the value of ``token_env`` now."""
        if self.token_env is None:
            return self.token
        value = os.environ.get(self.token_env)
        if not value:
            raise ConfigError("token_env", f"the environment variable {self.token_env} is not set")
        return value


attrs.resolve_types(ServiceConfig)


def _strict(value: Any, kind: Any) -> Any:
    """``value`` as a field of type ``kind`` takes it from TOML, converting nothing: a string
    where a list is wanted, a string for a number, a number for a bool, a float for an int,
    or a bool for a number is refused (``TypeError``)."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        (kind,) = args  # X | None: TOML has no null, so the value is an X
        args = [a for a in typing.get_args(kind) if a is not type(None)]
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError("must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("must be an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("must be a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError("must be a string")
        return value
    if typing.get_origin(kind) is tuple and args[:1] == [str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError("must be a list of strings")
        return tuple(value)
    raise TypeError(f"no TOML form for {kind}")  # pragma: no cover  (every field has one)


def _line_of(lines: list[str], service: str, key: str | None) -> int | None:
    """The line (1-based) of ``key`` in ``[services.SERVICE]`` (of the table, without a key)."""
    name = "(?:" + "|".join(re.escape(n) for n in (service, f'"{service}"', f"'{service}'")) + ")"
    header = re.compile(r"^\s*\[\s*services\s*\.\s*" + name + r"\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return None
    if key is None:
        return start + 1
    assignment = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("["):
            break
        if assignment.match(lines[i]):
            return i + 1
    return start + 1


def with_line(path: str | os.PathLike[str], exc: ConfigError) -> ConfigError:
    """``exc`` (about ``services.NAME.KEY``) with the line of that key in the file at ``path``
    (a check made after :func:`load_services`, such as loading plugins)."""
    parts = exc.option.split(".", 2)
    if len(parts) != 3 or parts[0] != "services":
        return exc
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return exc
    line = _line_of(lines, parts[1], parts[2])
    return ConfigError(exc.option, f"{exc.message} ({os.fspath(path)}, line {line})")


def load_services(path: str | os.PathLike[str]) -> list[ServiceConfig]:
    """The services of a TOML file, checked: every key known, every value valid.

    Raises:
        ConfigError: naming ``services.NAME.KEY`` and its line (or the file, if it cannot be
            read or is not TOML).
    """
    where = os.fspath(path)
    try:
        text = Path(where).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(where, f"cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(where, f"not valid TOML: {exc}") from None
    lines = text.splitlines()
    unknown = sorted(set(data) - {"services"})
    if unknown:
        raise ConfigError(unknown[0], f"unknown table or key in {where} (only [services.NAME])")
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        raise ConfigError("services", f"{where} defines no [services.NAME] table")
    fields = {f.name: f for f in attrs.fields(ServiceConfig)}
    found = []
    for name, table in services.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"services.{name}", f"must be a table (line {_line_of(lines, name, None)})"
            )

        def fail(key: str | None, message: str, name: str = name) -> ConfigError:
            option = f"services.{name}" + (f".{key}" if key else "")
            line = _line_of(lines, name, key)
            return ConfigError(option, f"{message} ({where}, line {line})")

        values: dict[str, Any] = {"name": name}
        for key, value in table.items():
            if key == "name" or key not in fields:
                known = ", ".join(sorted(set(fields) - {"name"}))
                raise fail(key, f"unknown key (known: {known})")
            try:
                values[key] = _strict(value, fields[key].type)
            except TypeError as exc:
                raise fail(key, f"invalid value {value!r}: {exc}") from None
        if "url" not in values:
            raise fail(None, "needs a url")
        try:
            found.append(ServiceConfig(**values))
        except ConfigError as exc:
            raise fail(exc.option, exc.message) from None
    return found
