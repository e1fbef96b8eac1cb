"""The front a server test reaches the engine through: each test that takes ``front`` runs over
the in-memory transport (the engine serving it directly) and over WebSocket."""

from __future__ import annotations

import pytest

from ._raw import FRONTS, Front


@pytest.fixture(params=FRONTS)
def front(request: pytest.FixtureRequest) -> Front:
    param: Front = request.param
    return param
