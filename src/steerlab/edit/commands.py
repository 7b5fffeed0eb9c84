"""What `steerlab bake` and `steerlab export` do, as plain functions (the typer layer only parses)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError, SiteError


def parse_layer_list(text: str | None) -> list[int] | None:
    """``"3"``, ``"2-5"``, ``"2,4,6"`` or a mix -> sorted layers; None stays None."""
    if text is None or not str(text).strip():
        return None
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise SiteError(f"--layers {text!r} is not a layer list; use e.g. 10, 8-12 or 8,10,12") from None
    return sorted(set(out))


def cli_bake(model: str, recipe: str | os.PathLike, out: str | os.PathLike, dtype: str | None = None,
             device: str = "auto", verify: bool = True, force: bool = False) -> dict:
    """Load ``model``, bake the Steering folder ``recipe`` into it and save model + tokenizer to ``out``.

    Returns a summary: the output folder, the edited writers and what was switched on.
    """
    from ..interventions import Steering
    from ..models import load
    from .bake import bake

    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise DataError(f"--out {str(out)!r} exists and is not empty; choose a new folder or pass --force")
    loaded = load(model, dtype=dtype, device=device)
    steering = Steering.load(recipe, model=loaded)
    baked = bake(loaded, steering, verify=verify)
    baked.save_pretrained(str(target))
    info = dict(baked.config.steerlab)
    return {"out": str(target), "edits": info.get("edits", {}), "switches": info.get("switches", []),
            "untied": info.get("untied", False)}


def cli_export(direction: str | os.PathLike, gguf: str | os.PathLike, layers: str | None = None,
               alpha: float = 1.0, model_hint: str | None = None) -> Path:
    """Write the Direction folder ``direction`` as a llama.cpp control vector at ``gguf``."""
    from ..directions.direction import Direction

    d = Direction.load(direction)
    return d.to_gguf(gguf, layers=parse_layer_list(layers), alpha=alpha, model_hint=model_hint)
