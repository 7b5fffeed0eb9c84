"""Pick layers to steer at from a sweep table, by a simple rule that is written down.

The rule (each step falls back to the previous set when it would leave nothing):

1. Keep the layers whose ``probe_acc`` is within ``margin`` of the best layer's.
2. If ``require_opposite_sign`` (and the table has the column), keep those that pass the
   opposite-sign alignment test (Selective Steering: the two classes'
   mean cosines with the direction have opposite signs).
3. Keep those inside the middle ``band`` of the model (fractions of depth, default 20%-80%):
   the first layers mostly carry token identity, the last ones are about to be read out, and
   steering works best in between.
4. Group what is left into runs of consecutive layers and take the longest run; ties go to the
   run whose centre is nearest the middle of the model, then to the higher mean ``probe_acc``.
5. With ``k``: a longer run is cut to the ``k`` consecutive layers with the highest mean
   ``probe_acc`` (ties: nearest the middle); a shorter one is grown one layer at a time on the
   side whose neighbour (in the table) has the higher ``probe_acc`` (ties: the side that keeps
   the run nearer the middle); ``k`` beyond the table's
   size gives every layer in it.
"""

from __future__ import annotations

import math
from typing import SupportsFloat

import pandas as pd

from ..errors import DataError, SteerlabError


def recommend_layers(table: pd.DataFrame, k: int | None = None, margin: float = 0.05,
                     require_opposite_sign: bool = True, band: tuple[float, float] = (0.2, 0.8),
                     n_layers: int | None = None) -> list[int]:
    """Layers to steer at, from a ``sweep`` table (rule in the module docstring).

    ``k``: how many layers (None: the whole chosen run). ``n_layers``: the model's depth, for
    the middle ``band``; default ``table.attrs["n_layers"]``, else the largest layer + 1.
    """
    if not isinstance(table, pd.DataFrame) or table.empty:
        raise DataError("recommend_layers needs a non-empty table from sweep()")
    missing = [c for c in ("layer", "probe_acc") if c not in table.columns]
    if missing:
        raise DataError(f"the table lacks column(s) {', '.join(missing)}; pass the DataFrame sweep() returns")
    if k is not None and (not isinstance(k, int) or k < 1):
        raise SteerlabError(f"k={k!r} must be a positive integer or None")
    if not (isinstance(band, (tuple, list)) and len(band) == 2 and 0 <= band[0] <= band[1] <= 1):
        raise SteerlabError(f"band={band!r} must be (low, high) fractions of depth with 0 <= low <= high <= 1")
    rows = table.sort_values("layer")
    layers = [int(x) for x in rows["layer"]]
    if len(set(layers)) != len(layers):
        raise DataError("the table lists a layer more than once; pass one row per layer")
    acc = {layer: _num(a) for layer, a in zip(layers, rows["probe_acc"])}
    depth = n_layers or table.attrs.get("n_layers") or max(layers) + 1
    middle = (depth - 1) / 2

    chosen = [layer for layer in layers if acc[layer] >= max(acc.values()) - margin]
    if require_opposite_sign and "opposite_sign" in rows.columns:
        sign = dict(zip(layers, rows["opposite_sign"].astype(bool)))
        chosen = [layer for layer in chosen if sign[layer]] or chosen
    low, high = band[0] * (depth - 1), band[1] * (depth - 1)
    chosen = [layer for layer in chosen if low <= layer <= high] or chosen

    runs = _runs(chosen, layers)
    run = max(runs, key=lambda r: (len(r), -abs(_centre(r) - middle), _mean(r, acc)))
    if k is None or k == len(run):
        return run
    if k < len(run):
        windows = [run[i:i + k] for i in range(len(run) - k + 1)]
        return max(windows, key=lambda w: (_mean(w, acc), -abs(_centre(w) - middle)))
    return _grow(run, layers, acc, k, middle)


def _runs(chosen: list[int], layers: list[int]) -> list[list[int]]:
    """Split ``chosen`` into runs of layers adjacent in the table (a sweep over every other layer
    still forms runs)."""
    place = {layer: i for i, layer in enumerate(layers)}
    runs: list[list[int]] = []
    for layer in sorted(chosen):
        if runs and place[layer] == place[runs[-1][-1]] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return runs


def _grow(run: list[int], layers: list[int], acc: dict[int, float], k: int, middle: float) -> list[int]:
    """Extend ``run`` to ``k`` layers by adding its better neighbour in the table, one at a time
    (on a tie, the one that keeps the run's centre nearer ``middle``); stops at the table's ends."""
    first, last = layers.index(run[0]), layers.index(run[-1])
    while last - first + 1 < k and (first > 0 or last < len(layers) - 1):
        options = [i for i in (first - 1, last + 1) if 0 <= i < len(layers)]

        def key(i: int, lo: int = first, hi: int = last) -> tuple[float, float]:
            centre = (layers[min(lo, i)] + layers[max(hi, i)]) / 2
            return (acc[layers[i]], -abs(centre - middle))

        best = max(options, key=key)
        first, last = min(first, best), max(last, best)
    return layers[first:last + 1]


def _centre(run: list[int]) -> float:
    return (run[0] + run[-1]) / 2


def _mean(run: list[int], acc: dict[int, float]) -> float:
    return sum(acc[x] for x in run) / len(run)


def _num(value: SupportsFloat) -> float:
    value = float(value)
    return -math.inf if math.isnan(value) else value
