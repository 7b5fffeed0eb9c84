"""The small hand-written data that ships with steerlab, and ``load``: a bundled name or a file path.

The files live in ``data/bundled/`` (see the README there): four contrastive pair sets matched in
form, neutral chat prompts, and a reference text for perplexity. They let examples, tests and
benchmarks run offline.
"""

from __future__ import annotations

import difflib
import json
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError
from .contrastive import ContrastiveSet
from .loaders import FILE_KINDS, from_file, from_jsonl

if TYPE_CHECKING:
    from importlib.abc import Traversable

BUNDLED = {
    "sentiment": "sentiment.jsonl",     # positive / happy  vs  the same sentence, negative / sad
    "refusal": "refusal.jsonl",         # a harmful request vs  the same template made harmless
    "formality": "formality.jsonl",     # formal register   vs  the same message, casual
    "verbosity": "verbosity.jsonl",     # wordy, padded     vs  terse, same fact (unequal length on purpose)
}


def names() -> list[str]:
    """The names of the bundled contrastive sets, for ``load(name)``."""
    return list(BUNDLED)


def load(name_or_path: str | os.PathLike | ContrastiveSet, positive: str = "positive",
         negative: str = "negative", name: str | None = None) -> ContrastiveSet:
    """A contrastive set: a bundled name (see ``names()``) or a ``.jsonl``/``.csv`` file of pairs.

    ``positive``/``negative`` name the fields to read from a file; ``name`` overrides the set's name
    (default: the bundled name or the file's stem). A ``ContrastiveSet`` is returned unchanged, so
    functions can accept either a name or a set.
    """
    if isinstance(name_or_path, ContrastiveSet):
        return name_or_path
    if isinstance(name_or_path, str) and name_or_path in BUNDLED:
        if (positive, negative) != ("positive", "negative"):
            raise DataError(f"bundled set {name_or_path!r} has fixed fields; positive= and negative= "
                            f"only apply to files")
        return _bundled(name_or_path, name)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise DataError(f"name_or_path must be a bundled name {names()} or a file path, "
                        f"got {type(name_or_path).__name__}")
    path = Path(name_or_path)
    if path.suffix.lower() in FILE_KINDS or path.exists():
        return from_file(path, positive=positive, negative=negative, name=name)
    close = difflib.get_close_matches(str(name_or_path), names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(f"name_or_path={str(name_or_path)!r} is not a bundled set{hint}; bundled sets are "
                    f"{names()}, or pass a path to a {' or '.join(FILE_KINDS)} file")


def reference_text() -> str:
    """A neutral factual English text (~540 words, about bread) for perplexity of steered vs plain models."""
    return _bundled_file("reference_text.txt").read_text(encoding="utf-8").strip()


def neutral_prompts() -> list[str]:
    """70 short, neutral, open-ended chat prompts: held-out prompts for evaluating steering."""
    lines = _bundled_file("neutral_prompts.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["prompt"] for line in lines if line.strip()]


def _bundled(key: str, name: str | None) -> ContrastiveSet:
    with resources.as_file(_bundled_file(BUNDLED[key])) as path:
        pairs = from_jsonl(path, name=name or key)
    pairs.meta["source"] = f"bundled:{key}"
    return pairs


def _bundled_file(filename: str) -> Traversable:
    item = resources.files(__package__).joinpath("bundled").joinpath(filename)
    if not item.is_file():
        raise DataError(f"bundled file {filename!r} is missing from the steerlab install; reinstall steerlab")
    return item
