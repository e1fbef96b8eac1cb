from __future__ import annotations

import os
import pathlib

import pytest


@pytest.fixture
def jdir(tmp_path: pathlib.Path) -> str:
    return os.fspath(tmp_path / "journal")
