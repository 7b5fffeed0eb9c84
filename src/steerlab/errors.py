"""Errors steerlab raises for bad input: one clear line naming the argument and what is allowed."""

from __future__ import annotations


class SteerlabError(ValueError):
    """Bad input to steerlab: the message names the argument, the bad value and what is allowed."""


class SiteError(SteerlabError):
    """An unknown site name or a layer out of range."""


class ShapeError(SteerlabError):
    """A tensor of the wrong width, or a recipe made for a model of another shape."""


class DataError(SteerlabError):
    """Empty, missing or malformed data."""


def check(condition: bool, message: str, error: type[SteerlabError] = SteerlabError) -> None:
    """Raise `error(message)` unless `condition` holds."""
    if not condition:
        raise error(message)
