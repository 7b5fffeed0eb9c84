"""Where each token of vLLM's flattened batch sits, in the coordinates steerlab's interventions use.

vLLM runs one forward pass over all scheduled requests as a flat run of tokens ``[N, D]``; request
``r`` owns ``query_start_loc[r]:query_start_loc[r+1]`` and its first token there sits at absolute
position ``positions[query_start_loc[r]]`` (prefill chunks and decode steps mix freely). steerlab's
ops want ``[B, T, D]`` with a ``StepContext``: here each request is a row, left-aligned (no left
padding: ``start = 0``), its columns starting at its own depth (``row_offset``), and its prompt
ending at its prompt length. ``prompt``, ``generated``, ``last`` and indices then mean exactly what
they mean in the transformers path. A batch of decode steps only (one token per request) is a free
view; otherwise tokens are gathered into the padded layout and scattered back, with no Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...interventions.positions import StepContext


@dataclass
class FlatBatch:
    """Per-request spans of one vLLM forward pass: ``starts``, ``lengths``, ``first_pos``, ``prompt_len``
    (all ``[R]``), the padded ``width`` and, when it is above 1, each token's ``row``/``col`` (``[n]``)."""

    starts: torch.Tensor
    lengths: torch.Tensor
    first_pos: torch.Tensor
    prompt_len: torch.Tensor
    width: int
    n_tokens: int
    row: torch.Tensor | None = None
    col: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return int(self.starts.shape[0])

    def context(self, state: dict | None = None) -> StepContext:
        """The ``StepContext`` of this pass (``state`` carries anything kept for the whole pass)."""
        state = {} if state is None else state
        state["generating"] = True  # tokens past the prompt are generated, never padding
        zeros = torch.zeros_like(self.prompt_len)
        return StepContext(self.rows, self.width, 0, zeros, self.prompt_len, state, row_offset=self.first_pos)

    def to_rows(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, ...]`` (vLLM's flat tokens) to ``[R, width, ...]`` (rows, right-padded with zeros)."""
        if self.row is None:
            return x[: self.n_tokens].unsqueeze(1)
        out = x.new_zeros(self.rows, self.width, *x.shape[1:])
        out[self.row, self.col] = x[: self.n_tokens]
        return out

    def to_flat(self, rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The inverse of ``to_rows``, written over a copy of ``like`` (tokens past the batch kept)."""
        flat = rows[:, 0] if self.row is None else rows[self.row, self.col]
        if like.shape[0] == self.n_tokens:
            return flat
        out = like.clone()
        out[: self.n_tokens] = flat
        return out

    def valid(self) -> torch.Tensor:
        """``[R, width]`` bool: which padded cells hold a real token of this pass."""
        cols = torch.arange(self.width, device=self.lengths.device)[None, :]
        return cols < self.lengths[:, None]


def flat_batch(query_start_loc: torch.Tensor, positions: torch.Tensor, prompt_len: torch.Tensor) -> FlatBatch:
    """Describe a pass from vLLM's ``query_start_loc`` ``[R+1]``, the ``positions`` of its tokens ``[N]``
    and each request's prompt length ``[R]`` (all on the activations' device)."""
    qsl = query_start_loc.long()
    starts, lengths = qsl[:-1], qsl[1:] - qsl[:-1]
    n_tokens = int(qsl[-1])
    first_pos = positions.long()[starts.clamp_max(max(positions.shape[0] - 1, 0))]
    width = int(lengths.max()) if lengths.numel() else 0
    fb = FlatBatch(starts, lengths, first_pos, prompt_len.long(), width, n_tokens)
    if width > 1 or n_tokens != starts.shape[0]:
        row = torch.repeat_interleave(torch.arange(starts.shape[0], device=qsl.device), lengths)
        fb.row, fb.col = row, torch.arange(n_tokens, device=qsl.device) - starts[row]
    return fb
