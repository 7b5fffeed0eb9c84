"""Figures for the safety and introspection audits (matplotlib ``Figure`` objects, no pyplot state)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .figures import _figure, _require


def plot_robustness(table: pd.DataFrame, title: str | None = None):
    """Refusal sensitivity by layer: increase in the refusal's NLL (left) and share of refusals flipped
    (right), one line per perturbation kind and radius (a ``latent_robustness`` table)."""
    _require(table, ["layer", "kind", "radius", "delta_nll", "flipped"], "plot_robustness")
    fig = _figure(10.0, 3.6)
    left, right = fig.subplots(1, 2)
    radii = sorted(table["radius"].unique())
    shades = np.linspace(0.35, 1.0, len(radii))
    colors = {"adversarial": "Reds", "random": "Blues"}
    from matplotlib import colormaps

    for kind, sub in table.groupby("kind", sort=True):
        cmap = colormaps[colors.get(str(kind), "Greys")]
        for shade, r in zip(shades, radii):
            rows = sub[sub["radius"] == r].sort_values("layer")
            label = f"{kind} r={r:g}"
            left.errorbar(rows["layer"], rows["delta_nll"], yerr=rows.get("se"), color=cmap(shade), marker="o",
                          markersize=3, capsize=2, label=label)
            if rows["flipped"].notna().any():
                right.plot(rows["layer"], rows["flipped"], color=cmap(shade), marker="o", markersize=3, label=label)
    left.set_xlabel("layer (resid_post perturbed)")
    left.set_ylabel("Δ NLL of own refusal (nats/token)")
    left.axhline(0, color="grey", lw=0.5)
    right.set_xlabel("layer (resid_post perturbed)")
    right.set_ylabel("share of refusals flipped (greedy)")
    right.set_ylim(-0.02, 1.02)
    left.legend(fontsize=7)
    fig.suptitle(title or "Refusal robustness to latent perturbations")
    return fig


def plot_introspection(table: pd.DataFrame, value: str = "detection", title: str | None = None):
    """Layer × strength heatmap of an introspection rate (``detection``, ``identification``, ``false_alarm``)."""
    _require(table, ["layer", "strength", value], "plot_introspection")
    grid = table.pivot_table(index="layer", columns="strength", values=value, aggfunc="mean")
    fig = _figure(1.8 + 0.7 * grid.shape[1], 1.4 + 0.3 * grid.shape[0])
    ax = fig.add_subplot()
    image = ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(grid.shape[1]), [f"{s:g}" for s in grid.columns])
    ax.set_yticks(range(grid.shape[0]), grid.index)
    for (r, c), v in np.ndenumerate(grid.to_numpy()):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black")
    ax.set_xlabel("injection strength")
    ax.set_ylabel("layer")
    fig.colorbar(image, ax=ax, label=value)
    ax.set_title(title or f"Concept injection: {value} rate")
    return fig


def plot_truth_stability(table: pd.DataFrame, title: str | None = None):
    """Flip rate of the true/not-true probe's decisions when "neither" statements are relabelled, and its
    held-out accuracy, by layer (a ``truth_stability`` table)."""
    _require(table, ["layer", "flip_rate", "accuracy"], "plot_truth_stability")
    fig = _figure(6.0, 3.4)
    ax = fig.add_subplot()
    ax.plot(table["layer"], table["flip_rate"], marker="o", markersize=3, label="flip rate (held-out)")
    ax.plot(table["layer"], table["accuracy"], marker="s", markersize=3, label="accuracy true vs false (held-out)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("layer (resid_post, last token)")
    ax.legend(fontsize=8)
    ax.set_title(title or "Truth probe stability under relabelling of 'neither'")
    return fig
