"""Which token positions an intervention touches, and the per-forward context that answers it.

Positions are counted in the *padded* coordinates of a batch: ``offset`` is how many tokens are
already in the KV cache, ``start[b]`` is where row ``b``'s real tokens begin (left padding) and
``prompt_end[b]`` is one past its last prompt token. From these, every position option is a mask:

- ``"all"``: every token, prompt and generated.
- ``"prompt"``: the prompt's tokens only.
- ``"generated"``: generated tokens only (the prompt's logits are untouched).
- ``"last"``: the last prompt token and every generated token, i.e. the newest token of each
  decoding step (with the KV cache each is touched exactly once, at its own step).
- explicit indices (an int or a list of ints): prompt tokens, ``0`` the first real token, negatives
  counting back from the end of the prompt (``-1`` is the last prompt token). An index reaches a
  prompt of ``n`` tokens when ``-n <= index < n``; a prompt it does not reach is left untouched at
  that index, and an index that reaches none of the prompts its recipe steers is an error
  (``check_reach``), never a silent no-op. Generated tokens are never selected by an index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch

from ..errors import SteerlabError

MODES = ("all", "prompt", "generated", "last")
PositionSpec: TypeAlias = "str | tuple[int, ...]"


def parse_positions(positions: object) -> PositionSpec:
    """Normalise a positions argument to a mode name or a tuple of ints."""
    if isinstance(positions, str):
        if positions in MODES:
            return positions
        raise SteerlabError(
            f"positions={positions!r} is not allowed; use one of {', '.join(MODES)}, an int or a list of ints"
        )
    if isinstance(positions, int) and not isinstance(positions, bool):
        return (int(positions),)
    if isinstance(positions, (list, tuple, range)) and len(positions) > 0:
        try:
            if all(not isinstance(p, bool) and int(p) == p for p in positions):
                return tuple(int(p) for p in positions)
        except (TypeError, ValueError):
            pass
    raise SteerlabError(
        f"positions={positions!r} is not allowed; use one of {', '.join(MODES)}, an int or a non-empty list of ints"
    )


def describe_positions(spec: PositionSpec) -> str | list[int]:
    """The JSON-friendly form of a position spec (a string or a list of ints)."""
    return spec if isinstance(spec, str) else list(spec)


def reaches(index: int, length: int) -> bool:
    """Whether the explicit position ``index`` is a token of a prompt of ``length`` tokens."""
    return -length <= index < length


def check_reach(recipes: Sequence[Iterable[Any] | None], lengths: Sequence[int]) -> None:
    """Refuse explicit positions that lie outside every prompt their recipe steers.

    ``recipes`` has one recipe (an iterable of interventions) or None per prompt and ``lengths`` each
    prompt's token count. Rows sharing a recipe object are pooled: an index steers the prompts it
    reaches and leaves the others alone; one that reaches none of them would steer nothing, so it
    raises ``SteerlabError`` naming the index and the prompts' lengths.
    """
    pooled: dict[int, tuple[Iterable[Any], list[int]]] = {}
    for recipe, length in zip(recipes, lengths):
        if recipe is not None:
            pooled.setdefault(id(recipe), (recipe, []))[1].append(int(length))
    for recipe, sizes in pooled.values():
        for number, item in enumerate(recipe):
            spec = getattr(item, "positions", None)
            if not isinstance(spec, tuple):
                continue
            missed = [p for p in spec if not any(reaches(p, n) for n in sizes)]
            if missed:
                low, high = min(sizes), max(sizes)
                span = f"{low} tokens" if low == high else f"{low} to {high} tokens"
                many = "the prompt" if len(sizes) == 1 else f"all {len(sizes)} prompts"
                raise SteerlabError(
                    f"positions={describe_positions(spec)!r} of {type(item).__name__} (intervention {number} of "
                    f"the recipe): index {missed[0]} lies outside {many} it steers ({span}), so it would steer "
                    f"nothing; an index counts prompt tokens, 0 to n-1 from the start or -1 to -n from the end")


@dataclass
class StepContext:
    """What interventions need to know about the tokens of one forward pass.

    ``state`` lives for the whole call (e.g. a conditional's per-row flag during generation);
    ``memo`` lives for this forward pass only (masks shared by every layer). ``row_offset`` (``[B]``,
    optional) is for engines whose rows sit at different depths in one pass (vLLM's continuous
    batching): row ``b``'s column ``t`` is then token ``row_offset[b] + t``, instead of ``offset + t``.
    """

    batch: int
    width: int
    offset: int
    start: torch.Tensor
    prompt_end: torch.Tensor
    state: dict = field(default_factory=dict)
    memo: dict = field(default_factory=dict)
    row_offset: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.start.device

    @property
    def index(self) -> torch.Tensor:
        """Padded index of each column of this forward pass, ``[T]``."""
        end = self.offset + self.width
        arange = self.state.get("arange")
        if arange is None or arange.numel() < end:  # one arange per call, grown rarely, sliced per step
            arange = torch.arange(max(2 * end, 256), device=self.device)
            self.state["arange"] = arange
        return arange[self.offset : end]

    def columns(self) -> torch.Tensor:
        """Padded index of each column, ``[1, T]`` (every row at ``offset``) or ``[B, T]`` (per-row offsets)."""
        if self.row_offset is None:
            return self.index[None, :]
        key = ("columns",)
        if key not in self.memo:
            self.memo[key] = self.row_offset[:, None] + torch.arange(self.width, device=self.device)[None, :]
        return self.memo[key]

    @property
    def is_prefill(self) -> bool:
        """Whether this forward pass holds prompt tokens (the first pass of a generation) for some row."""
        if self.row_offset is not None:
            return bool((self.row_offset == 0).any())
        return self.offset == 0

    def prefilling(self) -> torch.Tensor:
        """``[B]`` bool: the rows whose prompt starts in this pass (all or none when rows share ``offset``)."""
        if self.row_offset is not None:
            return self.row_offset == 0
        return torch.full((self.batch,), self.offset == 0, dtype=torch.bool, device=self.device)

    def real(self) -> torch.Tensor:
        """``[B, T]``: True on prompt tokens and generated tokens, False on padding."""
        key = ("real",)
        if key not in self.memo:
            idx = self.columns()
            right_pad = idx >= self.prompt_end[:, None]
            generated = right_pad if self.state.get("generating") else torch.zeros_like(right_pad)
            self.memo[key] = (idx >= self.start[:, None]) & ((idx < self.prompt_end[:, None]) | generated)
        return self.memo[key]

    def mask(self, spec: PositionSpec) -> torch.Tensor | None:
        """``[B, T]`` bool mask of the positions ``spec`` selects, or None for every position."""
        if spec == "all":
            return None
        key = ("mask", spec)
        if key in self.memo:
            return self.memo[key]
        idx = self.columns()
        start, end = self.start[:, None], self.prompt_end[:, None]
        if spec == "prompt":
            mask = (idx >= start) & (idx < end)
        elif spec == "generated":
            mask = (idx >= end).expand(self.batch, -1)
        elif spec == "last":
            mask = (idx >= end - 1).expand(self.batch, -1)
        elif isinstance(spec, tuple):
            mask = torch.zeros(self.batch, self.width, dtype=torch.bool, device=self.device)
            for p in spec:  # a prompt token only: an index past a short prompt selects nothing in that row
                mask |= ((idx - start == p) & (idx < end)) if p >= 0 else ((idx == end + p) & (idx >= start))
        else:
            raise SteerlabError(f"positions={spec!r} is not a position spec")
        self.memo[key] = mask
        return mask

    def row_mask(self, specs: list[PositionSpec | None]) -> torch.Tensor | None:
        """``[B, T]`` mask for per-row specs (None = the row is untouched); None means every position."""
        distinct = set(specs)
        if len(distinct) == 1:
            (only,) = distinct
            if only is None:
                return torch.zeros(self.batch, self.width, dtype=torch.bool, device=self.device)
            return self.mask(only)
        key = ("rows", tuple(specs))
        if key in self.memo:
            return self.memo[key]
        out = torch.zeros(self.batch, self.width, dtype=torch.bool, device=self.device)
        for spec in distinct:
            if spec is None:
                continue
            rows = self._rows_with(tuple(specs), spec)
            m = self.mask(spec)
            out |= rows & (True if m is None else m)
        self.memo[key] = out
        return out

    def _rows_with(self, specs: tuple, spec: PositionSpec) -> torch.Tensor:
        """``[B, 1]``: rows whose spec is ``spec`` (the same for the whole call, so kept in ``state``)."""
        key = ("rows_with", specs, spec)
        rows = self.state.get(key)
        if rows is None:
            rows = torch.tensor([s == spec for s in specs], device=self.device)[:, None]
            self.state[key] = rows
        return rows

    def tail(self, n: int) -> StepContext:
        """The context of the last ``n`` columns (for outputs computed on the last tokens only)."""
        if n == self.width:
            return self
        row_offset = None if self.row_offset is None else self.row_offset + (self.width - n)
        return StepContext(self.batch, n, self.offset + self.width - n, self.start, self.prompt_end, self.state,
                           row_offset=row_offset)
