"""Figures for docs/reliability.md: a test saves what it measured when the nox session asks
(``TRIO_REALTIME_FIGURES`` names the directory); reliability/report.py writes the page."""

from __future__ import annotations

import json
import os
from typing import Any


def record(name: str, figures: dict[str, Any]) -> None:
    directory = os.environ.get("TRIO_REALTIME_FIGURES")
    if not directory:
        return
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{name}.json"), "w") as f:
        json.dump(figures, f, indent=2)
        f.write("\n")
