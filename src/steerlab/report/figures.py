"""Figures of a comparison, drawn with matplotlib's Agg backend and returned as PNG bytes.

- ``frontier_figure``: behaviour against utility cost, every method on one chart (one panel per
  cost metric), its Pareto frontier drawn as a line, the unsteered model as a star.
- ``strength_figure``: each metric against strength, one row per method (strength units differ).
- ``layer_figure``: the per-layer sweep of the training pairs, with the layers each method steers.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..evaluate.frontier import frontier

LABELS = {"sentiment": "sentiment (VADER compound)", "perplexity": "perplexity of the reference text",
          "kl": "KL(unsteered ‖ steered), neutral prompts", "probe": "probe logit", "accuracy": "arithmetic accuracy",
          "repetition": "repetition rate (3-grams)", "distinct_2": "distinct-2", "distinct_1": "distinct-1",
          "refusal_rate": "refusal rate (substrings)", "refusal_score": "refusal log-odds",
          "length": "tokens generated"}


def _png(fig: Figure, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _colours(methods: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _frontier_panel(ax: Axes, steered: pd.DataFrame, base: pd.DataFrame, behaviour: str, utility: str,
                    higher: Mapping[str, bool], colours: dict[str, tuple], xlim: tuple[float, float] | None = None,
                    ) -> None:
    front = frontier(steered, behaviour, utility, higher.get(behaviour, True), higher.get(utility, False))
    hidden = 0
    for method, colour in colours.items():
        own = steered[steered["method"] == method]
        if xlim is not None:
            hidden += int((own[utility] > xlim[1]).sum())
            own = own[own[utility] <= xlim[1]]
        ax.scatter(own[utility], own[behaviour], color=colour, alpha=0.35, s=22)
        line = front[front["method"] == method].sort_values(utility)
        if xlim is not None:
            line = line[line[utility] <= xlim[1]]
        ax.plot(line[utility], line[behaviour], "-o", color=colour, label=method, ms=5, lw=1.6)
        for _, row in line.iterrows():
            ax.annotate(f"{row['strength']:g}", (row[utility], row[behaviour]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points", color=colour)
    if not base.empty:
        ax.scatter(base[utility], base[behaviour], marker="*", s=180, color="black", zorder=5, label="unsteered")
    if xlim is not None:
        ax.set_xlim(*xlim)
        if hidden:
            ax.text(0.98, 0.02, f"{hidden} point(s) beyond the right edge", transform=ax.transAxes, ha="right",
                    fontsize=7, color="grey")
    elif utility == "perplexity":
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    elif utility == "kl":
        ax.set_xscale("symlog", linthresh=0.01)
    better = "better →" if higher.get(utility, False) else "← better"
    ax.set_xlabel(f"{LABELS.get(utility, utility)}  ({better})")
    ax.set_ylabel(LABELS.get(behaviour, behaviour))
    ax.grid(alpha=0.3)


def frontier_figure(results: pd.DataFrame, behaviour: str, utilities: Sequence[str] = ("perplexity", "kl"),
                    higher: Mapping[str, bool] | None = None, title: str | None = None, zoom: float = 2.0) -> bytes:
    """Behaviour (y) against each utility cost (x, one panel each; the first cost also zoomed to at most
    ``zoom`` times the unsteered value); each method's Pareto frontier drawn as a line."""
    higher = higher or {}
    utilities = [u for u in utilities if u in results.columns]
    steered = results[results["method"] != "baseline"]
    base = results[results["method"] == "baseline"]
    colours = _colours(list(dict.fromkeys(steered["method"])))
    panels: list[tuple[str, tuple[float, float] | None]] = [(u, None) for u in utilities]
    if utilities and not base.empty and not higher.get(utilities[0], False):
        low = float(base[utilities[0]].iloc[0])
        if low > 0 and float(steered[utilities[0]].max()) > zoom * low:
            panels.insert(1, (utilities[0], (low * 0.97, low * zoom)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, (utility, xlim) in zip(axes[0], panels):
        _frontier_panel(ax, steered, base, behaviour, utility, higher, colours, xlim)
        if xlim is not None:
            ax.set_title(f"zoom: {utility} up to {zoom:g}x the unsteered model", fontsize=9)
    axes[0][-1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _png(fig)


def strength_figure(results: pd.DataFrame, metrics: list[str]) -> bytes:
    """Each metric (columns) against strength, one row per method; the unsteered value dashed."""
    steered = results[results["method"] != "baseline"]
    base = results[results["method"] == "baseline"]
    methods = list(dict.fromkeys(steered["method"]))
    metrics = [m for m in metrics if m in results.columns]
    colours = _colours(methods)
    fig, axes = plt.subplots(len(methods), len(metrics), figsize=(2.6 * len(metrics), 1.9 * len(methods)),
                             squeeze=False)
    for i, method in enumerate(methods):
        own = steered[steered["method"] == method].sort_values("strength")
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            ax.plot(own["strength"], own[metric], "-o", color=colours[method], ms=3.5, lw=1.3)
            if not base.empty:
                ax.axhline(float(base[metric].iloc[0]), color="grey", ls="--", lw=0.8)
            if metric == "perplexity":
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            if i == 0:
                ax.set_title(LABELS.get(metric, metric), fontsize=8)
            if j == 0:
                ax.set_ylabel(method, fontsize=9)
            ax.set_xlabel(str(own["param"].iloc[0]) if len(own) else "", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig, dpi=75)


def layer_figure(table: pd.DataFrame, marks: dict[str, list[int]] | None = None,
                 order: list[str] | None = None) -> bytes:
    """The layer sweep: held-out probe and mean-difference accuracy, Cohen's d; marks per method
    (coloured as in the other figures when ``order`` lists every method)."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.plot(table["layer"], table["probe_acc"], "-o", ms=3, label="probe accuracy (held out)")
    ax.plot(table["layer"], table["diff_acc"], "-s", ms=3, label="mean-difference accuracy (held out)")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("layer")
    ax.set_ylabel("accuracy")
    right = ax.twinx()
    right.plot(table["layer"], table["cohens_d"], ":", color="grey", label="Cohen's d (right)")
    right.set_ylabel("Cohen's d")
    colours = _colours(order or list(marks or {}))
    for k, (method, layers) in enumerate((marks or {}).items()):
        y = 0.03 + 0.045 * k
        ax.plot(layers, [y] * len(layers), "|", ms=9, mew=2.5, color=colours[method], label=f"{method} layers")
    handles = ax.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="upper center", ncol=4,
              bbox_to_anchor=(0.5, -0.13))
    ax.grid(alpha=0.3)
    return _png(fig)
