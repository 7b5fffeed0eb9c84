"""The bundled true / false / "neither" statements (``truth.jsonl``), for truth probes and their stability."""

from __future__ import annotations

import json

from .bundled_sets import _bundled_file

LABELS = ("true", "false", "neither")


def truth_statements() -> dict[str, list[str]]:
    """``{"true": [...], "false": [...], "neither": [...]}``: 48 hand-written statements each. ``false`` matches
    ``true`` line by line with one fact changed; ``neither`` are fiction, opinions and unknowables."""
    out: dict[str, list[str]] = {label: [] for label in LABELS}
    for line in _bundled_file("truth.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["label"]].append(row["statement"])
    return out
