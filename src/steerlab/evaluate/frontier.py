"""The trade-off frontier: for each method, the strengths no other strength of it beats on both axes.

A row is Pareto-optimal within its method when no other row of the same method has behaviour at
least as good *and* utility at least as good, with one of them strictly better. Identical points
do not dominate each other. Rows with a missing value on either axis are left out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import SteerlabError


def pareto_mask(gain: npt.ArrayLike, cost: npt.ArrayLike) -> np.ndarray:
    """Boolean mask of the points not dominated by another (more ``gain`` is better, less ``cost``)."""
    g, c = np.asarray(gain, dtype=float), np.asarray(cost, dtype=float)
    keep = np.ones(len(g), dtype=bool)
    for i in range(len(g)):
        better_or_equal = (g >= g[i]) & (c <= c[i])
        strictly = (g > g[i]) | (c < c[i])
        keep[i] = not bool((better_or_equal & strictly).any())
    return keep


def frontier(table: pd.DataFrame, behaviour: str, utility: str, higher_behaviour: bool = True,
             higher_utility: bool = False, by: str = "method") -> pd.DataFrame:
    """The Pareto-optimal rows of each group ``by`` (default per method), sorted by utility cost.

    ``behaviour``/``utility`` name columns; ``higher_*`` say which way is better (utility defaults
    to a cost, e.g. perplexity or KL).
    """
    for column in (behaviour, utility, by):
        if column not in table.columns:
            raise SteerlabError(f"column {column!r} is not in the table; it has {', '.join(map(str, table.columns))}")
    parts = []
    for _, group in table.groupby(by, sort=False):
        group = group.dropna(subset=[behaviour, utility])
        if group.empty:
            continue
        gain = group[behaviour] if higher_behaviour else -group[behaviour]
        cost = -group[utility] if higher_utility else group[utility]
        part = group[pareto_mask(gain, cost)]
        parts.append(part.sort_values(utility, ascending=not higher_utility))
    if not parts:
        return table.iloc[0:0].copy()
    return pd.concat(parts).reset_index(drop=True)
