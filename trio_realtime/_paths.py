"""Where trio_realtime keeps per-user data by default: one folder, found one way.

Everything goes under ``$XDG_DATA_HOME/trio-realtime/`` (``~/.local/share/trio-realtime/`` when
``XDG_DATA_HOME`` is unset or empty):

* ``journals/<safe_name(url)>``: a client connection's journal;
* ``queues/NAME``: a durable local queue (older versions used ``trio_realtime/queues/NAME``,
  which is still used for a queue found there and not at the new place);
* ``server``, ``chat/NAME``: the CLI's server data and chat journals.

This module imports only the standard library.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence

__all__ = ["APP_DIR", "data_dir", "data_home", "default_journal_dir", "safe_name"]

#: The folder under the data home that holds all of trio_realtime's data.
APP_DIR = "trio-realtime"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 255  # bytes in a path component on common file systems (the name is ASCII)


def data_home() -> str:
    """``$XDG_DATA_HOME``, or ``~/.local/share`` when it is unset or empty."""
    return os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )


def _check_part(part: str) -> str:
    if not part or part in (".", "..") or "/" in part or os.sep in part or "\0" in part:
        raise ValueError(f"not a single path component: {part!r}")
    return part


def data_dir(*parts: str, legacy: Iterable[Sequence[str]] = ()) -> str:
    """``$XDG_DATA_HOME/trio-realtime/<parts...>``: the default place of some per-user data.
    Nothing is created.

    ``legacy``: where older versions kept the same data, each as path components relative to the
    data home (e.g. ``("trio_realtime", "queues", name)``). If the new path does not exist and
    one of those does, that one is returned, so no one loses data on upgrade.

    Raises:
        ValueError: a part is empty, ``.``, ``..`` or holds a path separator (use
            :func:`safe_name` on names from outside).
    """
    home = data_home()
    path = os.path.join(home, APP_DIR, *(_check_part(part) for part in parts))
    if not os.path.exists(path):
        for old in legacy:
            candidate = os.path.join(home, *(_check_part(part) for part in old))
            if os.path.exists(candidate):
                return candidate
    return path


def safe_name(text: str) -> str:
    """``text`` (a URL or a user name) as one safe path component: a leading ``scheme://`` is
    dropped, every run of characters other than ``A-Za-z0-9._-`` becomes ``_``, and ``_`` is
    stripped from both ends (``ws://example.com:8765/realtime`` ->
    ``example.com_8765_realtime``). Never empty, ``.`` or ``..`` (those become ``default``); a
    name longer than 255 characters is cut and ends with a hash of the whole."""
    name = _UNSAFE.sub("_", text.split("://", 1)[-1]).strip("_")
    if name in ("", ".", ".."):
        return "default"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = f"{name[: _MAX_NAME - len(digest) - 1]}-{digest}"
    return name


def default_journal_dir(url: str) -> str:
    """A connection's journal when none is given: ``$XDG_DATA_HOME/trio-realtime/journals/``
    followed by :func:`safe_name` of ``url`` (the place every version so far has used)."""
    return data_dir("journals", safe_name(url))
