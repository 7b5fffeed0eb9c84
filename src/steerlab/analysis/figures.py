"""Figures for the analyses (matplotlib). Each takes an analysis table and returns a ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly, so no pyplot state or GUI backend is
touched; save one with ``fig.savefig("x.png")``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import SteerlabError


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _short(label: str, n: int = 10) -> str:
    """A token as a short tick label; control characters (which fonts lack) shown escaped."""
    text = "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in str(label))
    if not text.strip():
        text = "␣" * len(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def _require(table: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise SteerlabError(f"{what} needs a table with columns {missing}; pass the table the analysis returned")


def plot_lens(table: pd.DataFrame, text: int = 0, annotate: bool = True, title: str | None = None):
    """Layer × token heatmap of the target's rank under the logit lens (log colour scale), top-1 tokens written in."""
    _require(table, ["text", "layer", "position", "target_rank", "top1", "token"], "plot_lens")
    sub = table[table["text"] == text]
    if sub.empty or sub["target_rank"].isna().all():
        raise SteerlabError(f"text {text} has no target ranks; run logit_lens with target=...")
    from matplotlib.colors import LogNorm

    rank = sub.pivot(index="layer", columns="position", values="target_rank").astype(float)
    top = sub.pivot(index="layer", columns="position", values="top1")
    tokens = sub.drop_duplicates("position").set_index("position")["token"].reindex(rank.columns)
    fig = _figure(1.6 + 0.9 * rank.shape[1], 1.2 + 0.22 * rank.shape[0])
    ax = fig.add_subplot()
    image = ax.imshow(rank.to_numpy(), aspect="auto", origin="lower", cmap="viridis_r",
                      norm=LogNorm(vmin=1, vmax=max(10.0, float(np.nanmax(rank.to_numpy())))))
    ax.set_xticks(range(rank.shape[1]), [_short(t) for t in tokens], rotation=30, ha="right")
    ax.set_yticks(range(rank.shape[0]), rank.index)
    ax.tick_params(axis="y", labelsize=7)
    if annotate and rank.size <= 400:
        for (r, c), value in np.ndenumerate(rank.to_numpy()):
            ax.text(c, r, _short(top.iloc[r, c], 8), ha="center", va="center", fontsize=6,
                    color="black" if value <= 3 else "white")
    target = sub["target"].dropna().iloc[0] if sub["target"].notna().any() else ""
    ax.set_xlabel("input token (cell: the lens's top-1 next token)")
    ax.set_ylabel("layer (resid_post)")
    ax.set_title(title or f"Logit lens: rank of {target!r}")
    fig.colorbar(image, ax=ax, label=f"rank of {target!r} (1 = top)")
    return fig


def plot_probe_map(table: pd.DataFrame, text: int | None = None, value: str = "prob", window: int | None = None,
                   title: str | None = None):
    """Layer × position heatmap of a probe map: one text, or the mean over texts aligned at their last token."""
    _require(table, ["text", "layer", "tail", value], "plot_probe_map")
    sub = table if text is None else table[table["text"] == text]
    if sub.empty:
        raise SteerlabError(f"text {text} is not in the table")
    if window is not None:
        sub = sub[sub["tail"] >= -window]
    grid = sub.pivot_table(index="layer", columns="tail", values=value, aggfunc="mean")
    fig = _figure(min(14.0, 2.0 + 0.16 * grid.shape[1]), 1.2 + 0.16 * grid.shape[0])
    ax = fig.add_subplot()
    image = ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", cmap="magma",
                      vmin=0 if value == "prob" else None, vmax=1 if value == "prob" else None)
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.tick_params(axis="y", labelsize=7)
    if text is not None and "token" in sub.columns and grid.shape[1] <= 80:
        tokens = sub.drop_duplicates("tail").set_index("tail")["token"].reindex(grid.columns)
        ax.set_xticks(range(grid.shape[1]), [_short(t, 8) for t in tokens], rotation=90, fontsize=6)
        if "generated" in sub.columns and sub["generated"].any():
            first = int(np.argmax(sub.drop_duplicates("tail").set_index("tail")["generated"].reindex(grid.columns)))
            ax.axvline(first - 0.5, color="cyan", lw=1)
    else:
        step = max(1, grid.shape[1] // 10)
        ax.set_xticks(range(0, grid.shape[1], step), [int(c) for c in grid.columns[::step]])
        ax.set_xlabel("position from the end (tail-aligned)")
    ax.set_ylabel("layer")
    ax.set_title(title or ("Probe map" + ("" if text is not None else f" (mean over {sub['text'].nunique()} texts)")))
    fig.colorbar(image, ax=ax, label=f"probe {value}")
    return fig


def plot_trace(traces, labels=None, title: str | None = None):
    """The tail-aligned probe curve with its band (mean ± 1.96 s.e.); several traces overlay."""
    items = [traces] if isinstance(traces, pd.DataFrame) else list(traces)
    names = labels or [None] * len(items)
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot()
    for trace, name in zip(items, names):
        _require(trace, ["tail", "mean", "lo", "hi"], "plot_trace")
        line, = ax.plot(trace["tail"], trace["mean"], lw=1.8, label=name)
        ax.fill_between(trace["tail"], trace["lo"], trace["hi"], color=line.get_color(), alpha=0.2, lw=0)
    first = items[0]
    if "generated" in first.columns and (first["generated"] >= 0.5).any():
        start = float(first.loc[first["generated"] >= 0.5, "tail"].iloc[0])
        ax.axvspan(start, float(first["tail"].iloc[-1]), color="grey", alpha=0.12, lw=0, label="generated")
        names = list(names) + ["generated"]
    ax.set_xlabel("position from the end (tail-aligned)")
    ax.set_ylabel("probe probability")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if any(n for n in names):
        ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "Probe trace over tail-aligned positions")
    return fig


def plot_patching(table: pd.DataFrame, value: str = "normalized", tokens: list[str] | None = None,
                  title: str | None = None):
    """Layer × position heatmaps of a patching sweep, one panel per (mode, site), averaged over pairs."""
    _require(table, ["mode", "site", "layer", "position", value], "plot_patching")
    panels = list(table.groupby(["mode", "site"], sort=False))
    n_pos = table["position"].nunique()
    n_layers = table["layer"].nunique()
    fig = _figure(1.0 + (1.4 + 0.55 * n_pos) * len(panels), 1.4 + 0.17 * n_layers)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    limit = float(np.nanmax(np.abs(table[value].to_numpy()))) or 1.0
    labels = tokens
    if labels is None and "token" in table.columns:
        first = table[table["pair"] == table["pair"].min()] if "pair" in table.columns else table
        clean = first.drop_duplicates("position").set_index("position")["token"]
        other = first.drop_duplicates("position").set_index("position").get("other_token", clean)
        labels = [c if c == o else f"{c}/{o}" for c, o in zip(clean, other)]
    image = None
    for ax, ((mode, site), sub) in zip(axes, panels):
        grid = sub.pivot_table(index="layer", columns="position", values=value, aggfunc="mean")
        image = ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
        names = [_short(labels[p], 16) for p in grid.columns] if labels is not None else list(grid.columns)
        ax.set_xticks(range(grid.shape[1]), names, rotation=30, ha="right")
        ax.set_yticks(range(grid.shape[0]), grid.index)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"{mode}: {site}", fontsize=10)
        ax.set_xlabel("position")
    axes[0].set_ylabel("layer")
    fig.colorbar(image, ax=list(axes), label=value)
    if title:
        fig.suptitle(title)
    return fig


def plot_heads(table: pd.DataFrame, value: str = "score", title: str | None = None):
    """Layer × head heatmap of a per-head table (attribution score, ablation effect, interchange)."""
    _require(table, ["layer", "head", value], "plot_heads")
    grid = table[table["layer"] >= 0].pivot_table(index="layer", columns="head", values=value)
    limit = float(np.nanmax(np.abs(grid.to_numpy()))) or 1.0
    fig = _figure(1.8 + 0.45 * grid.shape[1], 1.2 + 0.17 * grid.shape[0])
    ax = fig.add_subplot()
    image = ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_xticks(range(grid.shape[1]), grid.columns)
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title or f"Heads: {value}")
    fig.colorbar(image, ax=ax, label=value)
    return fig


def plot_necessity(summary: pd.DataFrame, value: str = "dlogp_gold", title: str | None = None):
    """Mode × step heatmap of a necessity metric (from ``necessity_metrics``)."""
    _require(summary, ["mode", "step", value], "plot_necessity")
    grid = summary.pivot_table(index="mode", columns="step", values=value, sort=False)
    fig = _figure(2.4 + 0.8 * grid.shape[1], 1.2 + 0.45 * grid.shape[0])
    ax = fig.add_subplot()
    image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks(range(grid.shape[1]), grid.columns)
    ax.set_yticks(range(grid.shape[0]), grid.index)
    for (r, c), v in np.ndenumerate(grid.to_numpy()):
        bright = float(image.norm(v)) > 0.6  # viridis is light at the top of its range
        ax.text(c, r, f"{v:.2g}", ha="center", va="center", fontsize=7, color="black" if bright else "white")
    ax.set_xlabel("step")
    ax.set_title(title or f"Step do-interventions: {value}")
    fig.colorbar(image, ax=ax, label=value)
    return fig


def plot_subspace(check, title: str | None = None):
    """Bar chart of a subspace check: normalized effect of patching v, its row/null parts and the whole component."""
    table = check.table
    fig = _figure(5.2, 3.2)
    ax = fig.add_subplot()
    colors = {"direction": "#4c72b0", "row_space": "#55a868", "null_space": "#c44e52", "component": "#8172b2"}
    ax.bar(table["part"], table["normalized"], color=[colors.get(p, "grey") for p in table["part"]])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("normalized effect")
    ax.set_title(title or ("Subspace check: ILLUSION" if check.illusion else "Subspace check: no illusion"))
    return fig
